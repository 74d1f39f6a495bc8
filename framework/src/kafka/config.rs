//! Typed Kafka settings and their translation into librdkafka options.
//!
//! Ferry owns the options that carry its guarantees (idempotence, `acks=all`,
//! manual offset storage) and exposes the rest as typed fields. `librdkafka` is
//! the escape hatch for everything else; an option there that a typed field (or
//! a guarantee) owns is refused by [`KafkaConfig::validate`] with the field to use.

use crate::config::{ConfigError, Secret};
use rdkafka::ClientConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach Kafka, and how Ferry's clients behave.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list. Unset: `ferry up` starts the embedded
    /// broker and uses it; `ferry run` refuses to start.
    pub bootstrap_servers: Option<String>,
    /// `client.id` sent to the brokers (shows up in broker logs and quotas).
    pub client_id: String,
    /// How long startup, admin operations and health checks wait for the brokers.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Producer settings.
    pub producer: ProducerSettings,
    /// Consumer settings.
    pub consumer: ConsumerSettings,
    /// TLS and SASL.
    pub security: SecuritySettings,
    /// Raw librdkafka options passed through as they are (string values), for
    /// what has no typed field. Options owned by a typed field are refused.
    /// Values may hold secret references (`ssl.key.password:
    /// ${env:KEY_PASSWORD}`).
    #[serde(deserialize_with = "crate::config::secret::embedded_map")]
    pub librdkafka: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: None,
            client_id: "ferry".to_owned(),
            request_timeout: Duration::from_secs(10),
            producer: ProducerSettings::default(),
            consumer: ConsumerSettings::default(),
            security: SecuritySettings::default(),
            librdkafka: BTreeMap::new(),
        }
    }
}

/// Producer settings. Ferry's producer is always idempotent with `acks=all`:
/// a record is acknowledged only when every in-sync replica has it, and
/// librdkafka's retries never duplicate or reorder it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProducerSettings {
    /// Compression codec for record batches.
    pub compression: Compression,
    /// How long to wait for more records before sending a batch (`linger.ms`).
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Largest batch, in bytes (`batch.size`).
    pub batch_size: NonZeroU32,
    /// Most records in one batch (`batch.num.messages`).
    pub batch_records: NonZeroU32,
    /// How long librdkafka keeps retrying one record before it reports failure
    /// (`message.timeout.ms`).
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Most records waiting in the producer's local queue before `send` waits
    /// (`queue.buffering.max.messages`): the producer's backpressure bound.
    pub queue_records: NonZeroU32,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        Self {
            compression: Compression::Lz4,
            linger: Duration::from_millis(5),
            batch_size: nz(1_000_000),
            batch_records: nz(10_000),
            delivery_timeout: Duration::from_secs(120),
            queue_records: nz(100_000),
        }
    }
}

/// Consumer settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerSettings {
    /// The prefix of the consumer groups Ferry's sinks join
    /// (`<group_id>-sink-<connector>`), unless a connector names its own.
    pub group_id: String,
    /// Where a group with no committed offset starts.
    pub auto_offset_reset: AutoOffsetReset,
    /// How long the group waits for a silent member before rebalancing (`session.timeout.ms`).
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// How often processed offsets are committed (`auto.commit.interval.ms`).
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// This process's stable identity (a pod name, a host name). Set, each
    /// consumer group member is *static* (`group.instance.id` =
    /// `<instance_id>-<group>`): a restarted Ferry takes its partitions back
    /// at once instead of waiting out `session_timeout`. Each Ferry process
    /// of a deployment needs its own.
    pub instance_id: Option<String>,
    /// Most pre-fetched data librdkafka queues per consumer, in KiB
    /// (`queued.max.messages.kbytes`): with the sinks' in-flight bounds, what
    /// caps memory while a target is slow.
    pub prefetch_kbytes: NonZeroU32,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            group_id: "ferry".to_owned(),
            auto_offset_reset: AutoOffsetReset::Earliest,
            session_timeout: Duration::from_secs(45),
            commit_interval: Duration::from_secs(5),
            instance_id: None,
            prefetch_kbytes: nz(8192),
        }
    }
}

/// TLS and SASL settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySettings {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: SecurityProtocol,
    /// SASL mechanism, when `protocol` is `sasl_*`.
    pub sasl_mechanism: Option<SaslMechanism>,
    /// SASL user name.
    pub sasl_username: Option<String>,
    /// SASL password: `${env:NAME}` or `${file:/path}`.
    pub sasl_password: Option<Secret>,
    /// CA bundle to verify the brokers' certificates (PEM file).
    pub ssl_ca_location: Option<PathBuf>,
}

/// Where Ferry's embedded broker listens and keeps its data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedBrokerConfig {
    /// Listener and advertised address. Use `127.0.0.1`, not `localhost`.
    pub listen: SocketAddr,
    /// `sqlite` keeps records in `<data_dir>/broker.db` across restarts;
    /// `memory` keeps nothing (tests).
    pub storage: StorageKind,
}

impl Default for EmbeddedBrokerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            storage: StorageKind::Sqlite,
        }
    }
}

/// Storage engine for the embedded broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageKind {
    #[default]
    Sqlite,
    Memory,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    #[default]
    Lz4,
    Zstd,
}

impl Compression {
    fn as_librdkafka(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoOffsetReset {
    #[default]
    Earliest,
    Latest,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

/// librdkafka options that a typed field or a Ferry guarantee owns, with what
/// to use instead.
const OWNED_OPTIONS: &[(&str, &str)] = &[
    ("bootstrap.servers", "use `kafka.bootstrap_servers`"),
    ("metadata.broker.list", "use `kafka.bootstrap_servers`"),
    ("client.id", "use `kafka.client_id`"),
    ("acks", "Ferry always produces with acks=all"),
    (
        "request.required.acks",
        "Ferry always produces with acks=all",
    ),
    (
        "enable.idempotence",
        "Ferry's producer is always idempotent",
    ),
    ("compression.type", "use `kafka.producer.compression`"),
    ("compression.codec", "use `kafka.producer.compression`"),
    ("linger.ms", "use `kafka.producer.linger`"),
    ("queue.buffering.max.ms", "use `kafka.producer.linger`"),
    ("batch.size", "use `kafka.producer.batch_size`"),
    ("batch.num.messages", "use `kafka.producer.batch_records`"),
    (
        "message.timeout.ms",
        "use `kafka.producer.delivery_timeout`",
    ),
    (
        "delivery.timeout.ms",
        "use `kafka.producer.delivery_timeout`",
    ),
    (
        "queue.buffering.max.messages",
        "use `kafka.producer.queue_records`",
    ),
    ("group.id", "use `kafka.consumer.group_id`"),
    (
        "auto.offset.reset",
        "use `kafka.consumer.auto_offset_reset`",
    ),
    ("session.timeout.ms", "use `kafka.consumer.session_timeout`"),
    ("group.instance.id", "use `kafka.consumer.instance_id`"),
    (
        "queued.max.messages.kbytes",
        "use `kafka.consumer.prefetch_kbytes`",
    ),
    (
        "auto.commit.interval.ms",
        "use `kafka.consumer.commit_interval`",
    ),
    (
        "enable.auto.commit",
        "Ferry commits offsets itself, only after a record is processed",
    ),
    (
        "enable.auto.offset.store",
        "Ferry stores offsets itself, only after a record is processed",
    ),
    ("security.protocol", "use `kafka.security.protocol`"),
    ("sasl.mechanism", "use `kafka.security.sasl_mechanism`"),
    ("sasl.mechanisms", "use `kafka.security.sasl_mechanism`"),
    ("sasl.username", "use `kafka.security.sasl_username`"),
    (
        "sasl.password",
        "use `kafka.security.sasl_password` (it keeps the value secret)",
    ),
    ("ssl.ca.location", "use `kafka.security.ssl_ca_location`"),
    (
        "partitioner",
        "Ferry partitions by murmur2 of the key, as Java clients, Kafka Streams and kafkajs do",
    ),
    (
        "partition.assignment.strategy",
        "Ferry's consumers use cooperative-sticky, so a rebalance moves only the partitions it must",
    ),
    (
        "enable.partition.eof",
        "Ferry's consumers do not use end-of-partition events",
    ),
];

impl KafkaConfig {
    /// Checks without I/O: raw options that fight typed fields, SASL settings
    /// that do not go together.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        for key in self.librdkafka.keys() {
            if let Some((_, instead)) = OWNED_OPTIONS.iter().find(|(k, _)| k == key) {
                return Err(ConfigError::invalid(
                    origin,
                    format!("kafka.librdkafka.{key}"),
                    format!("`{key}` cannot be set here: {instead}"),
                ));
            }
        }
        if let Some(servers) = &self.bootstrap_servers {
            if servers
                .split(',')
                .any(|s| s.trim().is_empty() || !s.contains(':'))
            {
                return Err(ConfigError::invalid(
                    origin,
                    "kafka.bootstrap_servers",
                    format!("`{servers}` is not a comma-separated list of host:port"),
                ));
            }
        }
        if self.client_id.is_empty() {
            return Err(ConfigError::invalid(
                origin,
                "kafka.client_id",
                "must not be empty",
            ));
        }
        if self.consumer.group_id.is_empty() {
            return Err(ConfigError::invalid(
                origin,
                "kafka.consumer.group_id",
                "must not be empty",
            ));
        }
        let sasl = matches!(
            self.security.protocol,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        );
        if sasl && self.security.sasl_mechanism.is_none() {
            return Err(ConfigError::invalid(
                origin,
                "kafka.security.sasl_mechanism",
                "required when kafka.security.protocol is sasl_plaintext or sasl_ssl",
            ));
        }
        if !sasl && self.security.sasl_mechanism.is_some() {
            return Err(ConfigError::invalid(
                origin,
                "kafka.security.sasl_mechanism",
                "set, but kafka.security.protocol is not sasl_plaintext or sasl_ssl",
            ));
        }
        Ok(())
    }

    /// Options shared by every client: brokers, identity, security, raw options.
    pub fn client_config(&self, bootstrap_servers: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.librdkafka {
            c.set(k, v);
        }
        c.set("bootstrap.servers", bootstrap_servers)
            .set("client.id", &self.client_id)
            .set("socket.timeout.ms", ms(self.request_timeout).to_string());
        let s = &self.security;
        c.set(
            "security.protocol",
            match s.protocol {
                SecurityProtocol::Plaintext => "plaintext",
                SecurityProtocol::Ssl => "ssl",
                SecurityProtocol::SaslPlaintext => "sasl_plaintext",
                SecurityProtocol::SaslSsl => "sasl_ssl",
            },
        );
        if let Some(m) = s.sasl_mechanism {
            c.set(
                "sasl.mechanism",
                match m {
                    SaslMechanism::Plain => "PLAIN",
                    SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
                    SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
                },
            );
        }
        if let Some(u) = &s.sasl_username {
            c.set("sasl.username", u);
        }
        if let Some(p) = &s.sasl_password {
            c.set("sasl.password", p.expose());
        }
        if let Some(ca) = &s.ssl_ca_location {
            c.set("ssl.ca.location", ca.display().to_string());
        }
        c
    }

    /// The producer's options: idempotent, `acks=all`, typed batching.
    pub fn producer_config(&self, bootstrap_servers: &str) -> ClientConfig {
        let p = &self.producer;
        let mut c = self.client_config(bootstrap_servers);
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", p.compression.as_librdkafka())
            .set("linger.ms", ms(p.linger).to_string())
            .set("batch.size", p.batch_size.to_string())
            .set("batch.num.messages", p.batch_records.to_string())
            .set("message.timeout.ms", ms(p.delivery_timeout).to_string())
            .set("queue.buffering.max.messages", p.queue_records.to_string())
            // murmur2 of the key (random for keyless records), as the Java
            // client, Kafka Streams and kafkajs do: a key lands on the same
            // partition whichever client produces it.
            .set("partitioner", "murmur2_random");
        c
    }

    /// The consumer's options for `group_id`: offsets stored by Ferry after
    /// processing, committed by librdkafka in the background and by Ferry at shutdown.
    pub fn consumer_config(&self, bootstrap_servers: &str, group_id: &str) -> ClientConfig {
        let s = &self.consumer;
        let mut c = self.client_config(bootstrap_servers);
        if let Some(instance) = &s.instance_id {
            c.set("group.instance.id", format!("{instance}-{group_id}"));
        }
        c.set("group.id", group_id)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", ms(s.commit_interval).to_string())
            .set("session.timeout.ms", ms(s.session_timeout).to_string())
            .set("queued.max.messages.kbytes", s.prefetch_kbytes.to_string())
            .set(
                "fetch.max.bytes",
                (u64::from(s.prefetch_kbytes.get()) * 1024)
                    .clamp(1_000_000, 52_428_800)
                    .to_string(),
            )
            .set(
                "auto.offset.reset",
                match s.auto_offset_reset {
                    AutoOffsetReset::Earliest => "earliest",
                    AutoOffsetReset::Latest => "latest",
                },
            );
        c
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

const fn nz(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_option_owned_by_a_typed_field_is_refused() {
        let mut k = KafkaConfig::default();
        k.librdkafka.insert("acks".into(), "1".into());
        let e = k
            .validate("f.yaml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("kafka.librdkafka.acks") && e.contains("acks=all"),
            "{e}"
        );
    }

    #[test]
    fn unrelated_raw_option_passes_through() {
        let mut k = KafkaConfig::default();
        k.librdkafka
            .insert("socket.keepalive.enable".into(), "true".into());
        assert!(k.validate("f.yaml").is_ok());
        let c = k.producer_config("127.0.0.1:1");
        assert_eq!(c.get("socket.keepalive.enable"), Some("true"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("acks"), Some("all"));
    }

    #[test]
    fn consumer_never_auto_stores_offsets() {
        let c = KafkaConfig::default().consumer_config("127.0.0.1:1", "g");
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
    }

    #[test]
    fn sasl_needs_a_mechanism() {
        let mut k = KafkaConfig::default();
        k.security.protocol = SecurityProtocol::SaslSsl;
        assert!(k.validate("f").is_err());
        k.security.sasl_mechanism = Some(SaslMechanism::ScramSha512);
        assert!(k.validate("f").is_ok());
    }

    #[test]
    fn bootstrap_list_must_be_host_port() {
        let k = KafkaConfig {
            bootstrap_servers: Some("kafka".into()),
            ..KafkaConfig::default()
        };
        assert!(k.validate("f").is_err());
    }
}
