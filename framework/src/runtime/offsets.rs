//! Source positions, kept in a compacted Kafka topic (`ferry-offsets`),
//! keyed by connector and source partition, like Kafka Connect's offset
//! topic. A position is written only after every record before it was
//! acknowledged by Kafka (see `source_task`).

use crate::config::TopicSpec;
use crate::kafka::{
    compacted, KafkaAdmin, KafkaConfig, KafkaLayerError, KafkaProducer, OutgoingRecord,
};
use crate::source::{Position, Positions};
use std::num::NonZeroU32;
use std::time::Duration;

/// Positions could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error("offsets topic: {source}")]
    Kafka {
        topic: String,
        #[source]
        source: KafkaLayerError,
    },
    #[error(
        "offsets topic `{topic}`: writing the position of `{connector}`/`{partition}`: {message}"
    )]
    Write {
        topic: String,
        connector: String,
        partition: String,
        message: String,
    },
}

/// Reads and writes source positions.
#[derive(Clone)]
pub struct OffsetStore {
    topic: String,
    kafka: KafkaConfig,
    bootstrap: String,
    producer: KafkaProducer,
    timeout: Duration,
}

fn key(connector: &str, partition: &str) -> Vec<u8> {
    serde_json::to_vec(&[connector, partition]).unwrap_or_default()
}

impl OffsetStore {
    /// The topic: compacted, keyed; partitions spread many connectors.
    pub fn topic_spec(topic: &str) -> TopicSpec {
        TopicSpec::compacted(topic, NonZeroU32::MIN.saturating_add(2))
    }

    /// Creates the topic if needed.
    pub async fn open(
        kafka: &KafkaConfig,
        bootstrap: &str,
        topic: &str,
        producer: KafkaProducer,
    ) -> Result<Self, OffsetsError> {
        let admin = KafkaAdmin::new(kafka, bootstrap).map_err(|source| OffsetsError::Kafka {
            topic: topic.to_owned(),
            source,
        })?;
        admin
            .ensure_state_topic(&Self::topic_spec(topic), "offsets.topic")
            .await
            .map_err(|source| OffsetsError::Kafka {
                topic: topic.to_owned(),
                source,
            })?;
        Ok(Self {
            topic: topic.to_owned(),
            kafka: kafka.clone(),
            bootstrap: bootstrap.to_owned(),
            producer,
            timeout: kafka.request_timeout.max(Duration::from_secs(30)),
        })
    }

    /// The last stored position of each of `connector`'s source partitions.
    pub async fn load(&self, connector: &str) -> Result<Positions, OffsetsError> {
        let (kafka, bootstrap, topic, timeout) = (
            self.kafka.clone(),
            self.bootstrap.clone(),
            self.topic.clone(),
            self.timeout,
        );
        let all = tokio::task::spawn_blocking(move || {
            compacted::read_to_end(&kafka, &bootstrap, &topic, timeout)
        })
        .await
        .map_err(|e| OffsetsError::Kafka {
            topic: self.topic.clone(),
            source: KafkaLayerError::Topic {
                topic: self.topic.clone(),
                message: e.to_string(),
            },
        })?
        .map_err(|source| OffsetsError::Kafka {
            topic: self.topic.clone(),
            source,
        })?;
        let mut positions = Positions::new();
        for (k, v) in all {
            let Ok([c, p]) = serde_json::from_slice::<[String; 2]>(&k) else {
                continue;
            };
            if c == connector {
                if let Ok(pos) = serde_json::from_slice::<Position>(&v) {
                    positions.insert(p, pos);
                }
            }
        }
        Ok(positions)
    }

    /// Stores `position` for `connector`/`partition`; returns once Kafka has it.
    pub async fn store(
        &self,
        connector: &str,
        partition: &str,
        position: &Position,
    ) -> Result<(), OffsetsError> {
        self.producer
            .send(OutgoingRecord {
                topic: self.topic.clone(),
                key: Some(key(connector, partition)),
                payload: Some(serde_json::to_vec(position).unwrap_or_default()),
                ..OutgoingRecord::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| OffsetsError::Write {
                topic: self.topic.clone(),
                connector: connector.to_owned(),
                partition: partition.to_owned(),
                message: e.to_string(),
            })
    }
}
