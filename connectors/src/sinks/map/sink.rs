//! The `map` processor's sink: each consumed record's payload through the
//! mapping, then produced to the output topic; a batch is written once
//! Kafka acknowledged every record of it (`acks=all`), so the runtime
//! commits the input's offsets only after the outputs are safe. What
//! cannot be mapped, or is mapped into a record Kafka refuses for good (too
//! large), is the record's fault: it is dead-lettered and the rest goes on.

use ferry::error::{ConnectorError, Scope};
use ferry::kafka::{KafkaProducer, OutgoingRecord, ProduceError};
use ferry::runtime::SourceTarget;
use ferry::sink::{RecordOutcome, Sink, SinkContext, SinkFailure, SinkRecord};
use ferry::transform::Transform;
use serde_json::Value as Json;
use std::sync::Arc;

pub struct MapSink {
    name: String,
    to: String,
    transform: Arc<dyn Transform>,
    out: Option<(KafkaProducer, SourceTarget)>,
}

impl MapSink {
    pub fn new(name: &str, to: &str, transform: Arc<dyn Transform>) -> Self {
        Self {
            name: name.to_owned(),
            to: to.to_owned(),
            transform,
            out: None,
        }
    }

    /// `r`'s payload mapped and encoded for `target`, with its event id;
    /// `Err` (the record's fault, naming the field and rule) when the
    /// payload is not JSON, the mapping refuses it, or the mapped record
    /// does not fit the topic's schema.
    fn map(
        &self,
        r: &SinkRecord,
        target: &SourceTarget,
    ) -> Result<(Vec<u8>, Option<String>), ConnectorError> {
        use ferry::runtime::headers::dead_letter as h;
        let context = |e: ConnectorError| ConnectorError {
            message: format!(
                "connector `{}`: {} cannot be mapped: {}",
                self.name,
                r.at(),
                e.message
            ),
            ..e
        };
        let (raw, json, id) = payload_of(r).map_err(|why| {
            context(ConnectorError::user(why).with_detail(h::MAPPING_RULE, "json"))
        })?;
        let value = self
            .transform
            .apply(&raw, &json)
            .map_err(|e| context(e.into()))?;
        let payload = target.codec.encode(&value).map_err(|e| {
            context(
                ConnectorError::user(format!(
                    "the mapped record does not fit `{}`: {e}",
                    target.subject
                ))
                .with_detail(h::MAPPING_RULE, "schema"),
            )
        })?;
        Ok((payload, id))
    }

    /// Why Kafka did not take the mapped record of `r`, and whose fault
    /// that is. Refused for good (larger than the producer's
    /// `message.max.bytes` or the topic's limit, invalid): the record's, so
    /// the runtime dead-letters its input and goes on; retrying it would
    /// hold its partition forever. The output topic missing or not
    /// writable: the connector's, and it may pass (an ACL propagating), so
    /// the runtime waits without giving records up. Anything else passes
    /// with a retry.
    fn produce_failure(&self, r: &SinkRecord, e: &ProduceError) -> ConnectorError {
        use rdkafka::types::RDKafkaErrorCode as C;
        match e.source.rdkafka_error_code() {
            Some(C::TopicAuthorizationFailed | C::UnknownTopicOrPartition | C::UnknownTopic) => {
                ConnectorError::external(format!(
                    "connector `{}`: cannot write to `{}`: {e}",
                    self.name, self.to
                ))
                .for_connector()
            }
            _ if !e.is_retryable() => ConnectorError::user(format!(
                "connector `{}`: the record mapped from {} cannot be written to `{}`: {e}",
                self.name,
                r.at(),
                self.to
            )),
            _ => ConnectorError::external(e.to_string()),
        }
    }
}

/// The bytes to map and their parsed JSON: an event envelope's `payload`,
/// or the record itself. Also the envelope's `id`, when there is one.
fn payload_of(r: &SinkRecord) -> Result<(Vec<u8>, Json, Option<String>), String> {
    if let Json::Object(v) = &r.value {
        match (v.get("payload"), v.get("content_type")) {
            (Some(Json::String(payload)), Some(Json::String(_))) => {
                let json = serde_json::from_str(payload)
                    .map_err(|e| format!("the envelope's payload is not JSON: {e}"))?;
                let id = v.get("id").and_then(Json::as_str).map(str::to_owned);
                return Ok((payload.clone().into_bytes(), json, id));
            }
            // An Avro envelope whose payload bytes are not UTF-8 (the
            // decoded value shows them as an array of numbers): not JSON,
            // so nothing to map. Mapping the envelope itself instead would
            // make a record of its `id` and its framed bytes.
            (Some(Json::Array(_)), Some(Json::String(content_type))) if is_avro(r) => {
                return Err(format!(
                    "the envelope's payload ({content_type}) is not JSON: its bytes are not UTF-8"
                ));
            }
            _ => {}
        }
    }
    let raw = match &r.raw {
        Some(raw) => raw.clone(),
        None => serde_json::to_vec(&r.value).map_err(|e| e.to_string())?,
    };
    Ok((raw, r.value.clone(), None))
}

/// Whether the record's value was registry-framed Avro (decoded by the
/// runtime), not JSON.
fn is_avro(r: &SinkRecord) -> bool {
    r.raw
        .as_ref()
        .is_some_and(|b| b.len() >= 5 && b[0] == ferry::schema::MAGIC_BYTE)
}

impl Sink for MapSink {
    async fn open(&mut self, ctx: &SinkContext) -> Result<(), ConnectorError> {
        let output = ctx.output.as_ref().ok_or_else(|| {
            ConnectorError::internal(format!(
                "connector `{}`: started without its output topic",
                self.name
            ))
        })?;
        let target = output.targets.get(&self.to).cloned().ok_or_else(|| {
            ConnectorError::internal(format!(
                "connector `{}`: output topic `{}` not prepared",
                self.name, self.to
            ))
        })?;
        self.out = Some((output.producer.clone(), target));
        Ok(())
    }

    async fn write(&mut self, batch: &[SinkRecord]) -> Result<(), SinkFailure> {
        let Some((producer, target)) = &self.out else {
            let e = ConnectorError::internal("write before open");
            return Err(SinkFailure::batch(batch.len(), e));
        };
        let mut outcomes: Vec<Option<RecordOutcome>> = (0..batch.len()).map(|_| None).collect();
        let mut pending = Vec::with_capacity(batch.len());
        for (i, r) in batch.iter().enumerate() {
            let (payload, id) = match self.map(r, target) {
                Ok(p) => p,
                Err(e) => {
                    // The record's fault: the runtime sends it to the
                    // dead-letter topic (class `mapping`, with the field,
                    // rule and source path) and goes on.
                    outcomes[i] = Some(RecordOutcome::Failed(e));
                    continue;
                }
            };
            let mut headers = target.headers(&self.name, &r.correlation_id, "application/json");
            if let Some(id) = id {
                headers.push((
                    ferry::runtime::headers::EVENT_ID.to_owned(),
                    id.into_bytes(),
                ));
            }
            let record = OutgoingRecord {
                topic: self.to.clone(),
                key: r.raw_key.clone(),
                payload: Some(payload),
                headers,
                partition: None,
            };
            // One at a time into the queue: the batch keeps its order.
            match producer.enqueue(record).await {
                Ok(p) => pending.push((i, p)),
                Err(e) => {
                    let e = self.produce_failure(r, &e);
                    let records_fault = e.scope == Scope::Record && !e.is_retryable();
                    outcomes[i] = Some(RecordOutcome::Failed(e));
                    if records_fault {
                        // Dead-lettered; the records after it go on.
                        continue;
                    }
                    break;
                }
            }
        }
        for (i, p) in pending {
            outcomes[i] = Some(match p.delivered().await {
                Ok(_) => RecordOutcome::Written,
                Err(e) => RecordOutcome::Failed(self.produce_failure(&batch[i], &e)),
            });
        }
        if outcomes
            .iter()
            .all(|o| matches!(o, Some(RecordOutcome::Written)))
        {
            return Ok(());
        }
        Err(SinkFailure::per_record(
            outcomes
                .into_iter()
                .map(|o| o.unwrap_or(RecordOutcome::NotAttempted))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(value: Json, raw: &[u8]) -> SinkRecord {
        SinkRecord {
            topic: "hooks.contacts".into(),
            partition: 0,
            offset: 7,
            timestamp: None,
            key: None,
            raw_key: None,
            value,
            raw: Some(raw.to_vec()),
            headers: Vec::new(),
            correlation_id: String::new(),
        }
    }

    /// Registry framing (magic byte, schema id) before an Avro datum.
    const FRAMED: &[u8] = &[0, 0, 0, 0, 1, 2, 3];

    #[test]
    fn an_envelope_maps_its_payload_bytes_and_names_its_id() {
        let body = r#"{ "Id" : "c-1" }"#;
        let v = json!({"id": "e-1", "content_type": "application/json", "payload": body});
        let (raw, parsed, id) = payload_of(&record(v, FRAMED)).expect("mapped");
        assert_eq!(raw, body.as_bytes());
        assert_eq!(parsed, json!({"Id": "c-1"}));
        assert_eq!(id.as_deref(), Some("e-1"));
    }

    #[test]
    fn an_envelope_whose_payload_is_not_utf8_is_refused_not_mapped_whole() {
        // How the runtime shows Avro `bytes` that are not UTF-8.
        let v = json!({"id": "e-2", "content_type": "text/plain", "payload": [255, 254, 123]});
        let why = payload_of(&record(v, FRAMED)).expect_err("refused");
        assert!(
            why.contains("not JSON") && why.contains("text/plain"),
            "{why}"
        );
    }

    fn refused(code: rdkafka::types::RDKafkaErrorCode) -> ProduceError {
        ProduceError {
            topic: "crm.contacts".into(),
            source: rdkafka::error::KafkaError::MessageProduction(code),
            key: None,
            payload: None,
        }
    }

    #[test]
    fn kafka_refusing_a_mapped_record_for_good_is_the_records_fault_a_missing_topic_is_not() {
        use rdkafka::types::RDKafkaErrorCode as C;
        let transform: Arc<dyn Transform> =
            Arc::new(|_: &[u8], _: &Json| Ok(apache_avro::types::Value::Null));
        let sink = MapSink::new("normalize", "crm.contacts", transform);
        let r = record(Json::Null, b"{}");
        let too_large = sink.produce_failure(&r, &refused(C::MessageSizeTooLarge));
        assert!(!too_large.is_retryable(), "{too_large:?}");
        assert_eq!(too_large.scope, Scope::Record, "dead-lettered");
        assert!(
            too_large.message.contains("hooks.contacts/0@7")
                && too_large.message.contains("`crm.contacts`"),
            "{too_large:?}"
        );
        let missing = sink.produce_failure(&r, &refused(C::UnknownTopicOrPartition));
        assert!(missing.is_retryable(), "{missing:?}");
        assert_eq!(missing.scope, Scope::Connector, "waits, gives nothing up");
        let timed_out = sink.produce_failure(&r, &refused(C::MessageTimedOut));
        assert!(timed_out.is_retryable(), "{timed_out:?}");
        assert_eq!(timed_out.scope, Scope::Record);
    }

    #[test]
    fn a_json_record_is_mapped_whole_from_its_own_bytes() {
        let raw = br#"{"Id": "c-3", "payload": [1], "content_type": "x"}"#;
        let v: Json = serde_json::from_slice(raw).expect("JSON");
        let (bytes, parsed, id) = payload_of(&record(v.clone(), raw)).expect("mapped");
        assert_eq!(bytes, raw);
        assert_eq!(parsed, v);
        assert_eq!(id, None);
    }
}
