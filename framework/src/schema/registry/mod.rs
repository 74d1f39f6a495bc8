//! A Confluent-compatible schema registry: Ferry serves one when
//! `schema_registry.url` is unset, and talks to any compatible registry
//! through one client either way.
//!
//! - [`api`]: the REST contract (bodies, error codes) both sides speak.
//! - [`state`] and [`log`]: storage is a single-partition compacted topic
//!   (`_ferry_schemas`); every instance replays it and applies the same rules, so
//!   instances sharing a cluster agree on ids by log order.
//! - [`service`]: the operations; [`server`]: the axum routes over them.
//! - [`client`]: reqwest client for Ferry's registry and external ones;
//!   [`codecs`]: codec caches by id and subject on top of it.
//! - [`config`]: the `schema_registry` section of the config file.

pub mod api;
pub mod client;
pub mod codecs;
pub mod config;
pub mod log;
pub mod server;
pub mod service;
pub mod state;

pub use client::{BasicAuth, ClientError, RegistryClient};
pub use codecs::{Codecs, CodecsError};
pub use config::SchemaRegistryConfig;
pub use service::{Registry, RegistrySettings, ServiceError};
