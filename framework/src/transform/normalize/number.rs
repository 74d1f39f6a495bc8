//! `number`, `integer` and `boolean`: parse what APIs send as text (`"42"`,
//! `"12.50"`, `"yes"`) or as the JSON type, and refuse what is not one. A
//! number stays decimal text until its field's type is known, so a
//! `decimal` field gets every digit and a `double` the nearest float.

use crate::transform::value::{quote, Val};
use serde_json::Value as Json;
use std::borrow::Cow;

/// A number: `Int` when whole and in range, else its decimal text.
/// Accepts JSON numbers and text such as ` -12.50 `, `+3`, `.5`, `1e3`;
/// refuses thousands separators (`1,000`), `NaN`, `Infinity`, hex.
pub(crate) fn number(v: Val<'_>) -> Result<Val<'_>, String> {
    match v {
        Val::Int(_) | Val::Number(_) => Ok(v),
        Val::Json(Json::Number(n)) => Ok(match n.as_i64() {
            Some(i) => Val::Int(i),
            None => Val::Number(Cow::Owned(n.to_string())),
        }),
        _ => {
            let describe = v.describe();
            let text = match v {
                Val::Json(Json::String(s)) => Cow::Borrowed(s.as_str()),
                Val::Text(s) => s,
                _ => return Err(format!("expected a number, found {describe}")),
            };
            let t = trim_plus(&text);
            if !is_decimal(t) {
                return Err(format!("not a number: {}", quote(&text)));
            }
            if let Ok(i) = t.parse::<i64>() {
                return Ok(Val::Int(i));
            }
            Ok(match text {
                Cow::Borrowed(b) => Val::Number(Cow::Borrowed(trim_plus(b))),
                Cow::Owned(o) => Val::Number(Cow::Owned(trim_plus(&o).to_owned())),
            })
        }
    }
}

/// A whole number. Accepts JSON integers, floats with no fraction (`3.0`),
/// and text such as ` 42 `, `-7`, `+3`, `42.00`; refuses `42.5` (no silent
/// truncation), exponents, and values beyond 64 bits.
pub(crate) fn integer(v: Val<'_>) -> Result<i64, String> {
    match &v {
        Val::Int(i) => return Ok(*i),
        Val::Json(Json::Number(n)) => {
            if let Some(i) = n.as_i64() {
                return Ok(i);
            }
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18) {
                #[allow(clippy::cast_possible_truncation)]
                return Ok(f as i64);
            }
        }
        Val::Bool(_) | Val::Time(_) | Val::Json(_) if v.as_str().is_none() => {
            return Err(format!("expected an integer, found {}", v.describe()))
        }
        _ => {}
    }
    let text = v
        .into_text()
        .map_err(|v| format!("expected an integer, found {}", v.describe()))?;
    integral(trim_plus(&text)).ok_or_else(|| format!("not an integer: {}", quote(&text)))
}

/// `true` or `false`. Accepts JSON booleans, the numbers 1 and 0, and (any
/// case, trimmed) true/false, yes/no, y/n, t/f, on/off, 1/0.
pub(crate) fn boolean(v: Val<'_>) -> Result<bool, String> {
    match &v {
        Val::Bool(b) | Val::Json(Json::Bool(b)) => return Ok(*b),
        Val::Int(1) => return Ok(true),
        Val::Int(0) => return Ok(false),
        Val::Json(Json::Number(n)) => match n.as_f64() {
            Some(1.0) => return Ok(true),
            Some(0.0) => return Ok(false),
            _ => return Err(format!("not a boolean: {n} (only 1 and 0 are)")),
        },
        _ => {}
    }
    let Some(text) = v.as_str() else {
        return Err(format!("expected a boolean, found {}", v.describe()));
    };
    const TRUE: [&str; 6] = ["true", "yes", "y", "t", "on", "1"];
    const FALSE: [&str; 6] = ["false", "no", "n", "f", "off", "0"];
    let t = text.trim();
    if TRUE.iter().any(|w| w.eq_ignore_ascii_case(t)) {
        Ok(true)
    } else if FALSE.iter().any(|w| w.eq_ignore_ascii_case(t)) {
        Ok(false)
    } else {
        Err(format!("not a boolean: {}", quote(text)))
    }
}

fn trim_plus(s: &str) -> &str {
    let t = s.trim();
    t.strip_prefix('+').unwrap_or(t)
}

/// `-?digits[.digits][e[+-]digits]`, with digits on at least one side of the dot.
pub(crate) fn is_decimal(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    !(whole.is_empty() && frac.is_empty()) && digits(whole) && digits(frac) && exponent_ok
}

/// The whole number decimal text `s` names (`42`, `-42.000`), if it is one.
pub(crate) fn integral(s: &str) -> Option<i64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if !frac.bytes().all(|b| b == b'0') || whole.is_empty() || whole == "-" {
        return None;
    }
    whole.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(s: &str) -> Val<'_> {
        Val::Text(Cow::Borrowed(s))
    }

    #[test]
    fn numbers_keep_their_digits() {
        assert_eq!(number(text(" 42 ")), Ok(Val::Int(42)));
        assert_eq!(number(text("+3")), Ok(Val::Int(3)));
        assert_eq!(
            number(text("-12.50")),
            Ok(Val::Number(Cow::Borrowed("-12.50")))
        );
        assert_eq!(number(text(".5")), Ok(Val::Number(Cow::Borrowed(".5"))));
        assert_eq!(number(text("1e3")), Ok(Val::Number(Cow::Borrowed("1e3"))));
        assert_eq!(
            number(text("123456789012345678901234.99")),
            Ok(Val::Number(Cow::Borrowed("123456789012345678901234.99")))
        );
        let f = json!(0.1);
        assert_eq!(number(Val::Json(&f)), Ok(Val::Number(Cow::Borrowed("0.1"))));
        let i = json!(7);
        assert_eq!(number(Val::Json(&i)), Ok(Val::Int(7)));
    }

    #[test]
    fn non_numbers_are_refused() {
        for bad in [
            "", "abc", "1,000", "NaN", "inf", "0x10", "1.2.3", "--1", "1e", ".", "-",
        ] {
            assert!(number(text(bad)).is_err(), "{bad}");
        }
        let b = json!(true);
        assert!(number(Val::Json(&b))
            .unwrap_err()
            .contains("found a boolean"));
        assert!(number(Val::Time(0)).is_err());
    }

    #[test]
    fn integers_refuse_fractions() {
        assert_eq!(integer(text(" 42 ")), Ok(42));
        assert_eq!(integer(text("-7")), Ok(-7));
        assert_eq!(integer(text("42.000")), Ok(42));
        let f = json!(3.0);
        assert_eq!(integer(Val::Json(&f)), Ok(3));
        assert_eq!(integer(Val::Number(Cow::Borrowed("12.0"))), Ok(12));
        for bad in ["42.5", "1e3", "", "x", "99999999999999999999", "4 2"] {
            assert!(integer(text(bad)).is_err(), "{bad}");
        }
        let f = json!(2.5);
        assert!(integer(Val::Json(&f)).is_err());
        let big = json!(u64::MAX);
        assert!(integer(Val::Json(&big)).is_err());
        let o = json!({});
        assert!(integer(Val::Json(&o))
            .unwrap_err()
            .contains("found an object"));
        assert!(integer(Val::Bool(true)).is_err());
    }

    #[test]
    fn booleans_from_words_and_bits() {
        for (input, want) in [
            ("yes", true),
            (" TRUE ", true),
            ("Y", true),
            ("on", true),
            ("1", true),
            ("no", false),
            ("False", false),
            ("off", false),
            ("0", false),
            ("f", false),
        ] {
            assert_eq!(boolean(text(input)), Ok(want), "{input}");
        }
        let one = json!(1);
        assert_eq!(boolean(Val::Json(&one)), Ok(true));
        let b = json!(false);
        assert_eq!(boolean(Val::Json(&b)), Ok(false));
        for bad in ["maybe", "", "2", "yess"] {
            assert!(boolean(text(bad)).is_err(), "{bad}");
        }
        let two = json!(2);
        assert!(boolean(Val::Json(&two)).is_err());
        let a = json!([]);
        assert!(boolean(Val::Json(&a)).is_err());
    }
}
