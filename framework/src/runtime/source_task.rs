//! Runs one source: poll, encode, produce, then store positions.
//!
//! The position of a source partition is stored only after every record of
//! that partition up to it is acknowledged by Kafka (`acks=all`), so after a
//! crash the source resumes at or before the first record Kafka may not
//! have: nothing is lost; records between the last stored position and the
//! crash are produced again (the duplicate window is one poll batch).
//!
//! A batch's records go into librdkafka's queue one after another, so they
//! keep their order per partition (and per key) even while the queue is
//! full; then the task waits for every acknowledgement.

use super::dead_letter::Class;
use super::headers;
use super::offsets::OffsetStore;
use super::Shutdown;
use crate::error::ConnectorError;
use crate::kafka::{KafkaProducer, OutgoingRecord};
use crate::schema::AvroCodec;
use crate::source::{BoxedSource, Poll, Position, SourceContext, SourceRecord};
use crate::telemetry::metrics as m;
use apache_avro::types::Value;
use std::collections::BTreeMap;
use std::time::Duration;

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
}

/// How a source task ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Ferry is stopping.
    Stopped,
    /// The source said it is done (a batch transfer finished).
    Completed,
}

pub(crate) async fn run(
    name: &str,
    mut source: BoxedSource,
    target: &SourceTarget,
    producer: &KafkaProducer,
    offsets: &OffsetStore,
    shutdown: &Shutdown,
    stop_budget: Duration,
) -> Result<Exit, ConnectorError> {
    let ctx = SourceContext {
        name: name.to_owned(),
        shutdown: shutdown.clone(),
    };
    let resume = offsets
        .load(name)
        .await
        .map_err(|e| ConnectorError::external(e.to_string()))?;
    tracing::info!(
        connector = name,
        partitions = resume.len(),
        "source resuming"
    );
    let mut stored = resume.clone();
    source.0.open(&ctx, resume).await?;
    loop {
        let polled = tokio::select! {
            _ = shutdown.cancelled() => return Ok(Exit::Stopped),
            p = source.0.poll(&ctx) => p?,
        };
        let durable = match polled {
            Poll::Done => return Ok(Exit::Completed),
            Poll::Idle(wait) => {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(Exit::Stopped),
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            Poll::Records(records) if records.is_empty() => continue,
            Poll::Checkpoint {
                partition,
                position,
            } => BTreeMap::from([(partition, position)]),
            // A returned batch is delivered even during shutdown (it is the
            // drain), but no longer than the stop budget allows: past it,
            // nothing of the batch is marked durable and it is produced
            // again after the restart.
            Poll::Records(records) => {
                let delivering = deliver(name, records, target, producer);
                tokio::pin!(delivering);
                let budget = async {
                    shutdown.cancelled().await;
                    tokio::time::sleep(stop_budget).await;
                };
                tokio::select! {
                    d = &mut delivering => d?,
                    () = budget => {
                        tracing::warn!(connector = name, within = ?stop_budget, "Kafka did not acknowledge the source's batch before the stop budget ran out; it is produced again after restart");
                        return Ok(Exit::Stopped);
                    }
                }
            }
        };
        for (partition, position) in durable {
            // An idle source checkpoints the same position every cycle:
            // write it once.
            if stored.get(&partition) == Some(&position) {
                continue;
            }
            // Once Ferry is stopping (before or during the store), the store
            // gets a third of the task's drain budget (the share
            // `StopBudget` leaves after draining); past it the batch is
            // simply produced again.
            let store = offsets.store(name, &partition, &position);
            let budget = async {
                shutdown.cancelled().await;
                tokio::time::sleep(stop_budget / 3).await;
            };
            tokio::select! {
                r = store => r.map_err(|e| ConnectorError::external(e.to_string()))?,
                () = budget => {
                    tracing::warn!(connector = name, "storing the source position did not finish before the stop budget ran out; the batch is produced again after restart");
                    return Ok(Exit::Stopped);
                }
            }
            source.0.durable(&partition, &position).await?;
            stored.insert(partition, position);
        }
    }
}

/// Encodes and produces a batch; returns, per source partition, the last
/// position whose records (and all before them) Kafka acknowledged.
async fn deliver(
    name: &str,
    records: Vec<SourceRecord>,
    target: &SourceTarget,
    producer: &KafkaProducer,
) -> Result<BTreeMap<String, Position>, ConnectorError> {
    let mut pending = Vec::with_capacity(records.len());
    let mut meta = Vec::with_capacity(records.len());
    let mut refused = None;
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    for (i, mut r) in records.into_iter().enumerate() {
        let (topic, payload, mut hs) = match encode(name, i, &r, target) {
            Ok(Encoded::Record { payload, headers }) => (target.topic.clone(), payload, headers),
            Ok(Encoded::DeadLetter {
                topic,
                raw,
                headers,
            }) => {
                tracing::warn!(connector = name, correlation_id = %r.correlation_id, dead_letter_topic = %topic,
                    error = %String::from_utf8_lossy(headers.iter().find(|(k, _)| k == headers::dead_letter::ERROR_MESSAGE).map_or(&[][..], |(_, v)| v)),
                    "record refused by the mapping; sent to the dead-letter topic");
                metrics::counter!(m::DEAD_LETTERS_TOTAL, "connector" => name.to_owned(), "class" => Class::Mapping.as_str()).increment(1);
                (topic, raw, headers)
            }
            Err(why) => {
                if let Some(ack) = r.ack.take() {
                    let _ = ack.send(Err(why.clone()));
                }
                refused = Some(why);
                break;
            }
        };
        hs.append(&mut r.headers);
        // One at a time into librdkafka's queue, so the batch keeps its
        // order even when the queue is full (backpressure waits here).
        let enqueued = producer
            .enqueue(OutgoingRecord {
                topic,
                key: r.key.take().map(String::into_bytes),
                payload: Some(payload),
                headers: hs,
                partition: None,
            })
            .await;
        match enqueued {
            Ok(p) => {
                pending.push(p.delivered());
                meta.push((r.partition, r.position, r.ack));
            }
            Err(e) => {
                if let Some(ack) = r.ack.take() {
                    let _ = ack.send(Err(e.to_string()));
                }
                failed.entry(r.partition).or_insert_with(|| e.to_string());
                break;
            }
        }
    }
    // Records before a refused one still go out (they are acknowledged,
    // and the batch then fails as a whole: no position is stored).
    let results = futures::future::join_all(pending).await;
    let mut durable = BTreeMap::new();
    let mut written = 0u64;
    for ((partition, position, ack), result) in meta.into_iter().zip(results) {
        match result {
            Ok(_) => {
                written += 1;
                if let Some(ack) = ack {
                    let _ = ack.send(Ok(()));
                }
                if !failed.contains_key(&partition) {
                    durable.insert(partition, position);
                }
            }
            Err(e) => {
                metrics::counter!(m::SOURCE_ERRORS_TOTAL, "connector" => name.to_owned(), "stage" => "sending").increment(1);
                if let Some(ack) = ack {
                    let _ = ack.send(Err(e.to_string()));
                }
                failed.entry(partition).or_insert_with(|| e.to_string());
            }
        }
    }
    metrics::counter!(m::SOURCE_RECORDS_TOTAL, "connector" => name.to_owned()).increment(written);
    if let Some((partition, why)) = failed.into_iter().next() {
        // No position is stored after a failed write: the task restarts
        // from the last stored one, so the failed record is produced again.
        return Err(ConnectorError::external(format!(
            "connector `{name}`: writing to `{}` failed (source partition `{partition}`): {why}",
            target.topic
        )));
    }
    if let Some(why) = refused {
        metrics::counter!(m::SOURCE_ERRORS_TOTAL, "connector" => name.to_owned(), "stage" => "processing").increment(1);
        return Err(ConnectorError::user(why));
    }
    Ok(durable)
}

/// What a source record becomes.
enum Encoded {
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

/// Encodes record `i` of a batch for `target`: its value as it is, or
/// (`mapping:`) the mapping of its envelope's payload. `Err` when the
/// record cannot be written anywhere (a source bug: its value does not fit
/// the topic's schema, or a mapped source that does not write envelopes).
fn encode(
    name: &str,
    i: usize,
    r: &SourceRecord,
    target: &SourceTarget,
) -> Result<Encoded, String> {
    let headers = target.headers(name, &r.correlation_id, &r.content_type);
    let misfit = |e: &dyn std::fmt::Display| {
        format!(
            "connector `{name}`: record {i} of the batch (partition `{}`, key {:?}) does not fit `{}`: {e}",
            r.partition, r.key, target.subject
        )
    };
    let Some(mapping) = &target.mapping else {
        let payload = target.codec.encode(&r.value).map_err(|e| misfit(&e))?;
        return Ok(Encoded::Record { payload, headers });
    };
    let (Some(raw), event_id) = envelope_parts(&r.value) else {
        return Err(misfit(
            &"a mapped source must write event envelopes (no `payload` bytes)",
        ));
    };
    let dead = |class_error: String, parts: [(&str, String); 3]| {
        use super::headers::dead_letter as h;
        let mut headers = headers.clone();
        // The raw payload is not the topic's schema.
        headers.retain(|(k, _)| {
            k != super::headers::SCHEMA_SUBJECT && k != super::headers::SCHEMA_VERSION
        });
        headers.extend(
            [
                (h::ERROR_CLASS, Class::Mapping.as_str().to_owned()),
                (h::ERROR_MESSAGE, class_error),
                (h::CONNECTOR, name.to_owned()),
                (h::SOURCE_TOPIC, target.topic.clone()),
                (
                    h::FIRST_FAILURE_MS,
                    crate::schema::envelope::now_millis().to_string(),
                ),
            ]
            .into_iter()
            .chain(parts.into_iter().filter(|(_, v)| !v.is_empty()))
            .map(|(k, v)| (k.to_owned(), v.into_bytes())),
        );
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
            let why = format!("the payload is not JSON: {e}");
            let parts = [
                (MAPPING_FIELD, String::new()),
                (MAPPING_RULE, "json".to_owned()),
                (MAPPING_SOURCE, String::new()),
            ];
            return Ok(dead(why, parts));
        }
    };
    let value = match mapping.transform.apply(raw, &json) {
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
    match target.codec.encode(&value) {
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
                format!("the mapped record does not fit `{}`: {e}", target.subject),
                parts,
            ))
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
