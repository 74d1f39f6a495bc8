//! Avro datums in and out, framed for the Confluent wire format.

use super::wire;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::RecordSchema;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use std::sync::Arc;

/// Why a record could not be encoded or decoded. None is retryable: the same
/// bytes and schema give the same answer.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The record does not match its schema; `field` names the first field at fault.
    #[error("record does not match schema `{schema}`: field `{field}`: {reason}")]
    Mismatch {
        schema: String,
        field: String,
        reason: String,
    },
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    #[error("payload was written with schema id {found}, expected {expected}")]
    WrongSchemaId { expected: u32, found: u32 },
    #[error("Avro: {0}")]
    Avro(String),
}

/// The schema with its names resolved once: apache-avro's writer and reader
/// borrow the schema, and resolving names for every record cost three
/// quarters of the encode time (BENCHMARKS.md). `self_cell` keeps the
/// borrowers beside the schema they borrow, without `unsafe` in Ferry.
struct Resolved<'s> {
    writer: GenericDatumWriter<'s>,
    reader: GenericDatumReader<'s>,
}

self_cell::self_cell!(
    struct Compiled {
        owner: Schema,
        #[not_covariant]
        dependent: Resolved,
    }
);

/// An Avro schema with its registry id: encodes values to framed payloads and
/// decodes framed payloads written with it. Cheap to clone.
#[derive(Clone)]
pub struct AvroCodec {
    compiled: Arc<Compiled>,
    id: u32,
}

impl std::fmt::Debug for AvroCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroCodec")
            .field("id", &self.id)
            .field("schema", &self.schema().name().map(|n| n.fullname(None)))
            .finish()
    }
}

impl AvroCodec {
    /// Resolves `schema`'s names once. Fails only for a schema that refers
    /// to a type it does not define.
    pub fn new(schema: Schema, id: u32) -> Result<Self, CodecError> {
        let compiled = Compiled::try_new(schema, |s| {
            Ok::<_, apache_avro::Error>(Resolved {
                writer: GenericDatumWriter::builder(s).build()?,
                reader: GenericDatumReader::builder(s).build()?,
            })
        })
        .map_err(|e| CodecError::Avro(e.to_string()))?;
        Ok(Self {
            compiled: Arc::new(compiled),
            id,
        })
    }

    pub fn schema(&self) -> &Schema {
        self.compiled.borrow_owner()
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// Encodes `value` as `0x00 | id | datum`. A value that does not match
    /// the schema is refused, naming the field; nothing is coerced.
    pub fn encode(&self, value: &Value) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(64);
        wire::frame_into(self.id, &mut out);
        // The writer validates while it encodes; the slower field-by-field
        // walk runs only to explain a refusal.
        let written = self
            .compiled
            .with_dependent(|_, r| r.writer.write_value_ref(&mut out, value));
        match written {
            Ok(_) => Ok(out),
            Err(_) if !value.validate(self.schema()) => Err(self.mismatch(value)),
            Err(e) => Err(CodecError::Avro(e.to_string())),
        }
    }

    /// Decodes a framed payload written with this codec's schema.
    pub fn decode(&self, payload: &[u8]) -> Result<Value, CodecError> {
        let (id, mut datum) = wire::unframe(payload)?;
        if id != self.id {
            return Err(CodecError::WrongSchemaId {
                expected: self.id,
                found: id,
            });
        }
        self.compiled
            .with_dependent(|_, r| r.reader.read_value(&mut datum))
            .map_err(|e| CodecError::Avro(e.to_string()))
    }

    fn mismatch(&self, value: &Value) -> CodecError {
        let schema = self
            .schema()
            .name()
            .map_or_else(|| "(unnamed)".to_owned(), |n| n.fullname(None));
        let (field, reason) = match (self.schema(), value) {
            (Schema::Record(RecordSchema { fields, .. }), Value::Record(values)) => fields
                .iter()
                .find_map(|f| match values.iter().find(|(name, _)| name == &f.name) {
                    None => Some((f.name.clone(), "missing".to_owned())),
                    Some((_, v)) if !v.validate(&f.schema) => Some((
                        f.name.clone(),
                        format!("{} does not fit {}", kind(v), f.schema.canonical_form()),
                    )),
                    Some(_) => None,
                })
                .or_else(|| {
                    values
                        .iter()
                        .find(|(name, _)| !fields.iter().any(|f| &f.name == name))
                        .map(|(name, _)| (name.clone(), "not in the schema".to_owned()))
                })
                .unwrap_or_else(|| ("?".to_owned(), "does not match".to_owned())),
            _ => (".".to_owned(), format!("{} is not a record", kind(value))),
        };
        CodecError::Mismatch {
            schema,
            field,
            reason,
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Boolean(_) => "a boolean",
        Value::Int(_) => "an int",
        Value::Long(_) => "a long",
        Value::Float(_) => "a float",
        Value::Double(_) => "a double",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "a string",
        Value::Union(_, _) => "a union value",
        Value::Record(_) => "a record",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        _ => "a value of another type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact_codec() -> AvroCodec {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/contact.avsc");
        let text = std::fs::read_to_string(path).expect("contact.avsc");
        AvroCodec::new(Schema::parse_str(&text).expect("parses"), 7).expect("resolves")
    }

    fn contact(email: Value) -> Value {
        Value::Record(vec![
            ("id".into(), Value::String("c-1".into())),
            (
                "name".into(),
                Value::Union(1, Box::new(Value::String("Ada".into()))),
            ),
            ("email".into(), email),
            ("phone".into(), Value::Union(0, Box::new(Value::Null))),
            ("source".into(), Value::String("crm".into())),
            ("updated_at".into(), Value::Union(0, Box::new(Value::Null))),
            (
                "lifetime_value".into(),
                Value::Union(0, Box::new(Value::Null)),
            ),
            ("raw".into(), Value::Bytes(br#"{"id":"c-1"}"#.to_vec())),
        ])
    }

    #[test]
    fn contact_round_trips_in_the_wire_format() {
        let codec = contact_codec();
        let v = contact(Value::Union(
            1,
            Box::new(Value::String("ada@example.com".into())),
        ));
        let bytes = codec.encode(&v).expect("encodes");
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 7]);
        assert_eq!(codec.decode(&bytes).expect("decodes"), v);
    }

    #[test]
    fn mismatched_record_is_refused_naming_the_field() {
        let codec = contact_codec();
        let err = codec
            .encode(&contact(Value::Int(42)))
            .expect_err("refused")
            .to_string();
        assert!(err.contains("field `email`"), "{err}");
        assert!(err.contains("io.ferry.normalized.Contact"), "{err}");
    }

    #[test]
    fn decode_checks_magic_byte_and_id() {
        let codec = contact_codec();
        assert!(matches!(codec.decode(b"{}xxxx"), Err(CodecError::Wire(_))));
        let other = wire::frame(8, &[]);
        assert!(matches!(
            codec.decode(&other),
            Err(CodecError::WrongSchemaId { found: 8, .. })
        ));
    }
}
