//! Avro datums in and out, framed for the Confluent wire format.

use super::encode::{Encoder, Refusal};
use super::wire;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::Schema;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// The schema with what is derived from it once: Ferry's [`Encoder`]
/// (names resolved, a plan per type) and apache-avro's reader. Both borrow
/// the schema: `self_cell` keeps them beside it, without `unsafe` in Ferry.
struct Resolved<'s> {
    encoder: Encoder<'s>,
    reader: GenericDatumReader<'s>,
    /// The capacity to start an output buffer with: the last record's size
    /// and an eighth, so a record is usually written without growing the
    /// buffer (growing it from a small guess cost about an eighth of the
    /// encode time in the `avro` bench).
    size_hint: AtomicUsize,
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
    /// Resolves `schema`'s names and compiles its encoder once. Fails only
    /// for a schema that refers to a type it does not define.
    pub fn new(schema: Schema, id: u32) -> Result<Self, CodecError> {
        let compiled = Compiled::try_new(schema, |s| {
            Ok::<_, CodecError>(Resolved {
                encoder: Encoder::new(s).map_err(|e| CodecError::Avro(e.to_string()))?,
                reader: GenericDatumReader::builder(s)
                    .build()
                    .map_err(|e| CodecError::Avro(e.to_string()))?,
                size_hint: AtomicUsize::new(64),
            })
        })?;
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
    /// the schema is refused, naming the field; nothing is coerced. The bytes
    /// are apache-avro's for every value it writes readably; see
    /// `schema/encode.rs` for the few values it would write as something
    /// else, which are refused.
    pub fn encode(&self, value: &Value) -> Result<Vec<u8>, CodecError> {
        self.compiled
            .with_dependent(|_, r| {
                let hint = r.size_hint.load(Ordering::Relaxed);
                let mut out = Vec::with_capacity(hint);
                wire::frame_into(self.id, &mut out);
                r.encoder.write(value, &mut out)?;
                let len = out.len();
                // Only a change worth making is stored (the hint is shared
                // by every task writing with this schema).
                if len > hint || len < hint / 2 {
                    r.size_hint.store(len + len / 8, Ordering::Relaxed);
                }
                Ok(out)
            })
            .map_err(|refusal| self.mismatch(refusal))
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

    fn mismatch(&self, refusal: Refusal) -> CodecError {
        let schema = self
            .schema()
            .name()
            .map_or_else(|| "(unnamed)".to_owned(), |n| n.fullname(None));
        let Refusal { field, reason } = refusal;
        CodecError::Mismatch {
            schema,
            field: if field.is_empty() {
                ".".to_owned()
            } else {
                field
            },
            reason,
        }
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
