//! The one rule for every duration flag: human units (`500ms`, `30s`, `5m`, `1h 30m`, parsed by `humantime`), or
//! a bare number in the flag's documented unit (seconds or milliseconds, fractions allowed) so that older scripts
//! keep working. Zero (where the flag does not allow it), negative, `nan`, infinite and absurdly long values are
//! usage errors with the reason, never a panic later.

use std::time::Duration;

/// The longest duration any flag takes: a year, as the library's own bound.
const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

/// The unit of a bare number.
#[derive(Debug, Clone, Copy)]
enum Unit {
    Seconds,
    Millis,
}

/// Parses `text` by the rule above.
fn parse(text: &str, unit: Unit, zero_ok: bool) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("a duration is needed (like 500ms, 30s or 5m)".into());
    }
    let duration = match text.parse::<f64>() {
        Ok(number) => {
            if !number.is_finite() {
                return Err(format!("{text:?} is not a usable duration"));
            }
            if number < 0.0 {
                return Err(format!("{text:?} is negative"));
            }
            let secs = match unit {
                Unit::Seconds => number,
                Unit::Millis => number / 1000.0,
            };
            Duration::try_from_secs_f64(secs)
                .map_err(|_| format!("{text:?} is too long (at most 365d)"))?
        }
        Err(_) if text.starts_with('-') => return Err(format!("{text:?} is negative")),
        Err(_) => humantime::parse_duration(text).map_err(|e| {
            format!("{text:?} is not a duration ({e}; use units like 500ms, 30s, 5m, 1h)")
        })?,
    };
    if duration.is_zero() && !zero_ok {
        return Err("must be more than zero".into());
    }
    if duration > LONGEST {
        return Err(format!("{text:?} is too long (at most 365d)"));
    }
    Ok(duration)
}

/// A duration of more than zero; a bare number is seconds.
pub fn secs(text: &str) -> Result<Duration, String> {
    parse(text, Unit::Seconds, false)
}

/// A duration of zero or more; a bare number is seconds.
pub fn secs_or_zero(text: &str) -> Result<Duration, String> {
    parse(text, Unit::Seconds, true)
}

/// A duration of more than zero; a bare number is milliseconds.
pub fn millis(text: &str) -> Result<Duration, String> {
    parse(text, Unit::Millis, false)
}

/// A duration of zero or more; a bare number is milliseconds.
pub fn millis_or_zero(text: &str) -> Result<Duration, String> {
    parse(text, Unit::Millis, true)
}

/// [`secs`] as seconds in an `f64`, for the bench's arithmetic.
pub fn secs_f64(text: &str) -> Result<f64, String> {
    secs(text).map(|d| d.as_secs_f64())
}

/// [`secs_or_zero`] as seconds in an `f64`, for the bench's arithmetic.
pub fn secs_or_zero_f64(text: &str) -> Result<f64, String> {
    secs_or_zero(text).map(|d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units_and_bare_numbers() {
        assert_eq!(secs("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(secs("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(secs("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(secs("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(secs("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(millis("250"), Ok(Duration::from_millis(250)));
        assert_eq!(millis("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(secs(" 10 "), Ok(Duration::from_secs(10)));
    }

    #[test]
    fn refused_values_say_why() {
        for bad in ["0", "0s", "0ms", "0.0"] {
            assert_eq!(secs(bad), Err("must be more than zero".into()), "{bad}");
        }
        assert_eq!(secs_or_zero("0"), Ok(Duration::ZERO));
        assert_eq!(millis_or_zero("0ms"), Ok(Duration::ZERO));
        for bad in ["-1", "-5s", "-0.5"] {
            assert!(secs(bad).is_err_and(|e| e.contains("negative")), "{bad}");
        }
        for bad in ["nan", "NaN", "inf", "-inf", "infinity"] {
            assert!(secs(bad).is_err(), "{bad}");
        }
        for bad in ["", "  ", "ten", "5 parsecs", "1e400"] {
            assert!(secs(bad).is_err(), "{bad}");
        }
        for bad in ["366d", "1e12", "99999999999999999999h"] {
            assert!(
                secs(bad).is_err_and(|e| e.contains("too long") || e.contains("not a duration")),
                "{bad}"
            );
        }
        assert_eq!(secs("365d"), Ok(LONGEST));
    }
}
