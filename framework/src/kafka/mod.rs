//! The Kafka layer: every connection Ferry makes to Kafka goes through here.
//!
//! - [`KafkaProducer`]: idempotent, `acks=all`, compression and batching from
//!   typed config. librdkafka retries sends itself; Ferry does not wrap it in a
//!   retry layer, it configures it (`delivery_timeout`).
//! - [`KafkaConsumer`]: offsets are *stored* only when the caller says a record
//!   is processed ([`KafkaConsumer::mark_position`]); commits carry only what
//!   was stored, so a record is never committed before it is done. A
//!   *coordinated* consumer keeps revoked partitions until its owner has
//!   finished with them ([`Rebalance`]); assignment is cooperative-sticky.
//! - [`KafkaAdmin`]: creates topics (Ferry never relies on auto-creation), lists
//!   and describes them.
//! - [`KafkaHealth`]: a cheap metadata round trip, for `/ready` and startup.
//! - [`DevBroker`] (feature `embedded-broker`): tansu, in-process, for `ferry up`.

mod admin;
pub mod compacted;
mod config;
mod consumer;
mod context;
#[cfg(feature = "embedded-broker")]
mod dev_broker;
mod error;
mod health;
mod producer;

pub use admin::{KafkaAdmin, TopicDescription};
pub use config::{
    AutoOffsetReset, Compression, ConsumerSettings, EmbeddedBrokerConfig, KafkaConfig,
    ProducerSettings, SaslMechanism, SecurityProtocol, SecuritySettings, StorageKind,
};
pub use consumer::{GroupContext, KafkaConsumer, Rebalance, Received, TopicPartition};
pub use context::FerryClientContext;
#[cfg(feature = "embedded-broker")]
pub use dev_broker::{BrokerStorage, DevBroker};
pub use error::{DevBrokerError, KafkaLayerError, ProduceError};
pub use health::KafkaHealth;
pub use producer::{Delivered, KafkaProducer, OutgoingRecord};
