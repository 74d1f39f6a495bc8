//! `timestamp`: an instant from ISO-8601 text or an epoch number, held in
//! microseconds since 1970 (UTC) until the field's type says how to write it
//! (`timestamp-millis`, `timestamp-micros`, `long` millis, `date`, or RFC
//! 3339 text for a `string` field).
//!
//! The `auto` rule for numbers (and numeric text) goes by size, since no
//! real timestamp is ambiguous between them: |n| < 10^11 is seconds (10^11 s
//! is the year 5138), < 10^14 milliseconds, < 10^17 microseconds, else
//! nanoseconds. Fractions are kept to the microsecond, read from the decimal
//! text so no float rounding creeps in. Text without an offset is UTC.

use crate::transform::config::TimestampConfig;
use crate::transform::value::{quote, Val};
use chrono::format::{parse, Item, Parsed, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

/// How a `timestamp` step reads its input, compiled once.
#[derive(Debug, Clone)]
pub(crate) enum TimeFormat {
    Auto,
    Iso8601,
    Epoch(Unit),
    Pattern(Vec<Item<'static>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Seconds,
    Millis,
    Micros,
    Nanos,
}

impl TimeFormat {
    pub(crate) fn compile(config: &TimestampConfig) -> Result<Self, String> {
        Ok(match config {
            TimestampConfig::Auto => TimeFormat::Auto,
            TimestampConfig::Iso8601 => TimeFormat::Iso8601,
            TimestampConfig::EpochSeconds => TimeFormat::Epoch(Unit::Seconds),
            TimestampConfig::EpochMillis => TimeFormat::Epoch(Unit::Millis),
            TimestampConfig::EpochMicros => TimeFormat::Epoch(Unit::Micros),
            TimestampConfig::Format(f) => TimeFormat::Pattern(
                StrftimeItems::new(f)
                    .parse_to_owned()
                    .map_err(|_| format!("`{f}` is not a valid strftime pattern"))?,
            ),
        })
    }
}

/// The instant `v` names, in microseconds since the epoch.
pub(crate) fn instant(v: Val<'_>, format: &TimeFormat) -> Result<i64, String> {
    if let Val::Time(t) = v {
        return Ok(t);
    }
    let numeric = match v {
        Val::Json(serde_json::Value::Number(_)) | Val::Number(_) | Val::Int(_) => true,
        _ => v.as_str().is_some_and(|s| looks_numeric(s.trim())),
    };
    let text = v
        .into_text()
        .map_err(|v| format!("expected a time, found {}", v.describe()))?;
    let text = text.trim();
    match format {
        TimeFormat::Auto if numeric => epoch(text, None),
        TimeFormat::Auto | TimeFormat::Iso8601 => iso8601(text),
        TimeFormat::Epoch(unit) => epoch(text, Some(*unit)),
        TimeFormat::Pattern(items) => pattern(text, items),
    }
}

fn looks_numeric(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    !s.is_empty()
        && s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && s.bytes().filter(|&b| b == b'.').count() <= 1
}

/// An epoch number (decimal text) in `unit`, or by its size when `None`.
pub(crate) fn epoch(text: &str, unit: Option<Unit>) -> Result<i64, String> {
    let bad = || format!("not an epoch time: {}", quote(text));
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if !looks_numeric(digits) {
        // Exponent forms such as 1.7e9: rare enough to go through a float.
        let f: f64 = text.parse().map_err(|_| bad())?;
        if !f.is_finite() {
            return Err(bad());
        }
        return epoch(&format!("{f:.6}"), unit);
    }
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole
            .parse()
            .map_err(|_| format!("{} is out of range", quote(text)))?
    };
    let unit = unit.unwrap_or(match whole {
        0..100_000_000_000 => Unit::Seconds,
        100_000_000_000..100_000_000_000_000 => Unit::Millis,
        100_000_000_000_000..100_000_000_000_000_000 => Unit::Micros,
        _ => Unit::Nanos,
    });
    let (per_micro_up, frac_digits) = match unit {
        Unit::Seconds => (1_000_000, 6),
        Unit::Millis => (1_000, 3),
        Unit::Micros | Unit::Nanos => (1, 0),
    };
    let mut micros = whole
        .checked_mul(per_micro_up)
        .ok_or_else(|| format!("{} is out of range", quote(text)))?;
    if unit == Unit::Nanos {
        micros /= 1_000;
    }
    let mut scale = per_micro_up;
    for d in frac.bytes().take(frac_digits) {
        scale /= 10;
        micros = micros
            .checked_add(i64::from(d - b'0') * scale)
            .ok_or_else(|| format!("{} is out of range", quote(text)))?;
    }
    let micros = if negative { -micros } else { micros };
    in_range(micros).ok_or_else(|| format!("{} is out of range", quote(text)))
}

fn in_range(micros: i64) -> Option<i64> {
    DateTime::<Utc>::from_timestamp_micros(micros).map(|_| micros)
}

/// ISO-8601 text: RFC 3339 first (the common case, and the fastest parser),
/// then looser forms: `+0200`/`+02` offsets, minutes without seconds, no
/// offset (UTC), a date alone (midnight UTC).
pub(crate) fn iso8601(s: &str) -> Result<i64, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_micros());
    }
    const ZONED: [&str; 4] = [
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M%#z",
        "%Y-%m-%d %H:%M%#z",
    ];
    const LOCAL: [&str; 4] = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ];
    if s.len() >= 10 && s.as_bytes().get(4) == Some(&b'-') {
        for f in ZONED {
            if let Ok(t) = DateTime::parse_from_str(s, f) {
                return Ok(t.timestamp_micros());
            }
        }
        for f in LOCAL {
            if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
                return Ok(t.and_utc().timestamp_micros());
            }
        }
        if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            return Ok(d
                .and_time(chrono::NaiveTime::MIN)
                .and_utc()
                .timestamp_micros());
        }
    }
    Err(format!("not an ISO-8601 time: {}", quote(s)))
}

fn pattern(s: &str, items: &[Item<'static>]) -> Result<i64, String> {
    let mut parsed = Parsed::new();
    parse(&mut parsed, s, items.iter())
        .map_err(|e| format!("{} does not match the time format: {e}", quote(s)))?;
    if let Ok(t) = parsed.to_datetime() {
        return Ok(t.timestamp_micros());
    }
    if let Ok(t) = parsed.to_naive_datetime_with_offset(0) {
        return Ok(t.and_utc().timestamp_micros());
    }
    parsed
        .to_naive_date()
        .map(|d| {
            d.and_time(chrono::NaiveTime::MIN)
                .and_utc()
                .timestamp_micros()
        })
        .map_err(|e| format!("{} does not name a time: {e}", quote(s)))
}

/// RFC 3339 in UTC, with as many fraction digits as needed (0, 3 or 6).
pub(crate) fn rfc3339(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros).map_or_else(
        || micros.to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::borrow::Cow;

    const T: i64 = 1_714_557_600_000_000; // 2024-05-01T10:00:00Z

    fn auto(j: serde_json::Value) -> Result<i64, String> {
        instant(Val::Json(&j), &TimeFormat::Auto)
    }

    #[test]
    fn iso_8601_forms_are_read_with_their_offsets() {
        for s in [
            "2024-05-01T10:00:00Z",
            "2024-05-01T10:00:00.000Z",
            "2024-05-01t10:00:00z",
            "2024-05-01 10:00:00Z",
            "2024-05-01T12:00:00+02:00",
            "2024-05-01T12:00:00+0200",
            "2024-05-01T12:00:00+02",
            "2024-05-01T05:00:00-05:00",
            "2024-05-01T10:00Z",
            "2024-05-01T10:00:00",
            "2024-05-01 10:00:00",
            "  2024-05-01T10:00:00Z ",
        ] {
            assert_eq!(auto(json!(s)), Ok(T), "{s}");
        }
        assert_eq!(auto(json!("2024-05-01T10:00:00.123456Z")), Ok(T + 123_456));
        assert_eq!(
            auto(json!("2024-05-01")),
            Ok(T - 10 * 3_600_000_000),
            "midnight UTC"
        );
    }

    #[test]
    fn epoch_numbers_are_told_apart_by_size() {
        assert_eq!(auto(json!(1_714_557_600)), Ok(T), "seconds");
        assert_eq!(auto(json!(1_714_557_600_000_i64)), Ok(T), "millis");
        assert_eq!(auto(json!(1_714_557_600_000_000_i64)), Ok(T), "micros");
        assert_eq!(auto(json!(1_714_557_600_000_000_000_i64)), Ok(T), "nanos");
        assert_eq!(auto(json!("1714557600")), Ok(T), "numeric text");
        assert_eq!(
            auto(json!(1_714_557_600.25)),
            Ok(T + 250_000),
            "fraction kept"
        );
        assert_eq!(auto(json!("1714557600123.456")), Ok(T + 123_456));
        assert_eq!(auto(json!(0)), Ok(0));
        assert_eq!(auto(json!(-86_400)), Ok(-86_400_000_000), "before 1970");
        assert_eq!(auto(json!(1.7145576e9)), Ok(T));
    }

    #[test]
    fn explicit_units_override_the_size_rule() {
        let v = json!(1_714_557_600);
        let ms = instant(Val::Json(&v), &TimeFormat::Epoch(Unit::Millis)).unwrap();
        assert_eq!(ms, 1_714_557_600_000);
        let s = json!(86_400_000);
        let secs = instant(Val::Json(&s), &TimeFormat::Epoch(Unit::Seconds)).unwrap();
        assert_eq!(
            secs, 86_400_000_000_000,
            "1000 days, though it looks like millis"
        );
        let v = json!(1_714_557_600);
        assert!(instant(Val::Json(&v), &TimeFormat::Iso8601).is_err());
    }

    #[test]
    fn patterns_read_local_formats() {
        let f = TimeFormat::compile(&TimestampConfig::Format("%d/%m/%Y %H:%M".into())).unwrap();
        let v = Val::Text(Cow::Borrowed("01/05/2024 10:00"));
        assert_eq!(instant(v.clone(), &f), Ok(T));
        let f = TimeFormat::compile(&TimestampConfig::Format("%d.%m.%Y".into())).unwrap();
        let v = Val::Text(Cow::Borrowed("01.05.2024"));
        assert_eq!(instant(v.clone(), &f), Ok(T - 10 * 3_600_000_000));
        let v = Val::Text(Cow::Borrowed("2024-05-01"));
        assert!(instant(v.clone(), &f).is_err());
        assert!(TimeFormat::compile(&TimestampConfig::Format("%Q".into())).is_err());
    }

    #[test]
    fn non_times_are_refused() {
        for bad in [
            json!("yesterday"),
            json!("2024-13-01T00:00:00Z"),
            json!("2024-02-30"),
            json!("1714557600abc"),
            json!(""),
            json!(true),
            json!({"t": 1}),
            json!(9.9e300),
            json!("99999999999999999999999"),
        ] {
            assert!(auto(bad.clone()).is_err(), "{bad}");
        }
        assert!(auto(json!("yesterday"))
            .unwrap_err()
            .contains("\"yesterday\""));
        assert!(
            epoch("9223372036854.775808", Some(Unit::Seconds)).is_err(),
            "no overflow"
        );
        assert!(epoch("-9223372036854775808", None).is_err());
    }

    #[test]
    fn instants_render_as_rfc3339_utc() {
        assert_eq!(rfc3339(T), "2024-05-01T10:00:00Z");
        assert_eq!(rfc3339(T + 250_000), "2024-05-01T10:00:00.250Z");
        assert_eq!(rfc3339(T + 1), "2024-05-01T10:00:00.000001Z");
    }
}
