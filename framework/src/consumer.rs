//! Reading Ferry's topics from another Rust service, into typed structs.
//!
//! Ferry writes Avro in the Confluent wire format (a zero byte, the 4-byte
//! schema id, the datum) with the writer's schema in the registry. A
//! service reads them as its own type `T` (for instance a struct generated
//! from the `.avsc` file by `rsgen-avro`; see `examples/consumers/rust`):
//!
//! - each record is decoded with the **writer's** schema, fetched by the id
//!   in the record (and cached), then resolved against the **reader's**
//!   schema the service was built with, if given (Avro's schema resolution:
//!   fields added since get their defaults, removed ones are dropped,
//!   `int` widens to `long`, ...), then deserialized into `T`;
//! - repeats are dropped by the `ferry-event-id` header: Ferry delivers at
//!   least once, and a record written again (after a crash, a rebalance or a
//!   dead-letter replay) carries the id of the source event it was made
//!   from, at a new offset. The window is bounded ([`Builder::dedupe_window`]);
//!   a service that must never apply an event twice keeps the ids with its
//!   own state instead;
//! - at least once on this side too: a record's offset is stored only when
//!   the service calls [`TypedConsumer::done`] (or gives it up with
//!   [`TypedConsumer::skip`]), and committed in the background and when the
//!   consumer is dropped. A record [`TypedConsumer::next`] could not read
//!   (the registry down, a record that is not a `T`), or took while a
//!   cancelled `next` was reading it, is read again by the next call:
//!   nothing is passed over without being returned or skipped.
//!
//! The event id is derived from the source event (for a poll source, from
//! the item's key and exact bytes): an item that returns to the exact bytes
//! it had earlier (A, B, then A again, with no change time in it) within the
//! window has the same id as the first A and is dropped as a repeat. Sources
//! whose items carry a version or change time, as CRMs' do, never hit this;
//! for others, make the window small or turn it off.
//!
//! ```no_run
//! # async fn run() -> Result<(), ferry::consumer::ConsumeError> {
//! #[derive(serde::Deserialize)]
//! struct Contact { id: String, email: Option<String> }
//!
//! let mut contacts = ferry::consumer::TypedConsumer::<Contact>::builder(
//!     "127.0.0.1:9092", "my-service", "http://127.0.0.1:8081",
//! )
//! .build(&["ferry.quickstart.normalized-contacts"])?;
//! loop {
//!     let event = contacts.next().await?;
//!     println!("{}: {:?}", event.value.id, event.value.email);
//!     contacts.done(&event)?;
//! }
//! # }
//! ```

use crate::runtime::headers;
use crate::schema::registry::{Codecs, CodecsError, RegistryClient};
use crate::schema::wire;
use apache_avro::Schema;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::Message;
use serde::de::DeserializeOwned;
use std::collections::{HashSet, VecDeque};
use std::marker::PhantomData;
use std::time::Duration;

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The consumer's settings or the reader's schema are wrong.
    #[error("consumer settings: {0}")]
    Config(String),
    /// Kafka failed (librdkafka retries by itself; a fatal error ends here).
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The registry could not give the writer's schema.
    #[error("{topic}/{partition}@{offset}: {source}")]
    Registry {
        topic: String,
        partition: i32,
        offset: i64,
        source: CodecsError,
    },
    /// The record is not what `T` can be made from: not registry-framed
    /// Avro, not readable with the reader's schema, or not a `T`. Skip it
    /// with [`TypedConsumer::skip`] or stop.
    #[error("{topic}/{partition}@{offset}: {reason}")]
    Decode {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
}

impl ConsumeError {
    /// Whether trying again can help (the registry down; Kafka's retriable
    /// errors).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Registry { source, .. } => source.is_retryable(),
            Self::Kafka(e) => e
                .rdkafka_error_code()
                .is_some_and(|c| !matches!(c, rdkafka::types::RDKafkaErrorCode::Fatal)),
            Self::Config(_) | Self::Decode { .. } => false,
        }
    }
}

/// One record, read as `T`.
#[derive(Debug, Clone)]
pub struct Event<T> {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// The writer's schema id (from the record's framing).
    pub schema_id: u32,
    /// `ferry-event-id`: the source event this record was made from.
    pub event_id: Option<String>,
    /// `ferry-correlation-id`.
    pub correlation_id: Option<String>,
    pub value: T,
}

impl<T> Event<T> {
    /// The key as text (Ferry's keys are), if it has one.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }
}

/// Settings of a [`TypedConsumer`].
pub struct Builder<T> {
    config: ClientConfig,
    registry_url: String,
    reader_schema: Option<String>,
    dedupe_window: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Builder<T> {
    /// The reader's schema: the `.avsc` text `T` was made from (e.g.
    /// `include_str!`). Records written with another version of it are
    /// resolved to it. Without one, records are read as written.
    #[must_use]
    pub fn reader_schema(mut self, avsc: &str) -> Self {
        self.reader_schema = Some(avsc.to_owned());
        self
    }

    /// How many recent event ids are remembered to drop repeats (default
    /// 100 000; 0 turns deduplication off).
    #[must_use]
    pub fn dedupe_window(mut self, ids: usize) -> Self {
        self.dedupe_window = ids;
        self
    }

    /// Any librdkafka option (security, `auto.offset.reset`, ...).
    #[must_use]
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.config.set(key, value);
        self
    }

    /// Creates the consumer and subscribes it to `topics`.
    pub fn build(mut self, topics: &[&str]) -> Result<TypedConsumer<T>, ConsumeError> {
        // What `done` relies on, whatever `set` said: offsets stored only
        // by `done`/`skip`, committed in the background.
        self.config
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true");
        let reader = match &self.reader_schema {
            Some(text) => Some(
                Schema::parse_str(text)
                    .map_err(|e| ConsumeError::Config(format!("the reader's schema: {e}")))?,
            ),
            None => None,
        };
        let client = RegistryClient::new(&self.registry_url, None, Duration::from_secs(30))
            .map_err(|e| ConsumeError::Config(format!("registry `{}`: {e}", self.registry_url)))?;
        let consumer: StreamConsumer = self.config.create()?;
        consumer.subscribe(topics)?;
        Ok(TypedConsumer {
            consumer,
            codecs: Codecs::new(client),
            reader,
            recent: RecentIds::new(self.dedupe_window),
            duplicates: 0,
            in_hand: None,
            _t: PhantomData,
        })
    }
}

/// A group consumer of Ferry's Avro topics that yields `T`s. See the
/// module doc.
pub struct TypedConsumer<T> {
    consumer: StreamConsumer,
    codecs: Codecs,
    reader: Option<Schema>,
    recent: RecentIds,
    duplicates: u64,
    /// The record `next` took from the stream and has not returned: it
    /// failed to read, or `next` was cancelled while reading it. The next
    /// call reads it again.
    in_hand: Option<(String, i32, i64)>,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> TypedConsumer<T> {
    /// A consumer in group `group`, reading from the earliest offset when
    /// the group has none, with offsets stored by [`Self::done`] only.
    pub fn builder(bootstrap: &str, group: &str, registry_url: &str) -> Builder<T> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false");
        Builder {
            config,
            registry_url: registry_url.to_owned(),
            reader_schema: None,
            dedupe_window: 100_000,
            _t: PhantomData,
        }
    }

    /// The next record not seen before (repeats are dropped, their offsets
    /// stored, and counted in [`Self::duplicates_dropped`]). Safe to cancel:
    /// a record taken but not returned is read again by the next call.
    pub async fn next(&mut self) -> Result<Event<T>, ConsumeError> {
        if let Some((topic, partition, offset)) = self.in_hand.take() {
            self.consumer
                .seek(
                    &topic,
                    partition,
                    rdkafka::Offset::Offset(offset),
                    Duration::from_secs(10),
                )
                .inspect_err(|_| self.in_hand = Some((topic.clone(), partition, offset)))?;
        }
        loop {
            let msg = self.consumer.recv().await?;
            let event_id = header(&msg, headers::EVENT_ID);
            if event_id
                .as_deref()
                .is_some_and(|id| self.recent.contains(id))
            {
                self.duplicates += 1;
                self.consumer.store_offset_from_message(&msg)?;
                continue;
            }
            self.in_hand = Some((msg.topic().to_owned(), msg.partition(), msg.offset()));
            let event = self.read(&msg, event_id).await?;
            self.in_hand = None;
            if let Some(id) = &event.event_id {
                self.recent.insert(id);
            }
            return Ok(event);
        }
    }

    async fn read(
        &self,
        msg: &BorrowedMessage<'_>,
        event_id: Option<String>,
    ) -> Result<Event<T>, ConsumeError> {
        let at = |reason: String| ConsumeError::Decode {
            topic: msg.topic().to_owned(),
            partition: msg.partition(),
            offset: msg.offset(),
            reason,
        };
        let payload = msg
            .payload()
            .ok_or_else(|| at("no value (a tombstone)".to_owned()))?;
        let (schema_id, _) =
            wire::unframe(payload).map_err(|e| at(format!("not registry-framed Avro: {e}")))?;
        let (_, written) = self.codecs.decode(payload).await.map_err(|e| match e {
            e @ CodecsError::Registry(_) => ConsumeError::Registry {
                topic: msg.topic().to_owned(),
                partition: msg.partition(),
                offset: msg.offset(),
                source: e,
            },
            e => at(e.to_string()),
        })?;
        let value = decode_as::<T>(written, self.reader.as_ref()).map_err(at)?;
        Ok(Event {
            topic: msg.topic().to_owned(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            schema_id,
            event_id,
            correlation_id: header(msg, headers::CORRELATION_ID),
            value,
        })
    }

    /// `event` is handled: its offset may be committed.
    pub fn done(&mut self, event: &Event<T>) -> Result<(), ConsumeError> {
        self.skip(&event.topic, event.partition, event.offset)
    }

    /// Gives up the record at `topic`/`partition`@`offset` (one that
    /// [`Self::next`] could not read, see [`ConsumeError::Decode`]): its
    /// offset may be committed, and `next` goes on after it.
    pub fn skip(&mut self, topic: &str, partition: i32, offset: i64) -> Result<(), ConsumeError> {
        if self
            .in_hand
            .as_ref()
            .is_some_and(|(t, p, o)| t == topic && *p == partition && *o == offset)
        {
            self.in_hand = None;
        }
        match self.consumer.store_offset(topic, partition, offset) {
            // The partition went to another member meanwhile: it reads from
            // the last commit (a repeat there, never a loss).
            Err(KafkaError::StoreOffset(rdkafka::types::RDKafkaErrorCode::State)) => Ok(()),
            other => Ok(other?),
        }
    }

    /// Repeats dropped so far.
    pub fn duplicates_dropped(&self) -> u64 {
        self.duplicates
    }

    /// The rdkafka consumer underneath (assignment, pause, metrics).
    pub fn consumer(&self) -> &StreamConsumer {
        &self.consumer
    }
}

/// A record decoded with its writer's schema, resolved to the reader's
/// schema if given, as a `T`; `Err` says why not.
fn decode_as<T: DeserializeOwned>(
    written: apache_avro::types::Value,
    reader: Option<&Schema>,
) -> Result<T, String> {
    let value = match reader {
        Some(reader) => written
            .resolve(reader)
            .map_err(|e| format!("does not resolve to the reader's schema: {e}"))?,
        None => written,
    };
    apache_avro::from_value::<T>(&value)
        .map_err(|e| format!("not a {}: {e}", std::any::type_name::<T>()))
}

fn header(msg: &BorrowedMessage<'_>, name: &str) -> Option<String> {
    msg.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The last `capacity` ids seen, oldest forgotten first.
#[derive(Debug)]
struct RecentIds {
    capacity: usize,
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentIds {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ids: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Remembers `id` (a read record's).
    fn insert(&mut self, id: &str) {
        if self.capacity == 0 || self.ids.contains(id) {
            return;
        }
        self.ids.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_remember_a_window_and_forget_the_oldest() {
        let mut r = RecentIds::new(2);
        assert!(!r.contains("a"));
        r.insert("a");
        assert!(r.contains("a"));
        r.insert("b");
        r.insert("c");
        assert!(!r.contains("a"), "a third id pushes `a` out");
        assert!(r.contains("b") && r.contains("c"));
        r.insert("c");
        assert_eq!((r.order.len(), r.ids.len()), (2, 2));
        let mut off = RecentIds::new(0);
        off.insert("a");
        assert!(!off.contains("a"), "window 0: no dedupe");
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct V1 {
        id: String,
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct V2 {
        id: String,
        tier: String,
    }

    /// A record written with an older schema resolves to the reader's
    /// newer one (the added field gets its default), then deserializes;
    /// without a reader's schema it is read as written.
    #[test]
    fn an_older_writers_record_resolves_to_the_readers_schema() {
        use apache_avro::types::Value;
        let v2 = Schema::parse_str(
            r#"{"type":"record","name":"C","fields":[{"name":"id","type":"string"},{"name":"tier","type":"string","default":"free"}]}"#,
        )
        .expect("schema");
        let written = Value::Record(vec![("id".into(), Value::String("c-1".into()))]);
        let got: V2 = decode_as(written.clone(), Some(&v2)).expect("a V2");
        assert_eq!(
            got,
            V2 {
                id: "c-1".into(),
                tier: "free".into()
            }
        );
        let why = decode_as::<V2>(written.clone(), None).expect_err("no tier as written");
        assert!(why.contains("not a") && why.contains("V2"), "{why}");
        let got: V1 = decode_as(written, None).expect("a V1");
        assert_eq!(got, V1 { id: "c-1".into() });
    }
}
