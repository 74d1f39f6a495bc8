//! The value a field holds between reading the payload and building the Avro
//! value: borrowed from the payload (or the mapping's config) while no
//! normalizer has changed it, so an untouched field costs no allocation until
//! the Avro value itself is made.

use serde_json::Value as Json;
use std::borrow::Cow;

/// A field's value on its way through the normalizers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'a> {
    /// As read from the payload, untouched.
    Json(&'a Json),
    /// Text a normalizer produced.
    Text(Cow<'a, str>),
    /// A number as decimal text (`-12.50`, `1e3`), checked by `number`; kept
    /// as text so a decimal field gets every digit.
    Number(Cow<'a, str>),
    Int(i64),
    Bool(bool),
    /// An instant, in microseconds since the Unix epoch (UTC).
    Time(i64),
}

/// What a step yields, known when the mapping compiles, so a normalizer
/// whose output cannot fit its field is refused before any record is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Whatever the payload holds: checked per record.
    Any,
    Text,
    Number,
    Int,
    Bool,
    Time,
}

impl Kind {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Kind::Any => "any value",
            Kind::Text => "text",
            Kind::Number => "a number",
            Kind::Int => "an integer",
            Kind::Bool => "a boolean",
            Kind::Time => "a timestamp",
        }
    }
}

impl<'a> Val<'a> {
    /// The value as text, when it is a scalar: numbers and booleans in their
    /// JSON form, instants in RFC 3339. `Err` gives the value back.
    pub(crate) fn into_text(self) -> Result<Cow<'a, str>, Val<'a>> {
        Ok(match self {
            Val::Json(Json::String(s)) => Cow::Borrowed(s.as_str()),
            Val::Json(Json::Number(n)) => Cow::Owned(n.to_string()),
            Val::Json(Json::Bool(b)) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Val::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
            Val::Text(s) | Val::Number(s) => s,
            Val::Int(n) => Cow::Owned(n.to_string()),
            Val::Time(micros) => Cow::Owned(super::normalize::time::rfc3339(micros)),
            other @ Val::Json(_) => return Err(other),
        })
    }

    /// The text, if the value is text already (no conversion).
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Val::Json(Json::String(s)) => Some(s),
            Val::Text(s) => Some(s),
            _ => None,
        }
    }

    /// What kind of value this is, for error messages (`an object`).
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Val::Json(j) => crate::schema::json::kind(j),
            Val::Text(_) => "a string",
            Val::Number(_) | Val::Int(_) => "a number",
            Val::Bool(_) => "a boolean",
            Val::Time(_) => "a timestamp",
        }
    }

    /// The value quoted for an error message, cut short when long.
    pub(crate) fn quote(&self) -> String {
        match self {
            Val::Json(Json::String(s)) => quote(s),
            Val::Text(Cow::Borrowed(s)) => quote(s),
            Val::Text(Cow::Owned(s)) => quote(s),
            Val::Json(j @ (Json::Object(_) | Json::Array(_))) => {
                crate::schema::json::kind(j).to_owned()
            }
            other => match other.clone().into_text() {
                Ok(t) => t.into_owned(),
                Err(_) => other.describe().to_owned(),
            },
        }
    }
}

/// Absent, null, or blank text: what "first non-empty" skips.
pub(crate) fn is_blank(j: &Json) -> bool {
    match j {
        Json::Null => true,
        Json::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// `s` in double quotes for an error message, at most 64 characters of it.
pub(crate) fn quote(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}...", &s[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn blanks_are_null_and_whitespace() {
        assert!(is_blank(&json!(null)));
        assert!(is_blank(&json!("")));
        assert!(is_blank(&json!("  \t")));
        assert!(!is_blank(&json!(0)));
        assert!(!is_blank(&json!([])));
        assert!(!is_blank(&json!(" a ")));
    }

    #[test]
    fn scalars_become_text_and_structures_do_not() {
        let n = json!(12.5);
        assert_eq!(Val::Json(&n).into_text().unwrap(), "12.5");
        assert_eq!(Val::Int(-3).into_text().unwrap(), "-3");
        assert_eq!(Val::Bool(true).into_text().unwrap(), "true");
        let o = json!({"a": 1});
        assert!(Val::Json(&o).into_text().is_err());
        assert_eq!(Val::Json(&o).quote(), "an object");
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "x".repeat(100);
        let q = quote(&long);
        assert!(q.len() < 80 && q.ends_with("..."), "{q}");
        assert_eq!(quote("bob(at)x"), "\"bob(at)x\"");
    }
}
