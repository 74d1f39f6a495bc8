//! A decoded record's JSON values as the text PostgreSQL casts to each
//! column's type. The runtime decodes Avro to plain JSON (bytes as a
//! UTF-8 string or an array of byte values, decimals as strings, UUIDs as
//! strings, `timestamp-millis` as epoch milliseconds, `date` as days), so
//! the few types whose JSON form PostgreSQL cannot cast from text are
//! converted here; everything else is its JSON scalar as text.

use serde_json::Value as Json;

/// How a column's values are written, from its SQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `json`, `jsonb`: the value's JSON text, whatever its JSON type.
    Json,
    /// `text`, `varchar`, `char`: scalars as text, objects and arrays as JSON.
    Text,
    /// `bytea`: `\x` hex of the bytes.
    Bytea,
    /// `timestamp[tz]`: a number is epoch milliseconds.
    Timestamp,
    /// `date`: a number is days since the epoch.
    Date,
    /// A PostgreSQL array (`text[]`): a JSON array becomes an array literal.
    Array,
    /// Anything else (numbers, boolean, uuid, numeric...): scalars as text.
    Scalar,
}

impl Kind {
    /// The kind of a type as `format_type` names it.
    pub fn of(sql_type: &str) -> Self {
        let t = sql_type.trim().to_ascii_lowercase();
        if t.ends_with("[]") {
            Self::Array
        } else if t == "json" || t == "jsonb" {
            Self::Json
        } else if t == "text"
            || t.starts_with("character")
            || t.starts_with("varchar")
            || t.starts_with("char")
            || t == "bpchar"
            || t == "name"
            || t == "citext"
        {
            Self::Text
        } else if t == "bytea" {
            Self::Bytea
        } else if t.starts_with("timestamp") {
            Self::Timestamp
        } else if t == "date" {
            Self::Date
        } else {
            Self::Scalar
        }
    }
}

/// The SQL type a new table's column gets for a first value.
pub fn infer_sql_type(value: &Json) -> &'static str {
    match value {
        Json::Bool(_) => "boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "bigint",
        Json::Number(_) => "double precision",
        Json::Object(_) | Json::Array(_) => "jsonb",
        Json::String(_) | Json::Null => "text",
    }
}

/// `value` as the text to cast to a column of `kind` (`None`: SQL NULL).
/// The error says why the value does not fit (the caller names the column).
pub fn to_text(value: &Json, kind: Kind) -> Result<Option<String>, String> {
    if value.is_null() {
        return Ok(None);
    }
    if kind == Kind::Json {
        return Ok(Some(value.to_string()));
    }
    let text = match (value, kind) {
        (Json::String(s), Kind::Bytea) => hex(s.as_bytes()),
        (Json::Array(items), Kind::Bytea) => {
            let bytes = items
                .iter()
                .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect::<Option<Vec<u8>>>()
                .ok_or("an array that is not of byte values (0..=255)")?;
            hex(&bytes)
        }
        (Json::Number(n), Kind::Timestamp) => {
            let ms = n
                .as_i64()
                .ok_or("a number that is not whole milliseconds")?;
            chrono::DateTime::from_timestamp_millis(ms)
                .ok_or("epoch milliseconds out of range")?
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        }
        (Json::Number(n), Kind::Date) => {
            let days = n.as_i64().ok_or("a number that is not whole days")?;
            chrono::DateTime::from_timestamp(days.saturating_mul(86_400), 0)
                .ok_or("days since the epoch out of range")?
                .date_naive()
                .to_string()
        }
        (Json::Array(items), Kind::Array) => array_literal(items)?,
        (Json::Object(_) | Json::Array(_), Kind::Text) => value.to_string(),
        (Json::Object(_), _) => return Err("a JSON object".into()),
        (Json::Array(_), _) => return Err("a JSON array".into()),
        (Json::String(s), _) => s.clone(),
        (Json::Bool(b), _) => b.to_string(),
        (Json::Number(n), _) => n.to_string(),
        (Json::Null, _) => return Ok(None),
    };
    Ok(Some(text))
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("\\x");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// `{"a","b",NULL}`: every element quoted, so PostgreSQL casts each one.
fn array_literal(items: &[Json]) -> Result<String, String> {
    let elements = items
        .iter()
        .map(|v| match v {
            Json::Null => Ok("NULL".to_owned()),
            Json::Array(_) => Err("a nested JSON array".to_owned()),
            other => {
                let text = match other {
                    Json::String(s) => s.clone(),
                    o => o.to_string(),
                };
                Ok(format!(
                    "\"{}\"",
                    text.replace('\\', "\\\\").replace('"', "\\\"")
                ))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(format!("{{{}}}", elements.join(",")))
}

/// A JSON value's type, for messages.
pub fn json_type(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// The pointer to a top-level field (`~` and `/` escaped).
pub fn field_pointer(name: &str) -> String {
    format!("/{}", name.replace('~', "~0").replace('/', "~1"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(v: Json, ty: &str) -> Result<Option<String>, String> {
        to_text(&v, Kind::of(ty))
    }

    #[test]
    fn avro_shaped_json_becomes_text_postgres_casts() {
        let some = |s: &str| Ok(Some(s.to_owned()));
        assert_eq!(text(json!("Ada"), "text"), some("Ada"));
        assert_eq!(text(json!(42), "bigint"), some("42"));
        assert_eq!(text(json!(1.5), "double precision"), some("1.5"));
        assert_eq!(text(json!(true), "boolean"), some("true"));
        assert_eq!(text(json!("12.30"), "numeric(10,2)"), some("12.30"));
        assert_eq!(text(json!("hi"), "bytea"), some("\\x6869"));
        assert_eq!(text(json!([0, 255]), "bytea"), some("\\x00ff"));
        assert_eq!(
            text(json!(1_700_000_000_123_i64), "timestamp with time zone"),
            some("2023-11-14T22:13:20.123Z")
        );
        assert_eq!(text(json!(19_000), "date"), some("2022-01-08"));
        assert_eq!(
            text(json!("6f1c0d1e-0000-4000-8000-000000000000"), "uuid"),
            some("6f1c0d1e-0000-4000-8000-000000000000")
        );
        assert_eq!(text(json!({"a": [1]}), "jsonb"), some("{\"a\":[1]}"));
        assert_eq!(text(json!("s"), "jsonb"), some("\"s\""));
        assert_eq!(text(json!({"a": 1}), "text"), some("{\"a\":1}"));
        assert_eq!(
            text(json!(["a\"b", null, 1]), "text[]"),
            some("{\"a\\\"b\",NULL,\"1\"}")
        );
        assert_eq!(text(json!(null), "bigint"), Ok(None));
        assert!(text(json!({"a": 1}), "bigint").is_err());
        assert!(text(json!([300]), "bytea").is_err());
    }

    #[test]
    fn new_columns_get_types_from_the_first_value() {
        assert_eq!(infer_sql_type(&json!("x")), "text");
        assert_eq!(infer_sql_type(&json!(1)), "bigint");
        assert_eq!(infer_sql_type(&json!(1.5)), "double precision");
        assert_eq!(infer_sql_type(&json!(false)), "boolean");
        assert_eq!(infer_sql_type(&json!({"a": 1})), "jsonb");
        assert_eq!(field_pointer("a/b~c"), "/a~1b~0c");
    }
}
