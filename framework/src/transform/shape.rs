//! The target schema compiled for building values: named types resolved to
//! arena indices once (recursive types included), record defaults converted
//! to Avro values once, and what each type can hold (checked when a mapping
//! compiles). Converting values to these types is `convert.rs`.

use super::error::{MappingError, Rule};
use super::value::{Kind, Val};
use apache_avro::schema::{Name, UnionSchema};
use apache_avro::types::Value;
use apache_avro::Schema;
use serde_json::Value as Json;
use std::collections::HashMap;

/// An index into [`Shapes`].
pub(crate) type ShapeId = usize;

/// Every type of one schema, named types once each.
#[derive(Debug, Clone)]
pub(crate) struct Shapes {
    shapes: Vec<Shape>,
}

#[derive(Debug, Clone)]
pub(crate) enum Shape {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Fixed(usize),
    Enum(Vec<String>),
    Uuid,
    /// The decimal schema itself, for `schema::json::from_json`.
    Decimal(Box<Schema>),
    Date,
    TimeMillis,
    TimeMicros,
    TimestampMillis,
    TimestampMicros,
    TimestampNanos,
    LocalTimestampMillis,
    LocalTimestampMicros,
    LocalTimestampNanos,
    Array(ShapeId),
    Map(ShapeId),
    Record(RecordShape),
    Union(UnionShape),
    /// A type with no JSON form (`duration`, `big-decimal`).
    Unsupported(&'static str),
}

#[derive(Debug, Clone)]
pub(crate) struct RecordShape {
    pub(crate) name: String,
    pub(crate) fields: Vec<FieldShape>,
}

#[derive(Debug, Clone)]
pub(crate) struct FieldShape {
    pub(crate) name: String,
    pub(crate) shape: ShapeId,
    /// The schema's default, as an Avro value.
    pub(crate) default: Option<Value>,
    default_json: Option<Json>,
}

#[derive(Debug, Clone)]
pub(crate) struct UnionShape {
    /// Every branch, in schema order (the order the union index counts).
    pub(crate) variants: Vec<ShapeId>,
    pub(crate) null: Option<u32>,
}

/// Where a value of some kind sits inside a field's type: directly
/// (`wrap: None`) or as union branch `wrap`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub(crate) wrap: Option<u32>,
    pub(crate) id: ShapeId,
}

impl Slot {
    pub(crate) fn wrap(&self, v: Value) -> Value {
        match self.wrap {
            None => v,
            Some(i) => Value::Union(i, Box::new(v)),
        }
    }
}

pub(crate) fn index(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

impl Shapes {
    /// Compiles `schema`; fails for a reference to a type it does not define.
    pub(crate) fn build(schema: &Schema) -> Result<(Self, ShapeId), String> {
        let mut b = Builder {
            shapes: Vec::new(),
            named: HashMap::new(),
        };
        let root = b.add(schema)?;
        let mut shapes = Shapes { shapes: b.shapes };
        shapes.convert_defaults()?;
        Ok((shapes, root))
    }

    pub(crate) fn get(&self, id: ShapeId) -> &Shape {
        // Ids only come from this arena.
        &self.shapes[id]
    }

    fn convert_defaults(&mut self) -> Result<(), String> {
        let mut found = Vec::new();
        for (rid, shape) in self.shapes.iter().enumerate() {
            let Shape::Record(r) = shape else { continue };
            for (fi, f) in r.fields.iter().enumerate() {
                let Some(json) = &f.default_json else {
                    continue;
                };
                // A union's default is a value of its first branch.
                let value = match self.get(f.shape) {
                    Shape::Union(u) => match u.variants.first() {
                        Some(&first) => self
                            .convert(first, Val::Json(json))
                            .map(|v| Value::Union(0, Box::new(v))),
                        None => Err(MappingError::new(Rule::Type, "empty union")),
                    },
                    _ => self.convert(f.shape, Val::Json(json)),
                };
                let value = value.map_err(|e| {
                    format!(
                        "the default of `{}.{}` does not fit its type: {}",
                        r.name, f.name, e.reason
                    )
                })?;
                found.push((rid, fi, value));
            }
        }
        for (rid, fi, value) in found {
            if let Shape::Record(r) = &mut self.shapes[rid] {
                r.fields[fi].default = Some(value);
            }
        }
        Ok(())
    }

    /// The type's name for messages: `string`, `timestamp-millis`,
    /// `record io.ferry.Contact`, `union [null, string]`.
    pub(crate) fn describe(&self, id: ShapeId) -> String {
        match self.get(id) {
            Shape::Null => "null".into(),
            Shape::Boolean => "boolean".into(),
            Shape::Int => "int".into(),
            Shape::Long => "long".into(),
            Shape::Float => "float".into(),
            Shape::Double => "double".into(),
            Shape::Bytes => "bytes".into(),
            Shape::String => "string".into(),
            Shape::Fixed(n) => format!("fixed({n})"),
            Shape::Enum(s) => format!("enum [{}]", s.join(", ")),
            Shape::Uuid => "uuid".into(),
            Shape::Decimal(_) => "decimal".into(),
            Shape::Date => "date".into(),
            Shape::TimeMillis => "time-millis".into(),
            Shape::TimeMicros => "time-micros".into(),
            Shape::TimestampMillis => "timestamp-millis".into(),
            Shape::TimestampMicros => "timestamp-micros".into(),
            Shape::TimestampNanos => "timestamp-nanos".into(),
            Shape::LocalTimestampMillis => "local-timestamp-millis".into(),
            Shape::LocalTimestampMicros => "local-timestamp-micros".into(),
            Shape::LocalTimestampNanos => "local-timestamp-nanos".into(),
            Shape::Array(i) => format!("array of {}", self.describe(*i)),
            Shape::Map(i) => format!("map of {}", self.describe(*i)),
            Shape::Record(r) => format!("record {}", r.name),
            Shape::Union(u) => format!(
                "union [{}]",
                u.variants
                    .iter()
                    .map(|&v| match self.get(v) {
                        Shape::Record(r) => r.name.clone(),
                        _ => self.describe(v),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Shape::Unsupported(what) => (*what).into(),
        }
    }

    /// The value a missing field takes when its type allows null.
    pub(crate) fn null_value(&self, id: ShapeId) -> Option<Value> {
        match self.get(id) {
            Shape::Null => Some(Value::Null),
            Shape::Union(u) => u.null.map(|i| Value::Union(i, Box::new(Value::Null))),
            _ => None,
        }
    }

    /// The one branch of the field's type that `pick` selects: the type
    /// itself, or the single union branch it selects.
    fn slot(&self, id: ShapeId, pick: impl Fn(&Shape) -> bool) -> Option<Slot> {
        if pick(self.get(id)) {
            return Some(Slot { wrap: None, id });
        }
        let Shape::Union(u) = self.get(id) else {
            return None;
        };
        let mut picked = u
            .variants
            .iter()
            .enumerate()
            .filter(|(_, &v)| pick(self.get(v)));
        let (i, &v) = picked.next()?;
        picked.next().is_none().then_some(Slot {
            wrap: Some(index(i)),
            id: v,
        })
    }

    /// The record a `fields` rule builds.
    pub(crate) fn record_slot(&self, id: ShapeId) -> Option<Slot> {
        self.slot(id, |s| matches!(s, Shape::Record(_)))
    }

    /// The array or map an `each` rule builds.
    pub(crate) fn items_slot(&self, id: ShapeId) -> Option<Slot> {
        self.slot(id, |s| matches!(s, Shape::Array(_) | Shape::Map(_)))
    }

    /// Where `raw` goes: a bytes or string field (or branch).
    pub(crate) fn raw_slot(&self, id: ShapeId) -> Option<Slot> {
        self.slot(id, |s| matches!(s, Shape::Bytes))
            .or_else(|| self.slot(id, |s| matches!(s, Shape::String)))
    }

    /// Whether a value of `kind` can fit the type at all; `Any` is checked
    /// per record.
    pub(crate) fn accepts(&self, id: ShapeId, kind: Kind) -> bool {
        use Shape as S;
        let shape = self.get(id);
        if let S::Union(u) = shape {
            return u.variants.iter().any(|&v| self.accepts(v, kind));
        }
        let timestamp = matches!(
            shape,
            S::TimestampMillis
                | S::TimestampMicros
                | S::TimestampNanos
                | S::LocalTimestampMillis
                | S::LocalTimestampMicros
                | S::LocalTimestampNanos
                | S::Date
        );
        match kind {
            Kind::Any => true,
            Kind::Text => {
                timestamp
                    || matches!(
                        shape,
                        S::String | S::Bytes | S::Fixed(_) | S::Enum(_) | S::Uuid | S::Decimal(_)
                    )
            }
            Kind::Number => matches!(
                shape,
                S::Int | S::Long | S::Float | S::Double | S::Decimal(_) | S::String
            ),
            Kind::Int => {
                timestamp
                    || matches!(
                        shape,
                        S::Int
                            | S::Long
                            | S::Float
                            | S::Double
                            | S::Decimal(_)
                            | S::String
                            | S::TimeMillis
                            | S::TimeMicros
                    )
            }
            Kind::Bool => matches!(shape, S::Boolean | S::String),
            Kind::Time => timestamp || matches!(shape, S::Long | S::String),
        }
    }
}

struct Builder {
    shapes: Vec<Shape>,
    named: HashMap<Name, ShapeId>,
}

impl Builder {
    fn push(&mut self, s: Shape) -> ShapeId {
        self.shapes.push(s);
        self.shapes.len() - 1
    }

    fn add(&mut self, schema: &Schema) -> Result<ShapeId, String> {
        Ok(match schema {
            Schema::Null => self.push(Shape::Null),
            Schema::Boolean => self.push(Shape::Boolean),
            Schema::Int => self.push(Shape::Int),
            Schema::Long => self.push(Shape::Long),
            Schema::Float => self.push(Shape::Float),
            Schema::Double => self.push(Shape::Double),
            Schema::Bytes => self.push(Shape::Bytes),
            Schema::String => self.push(Shape::String),
            Schema::Uuid(_) => self.push(Shape::Uuid),
            Schema::Date => self.push(Shape::Date),
            Schema::TimeMillis => self.push(Shape::TimeMillis),
            Schema::TimeMicros => self.push(Shape::TimeMicros),
            Schema::TimestampMillis => self.push(Shape::TimestampMillis),
            Schema::TimestampMicros => self.push(Shape::TimestampMicros),
            Schema::TimestampNanos => self.push(Shape::TimestampNanos),
            Schema::LocalTimestampMillis => self.push(Shape::LocalTimestampMillis),
            Schema::LocalTimestampMicros => self.push(Shape::LocalTimestampMicros),
            Schema::LocalTimestampNanos => self.push(Shape::LocalTimestampNanos),
            Schema::Decimal(_) => self.push(Shape::Decimal(Box::new(schema.clone()))),
            Schema::BigDecimal => self.push(Shape::Unsupported("big-decimal")),
            Schema::Duration(_) => self.push(Shape::Unsupported("duration")),
            Schema::Fixed(f) => {
                let id = self.push(Shape::Fixed(f.size));
                self.named.insert(f.name.clone(), id);
                id
            }
            Schema::Enum(e) => {
                let id = self.push(Shape::Enum(e.symbols.clone()));
                self.named.insert(e.name.clone(), id);
                id
            }
            Schema::Array(a) => {
                let item = self.add(&a.items)?;
                self.push(Shape::Array(item))
            }
            Schema::Map(m) => {
                let item = self.add(&m.types)?;
                self.push(Shape::Map(item))
            }
            Schema::Union(u) => self.union(u)?,
            Schema::Record(r) => {
                let name = r.name.fullname(None);
                // Reserve the id first: the record's fields may refer to it.
                let id = self.push(Shape::Record(RecordShape {
                    name: name.clone(),
                    fields: Vec::new(),
                }));
                self.named.insert(r.name.clone(), id);
                let mut fields = Vec::with_capacity(r.fields.len());
                for f in &r.fields {
                    fields.push(FieldShape {
                        name: f.name.clone(),
                        shape: self.add(&f.schema)?,
                        default: None,
                        default_json: f.default.clone(),
                    });
                }
                self.shapes[id] = Shape::Record(RecordShape { name, fields });
                id
            }
            Schema::Ref { name } => *self
                .named
                .get(name)
                .ok_or_else(|| format!("unknown type `{}`", name.fullname(None)))?,
        })
    }

    fn union(&mut self, u: &UnionSchema) -> Result<ShapeId, String> {
        let mut variants = Vec::with_capacity(u.variants().len());
        for v in u.variants() {
            variants.push(self.add(v)?);
        }
        let null = u
            .variants()
            .iter()
            .position(|v| matches!(v, Schema::Null))
            .map(index);
        Ok(self.push(Shape::Union(UnionShape { variants, null })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes(schema: &str) -> (Shapes, ShapeId) {
        Shapes::build(&Schema::parse_str(schema).unwrap()).unwrap()
    }

    #[test]
    fn kinds_are_checked_against_types() {
        let (s, root) = shapes(r#"["null", "long"]"#);
        assert!(s.accepts(root, Kind::Int));
        assert!(s.accepts(root, Kind::Time));
        assert!(!s.accepts(root, Kind::Text));
        let (s, root) = shapes(r#"{"type": "long", "logicalType": "timestamp-millis"}"#);
        assert!(s.accepts(root, Kind::Time));
        assert!(s.accepts(root, Kind::Text));
        assert!(!s.accepts(root, Kind::Bool));
        let (s, root) = shapes(r#""string""#);
        for k in [
            Kind::Text,
            Kind::Number,
            Kind::Int,
            Kind::Bool,
            Kind::Time,
            Kind::Any,
        ] {
            assert!(s.accepts(root, k), "{k:?}");
        }
    }
}
