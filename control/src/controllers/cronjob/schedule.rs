//! CronJob schedules as Kubernetes reads them: five fields (minute, hour, day of month,
//! month, day of week: 0 or 7 is Sunday, names allowed, `?` as `*`), the `@hourly`-style
//! shorthands, and when both day fields are restricted a day matching either (Vixie cron's
//! rule). Times are wall-clock times in `timeZone` (UTC when none is given).
//!
//! The schedule arithmetic, DST included, is `jiff-cron`'s; this module translates the
//! standard form into its seconds-first form.

use std::collections::BTreeSet;
use std::str::FromStr;

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// Why a schedule or time zone is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    /// The schedule does not parse.
    #[error("Invalid value: {schedule:?}: {reason}")]
    Schedule {
        /// The schedule given.
        schedule: String,
        /// Why.
        reason: String,
    },
    /// The time zone is not in the time zone database.
    #[error("Invalid value: {zone:?}: unknown time zone")]
    TimeZone {
        /// The zone given.
        zone: String,
    },
}

impl ScheduleError {
    /// The CronJob field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Schedule { .. } => "spec.schedule",
            Self::TimeZone { .. } => "spec.timeZone",
        }
    }
}

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// One schedule, or two when both day fields are restricted (a day matching either).
    alternatives: Vec<jiff_cron::Schedule>,
    zone: TimeZone,
}

const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Days of the week (0 = Sunday) a day-of-week field names.
fn days_of_week(field: &str) -> Result<BTreeSet<u32>, String> {
    let day = |s: &str| -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = DAY_NAMES.iter().position(|d| *d == lower) {
            return Ok(i as u32);
        }
        match s.parse::<u32>() {
            Ok(n) if n <= 7 => Ok(n),
            _ => Err(format!("{s:?} is not a day of the week (0-7 or SUN-SAT)")),
        }
    };
    let mut days = BTreeSet::new();
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => match s.parse::<u32>() {
                Ok(s) if s > 0 => (r, Some(s)),
                _ => return Err(format!("{s:?} is not a valid step in {part:?}")),
            },
            None => (part, None),
        };
        let (first, last) = match range {
            "*" | "?" => (0, 6),
            _ => match range.split_once('-') {
                Some((a, b)) => (day(a)?, day(b)?),
                // `a/n` runs from a to the end of the week.
                None if step.is_some() => (day(range)?, 6),
                None => (day(range)?, day(range)?),
            },
        };
        if first > last {
            return Err(format!("{range:?}: the range ends before it begins"));
        }
        days.extend(
            (first..=last)
                .step_by(step.unwrap_or(1) as usize)
                .map(|d| d % 7),
        );
    }
    Ok(days)
}

/// The five fields in `jiff-cron`'s form (seconds first, Sunday = 1), and whether the day
/// of month and day of week are restricted.
fn translate(schedule: &str) -> Result<(Vec<String>, bool, bool), String> {
    let expanded = match schedule.trim() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        s if s.starts_with('@') => {
            return Err(format!(
                "{s:?} is not a shorthand (@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)"
            ))
        }
        s => s,
    };
    if expanded.contains("TZ=") {
        return Err("CRON_TZ or TZ is not allowed in the schedule; use spec.timeZone".into());
    }
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    let [minute, hour, dom, month, dow] = fields[..] else {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
            fields.len()
        ));
    };
    let dom = if dom == "?" { "*" } else { dom };
    let days = days_of_week(dow)?;
    let dow_list = days
        .iter()
        .map(|d| (d + 1).to_string())
        .collect::<Vec<_>>()
        .join(",");
    let dom_restricted = !dom.starts_with('*');
    let dow_restricted = !(dow.starts_with('*') || dow.starts_with('?'));
    Ok((
        vec![
            "0".into(),
            minute.into(),
            hour.into(),
            dom.into(),
            month.into(),
            dow_list,
        ],
        dom_restricted,
        dow_restricted,
    ))
}

impl Schedule {
    /// Parse `schedule` in `time_zone` (UTC when `None`).
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Self, ScheduleError> {
        let bad = |reason: String| ScheduleError::Schedule {
            schedule: schedule.to_string(),
            reason,
        };
        let zone = match time_zone {
            None => TimeZone::UTC,
            Some(z) => jiff::tz::db()
                .get(z)
                .map_err(|_| ScheduleError::TimeZone { zone: z.into() })?,
        };
        let (fields, dom_restricted, dow_restricted) = translate(schedule).map_err(bad)?;
        let compile = |f: &[String]| {
            jiff_cron::Schedule::from_str(&f.join(" ")).map_err(|e| bad(e.to_string()))
        };
        let alternatives = if dom_restricted && dow_restricted {
            let mut by_month_day = fields.clone();
            by_month_day[5] = "*".into();
            let mut by_week_day = fields.clone();
            by_week_day[3] = "*".into();
            vec![compile(&by_month_day)?, compile(&by_week_day)?]
        } else {
            vec![compile(&fields)?]
        };
        Ok(Self { alternatives, zone })
    }

    /// The first scheduled time after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let from = t.to_zoned(self.zone.clone());
        self.alternatives
            .iter()
            .filter_map(|s| s.after(from.clone()).next())
            .map(|z| z.timestamp())
            .min()
    }

    /// The last scheduled time at or before `t`.
    pub fn last_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        // Times fall on whole seconds: the last one before the next second.
        let whole = Timestamp::from_second(t.as_second()).ok()?;
        let from = whole
            .checked_add(1.second())
            .ok()?
            .to_zoned(self.zone.clone());
        self.alternatives
            .iter()
            .filter_map(|s| s.after(from.clone()).next_back())
            .map(|z| z.timestamp())
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("a timestamp")
    }

    fn next(schedule: &str, zone: Option<&str>, after: &str) -> String {
        Schedule::parse(schedule, zone)
            .expect("parses")
            .next_after(at(after))
            .expect("a next time")
            .to_string()
    }

    #[test]
    fn standard_fields_read_as_cron_reads_them() {
        // 2026-12-06 is a Sunday.
        assert_eq!(
            next("*/15 * * * *", None, "2026-12-06T10:07:00Z"),
            "2026-12-06T10:15:00Z"
        );
        assert_eq!(
            next("0 3 * * 0", None, "2026-12-06T10:00:00Z"),
            "2026-12-13T03:00:00Z"
        );
        assert_eq!(
            next("0 3 * * 7", None, "2026-12-06T10:00:00Z"),
            "2026-12-13T03:00:00Z"
        );
        assert_eq!(
            next("0 3 * * SAT", None, "2026-12-06T10:00:00Z"),
            "2026-12-12T03:00:00Z"
        );
        assert_eq!(
            next("0 3 * * 1-5", None, "2026-12-06T10:00:00Z"),
            "2026-12-07T03:00:00Z"
        );
        assert_eq!(
            next("0 3 * * 5-7", None, "2026-12-07T10:00:00Z"),
            "2026-12-11T03:00:00Z"
        );
        assert_eq!(
            next("@hourly", None, "2026-12-06T10:07:00Z"),
            "2026-12-06T11:00:00Z"
        );
        assert_eq!(
            next("@weekly", None, "2026-12-06T10:07:00Z"),
            "2026-12-13T00:00:00Z"
        );
        assert_eq!(
            next("0 0 1 JAN ?", None, "2026-12-06T10:07:00Z"),
            "2027-01-01T00:00:00Z"
        );
    }

    #[test]
    fn both_day_fields_restricted_match_either() {
        // The 15th, or any Monday: Monday the 7th comes first.
        assert_eq!(
            next("0 0 15 * 1", None, "2026-12-06T10:00:00Z"),
            "2026-12-07T00:00:00Z"
        );
        assert_eq!(
            next("0 0 15 * 1", None, "2026-12-14T10:00:00Z"),
            "2026-12-15T00:00:00Z"
        );
    }

    #[test]
    fn a_time_zone_moves_the_wall_clock() {
        // 09:00 in New York is 14:00 UTC in winter.
        assert_eq!(
            next(
                "0 9 * * *",
                Some("America/New_York"),
                "2026-12-06T10:00:00Z"
            ),
            "2026-12-06T14:00:00Z"
        );
    }

    #[test]
    fn the_last_time_is_found_at_or_before() {
        let s = Schedule::parse("*/5 * * * *", None).expect("parses");
        assert_eq!(
            s.last_at_or_before(at("2026-12-06T10:07:30Z"))
                .map(|t| t.to_string()),
            Some("2026-12-06T10:05:00Z".into())
        );
        assert_eq!(
            s.last_at_or_before(at("2026-12-06T10:10:00Z"))
                .map(|t| t.to_string()),
            Some("2026-12-06T10:10:00Z".into())
        );
    }

    #[test]
    fn bad_schedules_and_zones_name_their_field() {
        for (schedule, zone, field, says) in [
            ("* * * *", None, "spec.schedule", "expected 5 fields"),
            ("* * * * 8", None, "spec.schedule", "not a day of the week"),
            ("61 * * * *", None, "spec.schedule", "61"),
            ("@fortnightly", None, "spec.schedule", "not a shorthand"),
            ("TZ=UTC * * * * *", None, "spec.schedule", "spec.timeZone"),
            (
                "* * * * *",
                Some("Mars/Olympus"),
                "spec.timeZone",
                "unknown time zone",
            ),
        ] {
            let e = Schedule::parse(schedule, zone).expect_err(schedule);
            assert_eq!(e.field(), field, "{schedule}");
            assert!(e.to_string().contains(says), "{schedule}: {e}");
        }
    }
}
