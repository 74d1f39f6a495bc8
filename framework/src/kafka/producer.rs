//! The producer every Ferry component writes to Kafka with.

use super::{FerryClientContext, KafkaConfig, KafkaLayerError, ProduceError};
use crate::telemetry::metrics as m;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::Message;
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
        self.enqueue(record).await?.delivered().await
    }

    /// Hands one record to librdkafka's queue, waiting while the queue is
    /// full, and returns a handle on its delivery. Records enqueued one
    /// after another (each `enqueue` awaited before the next) keep their
    /// order per partition, whatever the queue does: the idempotent
    /// producer never reorders what it has accepted. (Many concurrent
    /// `send`s do not: each retries a full queue on its own timer.)
    pub async fn enqueue(&self, record: OutgoingRecord) -> Result<PendingDelivery, ProduceError> {
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
        let mut wait = QUEUE_FULL_FIRST_WAIT;
        loop {
            match self.inner.send_result(fr) {
                Ok(delivery) => {
                    return Ok(PendingDelivery {
                        delivery,
                        size,
                        producer: self.clone(),
                        record: Some((record.topic.clone(), record.key.clone())),
                    })
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // librdkafka's own thread drains the queue; wait a little
                    // longer each time, up to a few milliseconds.
                    fr = back;
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(QUEUE_FULL_MAX_WAIT);
                }
                Err((source, _)) => {
                    self.errors.increment(1);
                    return Err(ProduceError {
                        topic: record.topic.clone(),
                        source,
                        key: record.key.clone(),
                        payload: record.payload.clone(),
                    });
                }
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

const QUEUE_FULL_FIRST_WAIT: Duration = Duration::from_micros(500);
const QUEUE_FULL_MAX_WAIT: Duration = Duration::from_millis(20);

/// A record in librdkafka's queue; resolve it with [`delivered`](Self::delivered).
pub struct PendingDelivery {
    delivery: DeliveryFuture,
    size: usize,
    producer: KafkaProducer,
    /// Topic and key, handed back on failure.
    record: Option<(String, Option<Vec<u8>>)>,
}

impl PendingDelivery {
    /// Resolves when Kafka acknowledged the record, or librdkafka gave up.
    pub async fn delivered(mut self) -> Result<Delivered, ProduceError> {
        let (topic, key) = self.record.take().unwrap_or_default();
        let failed = |source, payload| {
            self.producer.errors.increment(1);
            ProduceError {
                topic: topic.clone(),
                source,
                key: key.clone(),
                payload,
            }
        };
        match self.delivery.await {
            Ok(Ok(d)) => {
                self.producer.produced.increment(1);
                self.producer.produced_bytes.increment(self.size as u64);
                Ok(Delivered {
                    partition: d.partition,
                    offset: d.offset,
                })
            }
            Ok(Err((source, msg))) => Err(failed(source, msg.payload().map(<[u8]>::to_vec))),
            // The producer was dropped before answering.
            Err(_) => Err(failed(KafkaError::Canceled, None)),
        }
    }
}
