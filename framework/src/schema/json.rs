//! JSON to Avro values and back, guided by the schema.
//!
//! Input JSON is the plain shape people and APIs write (`{"email": "a@b"}`,
//! not Avro's `{"email": {"string": "a@b"}}`, which is accepted too). The
//! rules are strict: a missing field without a default, a field the schema
//! does not have, an integer out of range or a string where a number belongs
//! is refused with the path of the offending field. Logical types take their
//! natural JSON form: `uuid` a UUID string, `timestamp-millis` epoch
//! milliseconds or an RFC 3339 string, `decimal` a decimal string such as
//! `"12.50"` (never a float, which would round money).

use apache_avro::schema::{
    DecimalSchema, InnerDecimalSchema, Name, RecordSchema, ResolvedSchema, UnionSchema,
};
use apache_avro::types::Value;
use apache_avro::{Decimal, Schema};
use serde_json::Value as Json;
use std::collections::HashMap;

/// A JSON value that does not fit the schema; `path` is a JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{path}`: {reason}")]
pub struct JsonError {
    pub path: String,
    pub reason: String,
}

type Names<'s> = HashMap<Name, &'s Schema>;

fn names(schema: &Schema) -> Result<Names<'_>, JsonError> {
    let resolved = ResolvedSchema::try_from(schema).map_err(|e| JsonError {
        path: String::new(),
        reason: format!("schema has unresolvable names: {e}"),
    })?;
    Ok(resolved.get_names().clone())
}

fn err(path: &str, reason: impl Into<String>) -> JsonError {
    JsonError {
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
        reason: reason.into(),
    }
}

/// Converts `json` to an Avro value of `schema`.
pub fn from_json(schema: &Schema, json: &Json) -> Result<Value, JsonError> {
    let names = names(schema)?;
    convert(schema, json, &names, "")
}

/// What kind of JSON value `j` is, for error messages (`an object`, `null`).
pub fn kind(j: &Json) -> &'static str {
    match j {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn convert(schema: &Schema, j: &Json, names: &Names<'_>, path: &str) -> Result<Value, JsonError> {
    let expected = |what: &str| err(path, format!("expected {what}, found {}", kind(j)));
    let int = || j.as_i64().ok_or_else(|| expected("an integer"));
    Ok(match schema {
        Schema::Null => match j {
            Json::Null => Value::Null,
            _ => return Err(expected("null")),
        },
        Schema::Boolean => Value::Boolean(j.as_bool().ok_or_else(|| expected("a boolean"))?),
        Schema::Int => Value::Int(
            i32::try_from(int()?).map_err(|_| err(path, format!("{j} does not fit an int")))?,
        ),
        Schema::Long => Value::Long(int()?),
        #[allow(clippy::cast_possible_truncation)]
        Schema::Float => Value::Float(j.as_f64().ok_or_else(|| expected("a number"))? as f32),
        Schema::Double => Value::Double(j.as_f64().ok_or_else(|| expected("a number"))?),
        Schema::String => Value::String(j.as_str().ok_or_else(|| expected("a string"))?.into()),
        Schema::Bytes => Value::Bytes(j.as_str().ok_or_else(|| expected("a string"))?.into()),
        Schema::Fixed(f) => {
            let s = j.as_str().ok_or_else(|| expected("a string"))?;
            if s.len() != f.size {
                return Err(err(
                    path,
                    format!("expected {} bytes, found {}", f.size, s.len()),
                ));
            }
            Value::Fixed(f.size, s.as_bytes().to_vec())
        }
        Schema::Enum(e) => {
            let s = j.as_str().ok_or_else(|| expected("a string"))?;
            let i = e
                .symbols
                .iter()
                .position(|x| x == s)
                .ok_or_else(|| err(path, format!("`{s}` is not one of {:?}", e.symbols)))?;
            Value::Enum(u32::try_from(i).unwrap_or(u32::MAX), s.into())
        }
        Schema::Array(a) => {
            let items = j.as_array().ok_or_else(|| expected("an array"))?;
            Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| convert(&a.items, x, names, &format!("{path}/{i}")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Schema::Map(m) => {
            let obj = j.as_object().ok_or_else(|| expected("an object"))?;
            Value::Map(
                obj.iter()
                    .map(|(k, x)| {
                        convert(&m.types, x, names, &format!("{path}/{}", escape(k)))
                            .map(|v| (k.clone(), v))
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        Schema::Union(u) => union(u, j, names, path)?,
        Schema::Record(r) => record(r, j, names, path)?,
        Schema::Decimal(d) => decimal(d, j, path)?,
        Schema::Uuid(_) => {
            let s = j.as_str().ok_or_else(|| expected("a UUID string"))?;
            Value::Uuid(
                uuid::Uuid::parse_str(s)
                    .map_err(|e| err(path, format!("`{s}` is not a UUID: {e}")))?,
            )
        }
        Schema::Date => {
            Value::Date(i32::try_from(int()?).map_err(|_| err(path, "date out of range"))?)
        }
        Schema::TimeMillis => {
            Value::TimeMillis(i32::try_from(int()?).map_err(|_| err(path, "time out of range"))?)
        }
        Schema::TimeMicros => Value::TimeMicros(int()?),
        Schema::TimestampMillis => Value::TimestampMillis(timestamp(j, path, 1_000)?),
        Schema::TimestampMicros => Value::TimestampMicros(timestamp(j, path, 1_000_000)?),
        Schema::TimestampNanos => Value::TimestampNanos(int()?),
        Schema::LocalTimestampMillis => Value::LocalTimestampMillis(int()?),
        Schema::LocalTimestampMicros => Value::LocalTimestampMicros(int()?),
        Schema::LocalTimestampNanos => Value::LocalTimestampNanos(int()?),
        Schema::Ref { name } => {
            let target = names
                .get(name)
                .ok_or_else(|| err(path, format!("unknown type `{}`", name.fullname(None))))?;
            convert(target, j, names, path)?
        }
        Schema::BigDecimal | Schema::Duration(_) => {
            return Err(err(path, "this logical type has no JSON form in Ferry"))
        }
    })
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn union(u: &UnionSchema, j: &Json, names: &Names<'_>, path: &str) -> Result<Value, JsonError> {
    let branches = u.variants();
    let tagged =
        |i: usize, v: Value| Value::Union(u32::try_from(i).unwrap_or(u32::MAX), Box::new(v));
    if j.is_null() {
        return branches
            .iter()
            .position(|b| matches!(b, Schema::Null))
            .map(|i| tagged(i, Value::Null))
            .ok_or_else(|| err(path, "null is not allowed here"));
    }
    // Avro's own JSON encoding: {"<branch type>": value}.
    if let Some((tag, inner)) = j
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
    {
        if let Some(i) = branches
            .iter()
            .position(|b| branch_name(b).as_deref() == Some(tag.as_str()))
        {
            if let Ok(v) = convert(&branches[i], inner, names, path) {
                return Ok(tagged(i, v));
            }
        }
    }
    let mut reasons = Vec::new();
    for (i, b) in branches
        .iter()
        .enumerate()
        .filter(|(_, b)| !matches!(b, Schema::Null))
    {
        match convert(b, j, names, path) {
            Ok(v) => return Ok(tagged(i, v)),
            Err(e) => reasons.push(e.reason),
        }
    }
    Err(err(
        path,
        format!("fits no branch of the union: {}", reasons.join("; ")),
    ))
}

fn branch_name(s: &Schema) -> Option<String> {
    Some(match s {
        Schema::Record(_) | Schema::Enum(_) | Schema::Fixed(_) => s.name()?.fullname(None),
        Schema::Ref { name } => name.fullname(None),
        Schema::Boolean => "boolean".into(),
        Schema::Int => "int".into(),
        Schema::Long => "long".into(),
        Schema::Float => "float".into(),
        Schema::Double => "double".into(),
        Schema::Bytes => "bytes".into(),
        Schema::String | Schema::Uuid(_) => "string".into(),
        Schema::Array(_) => "array".into(),
        Schema::Map(_) => "map".into(),
        _ => return None,
    })
}

fn record(r: &RecordSchema, j: &Json, names: &Names<'_>, path: &str) -> Result<Value, JsonError> {
    let obj = j.as_object().ok_or_else(|| {
        err(
            path,
            format!(
                "expected an object for record `{}`, found {}",
                r.name.fullname(None),
                kind(j)
            ),
        )
    })?;
    if let Some(extra) = obj.keys().find(|k| !r.fields.iter().any(|f| &f.name == *k)) {
        return Err(err(
            &format!("{path}/{}", escape(extra)),
            "not in the schema",
        ));
    }
    let mut fields = Vec::with_capacity(r.fields.len());
    for f in &r.fields {
        let fpath = format!("{path}/{}", escape(&f.name));
        let value = match (obj.get(&f.name), &f.default) {
            (Some(v), _) => convert(&f.schema, v, names, &fpath)?,
            (None, Some(default)) => match &f.schema {
                // A union's default is a value of its first branch.
                Schema::Union(u) => {
                    let first = u
                        .variants()
                        .first()
                        .ok_or_else(|| err(&fpath, "empty union"))?;
                    Value::Union(0, Box::new(convert(first, default, names, &fpath)?))
                }
                s => convert(s, default, names, &fpath)?,
            },
            (None, None) => return Err(err(&fpath, "missing, and the schema gives no default")),
        };
        fields.push((f.name.clone(), value));
    }
    Ok(Value::Record(fields))
}

fn timestamp(j: &Json, path: &str, per_second: i64) -> Result<i64, JsonError> {
    if let Some(n) = j.as_i64() {
        return Ok(n);
    }
    let s = j.as_str().ok_or_else(|| {
        err(
            path,
            format!(
                "expected epoch time or an RFC 3339 string, found {}",
                kind(j)
            ),
        )
    })?;
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| err(path, format!("`{s}` is not an RFC 3339 time: {e}")))?;
    let since = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| err(path, format!("`{s}` is before 1970")))?;
    let whole = i64::try_from(since.as_secs()).map_err(|_| err(path, "out of range"))?;
    let frac = i64::from(since.subsec_nanos()) / (1_000_000_000 / per_second);
    Ok(whole * per_second + frac)
}

fn decimal(d: &DecimalSchema, j: &Json, path: &str) -> Result<Value, JsonError> {
    let s = j.as_str().ok_or_else(|| {
        err(
            path,
            format!(
                "expected a decimal string such as \"12.50\", found {}",
                kind(j)
            ),
        )
    })?;
    let bad = || err(path, format!("`{s}` is not a decimal number"));
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole
            .chars()
            .chain(frac.chars())
            .all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    if frac.len() > d.scale {
        return Err(err(
            path,
            format!("`{s}` has more than {} decimal places", d.scale),
        ));
    }
    let unscaled_digits = format!("{whole}{frac:0<width$}", width = d.scale);
    let significant = unscaled_digits.trim_start_matches('0').len();
    if significant > d.precision {
        return Err(err(
            path,
            format!("`{s}` has more than {} digits", d.precision),
        ));
    }
    let mut n: i128 = unscaled_digits
        .parse()
        .map_err(|_| err(path, format!("`{s}` is too large")))?;
    if negative {
        n = -n;
    }
    let bytes = n.to_be_bytes();
    // Shortest two's complement form.
    let mut start = 0;
    while start < 15
        && ((bytes[start] == 0 && bytes[start + 1] & 0x80 == 0)
            || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    let mut out = bytes[start..].to_vec();
    if let InnerDecimalSchema::Fixed(f) = &d.inner {
        if out.len() > f.size {
            return Err(err(path, format!("`{s}` does not fit {} bytes", f.size)));
        }
        let fill = if negative { 0xff } else { 0 };
        let mut padded = vec![fill; f.size - out.len()];
        padded.extend_from_slice(&out);
        out = padded;
    }
    Ok(Value::Decimal(Decimal::from(out)))
}

/// Converts an Avro value of `schema` to plain JSON: unions unwrapped, bytes
/// as a string when they are UTF-8 (else an array of numbers), decimals as
/// decimal strings, UUIDs as strings, timestamps as epoch numbers.
pub fn to_json(schema: &Schema, value: &Value) -> Json {
    match names(schema) {
        Ok(names) => out(schema, value, &names),
        Err(_) => out(schema, value, &HashMap::new()),
    }
}

fn out(schema: &Schema, value: &Value, names: &Names<'_>) -> Json {
    let schema = match schema {
        Schema::Ref { name } => names.get(name).copied().unwrap_or(schema),
        s => s,
    };
    match (value, schema) {
        (Value::Null, _) => Json::Null,
        (Value::Boolean(b), _) => Json::Bool(*b),
        (Value::Int(n) | Value::Date(n) | Value::TimeMillis(n), _) => Json::from(*n),
        (
            Value::Long(n)
            | Value::TimeMicros(n)
            | Value::TimestampMillis(n)
            | Value::TimestampMicros(n)
            | Value::TimestampNanos(n)
            | Value::LocalTimestampMillis(n)
            | Value::LocalTimestampMicros(n)
            | Value::LocalTimestampNanos(n),
            _,
        ) => Json::from(*n),
        (Value::Float(f), _) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(Json::Null, Json::Number)
        }
        (Value::Double(f), _) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        (Value::String(s) | Value::Enum(_, s), _) => Json::String(s.clone()),
        (Value::Bytes(b) | Value::Fixed(_, b), _) => match std::str::from_utf8(b) {
            Ok(s) => Json::String(s.to_owned()),
            Err(_) => Json::Array(b.iter().map(|x| Json::from(*x)).collect()),
        },
        (Value::Uuid(u), _) => Json::String(u.hyphenated().to_string()),
        (Value::Decimal(d), Schema::Decimal(ds)) => decimal_string(d, ds.scale),
        (Value::Decimal(d), _) => decimal_string(d, 0),
        (Value::Union(i, v), Schema::Union(u)) => match u.variants().get(*i as usize) {
            Some(branch) => out(branch, v, names),
            None => out(&Schema::Null, v, names),
        },
        (Value::Union(_, v), s) => out(s, v, names),
        (Value::Array(items), Schema::Array(a)) => {
            Json::Array(items.iter().map(|x| out(&a.items, x, names)).collect())
        }
        (Value::Map(m), Schema::Map(ms)) => Json::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), out(&ms.types, v, names)))
                .collect(),
        ),
        (Value::Record(fields), Schema::Record(r)) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| {
                    let fs = r
                        .fields
                        .iter()
                        .find(|f| &f.name == k)
                        .map_or(&Schema::Null, |f| &f.schema);
                    (k.clone(), out(fs, v, names))
                })
                .collect(),
        ),
        // A value that does not match its schema cannot come out of the
        // decoder; fall back to apache-avro's own conversion.
        (v, _) => Json::try_from(v.clone()).unwrap_or(Json::Null),
    }
}

fn decimal_string(d: &Decimal, scale: usize) -> Json {
    let Ok(bytes) = Vec::<u8>::try_from(d) else {
        return Json::Null;
    };
    if bytes.len() > 16 {
        return Json::String(format!("decimal of {} bytes", bytes.len()));
    }
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut buf = if negative { [0xff; 16] } else { [0; 16] };
    buf[16 - bytes.len()..].copy_from_slice(&bytes);
    let n = i128::from_be_bytes(buf);
    let digits = format!("{:0>width$}", n.unsigned_abs(), width = scale + 1);
    let (whole, frac) = digits.split_at(digits.len() - scale);
    let sign = if n < 0 { "-" } else { "" };
    Json::String(if scale == 0 {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{frac}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn contact() -> Schema {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/contact.avsc");
        Schema::parse_str(&std::fs::read_to_string(path).expect("read")).expect("parses")
    }

    #[test]
    fn plain_json_round_trips_through_the_contact_schema() {
        let s = contact();
        let input = json!({
            "id": "c-1", "name": "Ada", "email": "ada@example.com", "source": "crm",
            "updated_at": "2026-11-25T10:00:00.250Z", "lifetime_value": "-1234.50",
            "raw": "{\"id\":\"c-1\"}"
        });
        let v = from_json(&s, &input).expect("converts");
        assert!(v.validate(&s), "{v:?}");
        let back = to_json(&s, &v);
        assert_eq!(back["email"], "ada@example.com");
        assert_eq!(back["phone"], Json::Null, "default applied");
        assert_eq!(back["updated_at"], 1_795_600_800_250_i64);
        assert_eq!(back["lifetime_value"], "-1234.50");
        assert_eq!(back["raw"], "{\"id\":\"c-1\"}");
    }

    #[test]
    fn refusals_name_the_field_and_never_coerce() {
        let s = contact();
        let e = from_json(
            &s,
            &json!({"id": "c", "source": "x", "raw": "", "email": 42}),
        )
        .expect_err("number is not a string");
        assert_eq!(e.path, "/email");
        let e = from_json(&s, &json!({"id": "c", "source": "x", "raw": "", "shoe": 1}))
            .expect_err("unknown field");
        assert_eq!(e.path, "/shoe");
        let e = from_json(&s, &json!({"id": "c", "raw": ""})).expect_err("missing");
        assert_eq!(e.path, "/source");
        let e = from_json(
            &s,
            &json!({"id": "c", "source": "x", "raw": "", "lifetime_value": "1.234"}),
        )
        .expect_err("too many decimals");
        assert!(e.reason.contains("decimal places"), "{e}");
    }

    #[test]
    fn avro_json_union_form_is_accepted() {
        let s = contact();
        let v = from_json(
            &s,
            &json!({"id": "c", "source": "x", "raw": "", "email": {"string": "a@b"}}),
        )
        .expect("converts");
        assert_eq!(to_json(&s, &v)["email"], "a@b");
    }

    #[test]
    fn decimals_keep_every_digit() {
        let s = Schema::parse_str(
            r#"{"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 2}"#,
        )
        .expect("parses");
        for text in [
            "0.00",
            "0.01",
            "-0.01",
            "127.99",
            "-128.00",
            "123456789012345678.90",
        ] {
            let v = from_json(&s, &json!(text)).expect(text);
            assert_eq!(to_json(&s, &v), json!(text));
        }
    }
}
