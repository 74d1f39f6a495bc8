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
use super::offsets::OffsetStore;
use super::target::{Encoded, SourceTarget};
use super::Shutdown;
use crate::error::ConnectorError;
use crate::kafka::{KafkaProducer, OutgoingRecord};
use crate::source::{BoxedSource, Poll, Position, SourceContext, SourceRecord};
use crate::telemetry::metrics as m;
use std::collections::BTreeMap;
use std::time::Duration;

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
        let encoded = target
            .encode(name, &r.value, &r.correlation_id, &r.content_type)
            .map_err(|e| {
                format!(
                    "connector `{name}`: record {i} of the batch (partition `{}`, key {:?}) does not fit `{}`: {e}",
                    r.partition, r.key, target.subject
                )
            });
        let (topic, payload, mut hs) = match encoded {
            Ok(Encoded::Record { payload, headers }) => (target.topic.clone(), payload, headers),
            Ok(Encoded::DeadLetter {
                topic,
                raw,
                headers,
            }) => {
                tracing::warn!(connector = name, correlation_id = %r.correlation_id, dead_letter_topic = %topic,
                    error = %super::target::dead_letter_reason(&headers),
                    "record refused by the mapping; sent to the dead-letter topic");
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
        let topic_is_dead_letter = topic != target.topic;
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
                meta.push((r.partition, r.position, r.ack, topic_is_dead_letter));
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
    let mut dead_letters = 0u64;
    for ((partition, position, ack, is_dead_letter), result) in meta.into_iter().zip(results) {
        match result {
            Ok(_) => {
                written += 1;
                dead_letters += u64::from(is_dead_letter);
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
    // Counted once acknowledged, as a sink's dead letters are.
    metrics::counter!(m::DEAD_LETTERS_TOTAL, "connector" => name.to_owned(), "class" => Class::Mapping.as_str()).increment(dead_letters);
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
