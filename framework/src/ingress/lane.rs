//! One connector's way into Kafka for pushed events: straight to Kafka
//! while it keeps up, through the spool on disk while it does not.
//!
//! [`Lane::store`] returns once the event is durable:
//! - **Kafka**: while the spool is empty, the record is enqueued on the
//!   shared producer and the request waits for the acknowledgement
//!   (`acks=all`) up to `kafka_deadline`;
//! - **spool**: when Kafka fails the record or misses the deadline, or the
//!   spool already holds events (so a new event does not overtake older
//!   ones), it is appended to the spool and fsynced.
//!
//! The decision and the enqueue happen under one gate, so events leave in
//! the order they were accepted. [`Lane::drain`] sends spooled events in
//! order, waits for every acknowledgement of a batch and only then
//! removes the batch from the spool; a failure retries the same batch
//! after a backoff. Once the spool is empty, new events go straight to
//! Kafka again.
//!
//! A record that missed the deadline is still in librdkafka's queue and may
//! be delivered after all; its spooled copy is then a duplicate (same
//! envelope id, same delivery id header), written after it.

use super::spool::{Spool, SpoolEntry, SpoolError};
use super::SpoolConfig;
use crate::kafka::{KafkaProducer, OutgoingRecord};
use crate::runtime::Shutdown;
use crate::schema::envelope::now_millis;
use crate::telemetry::metrics as m;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// Where an event was made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Acknowledged by Kafka.
    Kafka,
    /// In the spool on disk; the drain sends it to Kafka.
    Spool,
}

/// Why an event could not be made durable: the sender is answered 503 and
/// retries later.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("the spool is full ({limit} bytes) and Kafka has not caught up")]
    Full { limit: u64 },
    #[error("the spool cannot be written: {0}")]
    Disk(String),
}

/// What `/connectors` shows of a spool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SpoolStatus {
    pub records: u64,
    pub bytes: u64,
    /// Age of the oldest spooled event, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_age_ms: Option<u64>,
}

/// Every open lane by connector, for `/connectors`.
fn lanes() -> &'static Mutex<HashMap<String, Weak<Lane>>> {
    static LANES: OnceLock<Mutex<HashMap<String, Weak<Lane>>>> = OnceLock::new();
    LANES.get_or_init(Mutex::default)
}

/// The spool of connector `name`, if it has one open.
pub fn spool_of(name: &str) -> Option<SpoolStatus> {
    let lane = lanes()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(name)
        .and_then(Weak::upgrade)?;
    Some(lane.status())
}

/// Events a drain round sends at once.
const DRAIN_BATCH: usize = 256;
const DRAIN_BACKOFF_MIN: Duration = Duration::from_millis(200);
const DRAIN_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// One connector's lane.
pub struct Lane {
    name: String,
    producer: KafkaProducer,
    spool: Arc<Mutex<Spool>>,
    /// Events in the spool: mirrors `Spool::depth`, written only under the
    /// spool's lock (so updates cannot cross), read without it.
    pending: Arc<AtomicU64>,
    /// Held while deciding where an event goes and enqueueing it.
    gate: tokio::sync::Mutex<()>,
    deadline: Duration,
    limit: u64,
    wake: Notify,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Lane {
    /// Opens (and recovers) the spool in `dir`. Blocking file I/O.
    pub fn open(
        name: &str,
        dir: &Path,
        config: &SpoolConfig,
        producer: KafkaProducer,
    ) -> Result<Arc<Self>, SpoolError> {
        let spool = Spool::open(dir, config.max_bytes)?;
        let depth = spool.depth();
        if depth > 0 {
            tracing::info!(connector = name, records = depth, dir = %dir.display(), "webhook spool holds events from before; draining them first");
        }
        let lane = Arc::new(Self {
            name: name.to_owned(),
            producer,
            spool: Arc::new(Mutex::new(spool)),
            pending: Arc::new(AtomicU64::new(depth)),
            gate: tokio::sync::Mutex::new(()),
            deadline: config.kafka_deadline,
            limit: config.max_bytes,
            wake: Notify::new(),
        });
        lane.publish();
        lanes()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), Arc::downgrade(&lane));
        Ok(lane)
    }

    /// Makes `record` durable (see the module doc); returns where.
    pub async fn store(&self, record: OutgoingRecord) -> Result<Stored, Unavailable> {
        let gate = self.gate.lock().await;
        if self.pending.load(Ordering::Acquire) > 0 {
            let stored = self.spool_append(&record).await;
            drop(gate);
            return stored;
        }
        let enqueued = self.producer.enqueue(record.clone()).await;
        drop(gate);
        let why = match enqueued {
            Ok(pending) => match tokio::time::timeout(self.deadline, pending.delivered()).await {
                Ok(Ok(_)) => return Ok(Stored::Kafka),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no acknowledgement within {:?}", self.deadline),
            },
            Err(e) => e.to_string(),
        };
        tracing::debug!(connector = %self.name, reason = %why, "Kafka did not take the event in time; spooling it");
        let _gate = self.gate.lock().await;
        self.spool_append(&record).await
    }

    async fn spool_append(&self, record: &OutgoingRecord) -> Result<Stored, Unavailable> {
        let entry = SpoolEntry {
            topic: record.topic.clone(),
            key: record.key.clone(),
            value: record.payload.clone().unwrap_or_default(),
            headers: record.headers.clone(),
            spooled_at_ms: now_millis(),
        };
        let (spool, pending) = (Arc::clone(&self.spool), Arc::clone(&self.pending));
        let appended = tokio::task::spawn_blocking(move || {
            let mut spool = spool.lock().unwrap_or_else(PoisonError::into_inner);
            spool.append(&entry)?;
            pending.store(spool.depth(), Ordering::Release);
            Ok::<_, SpoolError>(())
        })
        .await;
        match appended {
            Ok(Ok(())) => {
                self.wake.notify_one();
                self.publish();
                Ok(Stored::Spool)
            }
            Ok(Err(SpoolError::Full { .. })) => Err(Unavailable::Full { limit: self.limit }),
            Ok(Err(e)) => {
                tracing::error!(connector = %self.name, error = %e, "webhook spool write failed");
                Err(Unavailable::Disk(e.to_string()))
            }
            Err(e) => Err(Unavailable::Disk(format!("spool task failed: {e}"))),
        }
    }

    /// The spool's state now.
    pub fn status(&self) -> SpoolStatus {
        let spool = self.spool.lock().unwrap_or_else(PoisonError::into_inner);
        SpoolStatus {
            records: spool.depth(),
            bytes: spool.bytes(),
            oldest_age_ms: spool
                .oldest_ms()
                .map(|t| u64::try_from(now_millis().saturating_sub(t)).unwrap_or(0)),
        }
    }

    /// Sets the spool gauges.
    fn publish(&self) {
        let s = self.status();
        let c = self.name.clone();
        metrics::gauge!(m::WEBHOOK_SPOOL_RECORDS, "connector" => c.clone()).set(s.records as f64);
        metrics::gauge!(m::WEBHOOK_SPOOL_BYTES, "connector" => c.clone()).set(s.bytes as f64);
        metrics::gauge!(m::WEBHOOK_SPOOL_OLDEST_AGE_SECONDS, "connector" => c)
            .set(s.oldest_age_ms.unwrap_or(0) as f64 / 1000.0);
    }

    /// Drains the spool to Kafka until Ferry stops (see the module doc).
    /// What is left stays on disk for the next start.
    pub async fn drain(self: Arc<Self>, shutdown: Shutdown) {
        let mut backoff = DRAIN_BACKOFF_MIN;
        loop {
            if self.pending.load(Ordering::Acquire) == 0 {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                self.publish();
                continue;
            }
            let round = tokio::select! {
                () = shutdown.cancelled() => return,
                r = self.drain_round() => r,
            };
            self.publish();
            match round {
                Ok(()) => backoff = DRAIN_BACKOFF_MIN,
                Err(why) => {
                    tracing::warn!(connector = %self.name, error = %why, retry_in = ?backoff, "webhook spool: Kafka did not take the spooled events; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(DRAIN_BACKOFF_MAX);
                }
            }
        }
    }

    /// Sends one batch from the head of the spool and removes it once Kafka
    /// acknowledged all of it.
    async fn drain_round(&self) -> Result<(), String> {
        let spool = Arc::clone(&self.spool);
        let batch = tokio::task::spawn_blocking(move || {
            spool
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .peek(DRAIN_BATCH)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let Some(last) = batch.last().map(|(t, _)| *t) else {
            let spool = self.spool.lock().unwrap_or_else(PoisonError::into_inner);
            self.pending.store(spool.depth(), Ordering::Release);
            return Ok(());
        };
        let count = batch.len() as u64;
        let mut acks = Vec::with_capacity(batch.len());
        for (_, e) in batch {
            let record = OutgoingRecord {
                topic: e.topic,
                key: e.key,
                payload: Some(e.value),
                headers: e.headers,
                partition: None,
            };
            acks.push(
                self.producer
                    .enqueue(record)
                    .await
                    .map_err(|e| e.to_string())?
                    .delivered(),
            );
        }
        for r in futures::future::join_all(acks).await {
            r.map_err(|e| e.to_string())?;
        }
        let (spool, pending) = (Arc::clone(&self.spool), Arc::clone(&self.pending));
        let depth = tokio::task::spawn_blocking(move || {
            let mut spool = spool.lock().unwrap_or_else(PoisonError::into_inner);
            spool.ack(last)?;
            pending.store(spool.depth(), Ordering::Release);
            Ok::<_, SpoolError>(spool.depth())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        metrics::counter!(m::WEBHOOK_SPOOL_DRAINED_TOTAL, "connector" => self.name.clone())
            .increment(count);
        if depth == 0 {
            tracing::info!(connector = %self.name, "webhook spool drained; events go straight to Kafka again");
        }
        Ok(())
    }
}
