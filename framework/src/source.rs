//! The source contract: how a connector hands records to Ferry.
//!
//! The runtime owns the loop. It asks [`Source::poll`] for the next batch;
//! each [`SourceRecord`] names its *source partition* (an endpoint, a shard,
//! a tenant) and the *position* reached once it is delivered (a cursor, a
//! page token, a timestamp). The runtime encodes each record with the
//! topic's schema, produces it, and once every record of a partition up to a
//! position is acknowledged by Kafka it writes that position to the
//! `ferry-offsets` topic and calls [`Source::durable`]. On (re)start the
//! source is [`Source::open`]ed with the last durable position per partition,
//! so a crash at any moment loses nothing: at worst records after the last
//! durable position are produced again (at-least-once).
//!
//! One contract serves three kinds of source:
//! - **poll** (an API polled on an interval): `poll` fetches a page and
//!   returns it, or [`Poll::Idle`] until the next poll is due;
//! - **push** (a webhook receiver): the HTTP handler builds a record with
//!   [`SourceRecord::acknowledged`], queues it for `poll` to return, and
//!   awaits the [`Durable`] handle before answering the sender, so a webhook
//!   is never acknowledged before it is safely in Kafka;
//! - **batch** (a scheduled transfer): `poll` returns pages until the
//!   transfer is complete, then [`Poll::Done`].
//!
//! `poll` must be cancel-safe: at shutdown the runtime drops a pending
//! `poll` future and drains what was already returned.
//!
//! Within one returned batch, records are produced in order (one partition
//! of a topic gets them in the order returned, whatever librdkafka's queue
//! does), and a batch is acknowledged in full before the next `poll`.

use crate::error::ConnectorError;
use crate::runtime::Shutdown;
use apache_avro::types::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;
use tokio::sync::oneshot;

/// Where a source partition has got to (a cursor, a page token, ...): any
/// JSON value the source understands; Ferry stores it and hands it back.
pub type Position = serde_json::Value;

/// The last durable position of each source partition.
pub type Positions = BTreeMap<String, Position>;

/// One record from a source.
#[derive(Debug)]
pub struct SourceRecord {
    /// The source partition this record belongs to.
    pub partition: String,
    /// The position reached once this record (and every one before it in
    /// this partition) is delivered.
    pub position: Position,
    /// The Kafka record key (per-key order is kept).
    pub key: Option<String>,
    /// The value, matching the topic's value schema.
    pub value: Value,
    /// Correlation id carried in the headers (and, for envelopes, the value).
    pub correlation_id: String,
    /// The media type of what the source received.
    pub content_type: String,
    /// Extra headers.
    pub headers: Vec<(String, Vec<u8>)>,
    pub(crate) ack: Option<oneshot::Sender<Result<(), String>>>,
}

impl SourceRecord {
    pub fn new(partition: impl Into<String>, position: Position, value: Value) -> Self {
        Self {
            partition: partition.into(),
            position,
            key: None,
            value,
            correlation_id: uuid::Uuid::new_v4().to_string(),
            content_type: "application/json".to_owned(),
            headers: Vec::new(),
            ack: None,
        }
    }

    pub fn with_key(mut self, key: Option<String>) -> Self {
        self.key = key;
        self
    }

    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = id.into();
        self
    }

    /// For push sources: a handle that resolves once this record is in Kafka
    /// (or failed to get there).
    pub fn acknowledged(mut self) -> (Self, Durable) {
        let (tx, rx) = oneshot::channel();
        self.ack = Some(tx);
        (self, Durable(rx))
    }
}

/// Resolves when a pushed record is durable in Kafka.
#[derive(Debug)]
pub struct Durable(oneshot::Receiver<Result<(), String>>);

impl Durable {
    /// `Ok` once Kafka acknowledged the record; `Err` with the reason if it
    /// could not be written (or Ferry stopped first).
    pub async fn wait(self) -> Result<(), String> {
        self.0
            .await
            .unwrap_or_else(|_| Err("Ferry stopped before the record was written".to_owned()))
    }
}

/// What a poll produced.
#[derive(Debug)]
pub enum Poll {
    /// Records to deliver (possibly none).
    Records(Vec<SourceRecord>),
    /// No records, but `partition` has reached `position` (an empty last
    /// page, a cycle that found nothing new): the runtime stores it (after
    /// every record returned before, which it already has) and calls
    /// [`Source::durable`].
    Checkpoint {
        partition: String,
        position: Position,
    },
    /// Nothing now; poll again after this long (or sooner at shutdown).
    Idle(Duration),
    /// The source has finished (a batch transfer is complete).
    Done,
}

/// What a source can see of the runtime.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// The connector's name from config.
    pub name: String,
    /// Cancelled when Ferry stops.
    pub shutdown: Shutdown,
}

/// A source connector. Write the methods as `async fn`s.
pub trait Source: Send + 'static {
    /// Called once per (re)start, before the first poll, with the last
    /// durable position of each source partition (empty on first start).
    fn open(
        &mut self,
        ctx: &SourceContext,
        resume: Positions,
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send;

    /// The next batch. Must be cancel-safe.
    fn poll(
        &mut self,
        ctx: &SourceContext,
    ) -> impl Future<Output = Result<Poll, ConnectorError>> + Send;

    /// Every record of `partition` up to `position` is in Kafka, and the
    /// position is stored. Sources that keep an upstream cursor or ack a
    /// queue do it here.
    fn durable(
        &mut self,
        _partition: &str,
        _position: &Position,
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send {
        async { Ok(()) }
    }
}

/// The object-safe form the runtime holds (Vector's `DynValidatedSink`).
pub(crate) trait DynSource: Send {
    fn open<'a>(
        &'a mut self,
        ctx: &'a SourceContext,
        resume: Positions,
    ) -> futures::future::BoxFuture<'a, Result<(), ConnectorError>>;
    fn poll<'a>(
        &'a mut self,
        ctx: &'a SourceContext,
    ) -> futures::future::BoxFuture<'a, Result<Poll, ConnectorError>>;
    fn durable<'a>(
        &'a mut self,
        partition: &'a str,
        position: &'a Position,
    ) -> futures::future::BoxFuture<'a, Result<(), ConnectorError>>;
}

impl<S: Source> DynSource for S {
    fn open<'a>(
        &'a mut self,
        ctx: &'a SourceContext,
        resume: Positions,
    ) -> futures::future::BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(Source::open(self, ctx, resume))
    }
    fn poll<'a>(
        &'a mut self,
        ctx: &'a SourceContext,
    ) -> futures::future::BoxFuture<'a, Result<Poll, ConnectorError>> {
        Box::pin(Source::poll(self, ctx))
    }
    fn durable<'a>(
        &'a mut self,
        partition: &'a str,
        position: &'a Position,
    ) -> futures::future::BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(Source::durable(self, partition, position))
    }
}

/// A source erased for the runtime.
pub struct BoxedSource(pub(crate) Box<dyn DynSource>);

impl BoxedSource {
    pub fn new(source: impl Source) -> Self {
        Self(Box::new(source))
    }
}

impl std::fmt::Debug for BoxedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BoxedSource")
    }
}
