//! The librdkafka client context: routes librdkafka's own log lines and error
//! callbacks into `tracing` under one target, so they are filtered and
//! formatted like every other Ferry log line.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;

/// Log target for everything librdkafka says.
pub const LIBRDKAFKA_TARGET: &str = "ferry::kafka::librdkafka";

/// Client context used by every Ferry Kafka client.
#[derive(Debug, Clone, Copy, Default)]
pub struct FerryClientContext {
    /// Probe clients (health checks) report failure themselves; their
    /// librdkafka chatter is demoted to debug.
    quiet: bool,
}

impl FerryClientContext {
    pub fn quiet() -> Self {
        Self { quiet: true }
    }
}

impl ClientContext for FerryClientContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        use RDKafkaLogLevel as L;
        match level {
            _ if self.quiet => {
                tracing::debug!(target: LIBRDKAFKA_TARGET, facility = fac, "{log_message}")
            }
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(target: LIBRDKAFKA_TARGET, facility = fac, "{log_message}")
            }
            L::Warning => {
                tracing::warn!(target: LIBRDKAFKA_TARGET, facility = fac, "{log_message}")
            }
            L::Notice | L::Info => {
                tracing::info!(target: LIBRDKAFKA_TARGET, facility = fac, "{log_message}")
            }
            L::Debug => tracing::debug!(target: LIBRDKAFKA_TARGET, facility = fac, "{log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if self.quiet {
            tracing::debug!(target: LIBRDKAFKA_TARGET, %error, "{reason}");
        } else {
            tracing::warn!(target: LIBRDKAFKA_TARGET, %error, "{reason}");
        }
    }
}

impl ConsumerContext for FerryClientContext {}
