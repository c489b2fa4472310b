//! Kubernetes resource quantities (`250m`, `1.5`, `128Mi`, `1e3`), parsed to thousandths of
//! a unit so cpu (millicores) and memory (bytes × 1000) compare exactly. Shared by the
//! API server's validation, the scheduler and the node agent.
//!
//! Written here rather than taken from a crate: k8s-openapi's `Quantity` holds only the text,
//! and no well-kept crate parses the quantity grammar with Kubernetes' rounding; this follows
//! apimachinery's `resource.Quantity`.

/// A quantity in thousandths of its unit (`250m` cpu = 250; `1Ki` = 1_024_000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Quantity {
    /// Thousandths of the unit, rounded up as Kubernetes rounds.
    pub millis: i128,
}

impl Quantity {
    /// Whole units, rounded up (bytes for memory, cores for cpu).
    pub fn units_ceil(&self) -> i128 {
        (self.millis + 999).div_euclid(1000)
    }
}

/// Why a quantity string is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantity {input:?} {reason} (examples: 250m, 2, 1.5, 128Mi, 1G)")]
pub struct QuantityError {
    /// The string given.
    pub input: String,
    /// Why it was refused.
    pub reason: &'static str,
}

/// Parse a quantity.
pub fn parse(input: &str) -> Result<Quantity, QuantityError> {
    let err = |reason| QuantityError {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("is empty"));
    }
    let (negative, s) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(num_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(err("has no number"));
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    // value = digits × 10^-scale; then × multiplier (binary or decimal) × 1000 for millis.
    let digits: String = format!("{int_part}{frac_part}");
    let mut mantissa: i128 = digits.parse().map_err(|_| err("has too many digits"))?;
    let mut exp10: i32 = -(frac_part.len() as i32) + 3;
    let mut mult2: i128 = 1;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => mult2 = 1 << 10,
        "Mi" => mult2 = 1 << 20,
        "Gi" => mult2 = 1 << 30,
        "Ti" => mult2 = 1 << 40,
        "Pi" => mult2 = 1 << 50,
        "Ei" => mult2 = 1 << 60,
        s if s.starts_with(['e', 'E']) => {
            let e: i32 = s[1..].parse().map_err(|_| err("has a bad exponent"))?;
            if e.abs() > 30 {
                return Err(err("is out of range"));
            }
            exp10 += e;
        }
        _ => return Err(err("has an unknown suffix")),
    }
    mantissa = mantissa
        .checked_mul(mult2)
        .ok_or_else(|| err("is out of range"))?;
    let millis = if exp10 >= 0 {
        10i128
            .checked_pow(exp10 as u32)
            .and_then(|p| mantissa.checked_mul(p))
            .ok_or_else(|| err("is out of range"))?
    } else {
        let p = 10i128
            .checked_pow((-exp10) as u32)
            .ok_or_else(|| err("is out of range"))?;
        // Kubernetes rounds a quantity finer than its precision up.
        (mantissa + p - 1) / p
    };
    Ok(Quantity {
        millis: if negative { -millis } else { millis },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> i128 {
        parse(s).unwrap().millis
    }

    #[test]
    fn parses_the_forms_manifests_use() {
        assert_eq!(m("250m"), 250);
        assert_eq!(m("2"), 2000);
        assert_eq!(m("1.5"), 1500);
        assert_eq!(m("0.1"), 100);
        assert_eq!(m("128Mi"), 128 * 1024 * 1024 * 1000);
        assert_eq!(m("1G"), 1_000_000_000_000);
        assert_eq!(m("1e3"), 1_000_000);
        assert_eq!(m("100n"), 1);
        assert_eq!(m("-1"), -1000);
        assert_eq!(parse("64Mi").unwrap().units_ceil(), 64 << 20);
    }

    #[test]
    fn refuses_what_is_not_a_quantity() {
        for bad in ["", "abc", "1.2.3", "12Q", "Mi", "1e99"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
