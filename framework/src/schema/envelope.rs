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

/// The namespace of Ferry's event ids (UUID version 5).
const EVENT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6a0c_52f4_8e1d_4b7e_9d51_f3a2_c0de_0001);

impl EventEnvelope {
    /// The id of an event, derived from what identifies it: the connector,
    /// the record key, and the event's version (its content, or a version
    /// field). The same event polled twice (a repeated cycle, a restart)
    /// gets the same id, so a consumer can drop repeats by `id`; a changed
    /// event gets a new one. A UUID version 5 (SHA-1), stable across Ferry
    /// releases and platforms.
    pub fn event_id(connector: &str, key: Option<&str>, version: &[u8]) -> uuid::Uuid {
        let mut name = Vec::with_capacity(connector.len() + version.len() + 34);
        name.extend_from_slice(connector.as_bytes());
        name.push(0);
        match key {
            Some(k) => {
                name.push(1);
                name.extend_from_slice(k.as_bytes());
            }
            None => name.push(0),
        }
        name.push(0);
        name.extend_from_slice(version);
        uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, &name)
    }
}

impl EventEnvelope {
    /// The id of a pushed event (a webhook), from the connector and the
    /// sender's delivery id: a repeat of one delivery, even one received by
    /// another Ferry worker, gets the same id. A UUID version 5 (senders'
    /// ids such as `msg_…` or `evt_…` are not UUIDs).
    pub fn delivery_event_id(connector: &str, delivery_id: &str) -> uuid::Uuid {
        let mut name = Vec::with_capacity(connector.len() + delivery_id.len() + 10);
        name.extend_from_slice(b"delivery\0");
        name.extend_from_slice(connector.as_bytes());
        name.push(0);
        name.extend_from_slice(delivery_id.as_bytes());
        uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, &name)
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
    fn event_ids_are_deterministic_and_tell_events_apart() {
        let a = EventEnvelope::event_id("crm", Some("c1"), b"{\"v\":1}");
        assert_eq!(a, EventEnvelope::event_id("crm", Some("c1"), b"{\"v\":1}"));
        assert_ne!(a, EventEnvelope::event_id("crm", Some("c1"), b"{\"v\":2}"));
        assert_ne!(a, EventEnvelope::event_id("crm", Some("c2"), b"{\"v\":1}"));
        assert_ne!(a, EventEnvelope::event_id("erp", Some("c1"), b"{\"v\":1}"));
        assert_ne!(
            EventEnvelope::event_id("crm", None, b"x"),
            EventEnvelope::event_id("crm", Some(""), b"x")
        );
        // Pinned (computed independently with Python's hashlib): the id
        // must never change between releases.
        assert_eq!(
            EventEnvelope::event_id("crm", Some("c1"), b"{}").to_string(),
            "009ca04e-b435-5e11-800b-b8544fc11645"
        );
        assert_eq!(a.get_version_num(), 5);
    }

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
