//! Durations as people write them: `90s`, `30m`, `4h`, `1d`, and combinations in decreasing
//! units (`1h30m`, `2d12h`). Everything else is an error that names the text.

use std::fmt;
use std::time::Duration;

const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];
/// Far beyond any sandbox lifetime, and far from overflowing anything.
const MAX_SECONDS: u64 = 10 * 365 * 86_400;

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason} (write e.g. 90s, 30m, 4h, 1d or 1h30m)")]
pub struct DurationError {
    pub text: String,
    pub reason: &'static str,
}

/// Parses a positive duration.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let error = |reason| DurationError {
        text: text.to_owned(),
        reason,
    };
    if text.is_empty() {
        return Err(error("it is empty"));
    }
    let mut seconds: u64 = 0;
    let mut number: Option<u64> = None;
    let mut last_unit = usize::MAX;
    for c in text.chars() {
        if let Some(digit) = c.to_digit(10) {
            let next = number
                .unwrap_or(0)
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(digit)))
                .filter(|n| *n <= MAX_SECONDS)
                .ok_or_else(|| error("it is too long"))?;
            number = Some(next);
            continue;
        }
        let unit = UNITS
            .iter()
            .position(|(u, _)| *u == c)
            .ok_or_else(|| error("units are d, h, m and s"))?;
        let value = number
            .take()
            .ok_or_else(|| error("a unit must follow a number"))?;
        if last_unit != usize::MAX && unit <= last_unit {
            return Err(error("units must come once each, largest first"));
        }
        last_unit = unit;
        seconds = value
            .checked_mul(UNITS[unit].1)
            .and_then(|s| s.checked_add(seconds))
            .filter(|s| *s <= MAX_SECONDS)
            .ok_or_else(|| error("it is too long"))?;
    }
    if number.is_some() {
        return Err(error("a number needs a unit"));
    }
    if seconds == 0 {
        return Err(error("it must be longer than zero"));
    }
    Ok(Duration::from_secs(seconds))
}

/// Writes a duration the way [`parse`] reads it (`1h30m`); sub-second parts are dropped.
pub fn format(duration: Duration) -> String {
    Formatted(duration).to_string()
}

struct Formatted(Duration);

impl fmt::Display for Formatted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0.as_secs();
        if rest == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in UNITS {
            if rest >= size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_durations() {
        let cases = [
            ("90s", 90),
            ("30m", 1_800),
            ("4h", 14_400),
            ("1d", 86_400),
            ("1h30m", 5_400),
            ("2d12h", 216_000),
            ("1d2h3m4s", 93_784),
            ("0h5m", 300),
            ("007s", 7),
        ];
        for (text, seconds) in cases {
            assert_eq!(parse(text), Ok(Duration::from_secs(seconds)), "{text}");
        }
    }

    #[test]
    fn invalid_durations() {
        let cases = [
            ("", "empty"),
            ("5", "needs a unit"),
            ("h", "must follow a number"),
            ("5x", "units are"),
            ("5 m", "units are"),
            ("1m1h", "largest first"),
            ("1h1h", "largest first"),
            ("-5s", "units are"),
            ("1.5h", "units are"),
            ("0s", "longer than zero"),
            ("0h0m", "longer than zero"),
            ("99999999999999999999s", "too long"),
            ("4000d", "too long"),
            ("5ms", "must follow a number"),
            ("1H", "units are"),
        ];
        for (text, reason) in cases {
            let error = parse(text).unwrap_err();
            assert!(error.to_string().contains(reason), "{text}: {error}");
            assert!(error.to_string().contains(&format!("{text:?}")), "{error}");
        }
    }

    #[test]
    fn format_round_trips() {
        for text in ["90s", "30m", "4h", "1d", "1h30m", "2d12h", "1d2h3m4s"] {
            let duration = parse(text).unwrap();
            assert_eq!(parse(&format(duration)).unwrap(), duration);
        }
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_secs(86_400)), "1d");
    }
}
