//! The group consumer: offsets are stored only after processing, and a
//! revoked partition is released only when its owner says so.
//!
//! librdkafka runs the group's rebalance callback inside the call that polls
//! the consumer (here, [`KafkaConsumer::recv`]). A *coordinated* consumer
//! ([`KafkaConsumer::subscribe_coordinated`]) answers an assignment at once
//! but defers a revocation: it queues a [`Rebalance::Revoked`] event and
//! leaves librdkafka waiting (its join state `WAIT_UNASSIGN_CALL`; it pauses
//! every partition meanwhile) until the owner has finished or abandoned the
//! records of those partitions, stored and committed their offsets, and
//! called [`KafkaConsumer::release`]. Only then can another member fetch
//! them, from the committed offset: nothing is written by two members at
//! once, and a graceful rebalance repeats nothing that was acknowledged.
//! Under cooperative rebalancing nothing in librdkafka bounds how long the
//! group waits for the release (heartbeats go on meanwhile): the owner must,
//! and the sink task releases within its `drain_within`.
//!
//! Partitions are assigned with `cooperative-sticky`, so a member joining
//! or leaving moves only the partitions it must.

use super::{FerryClientContext, KafkaConfig, KafkaLayerError};
use crate::telemetry::metrics as m;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A topic and partition.
pub type TopicPartition = (String, i32);

/// A change of this member's assignment, as the group decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebalance {
    /// These partitions are now this member's (already assigned).
    Assigned(Vec<TopicPartition>),
    /// These partitions go to another member. A coordinated consumer keeps
    /// them until [`KafkaConsumer::release`]; `lost` means the group already
    /// gave them away (session expired): commits for them will fail, so
    /// drop what is in hand and release at once.
    Revoked {
        partitions: Vec<TopicPartition>,
        lost: bool,
    },
    /// The group protocol failed; the assignment was cleared.
    Failed(String),
}

/// State shared between the consumer and the rebalance callback.
#[derive(Default)]
struct Shared {
    events: Mutex<VecDeque<Rebalance>>,
    notify: tokio::sync::Notify,
    /// Set before the consumer closes: revocations are then answered at once
    /// (closing polls the consumer until the group is left).
    closing: AtomicBool,
    /// Revoked partitions not yet released.
    pending: Mutex<Vec<TopicPartition>>,
}

impl Shared {
    fn push(&self, event: Rebalance) {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(event);
        self.notify.notify_one();
    }

    fn forget_pending(&self, released: &[TopicPartition]) {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|tp| !released.contains(tp));
    }

    fn take_pending(&self) -> Vec<TopicPartition> {
        std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// The client context of a group consumer: logs like every Ferry client,
/// handles rebalances as the module doc says.
pub struct GroupContext {
    base: FerryClientContext,
    defer_revoke: bool,
    shared: Arc<Shared>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.base.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.base.error(error, reason);
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

fn tpl_of(partitions: &[TopicPartition]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in partitions {
        tpl.add_partition(t, *p);
    }
    tpl
}

/// Gives `partitions` back to the group (incrementally, or the whole
/// assignment under an eager protocol).
fn unassign<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    partitions: &[TopicPartition],
) -> KafkaResult<()> {
    if matches!(
        consumer.rebalance_protocol(),
        RebalanceProtocol::Cooperative
    ) {
        consumer.incremental_unassign(&tpl_of(partitions))
    } else {
        consumer.unassign()
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let list = partitions(tpl);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assigned = if matches!(
                    consumer.rebalance_protocol(),
                    RebalanceProtocol::Cooperative
                ) {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = assigned {
                    tracing::error!(error = %e, "taking the assigned partitions failed");
                }
                tracing::info!(partitions = ?list, "partitions assigned");
                self.shared.push(Rebalance::Assigned(list));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                tracing::info!(partitions = ?list, lost, "partitions revoked");
                if self.defer_revoke && !self.shared.closing.load(Ordering::SeqCst) {
                    self.shared
                        .pending
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .extend(list.iter().cloned());
                    self.shared.push(Rebalance::Revoked {
                        partitions: list,
                        lost,
                    });
                } else if let Err(e) = unassign(consumer, &list) {
                    tracing::warn!(error = %e, "releasing revoked partitions failed");
                }
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                tracing::warn!(error = %code, "group rebalance failed; assignment cleared");
                // librdkafka asks for the assignment to be cleared; under the
                // cooperative protocol only incrementally.
                let held = consumer
                    .assignment()
                    .map(|tpl| partitions(&tpl))
                    .unwrap_or_default();
                if let Err(e) = unassign(consumer, &held) {
                    tracing::warn!(error = %e, "clearing the assignment failed");
                }
                if self.defer_revoke {
                    self.shared.push(Rebalance::Failed(code.to_string()));
                }
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                tracing::warn!(error = %e, partitions = ?partitions(offsets), "committing offsets failed; they are retried with the next commit");
            }
        }
    }
}

/// What [`KafkaConsumer::recv`] got.
pub enum Received<'a> {
    Message(BorrowedMessage<'a>),
    /// A non-fatal client error (a broker transport failure, a coordinator
    /// moving): librdkafka recovers by itself; keep polling.
    Transient(KafkaError),
}

impl<'a> Received<'a> {
    /// The message, if this is one.
    pub fn message(self) -> Option<BorrowedMessage<'a>> {
        match self {
            Self::Message(m) => Some(m),
            Self::Transient(_) => None,
        }
    }
}

/// A group consumer whose committed position never passes a record that was
/// not processed. Call [`mark_position`](Self::mark_position) when a record
/// is done (written by a sink, say); the next commit includes it.
pub struct KafkaConsumer {
    inner: Option<Arc<StreamConsumer<GroupContext>>>,
    shared: Arc<Shared>,
    group_id: String,
    consumed: metrics::Counter,
}

impl KafkaConsumer {
    /// Creates a consumer in `group_id` subscribed to `topics`; revoked
    /// partitions are released at once (librdkafka's default behaviour).
    pub fn subscribe(
        config: &KafkaConfig,
        bootstrap_servers: &str,
        group_id: &str,
        topics: &[&str],
    ) -> Result<Self, KafkaLayerError> {
        Self::create(config, bootstrap_servers, group_id, topics, false)
    }

    /// Creates a consumer whose owner handles rebalances: it must take
    /// events with [`next_rebalance`](Self::next_rebalance) and answer each
    /// `Revoked` with [`release`](Self::release).
    pub fn subscribe_coordinated(
        config: &KafkaConfig,
        bootstrap_servers: &str,
        group_id: &str,
        topics: &[&str],
    ) -> Result<Self, KafkaLayerError> {
        Self::create(config, bootstrap_servers, group_id, topics, true)
    }

    fn create(
        config: &KafkaConfig,
        bootstrap_servers: &str,
        group_id: &str,
        topics: &[&str],
        defer_revoke: bool,
    ) -> Result<Self, KafkaLayerError> {
        let shared = Arc::new(Shared::default());
        let context = GroupContext {
            base: FerryClientContext::default(),
            defer_revoke,
            shared: Arc::clone(&shared),
        };
        let inner: StreamConsumer<GroupContext> = config
            .consumer_config(bootstrap_servers, group_id)
            .create_with_context(context)
            .map_err(KafkaLayerError::ClientConfig)?;
        inner
            .subscribe(topics)
            .map_err(|source| KafkaLayerError::Client {
                context: format!("subscribing group `{group_id}` to {topics:?}"),
                source,
            })?;
        Ok(Self {
            inner: Some(Arc::new(inner)),
            shared,
            group_id: group_id.to_owned(),
            consumed: metrics::counter!(m::KAFKA_CONSUMED_RECORDS_TOTAL),
        })
    }

    fn client(&self) -> &StreamConsumer<GroupContext> {
        // Only `close` takes it, and `close` consumes `self`.
        match &self.inner {
            Some(c) => c,
            None => unreachable!("the consumer is used after close"),
        }
    }

    fn arc(&self) -> Arc<StreamConsumer<GroupContext>> {
        Arc::clone(match &self.inner {
            Some(c) => c,
            None => unreachable!("the consumer is used after close"),
        })
    }

    /// The next record, or a transient client error. Keeps the group
    /// membership alive and serves rebalances while it waits. `Err` only for
    /// a fatal error (the client cannot go on).
    pub async fn recv(&self) -> Result<Received<'_>, KafkaLayerError> {
        match self.client().recv().await {
            Ok(msg) => {
                self.consumed.increment(1);
                Ok(Received::Message(msg))
            }
            Err(source @ KafkaError::MessageConsumptionFatal(_)) => Err(KafkaLayerError::Client {
                context: "receiving from Kafka (fatal client error)".into(),
                source,
            }),
            Err(e) => {
                metrics::counter!(m::KAFKA_CONSUME_ERRORS_TOTAL).increment(1);
                Ok(Received::Transient(e))
            }
        }
    }

    /// The next rebalance event, if one is waiting.
    pub fn next_rebalance(&self) -> Option<Rebalance> {
        self.shared
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front()
    }

    /// Resolves when a rebalance event may be waiting (cancel-safe).
    pub async fn rebalanced(&self) {
        self.shared.notify.notified().await;
    }

    /// Gives revoked `partitions` back to the group (coordinated consumers).
    pub fn release(&self, partitions: &[TopicPartition]) -> Result<(), KafkaLayerError> {
        unassign(self.client(), partitions).map_err(|source| KafkaLayerError::Client {
            context: format!("releasing revoked partitions {partitions:?}"),
            source,
        })?;
        self.shared.forget_pending(partitions);
        Ok(())
    }

    /// Marks the record at `offset` in `topic`/`partition` processed: the
    /// next commit moves the group's position past it.
    pub fn mark_position(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<(), KafkaLayerError> {
        self.client()
            .store_offset(topic, partition, offset)
            .map_err(|source| KafkaLayerError::Client {
                context: format!("storing offset {topic}/{partition}@{offset}"),
                source,
            })
    }

    /// Starts a synchronous commit of every stored offset on a blocking
    /// thread, after `delay`; the handle resolves with the broker's answer.
    pub fn commit_in_background(
        &self,
        delay: Duration,
    ) -> tokio::task::JoinHandle<Result<(), KafkaLayerError>> {
        let inner = self.arc();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            tokio::task::spawn_blocking(move || commit_now(&inner))
                .await
                .map_err(commit_task_failed)?
        })
    }

    /// Commits every stored offset and waits for the broker's answer (on a
    /// blocking thread), for at most `within`.
    pub async fn commit(&self, within: Duration) -> Result<(), KafkaLayerError> {
        let inner = self.arc();
        let handle = tokio::task::spawn_blocking(move || commit_now(&inner));
        tokio::time::timeout(within, handle)
            .await
            .map_err(|_| KafkaLayerError::Topic {
                topic: "*".into(),
                message: format!("committing offsets: no answer within {within:?}"),
            })?
            .map_err(commit_task_failed)?
    }

    /// Whether the group has declared this member's assignment lost (its
    /// session expired); the revocation follows with the next poll.
    pub fn assignment_lost(&self) -> bool {
        self.client().assignment_lost()
    }

    /// The partitions this member holds now.
    pub fn assignment(&self) -> Result<Vec<TopicPartition>, KafkaLayerError> {
        self.client()
            .assignment()
            .map(|tpl| partitions(&tpl))
            .map_err(|source| KafkaLayerError::Client {
                context: "reading the assignment".into(),
                source,
            })
    }

    /// Stops (or restarts) fetching `partitions`.
    pub fn pause(&self, partitions: &[TopicPartition], pause: bool) -> Result<(), KafkaLayerError> {
        if partitions.is_empty() {
            return Ok(());
        }
        let tpl = tpl_of(partitions);
        let c = self.client();
        if pause { c.pause(&tpl) } else { c.resume(&tpl) }.map_err(|source| {
            KafkaLayerError::Client {
                context: format!("pausing/resuming {partitions:?}"),
                source,
            }
        })
    }

    /// Points each partition at an offset (the next record to fetch), on a
    /// blocking thread.
    pub async fn seek(&self, positions: Vec<(TopicPartition, i64)>) -> Result<(), KafkaLayerError> {
        if positions.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), offset) in &positions {
            tpl.add_partition_offset(t, *p, Offset::Offset(*offset))
                .map_err(|source| KafkaLayerError::Client {
                    context: "building a seek list".into(),
                    source,
                })?;
        }
        let inner = self.arc();
        let sought = tokio::task::spawn_blocking(move || {
            inner.seek_partitions(tpl, Duration::from_secs(10))
        })
        .await
        .map_err(|e| KafkaLayerError::Topic {
            topic: "*".into(),
            message: format!("seek task failed: {e}"),
        })?
        .map_err(|source| KafkaLayerError::Client {
            context: "seeking".into(),
            source,
        })?;
        // A partition that was not moved would go on from where it was,
        // past records that must be read again: that is an error.
        for e in sought.elements() {
            if let Err(source) = e.error() {
                return Err(KafkaLayerError::Client {
                    context: format!("seeking {}/{}", e.topic(), e.partition()),
                    source,
                });
            }
        }
        Ok(())
    }

    /// Leaves the group (librdkafka commits what is stored and answers the
    /// final revocation itself) on a blocking thread, so closing never stalls
    /// an async worker.
    pub async fn close(mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        let pending = self.shared.take_pending();
        if !pending.is_empty() {
            if let Err(e) = unassign(self.client(), &pending) {
                tracing::warn!(group = %self.group_id, error = %e, "releasing revoked partitions at close failed");
            }
        }
        if let Some(inner) = self.inner.take() {
            let _ = tokio::task::spawn_blocking(move || drop(inner)).await;
        }
    }
}

/// A synchronous commit of every stored offset (blocking: call it from a
/// blocking thread). Nothing stored since the last commit is not an error.
fn commit_now(inner: &StreamConsumer<GroupContext>) -> Result<(), KafkaLayerError> {
    match inner.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
        Err(source) => Err(KafkaLayerError::Client {
            context: "committing offsets".into(),
            source,
        }),
    }
}

fn commit_task_failed(e: tokio::task::JoinError) -> KafkaLayerError {
    KafkaLayerError::Topic {
        topic: "*".into(),
        message: format!("commit task failed: {e}"),
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        // Dropped without `close` (a task aborted, a panic): the final
        // revocation must not wait for an owner that is gone.
        self.shared.closing.store(true, Ordering::SeqCst);
        let pending = self.shared.take_pending();
        if let (false, Some(inner)) = (pending.is_empty(), &self.inner) {
            let _ = unassign(inner.as_ref(), &pending);
        }
        // Closing polls until the group is left: not on an async worker.
        if let (Some(inner), Ok(rt)) = (self.inner.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn_blocking(move || drop(inner));
        }
    }
}
