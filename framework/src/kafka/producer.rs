//! The producer every Ferry component writes to Kafka with.

use super::{FerryClientContext, KafkaConfig, KafkaLayerError, ProduceError};
use crate::telemetry::metrics as m;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use std::time::Duration;

/// A record on its way to Kafka.
#[derive(Debug, Clone, Default)]
pub struct OutgoingRecord {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// Header name and value; repeated names are allowed, as in Kafka.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Explicit partition; unset, Kafka's partitioner picks one from the key.
    pub partition: Option<i32>,
}

/// Where Kafka put a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// Idempotent, `acks=all` producer. Cheap to clone; clones share one client.
#[derive(Clone)]
pub struct KafkaProducer {
    inner: FutureProducer<FerryClientContext>,
    produced: metrics::Counter,
    produced_bytes: metrics::Counter,
    errors: metrics::Counter,
}

impl KafkaProducer {
    /// Creates the producer (librdkafka connects lazily, on the first send).
    pub fn new(config: &KafkaConfig, bootstrap_servers: &str) -> Result<Self, KafkaLayerError> {
        let inner = config
            .producer_config(bootstrap_servers)
            .create_with_context(FerryClientContext::default())
            .map_err(KafkaLayerError::ClientConfig)?;
        Ok(Self {
            inner,
            produced: metrics::counter!(m::KAFKA_PRODUCED_RECORDS_TOTAL),
            produced_bytes: metrics::counter!(m::KAFKA_PRODUCED_BYTES_TOTAL),
            errors: metrics::counter!(m::KAFKA_PRODUCE_ERRORS_TOTAL),
        })
    }

    /// Sends one record and resolves when Kafka has acknowledged it (`acks=all`)
    /// or librdkafka has given up after `delivery_timeout`. While librdkafka's
    /// local queue is full, this waits: that is the producer's backpressure.
    pub async fn send(&self, record: OutgoingRecord) -> Result<Delivered, ProduceError> {
        let size =
            record.payload.as_ref().map_or(0, Vec::len) + record.key.as_ref().map_or(0, Vec::len);
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (name, value) in &record.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        let mut fr: FutureRecord<'_, Vec<u8>, Vec<u8>> =
            FutureRecord::to(&record.topic).headers(headers);
        if let Some(k) = &record.key {
            fr = fr.key(k);
        }
        if let Some(p) = &record.payload {
            fr = fr.payload(p);
        }
        if let Some(p) = record.partition {
            fr = fr.partition(p);
        }
        match self.inner.send(fr, Timeout::Never).await {
            Ok(d) => {
                self.produced.increment(1);
                self.produced_bytes.increment(size as u64);
                Ok(Delivered {
                    partition: d.partition,
                    offset: d.offset,
                })
            }
            Err((source, _)) => {
                self.errors.increment(1);
                Err(ProduceError {
                    topic: record.topic,
                    source,
                    key: record.key,
                    payload: record.payload,
                })
            }
        }
    }

    /// Waits until every record handed to [`send`](Self::send) is acknowledged
    /// or failed, for at most `timeout`. Runs on a blocking thread.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaLayerError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.flush(Timeout::After(timeout)))
            .await
            .map_err(|e| KafkaLayerError::Topic {
                topic: "*".into(),
                message: format!("flush task failed: {e}"),
            })?
            .map_err(|source| KafkaLayerError::Client {
                context: "flushing the producer".into(),
                source,
            })
    }

    /// Records handed to librdkafka and not yet acknowledged or failed.
    pub fn in_flight(&self) -> i32 {
        self.inner.in_flight_count()
    }
}
