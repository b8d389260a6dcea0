//! Durations as operators write them (`250ms`, `5s`, `2m`, `1h`), for flags and files.

use std::time::Duration;

/// Parses `250ms`, `5s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 5s or 2m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use ms, s, m or h"
            ));
        }
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("{text:?} must be positive"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

/// A Postgres `statement_timeout`: Postgres counts whole milliseconds and reads 0 as "no
/// timeout", so anything that would round down to 0 is refused.
pub fn parse_statement_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_duration(text)?;
    if timeout < Duration::from_millis(1) {
        return Err(format!(
            "{text:?} is below 1ms, which PostgreSQL would read as no timeout at all"
        ));
    }
    Ok(timeout)
}

/// Like [`parse_duration`], and zero (`0s`) turns the delay off.
pub fn parse_delay(text: &str) -> Result<Duration, String> {
    let zero = text.trim().trim_end_matches(['m', 's', 'h']).trim();
    if !zero.is_empty() && zero.chars().all(|c| c == '0' || c == '.') {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

/// A duration as [`parse_duration`] reads it back: `300ms`, `5s`, `1500ms`.
pub fn format_duration(duration: Duration) -> String {
    match duration.subsec_millis() {
        0 if duration.as_secs() > 0 => format!("{}s", duration.as_secs()),
        _ => format!("{}ms", duration.as_millis()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_they_are_written() {
        for text in ["300ms", "5s", "1500ms", "120s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn delays_may_be_zero() {
        assert_eq!(parse_delay("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_delay("0"), Ok(Duration::ZERO));
        assert_eq!(parse_delay("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse_delay("5s"), Ok(Duration::from_secs(5)));
        assert!(parse_delay("-1s").is_err());
        assert!(parse_delay("soon").is_err());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 weeks").is_err());
    }
}
