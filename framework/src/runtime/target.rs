//! Where a source's records go, and what each becomes on the way: its
//! value encoded in the topic's registered schema, or, for a source with a
//! `mapping:`, the mapping of its envelope's raw payload — or, when the
//! mapping or the schema refuses it, a dead letter carrying the raw payload
//! and why. Poll sources (`source_task`), webhooks (`ingress::listener`)
//! and processors share it, so a record is mapped and dead-lettered the
//! same way whichever connector received it.

use super::dead_letter::Class;
use super::headers;
use crate::schema::AvroCodec;
use apache_avro::types::Value;

/// Where a source's records go.
#[derive(Clone)]
pub struct SourceTarget {
    pub topic: String,
    pub codec: AvroCodec,
    pub subject: String,
    pub version: u32,
    /// `mapping:`: what is produced is the mapped payload.
    pub mapping: Option<super::SourceMapping>,
}

/// What a record becomes.
#[derive(Debug)]
pub enum Encoded {
    /// Its value for the target topic, with Ferry's headers.
    Record {
        payload: Vec<u8>,
        headers: Vec<(String, Vec<u8>)>,
    },
    /// The mapping or the schema refused it: its raw payload for the
    /// dead-letter topic, with headers saying why.
    DeadLetter {
        topic: String,
        raw: Vec<u8>,
        headers: Vec<(String, Vec<u8>)>,
    },
}

/// A dead letter's reason: its `ferry-dlq-error-message` header.
pub fn dead_letter_reason(hs: &[(String, Vec<u8>)]) -> String {
    hs.iter()
        .find(|(k, _)| k == headers::dead_letter::ERROR_MESSAGE)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

impl SourceTarget {
    /// The headers Ferry puts on every record a source writes here.
    pub fn headers(
        &self,
        connector: &str,
        correlation_id: &str,
        content_type: &str,
    ) -> Vec<(String, Vec<u8>)> {
        [
            (headers::CORRELATION_ID, correlation_id.as_bytes().to_vec()),
            (headers::SOURCE_CONNECTOR, connector.as_bytes().to_vec()),
            (headers::SCHEMA_SUBJECT, self.subject.clone().into_bytes()),
            (
                headers::SCHEMA_VERSION,
                self.version.to_string().into_bytes(),
            ),
            (headers::CONTENT_TYPE, content_type.as_bytes().to_vec()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Encodes `value`, written by connector `connector`: as it is, or
    /// (`mapping:`) the mapping of its envelope's payload, or a dead letter
    /// when the mapping or the schema refuses that payload. `Err` (why)
    /// when the record cannot be written anywhere: a connector bug, its
    /// value does not fit the topic's schema, or a mapped connector that
    /// does not write event envelopes.
    pub fn encode(
        &self,
        connector: &str,
        value: &Value,
        correlation_id: &str,
        content_type: &str,
    ) -> Result<Encoded, String> {
        let headers = self.headers(connector, correlation_id, content_type);
        let Some(mapping) = &self.mapping else {
            let payload = self.codec.encode(value).map_err(|e| e.to_string())?;
            return Ok(Encoded::Record { payload, headers });
        };
        let (Some(raw), event_id) = envelope_parts(value) else {
            return Err("a mapped source must write event envelopes (no `payload` bytes)".into());
        };
        let dead = |why: String, parts: [(&str, String); 3]| {
            use super::headers::dead_letter as h;
            let mut headers = headers.clone();
            // The raw payload is not the topic's schema.
            headers.retain(|(k, _)| k != headers::SCHEMA_SUBJECT && k != headers::SCHEMA_VERSION);
            headers.extend(
                [
                    (h::ERROR_CLASS, Class::Mapping.as_str().to_owned()),
                    // As a sink's dead letters: secrets scrubbed, capped.
                    (
                        h::ERROR_MESSAGE,
                        crate::telemetry::redact::scrub(&why)
                            .chars()
                            .take(1000)
                            .collect(),
                    ),
                    (h::CONNECTOR, connector.to_owned()),
                    (h::SOURCE_TOPIC, self.topic.clone()),
                    (
                        h::FIRST_FAILURE_MS,
                        crate::schema::envelope::now_millis().to_string(),
                    ),
                ]
                .into_iter()
                .chain(parts.into_iter().filter(|(_, v)| !v.is_empty()))
                .map(|(k, v)| (k.to_owned(), v.into_bytes())),
            );
            if let Some(id) = &event_id {
                headers.push((super::headers::EVENT_ID.to_owned(), id.clone().into_bytes()));
            }
            Encoded::DeadLetter {
                topic: mapping.dead_letter_topic.clone(),
                raw: raw.to_vec(),
                headers,
            }
        };
        use super::headers::dead_letter::{MAPPING_FIELD, MAPPING_RULE, MAPPING_SOURCE};
        let json: serde_json::Value = match serde_json::from_slice(raw) {
            Ok(j) => j,
            Err(e) => {
                let parts = [
                    (MAPPING_FIELD, String::new()),
                    (MAPPING_RULE, "json".to_owned()),
                    (MAPPING_SOURCE, String::new()),
                ];
                return Ok(dead(format!("the payload is not JSON: {e}"), parts));
            }
        };
        let mapped = match mapping.transform.apply(raw, &json) {
            Ok(v) => v,
            Err(e) => {
                let parts = [
                    (MAPPING_FIELD, e.field.clone()),
                    (MAPPING_RULE, e.rule.as_str().to_owned()),
                    (MAPPING_SOURCE, e.source().unwrap_or_default()),
                ];
                return Ok(dead(e.to_string(), parts));
            }
        };
        match self.codec.encode(&mapped) {
            Ok(payload) => {
                let mut headers = headers;
                if let Some(id) = event_id {
                    headers.push((super::headers::EVENT_ID.to_owned(), id.into_bytes()));
                }
                Ok(Encoded::Record { payload, headers })
            }
            Err(e) => {
                let parts = [
                    (MAPPING_FIELD, String::new()),
                    (MAPPING_RULE, "schema".to_owned()),
                    (MAPPING_SOURCE, String::new()),
                ];
                Ok(dead(
                    format!("the mapped record does not fit `{}`: {e}", self.subject),
                    parts,
                ))
            }
        }
    }
}

/// An event envelope's raw `payload` and its `id`.
fn envelope_parts(value: &Value) -> (Option<&[u8]>, Option<String>) {
    let Value::Record(fields) = value else {
        return (None, None);
    };
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let raw = match field("payload") {
        Some(Value::Bytes(b)) => Some(b.as_slice()),
        _ => None,
    };
    let id = match field("id") {
        Some(Value::Uuid(u)) => Some(u.to_string()),
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    (raw, id)
}
