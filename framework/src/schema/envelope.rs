//! The generic event envelope (`schemas/event_envelope.avsc`): what source
//! connectors write when they pass events through without normalizing them.

use apache_avro::types::Value;
use std::collections::HashMap;

/// One event as a source received it. [`EventEnvelope::into_value`] gives the
/// Avro value of `io.ferry.events.EventEnvelope`.
#[derive(Debug, Clone)]
pub struct EventEnvelope {
    pub id: uuid::Uuid,
    /// The connector's name.
    pub source: String,
    pub event_type: String,
    /// Epoch milliseconds, when the source says when it happened.
    pub occurred_at: Option<i64>,
    /// Epoch milliseconds.
    pub received_at: i64,
    pub correlation_id: String,
    pub content_type: String,
    /// The raw payload, untouched.
    pub payload: Vec<u8>,
    pub attributes: HashMap<String, String>,
}

impl EventEnvelope {
    /// The Avro value, fields in schema order.
    pub fn into_value(self) -> Value {
        Value::Record(vec![
            ("id".into(), Value::Uuid(self.id)),
            ("source".into(), Value::String(self.source)),
            ("type".into(), Value::String(self.event_type)),
            (
                "occurred_at".into(),
                match self.occurred_at {
                    Some(t) => Value::Union(1, Box::new(Value::TimestampMillis(t))),
                    None => Value::Union(0, Box::new(Value::Null)),
                },
            ),
            (
                "received_at".into(),
                Value::TimestampMillis(self.received_at),
            ),
            ("correlation_id".into(), Value::String(self.correlation_id)),
            ("content_type".into(), Value::String(self.content_type)),
            ("payload".into(), Value::Bytes(self.payload)),
            (
                "attributes".into(),
                Value::Map(
                    self.attributes
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect(),
                ),
            ),
        ])
    }
}

/// Now, in epoch milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::AvroCodec;
    use apache_avro::Schema;

    #[test]
    fn an_envelope_fits_the_schema_file() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../schemas/event_envelope.avsc"
        );
        let schema =
            Schema::parse_str(&std::fs::read_to_string(path).expect("read")).expect("parses");
        let codec = AvroCodec::new(schema, 1).expect("resolves");
        let env = EventEnvelope {
            id: uuid::Uuid::new_v4(),
            source: "crm".into(),
            event_type: "contact.updated".into(),
            occurred_at: Some(1),
            received_at: now_millis(),
            correlation_id: "c".into(),
            content_type: "application/json".into(),
            payload: b"{}".to_vec(),
            attributes: HashMap::from([("page".into(), "1".into())]),
        };
        let value = env.into_value();
        let bytes = codec.encode(&value).expect("fits");
        assert_eq!(codec.decode(&bytes).expect("decodes"), value);
    }
}
