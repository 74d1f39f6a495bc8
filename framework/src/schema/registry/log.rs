//! The registry topic (`_ferry_schemas`): a single-partition, compacted log that is the
//! registry's only storage. One reader task per registry instance replays it
//! into [`RegistryState`]; writers append and then wait until their own
//! record has been applied, so every decision is read back from the log.

use super::state::{Applied, RegistryState};
use crate::config::TopicSpec;
use crate::kafka::{
    FerryClientContext, KafkaAdmin, KafkaConfig, KafkaLayerError, KafkaProducer, OutgoingRecord,
};
use crate::telemetry::metrics as m;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The log could not be read or written in time.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("schema log `{topic}`: {source}")]
    Kafka {
        topic: String,
        #[source]
        source: KafkaLayerError,
    },
    #[error("schema log `{topic}`: write failed: {message}")]
    Write { topic: String, message: String },
    #[error("schema log `{topic}`: not caught up within {within:?} (applied up to offset {applied}, log ends at {end})")]
    Timeout {
        topic: String,
        within: Duration,
        applied: i64,
        end: i64,
    },
    #[error("schema log `{topic}` has {partitions} partitions; it must have exactly 1 so every registry reads one order")]
    Partitions { topic: String, partitions: usize },
}

/// The log and the state replayed from it.
pub struct SchemaLog {
    topic: String,
    producer: KafkaProducer,
    reader: Arc<StreamConsumer<FerryClientContext>>,
    state: Arc<RwLock<RegistryState>>,
    /// The next offset the reader will apply.
    applied: watch::Receiver<i64>,
    stop: CancellationToken,
    timeout: Duration,
}

impl SchemaLog {
    /// The topic spec: one partition, compacted, like Confluent's `_schemas`.
    pub fn topic_spec(topic: &str) -> TopicSpec {
        TopicSpec::compacted(topic, NonZeroU32::MIN)
    }

    /// Creates the topic if needed, starts the reader and replays the log to its end.
    pub async fn open(
        kafka: &KafkaConfig,
        bootstrap: &str,
        topic: &str,
        timeout: Duration,
    ) -> Result<Self, LogError> {
        let err = |source| LogError::Kafka {
            topic: topic.to_owned(),
            source,
        };
        let admin = KafkaAdmin::new(kafka, bootstrap).map_err(err)?;
        admin
            .ensure_state_topic(&Self::topic_spec(topic), "schema_registry.topic")
            .await
            .map_err(err)?;
        let described = admin.describe(topic).await.map_err(err)?;
        if described.partitions.len() != 1 {
            return Err(LogError::Partitions {
                topic: topic.to_owned(),
                partitions: described.partitions.len(),
            });
        }
        let producer = KafkaProducer::new(kafka, bootstrap).map_err(err)?;

        // No group: the reader is assigned the partition and never commits,
        // so every instance replays the whole log.
        let mut client = kafka.client_config(bootstrap);
        client
            .set(
                "group.id",
                format!("ferry-schema-registry-{}", uuid::Uuid::new_v4()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            // A writer waits for its own record to come back through the
            // reader: keep that wait short (the topic is tiny, so the extra
            // idle fetches cost little).
            .set("fetch.wait.max.ms", "100");
        let reader: StreamConsumer<FerryClientContext> = client
            .create_with_context(FerryClientContext::default())
            .map_err(|e| err(KafkaLayerError::ClientConfig(e)))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .map_err(|source| {
                err(KafkaLayerError::Client {
                    context: "assigning the schema log".into(),
                    source,
                })
            })?;
        reader.assign(&tpl).map_err(|source| {
            err(KafkaLayerError::Client {
                context: "assigning the schema log".into(),
                source,
            })
        })?;
        let reader = Arc::new(reader);
        let state = Arc::new(RwLock::new(RegistryState::default()));
        let (tx, applied) = watch::channel(0);
        let stop = CancellationToken::new();
        tokio::spawn(replay(
            Arc::clone(&reader),
            Arc::clone(&state),
            tx,
            stop.clone(),
            topic.to_owned(),
        ));
        let log = Self {
            topic: topic.to_owned(),
            producer,
            reader,
            state,
            applied,
            stop,
            timeout,
        };
        log.catch_up().await?;
        Ok(log)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The state as applied so far. Hold the guard briefly; never across an await.
    pub fn state(&self) -> RwLockReadGuard<'_, RegistryState> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until everything in the log when this was called has been applied.
    pub async fn catch_up(&self) -> Result<(), LogError> {
        let reader = Arc::clone(&self.reader);
        let topic = self.topic.clone();
        let timeout = self.timeout;
        let end = tokio::task::spawn_blocking(move || reader.fetch_watermarks(&topic, 0, timeout))
            .await
            .map_err(|e| self.write_error(e.to_string()))?
            .map_err(|source| LogError::Kafka {
                topic: self.topic.clone(),
                source: KafkaLayerError::Client {
                    context: "reading the schema log's end offset".into(),
                    source,
                },
            })?
            .1;
        self.wait_applied(end).await
    }

    /// Appends a record and waits until the reader has applied it.
    pub async fn append(&self, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), LogError> {
        let delivered = self
            .producer
            .send(OutgoingRecord {
                topic: self.topic.clone(),
                key: Some(key),
                payload: value,
                headers: Vec::new(),
                partition: Some(0),
            })
            .await
            .map_err(|e| self.write_error(e.to_string()))?;
        self.wait_applied(delivered.offset + 1).await
    }

    async fn wait_applied(&self, end: i64) -> Result<(), LogError> {
        let mut applied = self.applied.clone();
        let reached = tokio::time::timeout(self.timeout, applied.wait_for(|a| *a >= end)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(LogError::Timeout {
                topic: self.topic.clone(),
                within: self.timeout,
                applied: *self.applied.borrow(),
                end,
            }),
        }
    }

    fn write_error(&self, message: String) -> LogError {
        LogError::Write {
            topic: self.topic.clone(),
            message,
        }
    }
}

impl Drop for SchemaLog {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn replay(
    reader: Arc<StreamConsumer<FerryClientContext>>,
    state: Arc<RwLock<RegistryState>>,
    applied: watch::Sender<i64>,
    stop: CancellationToken,
    topic: String,
) {
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            m = reader.recv() => m,
        };
        match msg {
            Ok(msg) => {
                let outcome = state
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .apply(msg.key().unwrap_or_default(), msg.payload());
                match outcome {
                    Applied::Accepted => {}
                    Applied::Rejected { why } => {
                        tracing::debug!(%topic, offset = msg.offset(), %why, "schema proposal rejected");
                    }
                    Applied::Ignored { why } => {
                        metrics::counter!(m::SCHEMA_LOG_SKIPPED_RECORDS_TOTAL).increment(1);
                        tracing::debug!(%topic, offset = msg.offset(), %why, "schema log record skipped");
                    }
                }
                applied.send_replace(msg.offset() + 1);
            }
            Err(e) => {
                tracing::warn!(%topic, error = %e, "reading the schema log failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
}
