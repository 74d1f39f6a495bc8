//! Telemetry: every metric name ([`metrics`]), log setup ([`logging`]) and
//! the one redaction policy ([`redact`]) used for logs and error output.
//!
//! Naming rules (after Vector's instrumentation spec): metrics are
//! `ferry_<area>_<name>_<unit>_total` for counters; labels come from bounded
//! sets only (never a record key or URL); events are named noun-verb.

pub mod logging;
pub mod metrics;
pub mod redact;
