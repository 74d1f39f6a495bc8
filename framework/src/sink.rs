//! The sink contract: how a connector writes records to a target system.
//!
//! The runtime owns the loop: it consumes the topic, decodes each record
//! (Avro through the schema registry, else JSON or text), and hands
//! [`Sink::write`] a batch, in Kafka order per partition. The sink answers
//! when the batch is safely written, or says what became of each record
//! ([`SinkFailure`]): written, failed in a way that may pass later, failed
//! for good, or not attempted. Only then does the runtime store offsets, and
//! only up to the first record of each partition that is not written, so a
//! record is never committed before the target has it. While a sink is slow
//! or down the runtime pauses consumption (the consumer keeps polling, so it
//! stays in its group) and memory stays bounded; what to do with a failure
//! (retry with backoff, stop the connector on a permanent one; dead-letter
//! and circuit breaking in the resilience layer) is the runtime's decision,
//! not the sink's.

use crate::error::ConnectorError;
use std::future::Future;

/// One record handed to a sink.
#[derive(Debug, Clone)]
pub struct SinkRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Kafka timestamp, epoch milliseconds.
    pub timestamp: Option<i64>,
    /// The key as text (keys that are not UTF-8 are shown as base64).
    pub key: Option<String>,
    /// The key's bytes as they were in Kafka.
    pub raw_key: Option<Vec<u8>>,
    /// The value as JSON: decoded Avro, or the payload's own JSON, or a string.
    pub value: serde_json::Value,
    /// The value's bytes as they were in Kafka.
    pub raw: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The `ferry-correlation-id` header, or a fresh id.
    pub correlation_id: String,
}

impl SinkRecord {
    /// A record whose value is the JSON `value` (its bytes `value`'s text),
    /// keyed by `key`, with no headers: what a sink sees of a JSON topic.
    /// For benches and tests of sinks.
    pub fn from_json(
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<String>,
        value: serde_json::Value,
    ) -> Self {
        Self {
            topic: topic.to_owned(),
            partition,
            offset,
            timestamp: None,
            raw_key: key.as_ref().map(|k| k.clone().into_bytes()),
            key,
            raw: Some(value.to_string().into_bytes()),
            value,
            headers: Vec::new(),
            correlation_id: String::new(),
        }
    }

    /// Bytes the record holds in memory (for the in-flight bound).
    pub fn size(&self) -> usize {
        self.raw.as_ref().map_or(0, Vec::len) * 3 + self.key.as_ref().map_or(0, String::len) + 128
    }

    /// `topic/partition@offset`, for messages.
    pub fn at(&self) -> String {
        format!("{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// What became of one record of a batch that was not entirely written.
#[derive(Debug)]
pub enum RecordOutcome {
    /// Safely in the target.
    Written,
    /// Not written; the error says whether trying again can help.
    Failed(ConnectorError),
    /// Not tried (the sink stopped at an earlier record).
    NotAttempted,
}

/// A batch that was not (entirely) written: one outcome per record, in the
/// batch's order.
#[derive(Debug)]
pub struct SinkFailure {
    outcomes: Vec<RecordOutcome>,
}

impl SinkFailure {
    /// Records `0..index` are written, record `index` failed with `error`,
    /// the rest were not attempted: a sink that writes one record at a time.
    pub fn at(len: usize, index: usize, error: ConnectorError) -> Self {
        let mut error = Some(error);
        let outcomes = (0..len)
            .map(|i| match i.cmp(&index) {
                std::cmp::Ordering::Less => RecordOutcome::Written,
                std::cmp::Ordering::Equal => error
                    .take()
                    .map_or(RecordOutcome::NotAttempted, RecordOutcome::Failed),
                std::cmp::Ordering::Greater => RecordOutcome::NotAttempted,
            })
            .collect();
        Self { outcomes }
    }

    /// The whole batch failed as one (one request carried every record):
    /// every record gets `error`'s classification.
    pub fn batch(len: usize, error: ConnectorError) -> Self {
        let outcomes = (0..len)
            .map(|_| RecordOutcome::Failed(error.clone()))
            .collect();
        Self { outcomes }
    }

    /// Per-record outcomes from a bulk API; `outcomes` has one entry per
    /// record of the batch, in order (missing entries count as not attempted).
    pub fn per_record(outcomes: Vec<RecordOutcome>) -> Self {
        Self { outcomes }
    }

    /// The outcomes as the sink gave them.
    pub fn outcomes(&self) -> &[RecordOutcome] {
        &self.outcomes
    }

    /// How many records at the start of the batch are written.
    pub fn written_prefix(&self) -> usize {
        self.outcomes
            .iter()
            .take_while(|o| matches!(o, RecordOutcome::Written))
            .count()
    }

    /// The first record's failure, if one failed.
    pub fn first_error(&self) -> Option<&ConnectorError> {
        self.outcomes.iter().find_map(|o| match o {
            RecordOutcome::Failed(e) => Some(e),
            _ => None,
        })
    }

    /// The outcomes, one per record (padded to `len` with `NotAttempted`).
    pub(crate) fn into_outcomes(self, len: usize) -> Vec<RecordOutcome> {
        let mut outcomes = self.outcomes;
        outcomes.truncate(len);
        while outcomes.len() < len {
            outcomes.push(RecordOutcome::NotAttempted);
        }
        outcomes
    }
}

/// What a sink can see of the runtime.
#[derive(Debug, Clone)]
pub struct SinkContext {
    pub name: String,
    /// For a sink that writes to Kafka (a processor): the shared producer
    /// and the topics it declared as outputs.
    pub output: Option<KafkaOutput>,
}

/// The topics a processor writes, created and with their value schemas
/// registered at startup (`SinkSettings::outputs`).
#[derive(Clone)]
pub struct KafkaOutput {
    pub producer: crate::kafka::KafkaProducer,
    pub targets: std::collections::BTreeMap<String, crate::runtime::SourceTarget>,
}

impl std::fmt::Debug for KafkaOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaOutput")
            .field("targets", &self.targets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Where a sink that keeps its consumed offsets in its target says to
/// resume. Such a sink writes, in the same transaction as a batch's
/// records, the next offset to read of each partition in it (PostgreSQL's
/// `ferry_sink_offsets`): a crash at any point then neither loses nor
/// repeats a record's effect. The runtime asks here, on start and after
/// every rebalance, where each newly assigned partition resumes, and seeks
/// there (the group's committed offsets, which Ferry still commits after
/// each batch for lag monitoring, may lag behind the target's).
///
/// A separate object from the sink (sharing its connection pool, say):
/// the runtime may ask while a write holds the sink.
pub trait TargetOffsets: Send + Sync + 'static {
    /// The next offset to read of each of `partitions`, as the target
    /// recorded it. A partition the target has no offset for is left out:
    /// the group's committed offset (or `auto.offset.reset`) applies.
    fn load<'a>(
        &'a self,
        partitions: &'a [crate::kafka::TopicPartition],
    ) -> futures::future::BoxFuture<
        'a,
        Result<Vec<(crate::kafka::TopicPartition, i64)>, ConnectorError>,
    >;
}

/// A sink connector. Write the methods as `async fn`s.
pub trait Sink: Send + 'static {
    /// Called once per (re)start before the first write.
    fn open(
        &mut self,
        _ctx: &SinkContext,
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send {
        async { Ok(()) }
    }

    /// Writes `batch` (never empty), in order. The future may be dropped
    /// (at shutdown, or when the runtime gives up on a hung target); the
    /// records of a dropped write count as not written.
    fn write(
        &mut self,
        batch: &[SinkRecord],
    ) -> impl Future<Output = Result<(), SinkFailure>> + Send;

    /// For a sink that keeps its offsets in its target (see
    /// [`TargetOffsets`]): where to resume. Asked after each `open`.
    fn target_offsets(&self) -> Option<std::sync::Arc<dyn TargetOffsets>> {
        None
    }
}

pub(crate) trait DynSink: Send {
    fn open<'a>(
        &'a mut self,
        ctx: &'a SinkContext,
    ) -> futures::future::BoxFuture<'a, Result<(), ConnectorError>>;
    fn write<'a>(
        &'a mut self,
        batch: &'a [SinkRecord],
    ) -> futures::future::BoxFuture<'a, Result<(), SinkFailure>>;
    fn target_offsets(&self) -> Option<std::sync::Arc<dyn TargetOffsets>>;
}

impl<S: Sink> DynSink for S {
    fn open<'a>(
        &'a mut self,
        ctx: &'a SinkContext,
    ) -> futures::future::BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(Sink::open(self, ctx))
    }
    fn write<'a>(
        &'a mut self,
        batch: &'a [SinkRecord],
    ) -> futures::future::BoxFuture<'a, Result<(), SinkFailure>> {
        Box::pin(Sink::write(self, batch))
    }
    fn target_offsets(&self) -> Option<std::sync::Arc<dyn TargetOffsets>> {
        Sink::target_offsets(self)
    }
}

/// A sink erased for the runtime.
pub struct BoxedSink(pub(crate) Box<dyn DynSink>);

impl BoxedSink {
    pub fn new(sink: impl Sink) -> Self {
        Self(Box::new(sink))
    }
}

impl std::fmt::Debug for BoxedSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BoxedSink")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_at_an_index_writes_what_came_before() {
        let o = SinkFailure::at(4, 2, ConnectorError::external("down")).into_outcomes(4);
        assert!(matches!(o[0], RecordOutcome::Written));
        assert!(matches!(o[1], RecordOutcome::Written));
        assert!(matches!(&o[2], RecordOutcome::Failed(e) if e.is_retryable()));
        assert!(matches!(o[3], RecordOutcome::NotAttempted));
    }

    #[test]
    fn a_short_outcome_list_is_padded_and_a_batch_failure_covers_every_record() {
        let o = SinkFailure::per_record(vec![RecordOutcome::Written]).into_outcomes(3);
        assert!(matches!(o[2], RecordOutcome::NotAttempted));
        let o = SinkFailure::batch(2, ConnectorError::user("400")).into_outcomes(2);
        assert!(o
            .iter()
            .all(|r| matches!(r, RecordOutcome::Failed(e) if !e.is_retryable())));
    }
}
