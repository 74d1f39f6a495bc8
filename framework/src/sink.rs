//! The sink contract: how a connector writes records to a target system.
//!
//! The runtime owns the loop: it consumes the topic, decodes each record
//! (Avro through the schema registry, else JSON or text), and hands
//! [`Sink::write`] a batch, in Kafka order per partition. The sink answers
//! when the batch is safely written, or how far it got and why it stopped
//! ([`SinkFailure`]). Only then does the runtime store the batch's offsets,
//! so a record is never committed before the target has it. While a sink is
//! slow or down the runtime pauses consumption (the consumer keeps polling,
//! so it stays in its group) and memory stays bounded; what to do with a
//! failure (retry with backoff now; dead-letter and circuit breaking in the
//! resilience layer) is the runtime's decision, not the sink's.

use crate::error::ConnectorError;
use std::future::Future;

/// One record handed to a sink.
#[derive(Debug, Clone)]
pub struct SinkRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Kafka timestamp, epoch milliseconds.
    pub timestamp: Option<i64>,
    /// The key as text (keys that are not UTF-8 are shown as base64).
    pub key: Option<String>,
    /// The value as JSON: decoded Avro, or the payload's own JSON, or a string.
    pub value: serde_json::Value,
    /// The value's bytes as they were in Kafka.
    pub raw: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The `ferry-correlation-id` header, or a fresh id.
    pub correlation_id: String,
}

impl SinkRecord {
    /// Bytes the record holds in memory (for the in-flight bound).
    pub fn size(&self) -> usize {
        self.raw.as_ref().map_or(0, Vec::len) * 3 + self.key.as_ref().map_or(0, String::len) + 128
    }
}

/// A batch that was not (entirely) written.
#[derive(Debug)]
pub struct SinkFailure {
    /// How many records at the start of the batch are safely written.
    pub written: usize,
    pub error: ConnectorError,
}

impl SinkFailure {
    pub fn none_written(error: ConnectorError) -> Self {
        Self { written: 0, error }
    }
}

/// What a sink can see of the runtime.
#[derive(Debug, Clone)]
pub struct SinkContext {
    pub name: String,
}

/// A sink connector. Write the methods as `async fn`s.
pub trait Sink: Send + 'static {
    /// Called once per (re)start before the first write.
    fn open(
        &mut self,
        _ctx: &SinkContext,
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send {
        async { Ok(()) }
    }

    /// Writes `batch` (never empty), in order.
    fn write(
        &mut self,
        batch: &[SinkRecord],
    ) -> impl Future<Output = Result<(), SinkFailure>> + Send;
}

pub(crate) trait DynSink: Send {
    fn open<'a>(
        &'a mut self,
        ctx: &'a SinkContext,
    ) -> futures::future::BoxFuture<'a, Result<(), ConnectorError>>;
    fn write<'a>(
        &'a mut self,
        batch: &'a [SinkRecord],
    ) -> futures::future::BoxFuture<'a, Result<(), SinkFailure>>;
}

impl<S: Sink> DynSink for S {
    fn open<'a>(
        &'a mut self,
        ctx: &'a SinkContext,
    ) -> futures::future::BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(Sink::open(self, ctx))
    }
    fn write<'a>(
        &'a mut self,
        batch: &'a [SinkRecord],
    ) -> futures::future::BoxFuture<'a, Result<(), SinkFailure>> {
        Box::pin(Sink::write(self, batch))
    }
}

/// A sink erased for the runtime.
pub struct BoxedSink(pub(crate) Box<dyn DynSink>);

impl BoxedSink {
    pub fn new(sink: impl Sink) -> Self {
        Self(Box::new(sink))
    }
}

impl std::fmt::Debug for BoxedSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BoxedSink")
    }
}
