//! Runs one sink: consume, decode, hand batches to the sink, store offsets
//! only for what the sink acknowledged, give revoked partitions back only
//! once nothing of theirs is being written.
//!
//! **Order.** With `concurrency: 1` (the default) one batch is in the
//! sink at a time, so order per Kafka partition (and so per key) is kept.
//! With `concurrency: N`, up to N batches are in the sink at once, each
//! with a sink of its own, each of one partition: across partitions, and
//! within a partition across keys. Records of one key stay in order: a
//! key's next records wait until the batch holding its earlier ones is
//! done ([`super::sink_lanes`]). A sink that keeps its offsets in its
//! target is written one batch per partition at a time (its offsets say
//! "everything before is written").
//!
//! **Offsets.** After each batch, each partition's offset is stored up to
//! its lowest record that is not written, and a commit starts at once on a
//! blocking thread while the next batch is written. With `concurrency: 1`
//! the batch after that waits for it (librdkafka's `commit_interval` timer
//! stays as an upper bound), so at most two batches are ever written and
//! not committed, and a crash repeats at most the batch in the sink and
//! the one before it. With `concurrency: N`, commits are coalesced (one at
//! a time), and no batch is handed over while one fails, nor once the
//! records written since the running one began plus those in the sink
//! reach `max_in_flight_records`. Once a window (half of
//! `max_in_flight_records`) of a partition's records after its lowest
//! unwritten one are written, the partition is paused until it is down to
//! half of that (what it holds still goes, its lowest unwritten record
//! included): a key held up (a target refusing it, retried under
//! `ordering: strict`) holds back its partition after a window, and the
//! other partitions flow on while the held-up key's own records (for a
//! sink whose lane is the partition, the partition's records) fit in the
//! in-flight bound; once they fill it the sink waits, as in series. A
//! crash repeats what lies between each partition's committed offset and
//! the last record taken: at most 1.5 x `max_in_flight_records` per
//! partition (its run-ahead: the window, and what it held when it reached
//! it) plus 3 x `max_in_flight_records` in all (written during the last
//! two commits, and held unwritten).
//!
//! **Failures.** A write that fails in a way that may pass (a 503, a
//! timeout) is retried with backoff (`retry.initial_backoff` to
//! `retry.max_backoff`), only for the records not yet written. With
//! `ordering: strict` (the default) that goes on until the target recovers:
//! the partition waits, nothing is dropped, key order holds. With
//! `ordering: relaxed`, a record still failing `retry.max_elapsed` after its
//! first failure moves to the retry topics and its partition flows on; with
//! `fallback: { topic }` it is parked at once. A record that fails for good
//! (a 3xx or 4xx, a value that cannot be decoded) goes to the dead-letter
//! topic at once ([`super::dead_letter`]), and the sink goes on with the
//! next record. A failure of the connector itself (credentials refused, a
//! dead letter Kafka will not take) stops it in FAILED at that record,
//! with what came before committed. A dead letter counts as
//! written only once Kafka has acknowledged it.
//!
//! **Rebalances.** The consumer is coordinated (`kafka::consumer`): when
//! partitions are revoked, their buffered records are dropped unwritten,
//! the batch in the sink is finished (within `drain_within`; past that the
//! batch is abandoned), offsets are committed, and only then are the
//! partitions released to the group. So two members never write a
//! partition at once, and a graceful rebalance repeats nothing that was
//! acknowledged. A lost assignment (session expired) abandons the batch at
//! once. librdkafka's non-fatal errors (a broker restarting) are logged and
//! counted; the consumer recovers by itself.
//!
//! **Memory.** What the task holds is bounded by `max_in_flight_records` /
//! `max_in_flight_bytes` plus librdkafka's prefetch queue
//! (`kafka.consumer.prefetch_kbytes`). At the bound the task stops taking
//! records. If the bound holds for `PAUSE_AFTER` (the target is down, not
//! just slow), every assigned partition is paused, which also frees the
//! prefetch queue, and the task reports PAUSED; it keeps polling, so it
//! stays in its group however long the target is down. Pausing only after a
//! while matters: each pause throws away what librdkafka prefetched.
//!
//! **Lifetime.** The write runs inside this task (no task of its own): when
//! an attempt ends, for whatever reason, its write is dropped with it and
//! can never land after a newer attempt's.

use super::connectors::SinkFactory;
use super::dead_letter::{Class, DeadLetters, Failure};
use super::headers;
use super::sink_lanes::{lane, Busy, Lane, Progress};
use super::source_task::Exit;
use super::supervisor::TaskHandle;
use super::Shutdown;
use crate::error::{ConnectorError, Scope};
use crate::kafka::{
    KafkaConfig, KafkaConsumer, KafkaLayerError, Rebalance, Received, TopicPartition,
};
use crate::resilience::{Backoff, Ordering, ResilienceConfig};
use crate::schema::envelope::now_millis;
use crate::schema::json::to_json;
use crate::schema::registry::Codecs;
use crate::schema::MAGIC_BYTE;
use crate::sink::{BoxedSink, RecordOutcome, SinkContext, SinkRecord};
use crate::telemetry::metrics as m;
use base64::Engine;
use futures::future::{BoxFuture, OptionFuture};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::Message;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

/// How a sink task consumes and batches.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    pub topics: Vec<String>,
    pub group_id: String,
    /// Most records per `write`.
    pub batch_max_records: usize,
    /// Most bytes (of values) per `write`.
    pub batch_max_bytes: usize,
    /// How long a partial batch waits for more records.
    pub batch_max_wait: Duration,
    /// Records held in memory (buffered and in the sink) before consumption pauses.
    pub max_in_flight_records: usize,
    /// Bytes held in memory before consumption pauses.
    pub max_in_flight_bytes: usize,
    /// How long the batch in the sink may take to finish when Ferry stops
    /// or its partitions are revoked, before it is abandoned (capped by the
    /// process's shutdown budget).
    pub drain_within: Duration,
    /// Retry backoff, ordering and dead-letter settings.
    pub resilience: ResilienceConfig,
    /// Batches in the sink at once (each with a sink of its own); 1 writes
    /// in series. See the module doc.
    pub concurrency: usize,
    /// Topics the sink writes to Kafka (a processor such as `map`):
    /// created, with their value schemas registered, at startup, and
    /// handed to the sink in [`SinkContext::output`].
    pub outputs: Vec<crate::config::TopicSpec>,
}

/// How long the in-flight bound must hold before partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_secs(5);
/// Transient consumer errors are logged at most this often.
const TRANSIENT_LOG_EVERY: Duration = Duration::from_secs(10);

/// What a sink task runs against.
pub(crate) struct SinkEnv<'a> {
    pub kafka: &'a KafkaConfig,
    pub bootstrap: &'a str,
    pub codecs: &'a Codecs,
    pub shutdown: &'a Shutdown,
    pub handle: &'a TaskHandle,
    /// The most the task may take to drain once Ferry stops.
    pub stop_budget: Duration,
    /// Where records that cannot be delivered go.
    pub dead_letters: &'a DeadLetters,
    /// The output topics of a processor.
    pub output: Option<crate::sink::KafkaOutput>,
}

/// A consumed record, or one that cannot be handed to a sink (its value
/// is `null`; `raw` keeps the bytes for the dead letter).
enum Entry {
    Record(SinkRecord),
    Undecodable {
        record: SinkRecord,
        error: ConnectorError,
    },
}

impl Entry {
    fn record(&self) -> &SinkRecord {
        match self {
            Self::Record(r) | Self::Undecodable { record: r, .. } => r,
        }
    }

    fn in_partitions(&self, partitions: &[TopicPartition]) -> bool {
        let r = self.record();
        partitions
            .iter()
            .any(|(t, p)| &r.topic == t && r.partition == *p)
    }

    fn size(&self) -> usize {
        self.record().size()
    }
}

/// What became of a batch handed to the sink (a record sent to the
/// dead-letter topic counts as written).
struct Written {
    sink: BoxedSink,
    batch: Vec<SinkRecord>,
    written: Vec<bool>,
    /// Records sent to the dead-letter, retry or parking topics.
    dead: usize,
    /// A failure about the connector itself (credentials refused): the
    /// record it came with, and why. Nothing from there on is written.
    fatal: Option<(usize, ConnectorError)>,
}

/// Sends a record to the dead-letter topic; resolves once Kafka has it.
pub(crate) type DeadLetterFn = std::sync::Arc<
    dyn Fn(SinkRecord, Failure) -> BoxFuture<'static, Result<(), ConnectorError>> + Send + Sync,
>;

/// A write in the sink: its id and what became of it.
type Writing = BoxFuture<'static, (u64, Written)>;

/// What the task knows of a write while it is in the sink.
struct InFlight {
    records: usize,
    bytes: usize,
    /// The first offset of each of its partitions.
    partitions: BTreeMap<TopicPartition, i64>,
    /// The lanes it holds.
    lanes: Vec<Lane>,
}

/// A revocation waiting for the batches in the sink.
struct Revoking {
    partitions: Vec<TopicPartition>,
    deadline: Instant,
}

pub(crate) async fn run(
    name: &str,
    make: &SinkFactory,
    settings: &SinkSettings,
    env: SinkEnv<'_>,
) -> Result<Exit, ConnectorError> {
    let concurrency = settings.concurrency.max(1);
    let mut idle = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        idle.push(make()?);
    }
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    let consumer =
        KafkaConsumer::subscribe_coordinated(env.kafka, env.bootstrap, &settings.group_id, &topics)
            .map_err(|e| ConnectorError::external(e.to_string()))?;
    let letters = env.dead_letters.clone();
    let dead_letter: DeadLetterFn = std::sync::Arc::new(move |record, failure| {
        let letters = letters.clone();
        async move { letters.send(&record, &failure).await }.boxed()
    });
    let mut task = SinkTask {
        ctx: SinkContext {
            name: name.to_owned(),
            output: env.output.clone(),
        },
        writing: FuturesUnordered::new(),
        dead_letter,
        name,
        make,
        settings,
        consumer,
        codecs: env.codecs,
        handle: env.handle,
        target_offsets: None,
        concurrency,
        idle,
        in_flight: BTreeMap::new(),
        next_write: 0,
        busy: Busy::default(),
        progress: Progress::default(),
        marked: BTreeMap::new(),
        by_key: true,
        stalled: false,
        commit_wanted: false,
        written_since_commit: 0,
        held_back: BTreeSet::new(),
        buffer: VecDeque::new(),
        buffered_bytes: 0,
        oldest: None,
        paused: false,
        full_since: None,
        next_offsets: BTreeMap::new(),
        revoked: BTreeSet::new(),
        revoking: None,
        delayed: BTreeMap::new(),
        retry_topics: env
            .dead_letters
            .retry_topics()
            .map(|(t, d)| (t.to_owned(), d))
            .collect(),
        commits: VecDeque::new(),
        commit_failures: 0,
        release_commit_within: close_within(env.stop_budget),
        last_transient_log: None,
        in_flight_gauge: metrics::gauge!(m::SINK_IN_FLIGHT_RECORDS, "connector" => name.to_owned()),
    };
    let outcome = task.run(env.shutdown, env.stop_budget).await;
    task.in_flight_gauge.set(0.0);
    let SinkTask {
        consumer,
        writing,
        commits,
        ..
    } = task;
    // An unfinished write ends with the attempt.
    drop(writing);
    // Whatever was acknowledged is committed now, even when stopping on an
    // error; with the broker gone this may not finish: one deadline for
    // committing and leaving the group.
    let within = close_within(env.stop_budget);
    let deadline = Instant::now() + within;
    // The final commit carries everything stored: queued ones (a retry
    // waiting out its delay, say) would only spend the deadline.
    for c in &commits {
        c.abort();
    }
    drop(commits);
    let finished = tokio::time::timeout_at(deadline, consumer.commit(within)).await;
    match finished {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(connector = name, error = %e, "committing sink offsets at stop failed; they will be redelivered");
        }
        Err(_) => {
            tracing::warn!(
                connector = name,
                ?within,
                "committing sink offsets at stop did not finish in time; they will be redelivered"
            );
        }
    }
    if tokio::time::timeout_at(deadline, consumer.close())
        .await
        .is_err()
    {
        tracing::warn!(
            connector = name,
            ?within,
            "leaving the consumer group did not finish in time"
        );
    }
    outcome
}

/// How long committing and leaving the group may take at the end of an
/// attempt, together: a third of the task's drain budget (`StopBudget`
/// keeps drain and close inside the connectors' share of a stop).
fn close_within(stop_budget: Duration) -> Duration {
    (stop_budget / 3).max(Duration::from_millis(500))
}

/// Failed commits in a row after which the attempt starts over (about a
/// minute of retrying).
const MAX_COMMIT_FAILURES: u32 = 120;

/// How long a failed commit waits before it is tried again.
const COMMIT_RETRY_AFTER: Duration = Duration::from_millis(500);

struct SinkTask<'a> {
    /// First, so it is dropped first: an attempt aborted mid-write stops
    /// writing before its consumer leaves the group.
    writing: FuturesUnordered<Writing>,
    /// What the sink is opened with.
    ctx: SinkContext,
    dead_letter: DeadLetterFn,
    name: &'a str,
    /// Builds a fresh sink when a write is abandoned (it owned the old one).
    make: &'a SinkFactory,
    settings: &'a SinkSettings,
    consumer: KafkaConsumer,
    codecs: &'a Codecs,
    handle: &'a TaskHandle,
    /// Where the sink keeps its offsets, if in its target.
    target_offsets: Option<std::sync::Arc<dyn crate::sink::TargetOffsets>>,
    /// `settings.concurrency`, at least 1.
    concurrency: usize,
    /// Sinks not writing (a write owns its sink): one per free slot.
    idle: Vec<BoxedSink>,
    /// The writes in the sink, by id.
    in_flight: BTreeMap<u64, InFlight>,
    next_write: u64,
    /// Lanes with a write in the sink.
    busy: Busy,
    /// Per partition, which records taken are written.
    progress: Progress,
    /// Per partition, the last offset stored for commit.
    marked: BTreeMap<TopicPartition, i64>,
    /// Lanes are keys (false: partitions, for a sink keeping its offsets).
    by_key: bool,
    /// The last hand-over found nothing it could take: wait for a write to
    /// finish or a record to arrive before trying again.
    stalled: bool,
    /// `concurrency > 1`: a write finished while a commit ran; commit again
    /// when it ends.
    commit_wanted: bool,
    /// `concurrency > 1`: records written since the running commit began.
    written_since_commit: usize,
    /// `concurrency > 1`: partitions paused because they hold their window
    /// (see `hold_back_if_past_window`).
    held_back: BTreeSet<TopicPartition>,
    buffer: VecDeque<Entry>,
    buffered_bytes: usize,
    oldest: Option<Instant>,
    paused: bool,
    full_since: Option<Instant>,
    /// Per assigned partition, the offset after the last record taken.
    next_offsets: BTreeMap<TopicPartition, i64>,
    /// Partitions revoked and not assigned again: their records are dropped.
    revoked: BTreeSet<TopicPartition>,
    revoking: Option<Revoking>,
    /// Retry topics' partitions paused until their head record's time has
    /// come: the offset to read from again, and when.
    delayed: BTreeMap<TopicPartition, (i64, Instant)>,
    /// This sink's retry topics (`ordering: relaxed`).
    retry_topics: BTreeMap<String, Duration>,
    /// Commits started after each batch (blocking threads), oldest first.
    /// A batch is handed to the sink only while at most one is unfinished,
    /// so at most two batches are ever written and not committed; a failed
    /// commit is tried again, and counts as unfinished meanwhile. Waiting
    /// for them never blocks the loop: a broker that is down stalls the
    /// hand-over, not the consumer (rebalances and a stop are still seen).
    commits: VecDeque<tokio::task::JoinHandle<Result<(), KafkaLayerError>>>,
    /// Commits that failed in a row.
    commit_failures: u32,
    /// How long a revocation waits for its commit before releasing anyway
    /// (the new owner then repeats what was written since the last commit):
    /// the task's share of a stop for committing and closing.
    release_commit_within: Duration,
    last_transient_log: Option<Instant>,
    in_flight_gauge: metrics::Gauge,
}

impl SinkTask<'_> {
    async fn run(
        &mut self,
        shutdown: &Shutdown,
        stop_budget: Duration,
    ) -> Result<Exit, ConnectorError> {
        let name = self.name;
        for sink in &mut self.idle {
            sink.0.open(&self.ctx).await?;
        }
        self.target_offsets = self.idle.first().and_then(|s| s.0.target_offsets());
        // A sink keeping its offsets in its target writes each partition in order.
        self.by_key = self.target_offsets.is_none();
        let drain_within = self.settings.drain_within.min(stop_budget);
        let mut stopping: Option<Instant> = None;
        loop {
            while let Some(event) = self.consumer.next_rebalance() {
                self.rebalanced(event, drain_within).await?;
            }
            let (sink_records, sink_bytes) = self
                .in_flight
                .values()
                .fold((0, 0), |(r, b), w| (r + w.records, b + w.bytes));
            let held = self.buffer.len() + sink_records;
            let held_bytes = self.buffered_bytes + sink_bytes;
            self.in_flight_gauge.set(held as f64);

            // Not without a free sink; not while partitions are being
            // revoked; not while commits lag (see `commits`); not once the
            // group has declared this member's assignment lost (its
            // revocation comes with the next poll).
            let may_hand_over = !self.idle.is_empty()
                && stopping.is_none()
                && self.revoking.is_none()
                && self.commits_keep_up()
                && !self.consumer.assignment_lost();
            if self.writing.is_empty() && stopping.is_some() {
                return Ok(Exit::Stopped);
            }
            if may_hand_over && !self.stalled && self.batch_due() {
                if !self.hand_over_batch() {
                    self.stalled = true;
                }
                continue;
            }

            // Backpressure: stop taking records at the bound; pause the
            // partitions if it holds for a while; resume below half of it.
            let s = self.settings;
            let full = held >= s.max_in_flight_records || held_bytes >= s.max_in_flight_bytes;
            let low =
                held <= s.max_in_flight_records / 2 && held_bytes <= s.max_in_flight_bytes / 2;
            if full {
                let since = *self.full_since.get_or_insert_with(Instant::now);
                if !self.paused && since.elapsed() >= PAUSE_AFTER {
                    self.pause_all(true)?;
                    self.paused = true;
                    self.handle.paused(format!(
                        "target not keeping up: {held} record(s) in flight for {:?}; partitions paused",
                        since.elapsed()
                    ));
                }
            } else {
                self.full_since = None;
            }
            if self.paused && low {
                // Pausing dropped librdkafka's prefetched records; fetch again
                // from the record after the last one taken.
                let positions: Vec<(TopicPartition, i64)> = self
                    .next_offsets
                    .iter()
                    .map(|(tp, o)| (tp.clone(), *o))
                    .collect();
                self.consumer
                    .seek(positions)
                    .await
                    .map_err(|e| ConnectorError::external(format!("seeking before resume: {e}")))?;
                self.pause_all(false)?;
                self.paused = false;
                self.handle.running();
            }
            // Take records unless at the bound; while paused, keep polling so
            // the group does not evict this member (paused partitions yield none).
            let take = stopping.is_none() && (!full || self.paused);

            // The batch timer matters only when a batch could be handed over;
            // otherwise the loop wakes on what it waits for (a write, a
            // commit, a record) or on a slow tick, never in a busy loop.
            let wake = match self.oldest {
                Some(t) if may_hand_over && !self.stalled => t + s.batch_max_wait,
                _ => Instant::now() + Duration::from_secs(1),
            };
            let give_up = match (stopping, &self.revoking) {
                (Some(at), _) => Some(at),
                (None, Some(r)) => Some(r.deadline),
                (None, None) => None,
            };
            let is_writing = !self.writing.is_empty();
            let next_resume = self.delayed.values().map(|(_, at)| *at).min();
            tokio::select! {
                _ = tokio::time::sleep_until(next_resume.unwrap_or(wake)), if next_resume.is_some() => {
                    self.resume_due().await?;
                }
                _ = shutdown.cancelled(), if stopping.is_none() => {
                    stopping = Some(Instant::now() + drain_within);
                }
                _ = tokio::time::sleep_until(give_up.unwrap_or(wake)), if give_up.is_some() => {
                    if stopping.is_some() {
                        tracing::warn!(connector = name, within = ?drain_within, "sink did not finish its batch in time; it will be delivered again after restart");
                        return Ok(Exit::Stopped);
                    }
                    tracing::warn!(connector = name, within = ?drain_within, "the target did not finish a batch while its partitions were being revoked; the batch is abandoned (their new owner delivers it again)");
                    self.abandon().await?;
                    if let Some(r) = self.revoking.take() {
                        self.release(&r.partitions).await?;
                    }
                }
                Some((id, done)) = self.writing.next(), if is_writing => {
                    self.written(id, done).await?;
                }
                Some(done) = OptionFuture::from(self.commits.front_mut()), if !self.commits.is_empty() => {
                    self.commits.pop_front();
                    let failed = match done {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(e) => Some(e.to_string()),
                    };
                    match failed {
                        None => {
                            self.commit_failures = 0;
                            if std::mem::take(&mut self.commit_wanted) {
                                self.start_commit();
                            }
                        }
                        Some(e) => {
                            self.commit_failures += 1;
                            if self.commit_failures >= MAX_COMMIT_FAILURES {
                                // Not a passing disturbance (a rebalance, a
                                // coordinator moving): start over, from the
                                // last commit that landed.
                                return Err(ConnectorError::external(format!(
                                    "connector `{name}`: committing offsets failed {} times in a row: {e}",
                                    self.commit_failures
                                )));
                            }
                            if self.commit_failures == 1 || self.commit_failures.is_multiple_of(10) {
                                tracing::warn!(connector = name, error = %e, failures = self.commit_failures, retry_in = ?COMMIT_RETRY_AFTER, "committing sink offsets failed; trying again (no new batch is written meanwhile)");
                            }
                            self.commits
                                .push_front(self.consumer.commit_in_background(COMMIT_RETRY_AFTER));
                        }
                    }
                }
                _ = self.consumer.rebalanced() => {}
                got = self.consumer.recv(), if take => {
                    match got.map_err(|e| ConnectorError::external(e.to_string()))? {
                        Received::Message(msg) => {
                            let tp = (msg.topic().to_owned(), msg.partition());
                            let wait = self
                                .retry_topics
                                .get(msg.topic())
                                .and_then(|delay| not_yet(&msg, *delay));
                            if self.revoked.contains(&tp)
                                || self.delayed.contains_key(&tp)
                                || self.held_back.contains(&tp)
                            {
                                // A revoked partition's records belong to its
                                // new owner; those prefetched behind a head
                                // that waits, or of a partition held back,
                                // are read again after the wait.
                            } else if let Some(wait) = wait {
                                self.delay(tp, msg.offset(), wait)?;
                            } else {
                                self.next_offsets.insert(tp.clone(), msg.offset() + 1);
                                let entry = decode(self.codecs, &msg).await?;
                                self.buffered_bytes += entry.size();
                                self.oldest.get_or_insert_with(Instant::now);
                                self.progress.taken(&tp, msg.offset());
                                self.buffer.push_back(entry);
                                self.stalled = false;
                            }
                        }
                        Received::Transient(e) => self.transient(&e)?,
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn batch_due(&self) -> bool {
        let s = self.settings;
        !self.buffer.is_empty()
            && (self.buffer.len() >= s.batch_max_records
                || self.buffered_bytes >= s.batch_max_bytes
                || self.oldest.is_some_and(|t| t.elapsed() >= s.batch_max_wait)
                || matches!(self.buffer.front(), Some(Entry::Undecodable { .. }))
                || matches!(self.buffer.back(), Some(Entry::Undecodable { .. })))
    }

    /// Whether commits keep up enough for another hand-over: with
    /// `concurrency: 1`, at most one unfinished; else none failing, and
    /// fewer than `max_in_flight_records` records written since the
    /// running one began or in the sink (see the module doc).
    fn commits_keep_up(&self) -> bool {
        if self.concurrency == 1 {
            self.commits.len() <= 1
        } else {
            let in_sink: usize = self.in_flight.values().map(|w| w.records).sum();
            self.commit_failures == 0
                && self.written_since_commit + in_sink < self.settings.max_in_flight_records
        }
    }

    /// `concurrency > 1`: how many records a partition may have written
    /// past its lowest unwritten one (see the module doc): half the
    /// in-flight bound.
    fn window(&self) -> usize {
        (self.settings.max_in_flight_records / 2).max(1)
    }

    /// `concurrency > 1`: pauses each of `partitions` that ran a window
    /// ahead of its lowest unwritten record (a record of it is held up and
    /// others pile up behind it), so the other partitions keep the rest of
    /// the in-flight bound.
    fn hold_back_past_window(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<(), ConnectorError> {
        if self.concurrency == 1 {
            return Ok(());
        }
        let window = self.window();
        for tp in partitions {
            if self.held_back.contains(tp) || self.progress.ahead(tp) < window {
                continue;
            }
            self.consumer
                .pause(std::slice::from_ref(tp), true)
                .map_err(|e| {
                    ConnectorError::internal(format!("pausing a partition held back: {e}"))
                })?;
            tracing::debug!(connector = self.name, partition = ?tp, "partition held back: a record of it is not written yet and a window of records after it is");
            self.held_back.insert(tp.clone());
        }
        Ok(())
    }

    /// Resumes the partitions held back that are down to half their
    /// window, from the record after the last one taken (what arrived
    /// after the pause was dropped), as a retry topic's partition resumes.
    async fn let_go_held_back(&mut self) -> Result<(), ConnectorError> {
        let half = self.window() / 2;
        let ready: Vec<TopicPartition> = self
            .held_back
            .iter()
            .filter(|tp| self.progress.ahead(tp) <= half)
            .cloned()
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        tracing::debug!(connector = self.name, partitions = ?ready, "partitions held back resume");
        let positions: Vec<(TopicPartition, i64)> = ready
            .iter()
            .filter_map(|tp| self.next_offsets.get(tp).map(|o| (tp.clone(), *o)))
            .collect();
        self.consumer
            .seek(positions)
            .await
            .map_err(|e| ConnectorError::external(format!("seeking a partition held back: {e}")))?;
        for tp in &ready {
            self.held_back.remove(tp);
        }
        // While every partition is paused (backpressure), resuming them
        // all takes these along.
        if !self.paused {
            let resume: Vec<TopicPartition> = ready
                .into_iter()
                .filter(|tp| !self.delayed.contains_key(tp))
                .collect();
            self.consumer
                .pause(&resume, false)
                .map_err(|e| ConnectorError::internal(format!("resuming a partition: {e}")))?;
        }
        Ok(())
    }

    /// Starts a commit of every stored offset on a blocking thread.
    fn start_commit(&mut self) {
        self.written_since_commit = 0;
        self.commits
            .push_back(self.consumer.commit_in_background(Duration::ZERO));
    }

    /// The buffer's entries the next write takes, in order: an
    /// undecodable record alone (it goes to the dead-letter topic), or a
    /// batch of records. Skipped: records of a lane with a write in the
    /// sink, and every later record of a skipped lane (so a lane stays in
    /// order). In series, a batch is the head of the buffer up to an
    /// undecodable record; with several sinks, a batch is of one partition
    /// and takes about its share of the buffer.
    fn pick(&self) -> Vec<usize> {
        let s = self.settings;
        let serial = self.concurrency == 1;
        let most = if serial || !self.by_key {
            // A batch per partition at a time: a full one.
            s.batch_max_records
        } else {
            // Leave something for the other free sinks.
            self.buffer
                .len()
                .div_ceil(self.idle.len().max(1))
                .clamp(1, s.batch_max_records.max(1))
        };
        let mut picked = Vec::new();
        let mut bytes = 0;
        let mut skipped: BTreeSet<Lane> = BTreeSet::new();
        let mut partition: Option<(&str, i32)> = None;
        for (i, entry) in self.buffer.iter().enumerate() {
            let r = entry.record();
            let l = lane(&r.topic, r.partition, r.raw_key.as_deref(), self.by_key);
            if self.busy.contains(l) || skipped.contains(&l) {
                skipped.insert(l);
                continue;
            }
            if !serial && partition.is_some_and(|p| p != (r.topic.as_str(), r.partition)) {
                continue;
            }
            if matches!(entry, Entry::Undecodable { .. }) {
                if picked.is_empty() {
                    picked.push(i);
                    break;
                }
                if serial {
                    break;
                }
                skipped.insert(l);
                continue;
            }
            if picked.len() >= most || (!picked.is_empty() && bytes + r.size() > s.batch_max_bytes)
            {
                break;
            }
            bytes += r.size();
            partition.get_or_insert((r.topic.as_str(), r.partition));
            picked.push(i);
        }
        picked
    }

    /// Takes the entries at `picked` (ascending) out of the buffer.
    fn take(&mut self, picked: &[usize]) -> Vec<Entry> {
        let prefix = picked.last().is_some_and(|last| last + 1 == picked.len());
        let taken: Vec<Entry> = if prefix {
            self.buffer.drain(..picked.len()).collect()
        } else {
            let mut taken = Vec::with_capacity(picked.len());
            let mut rest = VecDeque::with_capacity(self.buffer.len());
            let mut next = picked.iter().peekable();
            for (i, e) in self.buffer.drain(..).enumerate() {
                if next.peek() == Some(&&i) {
                    next.next();
                    taken.push(e);
                } else {
                    rest.push_back(e);
                }
            }
            self.buffer = rest;
            taken
        };
        let bytes: usize = taken.iter().map(Entry::size).sum();
        self.buffered_bytes = self.buffered_bytes.saturating_sub(bytes);
        let dead_letter = matches!(taken.first(), Some(Entry::Undecodable { .. }));
        if self.buffer.is_empty() {
            self.oldest = None;
        } else if !dead_letter && (self.concurrency == 1 || !self.by_key) {
            // The records behind a dead letter keep their wait; with
            // several sinks writing by key, so do the records left behind
            // (what one batch left may be another's to take at once).
            self.oldest = Some(Instant::now());
        }
        taken
    }

    /// Hands the next write to a free sink (see [`Self::pick`]); false if
    /// nothing could be taken.
    fn hand_over_batch(&mut self) -> bool {
        let picked = self.pick();
        if picked.is_empty() {
            return false;
        }
        let Some(sink) = self.idle.pop() else {
            return false;
        };
        let entries = self.take(&picked);
        let mut partitions = BTreeMap::new();
        let mut lanes = Vec::new();
        let mut bytes = 0;
        for e in &entries {
            let r = e.record();
            bytes += r.size();
            partitions
                .entry((r.topic.clone(), r.partition))
                .or_insert(r.offset);
            let l = lane(&r.topic, r.partition, r.raw_key.as_deref(), self.by_key);
            if !lanes.contains(&l) {
                lanes.push(l);
            }
        }
        self.busy.hold(&lanes);
        let id = self.next_write;
        self.next_write += 1;
        self.in_flight.insert(
            id,
            InFlight {
                records: entries.len(),
                bytes,
                partitions,
                lanes,
            },
        );
        let mut records = Vec::with_capacity(entries.len());
        let mut undecodable = None;
        for e in entries {
            match e {
                Entry::Record(r) => records.push(r),
                Entry::Undecodable { record, error } => undecodable = Some((record, error)),
            }
        }
        let dead_letter = std::sync::Arc::clone(&self.dead_letter);
        let write = match undecodable {
            Some((record, error)) => {
                dead_letter_undecodable(sink, record, error, dead_letter).boxed()
            }
            None => write_with_retry(
                self.name.to_owned(),
                sink,
                records,
                dead_letter,
                self.settings.resilience.clone(),
                self.retry_topics.keys().cloned().collect(),
                self.handle.clone(),
            )
            .boxed(),
        };
        self.writing.push(write.map(move |w| (id, w)).boxed());
        true
    }

    /// A write finished: store what it wrote, then finish a revocation
    /// that waited for it.
    async fn written(&mut self, id: u64, done: Written) -> Result<(), ConnectorError> {
        let Written {
            sink,
            batch,
            written,
            dead,
            fatal,
        } = done;
        self.idle.push(sink);
        self.stalled = false;
        let touched: Vec<TopicPartition> = match self.in_flight.remove(&id) {
            Some(w) => {
                self.busy.free(&w.lanes);
                w.partitions.into_keys().collect()
            }
            None => Vec::new(),
        };
        let count = written.iter().filter(|w| **w).count().saturating_sub(dead);
        metrics::counter!(m::SINK_RECORDS_TOTAL, "connector" => self.name.to_owned())
            .increment(count as u64);
        for (r, ok) in batch.iter().zip(&written) {
            if *ok {
                self.progress
                    .written(&(r.topic.clone(), r.partition), r.offset);
            }
        }
        self.written_since_commit += written.iter().filter(|w| **w).count();
        // Each partition's position: its lowest record not written.
        for tp in &touched {
            let Some(next) = self
                .progress
                .lowest_unwritten(tp)
                .or_else(|| self.next_offsets.get(tp).copied())
            else {
                continue;
            };
            let last = next - 1;
            if self.marked.get(tp).is_some_and(|m| *m >= last) {
                continue;
            }
            self.marked.insert(tp.clone(), last);
            if let Err(e) = self.consumer.mark_position(&tp.0, tp.1, last) {
                // The partition is no longer ours: its new owner reads from
                // the last commit (a repeat, never a loss).
                tracing::warn!(connector = self.name, error = %e, "storing a sink offset failed");
            }
        }
        if self.concurrency == 1 || self.commits.is_empty() {
            self.start_commit();
        } else {
            self.commit_wanted = true;
        }
        self.hold_back_past_window(&touched)?;
        self.let_go_held_back().await?;
        if let Some((i, error)) = fatal {
            let at = batch.get(i).map_or_else(String::new, SinkRecord::at);
            metrics::counter!(m::SINK_ERRORS_TOTAL, "connector" => self.name.to_owned(), "stage" => "sending")
                .increment(1);
            return Err(ConnectorError {
                message: format!(
                    "connector `{}`: {} (at record {at}; the records before it are committed, none is dead-lettered: every record would fail the same way)",
                    self.name, error.message
                ),
                ..error
            });
        }
        let released = self
            .revoking
            .as_ref()
            .is_some_and(|r| !self.writing_any(&r.partitions));
        if released {
            if let Some(r) = self.revoking.take() {
                self.release(&r.partitions).await?;
            }
        }
        Ok(())
    }

    /// Whether a write in the sink holds records of any of `partitions`.
    fn writing_any(&self, partitions: &[TopicPartition]) -> bool {
        self.in_flight
            .values()
            .any(|w| partitions.iter().any(|tp| w.partitions.contains_key(tp)))
    }

    /// For a sink that keeps its offsets in its target: moves each of
    /// `partitions` (just assigned) to where the target says it resumes.
    /// Records of them already taken are dropped first (they are read
    /// again from there).
    async fn resume_from_target(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<(), ConnectorError> {
        let Some(keeper) = self.target_offsets.clone() else {
            return Ok(());
        };
        let kept = keeper.load(partitions).await?;
        if kept.is_empty() {
            return Ok(());
        }
        let moved: Vec<TopicPartition> = kept.iter().map(|(tp, _)| tp.clone()).collect();
        self.buffer.retain(|e| !e.in_partitions(&moved));
        self.buffered_bytes = self.buffer.iter().map(Entry::size).sum();
        if self.buffer.is_empty() {
            self.oldest = None;
        }
        for tp in &moved {
            self.progress.forget(tp);
            self.marked.remove(tp);
        }
        self.consumer.seek(kept.clone()).await.map_err(|e| {
            ConnectorError::external(format!("seeking to the target's offsets: {e}"))
        })?;
        tracing::info!(connector = self.name, positions = ?kept, "resuming where the target's offsets say");
        for (tp, offset) in kept {
            self.next_offsets.insert(tp, offset);
        }
        Ok(())
    }

    /// Applies a rebalance event (see the module doc).
    async fn rebalanced(
        &mut self,
        event: Rebalance,
        drain_within: Duration,
    ) -> Result<(), ConnectorError> {
        match event {
            Rebalance::Assigned(partitions) => {
                for tp in &partitions {
                    self.revoked.remove(tp);
                }
                // librdkafka keeps a partition's pause across revoke and
                // reassign: say what it should be now (a retry topic's
                // delay ended with the revocation).
                self.consumer
                    .pause(&partitions, self.paused)
                    .map_err(|e| ConnectorError::internal(e.to_string()))?;
                self.resume_from_target(&partitions).await?;
            }
            Rebalance::Revoked { partitions, lost } => {
                let dropped = self.drop_buffered(&partitions);
                metrics::counter!(m::SINK_RECORDS_RELEASED_TOTAL, "connector" => self.name.to_owned())
                    .increment(dropped as u64);
                let in_sink = self.writing_any(&partitions);
                if lost && in_sink {
                    tracing::warn!(connector = self.name, ?partitions, "partitions lost (the group gave them away) while a batch was being written; the batch is abandoned");
                    self.abandon().await?;
                }
                if in_sink && !lost {
                    tracing::info!(
                        connector = self.name,
                        ?partitions,
                        "partitions revoked; finishing the batch in the sink before releasing them"
                    );
                    self.revoking = Some(Revoking {
                        partitions,
                        deadline: Instant::now() + drain_within,
                    });
                } else if lost {
                    // Commits for them would fail: nothing to commit, just let go.
                    self.forget(&partitions);
                    self.consumer
                        .release(&partitions)
                        .map_err(|e| ConnectorError::external(e.to_string()))?;
                } else {
                    self.release(&partitions).await?;
                }
            }
            Rebalance::Failed(why) => {
                return Err(ConnectorError::external(format!(
                    "connector `{}`: the consumer group failed to rebalance ({why}); restarting",
                    self.name
                )));
            }
        }
        Ok(())
    }

    /// Drops every write in the sink (their records count as not
    /// written) and builds fresh sinks in place of the ones they owned.
    /// Each partition they touched that is still ours is read again from
    /// its lowest unwritten record: what was written after it is written
    /// again, in order (a repeat, never a reorder or a loss).
    async fn abandon(&mut self) -> Result<(), ConnectorError> {
        if self.in_flight.is_empty() {
            return Ok(());
        }
        self.writing = FuturesUnordered::new();
        self.busy.clear();
        self.stalled = false;
        let touched: BTreeSet<TopicPartition> = std::mem::take(&mut self.in_flight)
            .into_values()
            .flat_map(|w| w.partitions.into_keys())
            .collect();
        while self.idle.len() < self.concurrency {
            let mut sink = (self.make)()?;
            sink.0.open(&self.ctx).await?;
            self.idle.push(sink);
        }
        if let Some(keeper) = self.idle.last().and_then(|s| s.0.target_offsets()) {
            self.target_offsets = Some(keeper);
        }
        let mut positions: Vec<(TopicPartition, i64)> = Vec::new();
        for tp in touched {
            if self.revoked.contains(&tp) {
                continue;
            }
            let Some(offset) = self.progress.lowest_unwritten(&tp) else {
                continue;
            };
            self.buffer
                .retain(|e| !e.in_partitions(std::slice::from_ref(&tp)));
            self.progress.forget(&tp);
            self.next_offsets.insert(tp.clone(), offset);
            if self.held_back.remove(&tp) && !self.paused && !self.delayed.contains_key(&tp) {
                self.consumer
                    .pause(std::slice::from_ref(&tp), false)
                    .map_err(|e| ConnectorError::internal(format!("resuming a partition: {e}")))?;
            }
            // A retry topic's partition that paused at a later record since
            // resumes from the abandoned batch's record instead.
            if let Some(d) = self.delayed.get_mut(&tp) {
                if offset < d.0 {
                    // ... and at once: that record's time had come.
                    *d = (offset, Instant::now());
                }
            }
            positions.push((tp, offset));
        }
        self.buffered_bytes = self.buffer.iter().map(Entry::size).sum();
        if self.buffer.is_empty() {
            self.oldest = None;
        }
        self.consumer
            .seek(positions)
            .await
            .map_err(|e| ConnectorError::external(format!("seeking after an abandoned batch: {e}")))
    }

    /// Commits what is stored and gives `partitions` back to the group.
    async fn release(&mut self, partitions: &[TopicPartition]) -> Result<(), ConnectorError> {
        if let Err(e) = self.consumer.commit(self.release_commit_within).await {
            tracing::warn!(connector = self.name, error = %e, "committing before releasing revoked partitions failed; their new owner repeats what was written since the last commit");
        }
        self.forget(partitions);
        self.consumer
            .release(partitions)
            .map_err(|e| ConnectorError::external(e.to_string()))?;
        metrics::counter!(m::SINK_PARTITIONS_REVOKED_TOTAL, "connector" => self.name.to_owned())
            .increment(partitions.len() as u64);
        Ok(())
    }

    fn forget(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.delayed.remove(tp);
            self.next_offsets.remove(tp);
            self.progress.forget(tp);
            self.marked.remove(tp);
            self.held_back.remove(tp);
            self.revoked.insert(tp.clone());
        }
    }

    /// Drops buffered records of `partitions`; returns how many.
    fn drop_buffered(&mut self, partitions: &[TopicPartition]) -> usize {
        let before = self.buffer.len();
        self.buffer.retain(|e| !e.in_partitions(partitions));
        self.buffered_bytes = self.buffer.iter().map(Entry::size).sum();
        if self.buffer.is_empty() {
            self.oldest = None;
        }
        for tp in partitions {
            self.delayed.remove(tp);
            self.revoked.insert(tp.clone());
        }
        before - self.buffer.len()
    }

    fn pause_all(&self, pause: bool) -> Result<(), ConnectorError> {
        let assigned = self
            .consumer
            .assignment()
            .map_err(|e| ConnectorError::internal(e.to_string()))?;
        // Retry topics' partitions waiting for their time stay paused.
        let assigned: Vec<TopicPartition> = assigned
            .into_iter()
            .filter(|tp| pause || !(self.delayed.contains_key(tp) || self.held_back.contains(tp)))
            .collect();
        self.consumer
            .pause(&assigned, pause)
            .map_err(|e| ConnectorError::internal(format!("pausing/resuming partitions: {e}")))
    }

    /// A retry topic's head record is not due yet: pause its partition
    /// until it is, and read from it again then.
    fn delay(
        &mut self,
        tp: TopicPartition,
        offset: i64,
        wait: Duration,
    ) -> Result<(), ConnectorError> {
        self.consumer
            .pause(std::slice::from_ref(&tp), true)
            .map_err(|e| ConnectorError::internal(format!("pausing a retry topic: {e}")))?;
        self.next_offsets.insert(tp.clone(), offset);
        self.delayed.insert(tp, (offset, Instant::now() + wait));
        Ok(())
    }

    /// Resumes the retry topics' partitions whose time has come, from their
    /// waiting record.
    async fn resume_due(&mut self) -> Result<(), ConnectorError> {
        let now = Instant::now();
        let due: Vec<(TopicPartition, i64)> = self
            .delayed
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(tp, (offset, _))| (tp.clone(), *offset))
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        for (tp, _) in &due {
            self.delayed.remove(tp);
        }
        self.consumer
            .seek(due.clone())
            .await
            .map_err(|e| ConnectorError::external(format!("seeking a retry topic: {e}")))?;
        if !self.paused {
            let partitions: Vec<TopicPartition> = due
                .into_iter()
                .map(|(tp, _)| tp)
                .filter(|tp| !self.held_back.contains(tp))
                .collect();
            self.consumer
                .pause(&partitions, false)
                .map_err(|e| ConnectorError::internal(format!("resuming a retry topic: {e}")))?;
        }
        Ok(())
    }

    fn transient(&mut self, e: &rdkafka::error::KafkaError) -> Result<(), ConnectorError> {
        use rdkafka::types::RDKafkaErrorCode as C;
        if matches!(
            e.rdkafka_error_code(),
            Some(
                C::TopicAuthorizationFailed
                    | C::GroupAuthorizationFailed
                    | C::ClusterAuthorizationFailed
                    | C::SaslAuthenticationFailed
                    | C::Authentication
            )
        ) {
            // Not a disturbance librdkafka rides out: say so on `/connectors`
            // and start over with backoff (an ACL may just be propagating).
            return Err(ConnectorError::external(format!(
                "connector `{}`: Kafka refused this consumer: {e}",
                self.name
            )));
        }
        let due = self
            .last_transient_log
            .is_none_or(|t| t.elapsed() >= TRANSIENT_LOG_EVERY);
        if due {
            self.last_transient_log = Some(Instant::now());
            tracing::warn!(connector = self.name, error = %e, "Kafka consumer error; librdkafka recovers by itself, the sink carries on");
        }
        Ok(())
    }
}

/// Sends a record that cannot be decoded to the dead-letter topic, in its
/// turn; it counts as written once Kafka has it.
async fn dead_letter_undecodable(
    sink: BoxedSink,
    record: SinkRecord,
    error: ConnectorError,
    dead_letter: DeadLetterFn,
) -> Written {
    let now = now_millis();
    let failure = Failure {
        class: Class::Decode,
        error,
        attempts: 0,
        first_ms: now,
        last_ms: now,
    };
    match dead_letter(record.clone(), failure).await {
        Ok(()) => Written {
            sink,
            batch: vec![record],
            written: vec![true],
            dead: 1,
            fatal: None,
        },
        Err(e) => Written {
            sink,
            batch: vec![record],
            written: vec![false],
            dead: 0,
            fatal: Some((0, e)),
        },
    }
}

/// Writes `batch`, retrying with backoff the records not yet written while
/// their failures may pass. A record that fails for good, or (`ordering:
/// relaxed`) still fails `retry.max_elapsed` after its first failure, goes
/// to the dead-letter topic and counts as written.
async fn write_with_retry(
    name: String,
    mut sink: BoxedSink,
    batch: Vec<SinkRecord>,
    dead_letter: DeadLetterFn,
    policy: ResilienceConfig,
    // A record back from one of these had its wait: one more write (the
    // stack's own retries included), then on to the next retry topic.
    retry_topics: BTreeSet<String>,
    // Shows a failure being retried on `/connectors` (`last_error`).
    handle: TaskHandle,
) -> Written {
    let mut backoff = Backoff::new(policy.retry.initial_backoff, policy.retry.max_backoff);
    let parking = policy.parking_topic().is_some();
    let mut written = vec![false; batch.len()];
    let mut dead = vec![false; batch.len()];
    // Per record: failed attempts, first failure (epoch ms, instant).
    let mut failures: Vec<Option<(u32, i64, Instant)>> = vec![None; batch.len()];
    loop {
        let pending: Vec<usize> = (0..batch.len())
            .filter(|i| !written[*i] && !dead[*i])
            .collect();
        if pending.is_empty() {
            break;
        }
        let result = if pending.len() == batch.len() {
            sink.0.write(&batch).await
        } else {
            let retry: Vec<SinkRecord> = pending.iter().map(|i| batch[*i].clone()).collect();
            sink.0.write(&retry).await
        };
        let failure = match result {
            Ok(()) => {
                for i in pending {
                    written[i] = true;
                }
                break;
            }
            Err(f) => f,
        };
        metrics::counter!(m::SINK_ERRORS_TOTAL, "connector" => name.clone(), "stage" => "sending")
            .increment(1);
        let mut first_error: Option<(usize, ConnectorError)> = None;
        let mut give_up: Vec<(usize, Class, ConnectorError)> = Vec::new();
        for (i, outcome) in pending.iter().zip(failure.into_outcomes(pending.len())) {
            match outcome {
                RecordOutcome::Written => written[*i] = true,
                RecordOutcome::Failed(e) => {
                    let now = Instant::now();
                    let f = failures[*i].get_or_insert((0, now_millis(), now));
                    f.0 += 1;
                    if e.scope == Scope::Connector {
                        if !e.is_retryable() {
                            // Not this record's fault: stop here, write nothing more.
                            return stopped_at(sink, batch, written, &dead, *i, e);
                        }
                        // Not this record's fault either, and it may pass
                        // (the token endpoint down): wait, never give the
                        // record up for it.
                        first_error.get_or_insert((*i, e));
                        continue;
                    }
                    if !e.is_retryable() {
                        let mapping = e
                            .details
                            .iter()
                            .any(|(k, _)| *k == headers::dead_letter::MAPPING_RULE);
                        let class = if mapping {
                            Class::Mapping
                        } else {
                            Class::Rejected
                        };
                        give_up.push((*i, class, e));
                    } else if parking {
                        // `fallback: { topic }`: the call's own retries are
                        // over; park it rather than wait.
                        give_up.push((*i, Class::Parked, e));
                    } else if policy.ordering == Ordering::Relaxed
                        && (retry_topics.contains(&batch[*i].topic)
                            || now.duration_since(f.2) >= policy.retry.max_elapsed)
                    {
                        give_up.push((*i, Class::RetriesExhausted, e));
                    } else {
                        first_error.get_or_insert((*i, e));
                    }
                }
                RecordOutcome::NotAttempted => {}
            }
        }
        let gave_up = !give_up.is_empty();
        for (i, class, error) in give_up {
            let (attempts, first_ms, _) = failures[i].unwrap_or((1, now_millis(), Instant::now()));
            let failure = Failure {
                class,
                error,
                attempts,
                first_ms,
                last_ms: now_millis(),
            };
            if let Err(e) = dead_letter(batch[i].clone(), failure).await {
                return stopped_at(sink, batch, written, &dead, i, e);
            }
            dead[i] = true;
        }
        // A record after an unwritten one of its partition counts as
        // unwritten too, even if a bulk write applied it: writing the
        // earlier one alone now would put an older record after a newer
        // one. Rewriting both keeps the order (a repeat, not a reorder).
        // Dead letters are out of the target's way and stay done.
        let mut gap: BTreeSet<(&str, i32)> = BTreeSet::new();
        for (i, r) in batch.iter().enumerate() {
            let tp = (r.topic.as_str(), r.partition);
            if dead[i] {
                continue;
            }
            if gap.contains(&tp) {
                written[i] = false;
            } else if !written[i] {
                gap.insert(tp);
            }
        }
        if first_error.is_none() && gave_up {
            // Only dead letters: go on with the rest at once.
            continue;
        }
        let wait = backoff.next_delay();
        match &first_error {
            Some((i, e)) => {
                tracing::warn!(connector = %name, error = %e, at = %batch[*i].at(), retry_in = ?wait, "sink write failed; retrying the records not written");
                handle.retrying(&format!("{e} (at {}; retrying)", batch[*i].at()));
            }
            None => {
                tracing::warn!(connector = %name, retry_in = ?wait, "sink wrote part of a batch without saying why; retrying the rest");
            }
        }
        tokio::time::sleep(wait).await;
    }
    for (w, d) in written.iter_mut().zip(&dead) {
        *w |= *d;
    }
    Written {
        sink,
        batch,
        written,
        dead: dead.iter().filter(|d| **d).count(),
        fatal: None,
    }
}

/// A write that stops at record `i` for a failure of the connector itself:
/// nothing from `i` on counts as written.
fn stopped_at(
    sink: BoxedSink,
    batch: Vec<SinkRecord>,
    mut written: Vec<bool>,
    dead: &[bool],
    i: usize,
    error: ConnectorError,
) -> Written {
    for w in written.iter_mut().skip(i) {
        *w = false;
    }
    for (w, d) in written.iter_mut().zip(dead) {
        *w |= *d;
    }
    Written {
        sink,
        batch,
        written,
        dead: dead.iter().filter(|d| **d).count(),
        fatal: Some((i, error)),
    }
}

/// How long a retry topic's record still has to wait, if at all: at most
/// the topic's `delay` and a minute (a clock ahead on the host that wrote
/// it, or a hand-written header, must not hold the partition for good).
fn not_yet(msg: &BorrowedMessage<'_>, delay: Duration) -> Option<Duration> {
    let not_before = msg
        .headers()?
        .iter()
        .find(|h| h.key == headers::dead_letter::RETRY_NOT_BEFORE_MS)?
        .value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<i64>().ok())?;
    let wait = not_before.saturating_sub(now_millis());
    (wait > 0).then(|| {
        Duration::from_millis(u64::try_from(wait).unwrap_or(0))
            .min(delay.saturating_add(Duration::from_secs(60)))
    })
}

/// A consumed message as the sink sees it; a value that cannot be decoded
/// for good becomes an `Undecodable` entry (in its place in the stream).
async fn decode(codecs: &Codecs, msg: &BorrowedMessage<'_>) -> Result<Entry, ConnectorError> {
    let at = format!("{}/{}@{}", msg.topic(), msg.partition(), msg.offset());
    let headers: Vec<(String, Vec<u8>)> = msg
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    let correlation_id = headers
        .iter()
        .find(|(k, _)| k == headers::CORRELATION_ID)
        .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let key = msg.key().map(|k| match std::str::from_utf8(k) {
        Ok(s) => s.to_owned(),
        Err(_) => base64::engine::general_purpose::STANDARD.encode(k),
    });
    let mut record = SinkRecord {
        topic: msg.topic().to_owned(),
        partition: msg.partition(),
        offset: msg.offset(),
        timestamp: msg.timestamp().to_millis(),
        key,
        raw_key: msg.key().map(<[u8]>::to_vec),
        value: serde_json::Value::Null,
        raw: msg.payload().map(<[u8]>::to_vec),
        headers,
        correlation_id,
    };
    record.value = match msg.payload() {
        None => serde_json::Value::Null,
        Some(b) if b.len() >= 5 && b[0] == MAGIC_BYTE => match codecs.decode(b).await {
            Ok((codec, v)) => to_json(codec.schema(), &v),
            Err(e) if e.is_retryable() => {
                return Err(ConnectorError::external(format!("decoding {at}: {e}")))
            }
            Err(e) => {
                return Ok(Entry::Undecodable {
                    record,
                    error: ConnectorError::user(format!(
                        "record {at}: cannot decode the value: {e}"
                    )),
                })
            }
        },
        Some(b) => match std::str::from_utf8(b) {
            Ok(text) => serde_json::from_str(text)
                .unwrap_or_else(|_| serde_json::Value::String(text.to_owned())),
            Err(_) => {
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(b))
            }
        },
    };
    Ok(Entry::Record(record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{Sink, SinkFailure};
    use std::sync::{Arc, Mutex};

    fn record(partition: i32, offset: i64) -> SinkRecord {
        SinkRecord {
            topic: "t".into(),
            partition,
            offset,
            timestamp: None,
            key: None,
            raw_key: None,
            value: serde_json::Value::Null,
            raw: None,
            headers: Vec::new(),
            correlation_id: String::new(),
        }
    }

    type Letters = Arc<Mutex<Vec<(i64, Class, u32)>>>;

    /// A dead-letter topic that remembers `(offset, class, attempts)`.
    fn letters() -> (DeadLetterFn, Letters) {
        let seen: Letters = Arc::default();
        let keep = Arc::clone(&seen);
        let f: DeadLetterFn = Arc::new(move |r, failure| {
            keep.lock()
                .expect("lock")
                .push((r.offset, failure.class, failure.attempts));
            async { Ok(()) }.boxed()
        });
        (f, seen)
    }

    fn write(
        sink: Scripted,
        batch: Vec<SinkRecord>,
        policy: ResilienceConfig,
    ) -> (impl std::future::Future<Output = Written>, Letters) {
        let (f, seen) = letters();
        (
            write_with_retry(
                "s".into(),
                BoxedSink::new(sink),
                batch,
                f,
                policy,
                BTreeSet::from(["s.retry.1m".to_owned()]),
                TaskHandle::detached("s"),
            ),
            seen,
        )
    }

    /// Fails as scripted, then writes; remembers every record it was handed.
    struct Scripted {
        script: VecDeque<Box<dyn Fn(usize) -> SinkFailure + Send>>,
        seen: Arc<Mutex<Vec<Vec<i64>>>>,
    }

    impl Sink for Scripted {
        async fn write(&mut self, batch: &[SinkRecord]) -> Result<(), SinkFailure> {
            self.seen
                .lock()
                .expect("lock")
                .push(batch.iter().map(|r| r.offset).collect());
            match self.script.pop_front() {
                Some(f) => Err(f(batch.len())),
                None => Ok(()),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_being_retried_shows_as_the_last_error() {
        let sink = Scripted {
            script: VecDeque::from([Box::new(|n| {
                SinkFailure::at(n, 1, ConnectorError::external("HTTP 503 from the target"))
            }) as Box<dyn Fn(usize) -> SinkFailure + Send>]),
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let handle = TaskHandle::detached("s");
        assert_eq!(handle.status().and_then(|s| s.last_error), None);
        let (f, _) = letters();
        let done = write_with_retry(
            "s".into(),
            BoxedSink::new(sink),
            (0..3).map(|o| record(0, o)).collect(),
            f,
            ResilienceConfig::default(),
            BTreeSet::new(),
            handle.clone(),
        )
        .await;
        assert_eq!(done.written, vec![true, true, true]);
        let last = handle
            .status()
            .and_then(|s| s.last_error)
            .unwrap_or_default();
        assert!(
            last.contains("HTTP 503 from the target") && last.contains("t/0@1"),
            "{last}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_rewrite_only_what_was_not_written() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Scripted {
            script: VecDeque::from([Box::new(|n| {
                SinkFailure::at(n, 2, ConnectorError::external("503"))
            }) as Box<dyn Fn(usize) -> SinkFailure + Send>]),
            seen: Arc::clone(&seen),
        };
        let batch = (0..4).map(|o| record(0, o)).collect();
        let (w, letters) = write(sink, batch, ResilienceConfig::default());
        let done = w.await;
        assert!(letters.lock().expect("lock").is_empty());
        assert_eq!(done.written, vec![true; 4]);
        assert_eq!(
            *seen.lock().expect("lock"),
            vec![vec![0, 1, 2, 3], vec![2, 3]],
            "the second attempt carries only the records not written"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_never_puts_an_older_record_after_a_newer_one_of_its_partition() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        // A bulk API wrote records 0 and 2 but not 1; record 3 is in
        // another partition and was written too.
        let sink = Scripted {
            script: VecDeque::from([Box::new(|_| {
                SinkFailure::per_record(vec![
                    RecordOutcome::Written,
                    RecordOutcome::Failed(ConnectorError::external("503")),
                    RecordOutcome::Written,
                    RecordOutcome::Written,
                ])
            }) as Box<dyn Fn(usize) -> SinkFailure + Send>]),
            seen: Arc::clone(&seen),
        };
        let batch = vec![record(0, 10), record(0, 11), record(0, 12), record(1, 5)];
        let (w, _) = write(sink, batch, ResilienceConfig::default());
        let done = w.await;
        assert_eq!(done.written, vec![true; 4]);
        assert_eq!(
            *seen.lock().expect("lock"),
            vec![vec![10, 11, 12, 5], vec![11, 12]],
            "11 is retried with 12 after it, never alone after 12"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_is_dead_lettered_and_the_rest_is_written() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Scripted {
            script: VecDeque::from([
                Box::new(|n| SinkFailure::at(n, 1, ConnectorError::user("400")))
                    as Box<dyn Fn(usize) -> SinkFailure + Send>,
            ]),
            seen: Arc::clone(&seen),
        };
        let batch = (0..3).map(|o| record(0, o)).collect();
        let started = Instant::now();
        let (w, letters) = write(sink, batch, ResilienceConfig::default());
        let done = w.await;
        assert_eq!(
            done.written,
            vec![true; 3],
            "the dead letter counts as written"
        );
        assert_eq!(
            *letters.lock().expect("lock"),
            vec![(1, Class::Rejected, 1)]
        );
        assert_eq!(
            *seen.lock().expect("lock"),
            vec![vec![0, 1, 2], vec![2]],
            "no retry of the 400; the record after it goes on"
        );
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "no backoff for a dead letter"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refused_credentials_stop_the_write_and_dead_letter_nothing() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Scripted {
            script: VecDeque::from([Box::new(|n| {
                SinkFailure::at(n, 1, ConnectorError::user("HTTP 401 twice").for_connector())
            }) as Box<dyn Fn(usize) -> SinkFailure + Send>]),
            seen: Arc::clone(&seen),
        };
        let (w, letters) = write(
            sink,
            (0..3).map(|o| record(0, o)).collect(),
            ResilienceConfig::default(),
        );
        let done = w.await;
        assert_eq!(done.written, vec![true, false, false]);
        assert!(matches!(&done.fatal, Some((1, e)) if e.scope == Scope::Connector));
        assert!(letters.lock().expect("lock").is_empty(), "no dead letters");
        assert_eq!(seen.lock().expect("lock").len(), 1, "not retried");
    }

    /// Fails record 0 with a 503 `times` times.
    fn failing_503(times: usize) -> (Scripted, Arc<Mutex<Vec<Vec<i64>>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = (0..times)
            .map(|_| {
                Box::new(|n| SinkFailure::at(n, 0, ConnectorError::external("503")))
                    as Box<dyn Fn(usize) -> SinkFailure + Send>
            })
            .collect();
        (
            Scripted {
                script,
                seen: Arc::clone(&seen),
            },
            seen,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn strict_ordering_retries_past_max_elapsed_and_never_dead_letters() {
        let mut policy = ResilienceConfig::default();
        policy.retry.max_elapsed = Duration::from_secs(1);
        policy.retry.max_backoff = Duration::from_millis(500);
        let (sink, seen) = failing_503(50);
        let (w, letters) = write(sink, vec![record(0, 0), record(0, 1)], policy);
        let done = w.await;
        assert_eq!(done.written, vec![true, true]);
        assert!(letters.lock().expect("lock").is_empty());
        assert_eq!(
            seen.lock().expect("lock").len(),
            51,
            "retried until it passed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_back_from_a_retry_topic_moves_on_after_one_more_write() {
        let policy = ResilienceConfig {
            ordering: Ordering::Relaxed,
            ..ResilienceConfig::default()
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (f, letters) = letters();
        let mut from_retry = record(0, 0);
        from_retry.topic = "s.retry.1m".into();
        let started = Instant::now();
        let done = write_with_retry(
            "s".into(),
            BoxedSink::new(Refuses0(Arc::clone(&seen))),
            vec![from_retry],
            f,
            policy,
            BTreeSet::from(["s.retry.1m".to_owned()]),
            TaskHandle::detached("s"),
        )
        .await;
        assert_eq!(done.written, vec![true]);
        assert_eq!(
            *letters.lock().expect("lock"),
            vec![(0, Class::RetriesExhausted, 1)]
        );
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "no wait: it had its wait"
        );
    }

    /// Refuses offset 0 with a 503 forever; writes everything else.
    struct Refuses0(Arc<Mutex<Vec<Vec<i64>>>>);

    impl Sink for Refuses0 {
        async fn write(&mut self, batch: &[SinkRecord]) -> Result<(), SinkFailure> {
            self.0
                .lock()
                .expect("lock")
                .push(batch.iter().map(|r| r.offset).collect());
            match batch.iter().position(|r| r.offset == 0) {
                Some(i) => Err(SinkFailure::at(
                    batch.len(),
                    i,
                    ConnectorError::external("503"),
                )),
                None => Ok(()),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn relaxed_ordering_dead_letters_after_max_elapsed_and_flows_on() {
        let mut policy = ResilienceConfig {
            ordering: Ordering::Relaxed,
            ..ResilienceConfig::default()
        };
        policy.retry.max_elapsed = Duration::from_secs(5);
        policy.retry.max_backoff = Duration::from_secs(1);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let (f, letters) = letters();
        let done = write_with_retry(
            "s".into(),
            BoxedSink::new(Refuses0(Arc::clone(&seen))),
            vec![record(0, 0), record(0, 1)],
            f,
            policy,
            BTreeSet::new(),
            TaskHandle::detached("s"),
        )
        .await;
        assert_eq!(done.written, vec![true, true]);
        assert_eq!(
            letters
                .lock()
                .expect("lock")
                .iter()
                .map(|l| (l.0, l.1))
                .collect::<Vec<_>>(),
            vec![(0, Class::RetriesExhausted)]
        );
        assert!(started.elapsed() >= Duration::from_secs(5));
        assert!(
            started.elapsed() < Duration::from_secs(7),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            seen.lock().expect("lock").last(),
            Some(&vec![1]),
            "record 1 flows on"
        );
    }
}
