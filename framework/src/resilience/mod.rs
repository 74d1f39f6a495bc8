//! Resilience policies as small composable pieces, shared by every
//! connector. So far: [`backoff`], the exponential-with-jitter schedule the
//! runtime uses for task restarts and sink retries. Rate limiting, circuit
//! breaking, timeouts and fallbacks join it as layers of their own.

pub mod backoff;

pub use backoff::Backoff;
