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
//! order and removes from the spool what Kafka acknowledged, up to the
//! first failure, which it retries after a backoff. Its last round (what
//! is left fits one batch) holds the gate, so the spool is then empty and
//! new events go straight to Kafka again.
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
    /// Kafka will never take this record (too large, invalid): it is not
    /// spooled, where it would block every event behind it.
    #[error("Kafka refuses the event: {reason}")]
    Refused { reason: String, too_large: bool },
}

impl Unavailable {
    fn refused(e: &crate::kafka::ProduceError) -> Self {
        use rdkafka::types::RDKafkaErrorCode as C;
        let too_large = matches!(
            e.source.rdkafka_error_code(),
            Some(C::MessageSizeTooLarge | C::InvalidMessageSize)
        );
        Unavailable::Refused {
            reason: e.to_string(),
            too_large,
        }
    }
}

/// Whether Kafka refused this record for what it is (its size, its
/// format), so sending it again cannot succeed. Errors about the topic
/// (missing, not authorized) are not the record's: they may pass, and the
/// record waits in the spool meanwhile.
fn refuses_the_record(e: &crate::kafka::ProduceError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.source.rdkafka_error_code(),
        // Not `InvalidMessage` (CORRUPT_MESSAGE): a CRC error in transit,
        // which a retry can pass.
        Some(C::MessageSizeTooLarge | C::InvalidMessageSize | C::InvalidRecord)
    )
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

/// Events a drain round sends at once (bounding its memory by this many
/// bodies).
const DRAIN_BATCH: usize = 64;
const DRAIN_BACKOFF_MIN: Duration = Duration::from_millis(200);
const DRAIN_BACKOFF_MAX: Duration = Duration::from_secs(10);

type Gate<'a> = tokio::sync::MutexGuard<'a, ()>;

/// Awaits `fut`, releasing `gate` once its deadline passes; `None` when
/// Ferry stops first (an outcome already in is still taken).
async fn unless_stopping<F: std::future::Future>(
    fut: F,
    gate: &mut Option<(Gate<'_>, tokio::time::Instant)>,
    shutdown: &Shutdown,
) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    loop {
        let release = gate.as_ref().map(|(_, t)| *t);
        tokio::select! {
            biased;
            r = &mut fut => return Some(r),
            () = shutdown.cancelled() => return None,
            () = async {
                match release {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => *gate = None,
        }
    }
}

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
    /// The topics this connector writes: a spooled entry for any other is
    /// set aside, never produced.
    topics: std::collections::HashSet<String>,
    /// Where entries Kafka refuses for good are kept.
    rejected: std::path::PathBuf,
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
        topics: impl IntoIterator<Item = String>,
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
            topics: topics.into_iter().collect(),
            rejected: dir.with_file_name("rejected"),
        });
        lane.publish();
        lanes()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), Arc::downgrade(&lane));
        Ok(lane)
    }

    /// Makes `record` durable (see the module doc); returns where. The
    /// deadline runs from the call and covers the wait for the gate and for
    /// room in librdkafka's queue (shared by the whole process) as well as
    /// the acknowledgement. When less than half of it is left once the gate
    /// is taken, the event goes to the spool without being sent: sending it
    /// and then spooling it after a deadline it had no time to meet would
    /// write it twice.
    pub async fn store(&self, record: OutgoingRecord) -> Result<Stored, Unavailable> {
        let deadline = tokio::time::Instant::now() + self.deadline;
        let gate = self.gate.lock().await;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if self.pending.load(Ordering::Acquire) > 0 || left < self.deadline / 2 {
            let stored = self.spool_append(&record).await;
            drop(gate);
            return stored;
        }
        let enqueued =
            tokio::time::timeout_at(deadline, self.producer.enqueue(record.clone())).await;
        drop(gate);
        let why = match enqueued {
            Ok(Ok(pending)) => match tokio::time::timeout_at(deadline, pending.delivered()).await {
                Ok(Ok(_)) => return Ok(Stored::Kafka),
                Ok(Err(e)) if refuses_the_record(&e) => return Err(Unavailable::refused(&e)),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no acknowledgement within {:?}", self.deadline),
            },
            Ok(Err(e)) if refuses_the_record(&e) => return Err(Unavailable::refused(&e)),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("librdkafka's queue stayed full for {:?}", self.deadline),
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
            // The last round (what is left fits one batch) takes the gate:
            // no event can join the spool meanwhile, so once it is through
            // the spool is empty and events go straight to Kafka again.
            // (Without it, a connector busier than one round trip never
            // finds the spool empty.) It holds the gate for the Kafka
            // deadline at most, so senders wait no longer than that; then
            // it waits for its acknowledgements without the gate (new
            // events join the spool behind it). Each sent event is waited
            // for until Kafka answers, never sent again while it may still
            // be delivered: a slow broker means slower rounds, not copies.
            let closing = self.pending.load(Ordering::Acquire) <= DRAIN_BATCH as u64;
            let gate = if closing {
                let gate = tokio::select! {
                    () = shutdown.cancelled() => return,
                    gate = self.gate.lock() => gate,
                };
                Some((gate, tokio::time::Instant::now() + self.deadline))
            } else {
                None
            };
            let round = self.drain_round(gate, &shutdown).await;
            if shutdown.is_cancelled() {
                self.publish();
                return;
            }
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

    /// Sends one batch from the head of the spool and removes from it what
    /// Kafka acknowledged, in order, up to the first failure. An entry Kafka
    /// refuses for what it is (or naming a topic this connector does not
    /// write) would block the spool for good: it is set aside in the
    /// `rejected/` folder beside the spool (one JSON file each, fsynced)
    /// and passed. A closing round holds the gate until `gate`'s deadline
    /// at most, then goes on without it; at shutdown the round stops
    /// sending and waiting, and what was acknowledged by then is removed.
    async fn drain_round(
        &self,
        mut gate: Option<(Gate<'_>, tokio::time::Instant)>,
        shutdown: &Shutdown,
    ) -> Result<(), String> {
        const STOPPING: &str = "Ferry is stopping";
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
        if batch.is_empty() {
            let spool = self.spool.lock().unwrap_or_else(PoisonError::into_inner);
            self.pending.store(spool.depth(), Ordering::Release);
            return Ok(());
        }
        // Each entry's outcome, in order: Ok (acknowledged or set aside) or
        // the failure that stops the round there.
        let mut sent = Vec::with_capacity(batch.len());
        let mut failure = None;
        for (ticket, e) in batch {
            if !self.topics.contains(&e.topic) {
                let why = format!("topic `{}` is not one this connector writes", e.topic);
                sent.push((ticket, e, Err(why)));
                continue;
            }
            let record = OutgoingRecord {
                topic: e.topic.clone(),
                key: e.key.clone(),
                payload: Some(e.value.clone()),
                headers: e.headers.clone(),
                partition: None,
            };
            let Some(enqueued) =
                unless_stopping(self.producer.enqueue(record), &mut gate, shutdown).await
            else {
                failure = Some(STOPPING.to_owned());
                break;
            };
            match enqueued {
                Ok(p) => sent.push((ticket, e, Ok(p))),
                Err(err) if refuses_the_record(&err) => {
                    sent.push((ticket, e, Err(err.to_string())))
                }
                Err(err) => {
                    failure = Some(err.to_string());
                    break;
                }
            }
        }
        let mut upto = None;
        let mut drained = 0u64;
        for (ticket, entry, outcome) in sent {
            let refused = match outcome {
                Ok(pending) => {
                    let Some(delivered) =
                        unless_stopping(pending.delivered(), &mut gate, shutdown).await
                    else {
                        failure.get_or_insert_with(|| STOPPING.to_owned());
                        break;
                    };
                    match delivered {
                        Ok(_) => None,
                        Err(err) if refuses_the_record(&err) => Some(err.to_string()),
                        Err(err) => {
                            failure.get_or_insert(err.to_string());
                            break;
                        }
                    }
                }
                Err(why) => Some(why),
            };
            if let Some(why) = refused {
                // Cannot keep it aside (disk): it stays in the spool, and
                // the prefix before it is still acknowledged below.
                if let Err(e) = self.set_aside(&entry, &why).await {
                    failure.get_or_insert(e);
                    break;
                }
            }
            upto = Some(ticket);
            drained += 1;
        }
        if let Some(last) = upto {
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
                .increment(drained);
            if depth == 0 {
                tracing::info!(connector = %self.name, "webhook spool drained; events go straight to Kafka again");
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Keeps an entry Kafka will never take in `rejected/` (beside the
    /// spool), so it leaves the spool without being lost.
    async fn set_aside(&self, entry: &SpoolEntry, why: &str) -> Result<(), String> {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let doc = serde_json::json!({
            "connector": self.name,
            "reason": why,
            "topic": entry.topic,
            "key_base64": entry.key.as_deref().map(b64),
            "value_base64": b64(&entry.value),
            "headers": entry.headers.iter().map(|(k, v)| serde_json::json!({"name": k, "value_base64": b64(v)})).collect::<Vec<_>>(),
            "spooled_at_ms": entry.spooled_at_ms,
        });
        let dir = self.rejected.clone();
        let name = format!("{}-{}.json", entry.spooled_at_ms, uuid::Uuid::new_v4());
        let written = tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            if !dir.is_dir() {
                std::fs::create_dir_all(&dir)?;
                // The new folder's own entry has to be durable too.
                if let Some(parent) = dir.parent() {
                    std::fs::File::open(parent)?.sync_all()?;
                }
            }
            let path = dir.join(name);
            let mut f = std::fs::File::create(&path)?;
            f.write_all(doc.to_string().as_bytes())?;
            f.sync_all()?;
            std::fs::File::open(&dir)?.sync_all()?;
            Ok::<_, std::io::Error>(path)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot set aside a spooled event Kafka refuses: {e}"))?;
        metrics::counter!(m::WEBHOOK_SPOOL_REJECTED_TOTAL, "connector" => self.name.clone())
            .increment(1);
        tracing::error!(connector = %self.name, reason = why, file = %written.display(), "webhook spool: Kafka refuses a spooled event for good; it is kept in this file and the spool goes on");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::kafka::KafkaConfig;

    fn record(i: usize) -> OutgoingRecord {
        OutgoingRecord {
            topic: "t".into(),
            key: Some(format!("k{i}").into_bytes()),
            payload: Some(vec![b'x'; 1000]),
            headers: vec![("n".into(), i.to_string().into_bytes())],
            partition: None,
        }
    }

    /// Kafka unreachable: the first event waits out the deadline, then every
    /// event goes to the spool at once, in order, fsynced; at the size limit
    /// the lane says so instead of accepting.
    #[tokio::test]
    async fn without_kafka_events_wait_in_the_spool_in_order_until_it_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let producer = KafkaProducer::new(&KafkaConfig::default(), "127.0.0.1:1").unwrap();
        let config = SpoolConfig {
            kafka_deadline: Duration::from_millis(300),
            max_bytes: 1024 * 1024,
        };
        let lane =
            Lane::open("lane-test", dir.path(), &config, producer, ["t".to_owned()]).unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(lane.store(record(0)).await.unwrap(), Stored::Spool);
        assert!(started.elapsed() >= config.kafka_deadline);
        let started = tokio::time::Instant::now();
        assert_eq!(lane.store(record(1)).await.unwrap(), Stored::Spool);
        assert!(
            started.elapsed() < config.kafka_deadline,
            "once the spool holds events, new ones join it without waiting for Kafka"
        );
        assert_eq!(lane.status().records, 2);
        assert_eq!(spool_of("lane-test").map(|s| s.records), Some(2));
        let mut stored = 2;
        let full = loop {
            match lane.store(record(stored)).await {
                Ok(Stored::Spool) => stored += 1,
                other => break other,
            }
        };
        assert!(matches!(full, Err(Unavailable::Full { .. })), "{full:?}");
        assert!(
            stored > 900 && stored < 1100,
            "{stored} events of ~1 KiB in 1 MiB"
        );
        drop(lane);
        let mut spool = Spool::open(dir.path(), config.max_bytes).unwrap();
        let kept = spool.peek(usize::MAX).unwrap();
        assert_eq!(kept.len(), stored, "everything answered is on disk");
        for (i, (_, e)) in kept.iter().enumerate() {
            assert_eq!(
                e.key.as_deref(),
                Some(format!("k{i}").as_bytes()),
                "in order"
            );
        }
    }

    /// While Kafka does not answer, the drain waits for the events it sent
    /// rather than sending them again each round: librdkafka's queue holds
    /// each spooled event once, not once per round.
    #[tokio::test]
    async fn a_silent_broker_does_not_make_the_drain_send_copies() {
        let dir = tempfile::tempdir().unwrap();
        let producer = KafkaProducer::new(&KafkaConfig::default(), "127.0.0.1:1").unwrap();
        let config = SpoolConfig {
            kafka_deadline: Duration::from_millis(100),
            max_bytes: 1024 * 1024,
        };
        let lane = Lane::open(
            "lane-copies",
            dir.path(),
            &config,
            producer.clone(),
            ["t".to_owned()],
        )
        .unwrap();
        for i in 0..5 {
            assert_eq!(lane.store(record(i)).await.unwrap(), Stored::Spool);
        }
        // The first event was sent once before it was spooled.
        assert_eq!(producer.in_flight(), 1);
        let shutdown = Shutdown::new();
        let drain = tokio::spawn(Arc::clone(&lane).drain(shutdown.clone()));
        // Twenty deadlines: many closing rounds' worth of time.
        tokio::time::sleep(config.kafka_deadline * 20).await;
        assert_eq!(
            producer.in_flight(),
            6,
            "each spooled event sent once (plus the first one's direct attempt)"
        );
        assert_eq!(
            lane.status().records,
            5,
            "nothing acknowledged, nothing removed"
        );
        shutdown.cancel();
        drain.await.unwrap();
        assert_eq!(lane.status().records, 5);
    }
}
