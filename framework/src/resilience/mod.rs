//! Resilience for every outbound call, as small policies that compose
//! (tower's `Service`/`Layer` idea, without the boxing): [`retry`] (which
//! outcomes to try again, and when), [`backoff`] (exponential with full
//! jitter), [`circuit_breaker`], [`rate_limit`] (GCRA plus the API's
//! advertised limits), [`bulkhead`], and [`stack`], which runs a call
//! through them in the one documented order. [`targets`] keeps one breaker,
//! limiter and bulkhead per target key for the whole process. [`config`]
//! holds the keys every connector that calls out accepts.
//!
//! The Kafka producer is not wrapped here: librdkafka retries by itself and
//! is configured instead.

pub mod backoff;
pub mod bulkhead;
pub mod circuit_breaker;
pub mod config;
pub mod rate_limit;
pub mod retry;
pub mod stack;
pub mod targets;

pub use backoff::Backoff;
pub use circuit_breaker::CircuitState;
pub use config::{FallbackConfig, Ordering, ResilienceConfig};
pub use stack::{Answer, CallError, Outbound, WhenOpen};
