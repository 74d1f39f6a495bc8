//! The consumer: offsets are stored only after processing.

use super::{FerryClientContext, KafkaConfig, KafkaLayerError};
use crate::telemetry::metrics as m;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::Message;

/// A group consumer whose committed position never passes a record that was
/// not processed. Call [`mark_processed`](Self::mark_processed) when a record
/// is done (written by a sink, say); the next commit includes it.
pub struct KafkaConsumer {
    inner: StreamConsumer<FerryClientContext>,
    consumed: metrics::Counter,
}

impl KafkaConsumer {
    /// Creates a consumer in `group_id` and subscribes it to `topics`.
    pub fn subscribe(
        config: &KafkaConfig,
        bootstrap_servers: &str,
        group_id: &str,
        topics: &[&str],
    ) -> Result<Self, KafkaLayerError> {
        let inner: StreamConsumer<FerryClientContext> = config
            .consumer_config(bootstrap_servers, group_id)
            .create_with_context(FerryClientContext::default())
            .map_err(KafkaLayerError::ClientConfig)?;
        inner
            .subscribe(topics)
            .map_err(|source| KafkaLayerError::Client {
                context: format!("subscribing group `{group_id}` to {topics:?}"),
                source,
            })?;
        Ok(Self {
            inner,
            consumed: metrics::counter!(m::KAFKA_CONSUMED_RECORDS_TOTAL),
        })
    }

    /// The next record. Keeps the group membership alive while it waits.
    pub async fn recv(&self) -> Result<BorrowedMessage<'_>, KafkaLayerError> {
        let msg = self
            .inner
            .recv()
            .await
            .map_err(|source| KafkaLayerError::Client {
                context: "receiving from Kafka".into(),
                source,
            })?;
        self.consumed.increment(1);
        Ok(msg)
    }

    /// Marks `msg` (and so everything before it in its partition) processed.
    pub fn mark_processed(&self, msg: &BorrowedMessage<'_>) -> Result<(), KafkaLayerError> {
        self.mark_position(msg.topic(), msg.partition(), msg.offset())
    }

    /// Marks the record at `offset` in `topic`/`partition` processed.
    pub fn mark_position(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<(), KafkaLayerError> {
        self.inner
            .store_offset(topic, partition, offset)
            .map_err(|source| KafkaLayerError::Client {
                context: format!("storing offset {topic}/{partition}@{offset}"),
                source,
            })
    }

    /// Commits every stored offset now and waits for the broker's answer. Used
    /// at shutdown; during normal running librdkafka commits in the background.
    pub fn commit(&self) -> Result<(), KafkaLayerError> {
        match self.inner.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => Ok(()),
            // Nothing stored since the last commit: nothing to do.
            Err(e)
                if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::NoOffset) =>
            {
                Ok(())
            }
            Err(source) => Err(KafkaLayerError::Client {
                context: "committing offsets".into(),
                source,
            }),
        }
    }

    /// The underlying rdkafka consumer, for pause/resume and assignment queries.
    pub fn client(&self) -> &StreamConsumer<FerryClientContext> {
        &self.inner
    }
}
