//! Durations as flags take them: `90s`, `5m`, `12h`, `7d`, `1h30m` (humantime's forms), or a
//! plain number of seconds. One parser for every command line.

use std::time::Duration;

/// Parse `s`; the error says what forms are taken.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("{s:?} is too large a number of seconds"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 30s, 5m, 12h or 7d: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_people_write_parse_and_others_are_named() {
        assert_eq!(parse("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert!(parse("soon")
            .unwrap_err()
            .contains("\"soon\" is not a duration"));
        assert!(parse("").is_err());
    }
}
