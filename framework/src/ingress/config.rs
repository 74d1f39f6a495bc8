//! `webhooks:`: the one listener every webhook connector is served on, and
//! the spool that keeps accepted events while Kafka is down or slow.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The shared webhook listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Where the listener binds. Each `type: webhook` connector is served
    /// on its own `path` here.
    pub listen: SocketAddr,
    /// Serve HTTPS (rustls) instead of plain HTTP, so Ferry can face the
    /// internet directly.
    pub tls: Option<TlsConfig>,
    /// The most a sender may take to send a request's headers, and then its
    /// body (a slow sender is cut off with 408).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The largest body accepted; a larger one is answered 413. An event
    /// must also fit Kafka's record size limit (librdkafka's
    /// `message.max.bytes`, 1000000 by default, and the topic's
    /// `max.message.bytes`); Ferry answers 413 to one Kafka refuses.
    pub body_limit: usize,
    /// Requests handled at once over every webhook connector; beyond it,
    /// 503 with `Retry-After: 1`. Bounds the memory bodies take.
    pub max_in_flight: usize,
    /// The local spool (under `data_dir`/webhooks) that keeps accepted
    /// events Kafka has not acknowledged in time.
    pub spool: SpoolConfig,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: None,
            request_timeout: Duration::from_secs(30),
            body_limit: 1024 * 1024,
            max_in_flight: 512,
            spool: SpoolConfig::default(),
        }
    }
}

/// Certificate and key for HTTPS on the webhook listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// When an accepted event goes to the local spool instead of straight to
/// Kafka, and how much the spool may hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// How long a request waits for Kafka's acknowledgement (`acks=all`)
    /// before its event is written to the spool instead (and the sender
    /// answered). Keep it well below senders' own timeouts (GitHub: 10s).
    #[serde(with = "humantime_serde")]
    pub kafka_deadline: Duration,
    /// The most the spool of one connector may hold on disk; beyond it
    /// senders are answered 503 with `Retry-After` (they retry later).
    pub max_bytes: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            kafka_deadline: Duration::from_secs(3),
            max_bytes: 1024 * 1024 * 1024,
        }
    }
}

impl WebhooksConfig {
    /// Checks without I/O; `key` names the field at fault.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.body_limit == 0 || self.body_limit > 64 * 1024 * 1024 {
            return Err((
                "webhooks.body_limit",
                format!("{} bytes: must be 1 to 64 MiB", self.body_limit),
            ));
        }
        if self.max_in_flight == 0 {
            return Err(("webhooks.max_in_flight", "must be at least 1".into()));
        }
        if self.request_timeout < Duration::from_millis(100) {
            return Err(("webhooks.request_timeout", "must be at least 100ms".into()));
        }
        if self.spool.kafka_deadline.is_zero()
            || self.spool.kafka_deadline > Duration::from_secs(60)
        {
            return Err((
                "webhooks.spool.kafka_deadline",
                "must be more than 0s and at most 60s (senders give up sooner)".into(),
            ));
        }
        if self.spool.max_bytes < 1024 * 1024 {
            return Err(("webhooks.spool.max_bytes", "must be at least 1 MiB".into()));
        }
        Ok(())
    }
}
