//! Ferry: an event-streaming connector framework on Apache Kafka.
//!
//! This crate is the framework half of Ferry: the Kafka layer ([`kafka`]), typed
//! configuration ([`config`]), the process runtime ([`runtime`]), the admin HTTP
//! listener ([`admin`]) and telemetry ([`telemetry`]). Built-in connectors and
//! the `ferry` binary live in the `ferry-connectors` crate.
//!
//! A connector author imports [`prelude`] and nothing else.

pub mod admin;
pub mod config;
pub mod consumer;
pub mod error;
pub mod ingress;
pub mod kafka;
pub mod prelude;
pub mod resilience;
pub mod runtime;
pub mod schema;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod transform;

/// The version of Ferry, as built.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
