//! One conversion from a field's value to the Avro value its type asks for.
//!
//! Conversion rules, by Avro type (a `Val` is what the payload and the
//! normalizers produced):
//! - `string`: text; numbers and booleans as their JSON text; an instant as
//!   RFC 3339 UTC. `bytes`, `fixed`, `enum` (a symbol), `uuid`: text only.
//! - `int`, `long`: whole numbers (`3.0` too); an instant as epoch millis.
//!   Text is refused: `normalize: integer` parses it, on purpose.
//! - `float`, `double`: numbers. `boolean`: booleans (`normalize: boolean`
//!   parses words). `decimal`: a number or decimal text, every digit kept
//!   (through `schema::json`, the one place Ferry encodes decimals).
//! - `timestamp-*` and `date`: an instant; a whole number in the field's own
//!   unit (as `schema::json` reads it); ISO-8601 text.
//! - records, arrays and maps: JSON objects and arrays, field by field.
//! - unions: null to the null branch; else the first branch the value fits
//!   without coercion, then the first it fits with.

use super::error::{MappingError, Rule};
use super::normalize::{number, time};
use super::shape::{index, Shape, ShapeId, Shapes, UnionShape};
use super::value::Val;
use apache_avro::types::Value;
use serde_json::Value as Json;

impl Shapes {
    /// The Avro value of type `id` for `v`. Errors carry the field path and
    /// source below `id` (for nested records, arrays and maps).
    pub(crate) fn convert(&self, id: ShapeId, v: Val<'_>) -> Result<Value, MappingError> {
        self.convert_as(id, v, Coerce::Yes)
    }

    fn convert_as(&self, id: ShapeId, v: Val<'_>, coerce: Coerce) -> Result<Value, MappingError> {
        let shape = self.get(id);
        let mismatch = |v: &Val<'_>, hint: &str| {
            MappingError::new(
                Rule::Type,
                format!("expected {}, found {}{}", self.describe(id), found(v), hint),
            )
        };
        Ok(match shape {
            Shape::Null => match v {
                Val::Json(Json::Null) => Value::Null,
                _ => return Err(mismatch(&v, "")),
            },
            Shape::Boolean => match v {
                Val::Bool(b) | Val::Json(&Json::Bool(b)) => Value::Boolean(b),
                _ => return Err(mismatch(&v, hint(&v, "boolean"))),
            },
            Shape::Int => {
                let n = whole(&v).ok_or_else(|| mismatch(&v, hint(&v, "integer")))?;
                Value::Int(i32::try_from(n).map_err(|_| mismatch(&v, " (out of range for int)"))?)
            }
            Shape::Long => match v {
                Val::Time(us) => Value::Long(us.div_euclid(1_000)),
                _ => Value::Long(whole(&v).ok_or_else(|| mismatch(&v, hint(&v, "integer")))?),
            },
            Shape::Float | Shape::Double => {
                let f = match &v {
                    Val::Int(i) => Some(*i as f64),
                    Val::Number(t) => t.parse().ok(),
                    Val::Json(Json::Number(n)) => n.as_f64(),
                    _ => None,
                }
                .ok_or_else(|| mismatch(&v, hint(&v, "number")))?;
                if matches!(shape, Shape::Float) {
                    #[allow(clippy::cast_possible_truncation)]
                    Value::Float(f as f32)
                } else {
                    Value::Double(f)
                }
            }
            Shape::String => match v {
                Val::Json(Json::String(s)) => Value::String(s.clone()),
                Val::Text(s) => Value::String(s.into_owned()),
                Val::Time(_) => Value::String(v.into_text().unwrap_or_default().into_owned()),
                Val::Int(_)
                | Val::Number(_)
                | Val::Bool(_)
                | Val::Json(Json::Number(_) | Json::Bool(_))
                    if coerce == Coerce::Yes =>
                {
                    Value::String(v.into_text().unwrap_or_default().into_owned())
                }
                _ => return Err(mismatch(&v, "")),
            },
            Shape::Bytes => match v.as_str() {
                Some(s) => Value::Bytes(s.as_bytes().to_vec()),
                None => return Err(mismatch(&v, "")),
            },
            Shape::Fixed(size) => match v.as_str() {
                Some(s) if s.len() == *size => Value::Fixed(*size, s.as_bytes().to_vec()),
                Some(s) => {
                    return Err(MappingError::new(
                        Rule::Type,
                        format!("expected {size} bytes, found {}", s.len()),
                    ))
                }
                None => return Err(mismatch(&v, "")),
            },
            Shape::Enum(symbols) => {
                let s = v.as_str().ok_or_else(|| mismatch(&v, ""))?;
                let i = symbols.iter().position(|x| x == s).ok_or_else(|| {
                    MappingError::new(
                        Rule::Type,
                        format!(
                            "{} is not one of [{}] (`map` translates values)",
                            super::value::quote(s),
                            symbols.join(", ")
                        ),
                    )
                })?;
                Value::Enum(index(i), s.to_owned())
            }
            Shape::Uuid => {
                let s = v.as_str().ok_or_else(|| mismatch(&v, ""))?;
                Value::Uuid(uuid::Uuid::parse_str(s.trim()).map_err(|_| {
                    MappingError::new(
                        Rule::Type,
                        format!("not a UUID: {}", super::value::quote(s)),
                    )
                })?)
            }
            Shape::Decimal(schema) => {
                let text = match v {
                    Val::Json(Json::Number(_) | Json::String(_))
                    | Val::Text(_)
                    | Val::Number(_)
                    | Val::Int(_) => v.into_text().unwrap_or_default(),
                    _ => return Err(mismatch(&v, "")),
                };
                let json = Json::String(text.trim().to_owned());
                crate::schema::json::from_json(schema, &json)
                    .map_err(|e| MappingError::new(Rule::Type, e.reason))?
            }
            Shape::Date => {
                let days = match v {
                    Val::Int(_) | Val::Json(Json::Number(_)) => {
                        whole(&v).ok_or_else(|| mismatch(&v, ""))?
                    }
                    _ => instant(&v, id, self)?.div_euclid(86_400_000_000),
                };
                Value::Date(i32::try_from(days).map_err(|_| mismatch(&v, " (out of range)"))?)
            }
            Shape::TimeMillis => {
                let n = whole(&v).ok_or_else(|| mismatch(&v, ""))?;
                Value::TimeMillis(i32::try_from(n).map_err(|_| mismatch(&v, " (out of range)"))?)
            }
            Shape::TimeMicros => Value::TimeMicros(whole(&v).ok_or_else(|| mismatch(&v, ""))?),
            Shape::TimestampMillis | Shape::LocalTimestampMillis => {
                let ms = match whole_number(&v) {
                    Some(n) => n,
                    None => instant(&v, id, self)?.div_euclid(1_000),
                };
                if matches!(shape, Shape::TimestampMillis) {
                    Value::TimestampMillis(ms)
                } else {
                    Value::LocalTimestampMillis(ms)
                }
            }
            Shape::TimestampMicros | Shape::LocalTimestampMicros => {
                let us = match whole_number(&v) {
                    Some(n) => n,
                    None => instant(&v, id, self)?,
                };
                if matches!(shape, Shape::TimestampMicros) {
                    Value::TimestampMicros(us)
                } else {
                    Value::LocalTimestampMicros(us)
                }
            }
            Shape::TimestampNanos | Shape::LocalTimestampNanos => {
                let ns = match whole_number(&v) {
                    Some(n) => n,
                    None => instant(&v, id, self)?
                        .checked_mul(1_000)
                        .ok_or_else(|| mismatch(&v, " (out of range)"))?,
                };
                if matches!(shape, Shape::TimestampNanos) {
                    Value::TimestampNanos(ns)
                } else {
                    Value::LocalTimestampNanos(ns)
                }
            }
            Shape::Array(item) => match v {
                Val::Json(Json::Array(items)) => Value::Array(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, x)| self.convert(*item, Val::Json(x)).map_err(|e| e.in_item(&i)))
                        .collect::<Result<_, _>>()?,
                ),
                _ => return Err(mismatch(&v, "")),
            },
            Shape::Map(values) => match v {
                Val::Json(Json::Object(entries)) => Value::Map(
                    entries
                        .iter()
                        .map(|(k, x)| {
                            self.convert(*values, Val::Json(x))
                                .map(|v| (k.clone(), v))
                                .map_err(|e| e.in_item(&k))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                _ => return Err(mismatch(&v, "")),
            },
            Shape::Record(r) => match v {
                Val::Json(Json::Object(obj)) => {
                    let mut out = Vec::with_capacity(r.fields.len());
                    for f in &r.fields {
                        let at = || format!("/{}", f.name.replace('~', "~0").replace('/', "~1"));
                        let value = match obj.get(&f.name) {
                            Some(x) => self
                                .convert(f.shape, Val::Json(x))
                                .map_err(|e| e.read_at(&at()).in_field(&f.name))?,
                            None => match (&f.default, self.null_value(f.shape)) {
                                (Some(d), _) => d.clone(),
                                (None, Some(null)) => null,
                                (None, None) => {
                                    return Err(MappingError::new(
                                        Rule::Required,
                                        "missing, and the schema gives no default",
                                    )
                                    .read_at(&at())
                                    .in_field(&f.name))
                                }
                            },
                        };
                        out.push((f.name.clone(), value));
                    }
                    Value::Record(out)
                }
                _ => return Err(mismatch(&v, "")),
            },
            Shape::Union(u) => return self.union(u, v),
            Shape::Unsupported(what) => {
                return Err(MappingError::new(
                    Rule::Type,
                    format!("{what} fields cannot be mapped from JSON"),
                ))
            }
        })
    }

    fn union(&self, u: &UnionShape, v: Val<'_>) -> Result<Value, MappingError> {
        if matches!(v, Val::Json(Json::Null)) {
            return u
                .null
                .map(|i| Value::Union(i, Box::new(Value::Null)))
                .ok_or_else(|| MappingError::new(Rule::Type, "null is not allowed here"));
        }
        let mut branches = u
            .variants
            .iter()
            .enumerate()
            .filter(|&(i, _)| u.null != Some(index(i)));
        // The common nullable field: one branch, no search.
        if let (Some((i, &only)), None) = (branches.next(), branches.clone().next()) {
            return self
                .convert(only, v)
                .map(|x| Value::Union(index(i), Box::new(x)));
        }
        let branches = u
            .variants
            .iter()
            .enumerate()
            .filter(|&(i, _)| u.null != Some(index(i)));
        let mut first_error = None;
        for coerce in [Coerce::No, Coerce::Yes] {
            for (i, &b) in branches.clone() {
                match self.convert_as(b, v.clone(), coerce) {
                    Ok(x) => return Ok(Value::Union(index(i), Box::new(x))),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        Err(first_error.unwrap_or_else(|| MappingError::new(Rule::Type, "the union has no branch")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coerce {
    /// Only values of the branch's own kind (a union's first pass).
    No,
    /// Numbers and booleans may become text.
    Yes,
}

/// The value and its kind, for a mismatch message: `a string "abc"`.
fn found(v: &Val<'_>) -> String {
    match v {
        Val::Json(Json::Object(_) | Json::Array(_) | Json::Null) => v.describe().to_owned(),
        _ => format!("{} {}", v.describe(), v.quote()),
    }
}

/// A hint for text where a typed value belongs: the normalizer that parses it.
fn hint(v: &Val<'_>, normalizer: &'static str) -> &'static str {
    if v.as_str().is_none() {
        return "";
    }
    match normalizer {
        "integer" => " (`normalize: integer` parses text)",
        "number" => " (`normalize: number` parses text)",
        "boolean" => " (`normalize: boolean` parses text)",
        _ => "",
    }
}

/// A whole number, from an integer or a number with no fraction; never text.
fn whole(v: &Val<'_>) -> Option<i64> {
    match v {
        Val::Int(i) => Some(*i),
        Val::Number(t) => {
            number::integral(t).or_else(|| t.parse::<f64>().ok().and_then(integral_float))
        }
        Val::Json(Json::Number(n)) => n.as_i64().or_else(|| n.as_f64().and_then(integral_float)),
        _ => None,
    }
}

/// A whole number as such (not an instant, not text).
fn whole_number(v: &Val<'_>) -> Option<i64> {
    match v {
        Val::Int(_) | Val::Number(_) | Val::Json(Json::Number(_)) => whole(v),
        _ => None,
    }
}

fn integral_float(f: f64) -> Option<i64> {
    #[allow(clippy::cast_possible_truncation)]
    (f.fract() == 0.0 && f.abs() < 9.2e18).then_some(f as i64)
}

/// The instant `v` names, for a timestamp field: ISO-8601 text or an instant.
fn instant(v: &Val<'_>, id: ShapeId, shapes: &Shapes) -> Result<i64, MappingError> {
    match v {
        Val::Time(us) => Ok(*us),
        _ => match v.as_str() {
            Some(s) => time::iso8601(s.trim()).map_err(|e| {
                MappingError::new(
                    Rule::Type,
                    format!("{e} (`normalize: timestamp` also reads epoch numbers)"),
                )
            }),
            None => Err(MappingError::new(
                Rule::Type,
                format!("expected {}, found {}", shapes.describe(id), found(v)),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::Schema;
    use serde_json::json;
    use std::borrow::Cow;

    fn shapes(schema: &str) -> (Shapes, ShapeId) {
        Shapes::build(&Schema::parse_str(schema).unwrap()).unwrap()
    }

    fn convert(schema: &str, j: Json) -> Result<Value, MappingError> {
        let (s, root) = shapes(schema);
        s.convert(root, Val::Json(&j))
    }

    #[test]
    fn scalars_convert_by_type() {
        assert_eq!(convert(r#""long""#, json!(3.0)), Ok(Value::Long(3)));
        assert_eq!(convert(r#""int""#, json!(7)), Ok(Value::Int(7)));
        assert!(convert(r#""int""#, json!(1_i64 << 40)).is_err());
        assert_eq!(convert(r#""double""#, json!(2)), Ok(Value::Double(2.0)));
        assert_eq!(
            convert(r#""string""#, json!(42)),
            Ok(Value::String("42".into()))
        );
        assert_eq!(
            convert(r#""bytes""#, json!("ab")),
            Ok(Value::Bytes(b"ab".to_vec()))
        );
        let e = convert(r#""long""#, json!("42")).unwrap_err();
        assert!(e.reason.contains("`normalize: integer`"), "{e}");
        assert!(e.reason.contains("a string \"42\""), "{e}");
        let e = convert(r#""string""#, json!({"a": 1})).unwrap_err();
        assert_eq!(e.reason, "expected string, found an object");
    }

    #[test]
    fn logical_types_convert_without_rounding() {
        let dec = r#"{"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2}"#;
        let (s, root) = shapes(dec);
        for (input, text) in [
            (json!("1234.50"), "1234.50"),
            (json!(0.1), "0.10"),
            (json!(12), "12.00"),
        ] {
            let v = s.convert(root, Val::Json(&input)).unwrap();
            let back = crate::schema::json::to_json(&Schema::parse_str(dec).unwrap(), &v);
            assert_eq!(back, json!(text));
        }
        assert!(
            convert(dec, json!("1.234")).is_err(),
            "more decimals than the scale"
        );
        let ts = r#"{"type": "long", "logicalType": "timestamp-millis"}"#;
        assert_eq!(convert(ts, json!(5)), Ok(Value::TimestampMillis(5)));
        assert_eq!(
            convert(ts, json!("1970-01-01T00:00:01.5Z")),
            Ok(Value::TimestampMillis(1_500))
        );
        let (s, root) = shapes(ts);
        assert_eq!(
            s.convert(root, Val::Time(2_500)),
            Ok(Value::TimestampMillis(2))
        );
        assert_eq!(
            s.convert(root, Val::Time(-1)),
            Ok(Value::TimestampMillis(-1)),
            "floor"
        );
        let e = convert(ts, json!("1714557600")).unwrap_err();
        assert!(e.reason.contains("normalize: timestamp"), "{e}");
        let date = r#"{"type": "int", "logicalType": "date"}"#;
        assert_eq!(convert(date, json!("1970-01-03")), Ok(Value::Date(2)));
        let uuid = r#"{"type": "string", "logicalType": "uuid"}"#;
        assert!(matches!(
            convert(uuid, json!("0b6a4b5e-3f5c-4f4e-9d8a-1b2c3d4e5f60")),
            Ok(Value::Uuid(_))
        ));
        assert!(convert(uuid, json!("nope")).is_err());
        let (s, root) = shapes(r#""string""#);
        assert_eq!(
            s.convert(root, Val::Time(0)),
            Ok(Value::String("1970-01-01T00:00:00Z".into()))
        );
        assert_eq!(
            s.convert(root, Val::Text(Cow::Borrowed("x"))),
            Ok(Value::String("x".into()))
        );
    }

    #[test]
    fn unions_prefer_the_branch_of_the_values_own_kind() {
        let u = r#"["null", "string", "long"]"#;
        assert_eq!(
            convert(u, json!(5)),
            Ok(Value::Union(2, Box::new(Value::Long(5))))
        );
        assert_eq!(
            convert(u, json!("5")),
            Ok(Value::Union(1, Box::new(Value::String("5".into()))))
        );
        assert_eq!(
            convert(u, json!(null)),
            Ok(Value::Union(0, Box::new(Value::Null)))
        );
        assert!(convert(r#"["string", "long"]"#, json!(null)).is_err());
        let u = r#"["null", "string", "boolean"]"#;
        assert_eq!(
            convert(u, json!(1.5)),
            Ok(Value::Union(1, Box::new(Value::String("1.5".into())))),
            "coerced when no branch fits as is"
        );
    }

    #[test]
    fn records_arrays_and_maps_convert_field_by_field() {
        let schema = r#"{"type": "record", "name": "R", "fields": [
            {"name": "a", "type": "long"},
            {"name": "b", "type": ["null", "string"], "default": null},
            {"name": "c", "type": "string", "default": "dflt"},
            {"name": "xs", "type": {"type": "array", "items": "long"}, "default": []},
            {"name": "m", "type": {"type": "map", "values": "string"}, "default": {}},
            {"name": "next", "type": ["null", "R"], "default": null}
        ]}"#;
        let v = convert(
            schema,
            json!({"a": 1, "xs": [1, 2], "m": {"k": "v"}, "next": {"a": 2}}),
        )
        .unwrap();
        assert!(v.validate(&Schema::parse_str(schema).unwrap()), "{v:?}");
        let Value::Record(fields) = &v else { panic!() };
        assert_eq!(fields[2], ("c".into(), Value::String("dflt".into())));
        let e = convert(schema, json!({"a": 1, "xs": [1, "x"]})).unwrap_err();
        assert_eq!(e.field, "xs[1]");
        assert_eq!(e.source().as_deref(), Some("/xs/1"));
        let e = convert(schema, json!({"a": 1, "next": {"b": "x"}})).unwrap_err();
        assert_eq!((e.field.as_str(), e.rule), ("next.a", Rule::Required));
        assert_eq!(e.source().as_deref(), Some("/next/a"));
        let e = convert(schema, json!({"a": 1, "m": {"k": 3.5, "j": {}}})).unwrap_err();
        assert!(e.field.starts_with("m["), "{e}");
    }
}
