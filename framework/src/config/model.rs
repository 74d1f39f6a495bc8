//! The typed configuration model. Every field has a doc comment: it is the
//! reference documentation (`ferry config-reference` prints it).

use crate::kafka::{EmbeddedBrokerConfig, KafkaConfig};
use crate::runtime::ConnectorSpec;
use crate::schema::registry::SchemaRegistryConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;

use super::ConfigError;

/// The whole of a Ferry configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FerryConfig {
    /// Where Ferry keeps local state (the embedded broker's sqlite file). Relative
    /// paths are taken from the working directory.
    pub data_dir: PathBuf,
    /// How to reach Kafka, and the producer and consumer settings.
    pub kafka: KafkaConfig,
    /// The broker `ferry up` starts in-process when `kafka.bootstrap_servers` is unset.
    pub embedded_broker: EmbeddedBrokerConfig,
    /// The admin HTTP listener: `/health`, `/ready`, `/metrics`.
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
    /// The schema registry: Ferry's own (default) or an external one.
    pub schema_registry: SchemaRegistryConfig,
    /// Topics Ferry creates at startup if they do not exist (Ferry never relies
    /// on broker-side auto-creation).
    pub topics: Vec<TopicSpec>,
    /// Where source connectors' positions are kept.
    pub offsets: OffsetsConfig,
    /// Source and sink connectors, each with a `name` and a `type`.
    pub connectors: Vec<ConnectorSpec>,
    /// The listener webhook connectors are served on, and their spool.
    pub webhooks: crate::ingress::WebhooksConfig,
    /// `ferry up` also serves a small demo API (a fake CRM and a fake target)
    /// for the quickstart's connectors. Unset: no demo API.
    pub demo: Option<DemoConfig>,
    /// The most a stop (Ctrl-C, SIGTERM) takes: connectors drain in the first
    /// two thirds (a sink's batch in flight, a source's batch in hand, each
    /// within two fifths of it, then commit), what overruns is abandoned (it
    /// is delivered again after restart), then the producer flushes in what
    /// is left.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: std::time::Duration,
}

/// The quickstart's demo API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Where it listens.
    pub listen: SocketAddr,
}

/// Where source positions live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OffsetsConfig {
    /// The compacted topic holding source positions.
    pub topic: String,
}

impl Default for OffsetsConfig {
    fn default() -> Self {
        Self {
            topic: "ferry-offsets".to_owned(),
        }
    }
}

impl Default for FerryConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".ferry"),
            kafka: KafkaConfig::default(),
            embedded_broker: EmbeddedBrokerConfig::default(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            schema_registry: SchemaRegistryConfig::default(),
            topics: Vec::new(),
            offsets: OffsetsConfig::default(),
            connectors: Vec::new(),
            webhooks: crate::ingress::WebhooksConfig::default(),
            demo: None,
            shutdown_timeout: std::time::Duration::from_secs(30),
        }
    }
}

impl FerryConfig {
    /// Checks that need more than one field or more than a type: no I/O.
    /// `origin` names the file the config came from, for error messages.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        self.kafka.validate(origin)?;
        self.schema_registry.validate(origin)?;
        self.webhooks
            .validate()
            .map_err(|(key, m)| ConfigError::invalid(origin, key, m))?;
        let mut seen = std::collections::BTreeSet::new();
        for (i, topic) in self.topics.iter().enumerate() {
            let key = format!("topics[{i}].name");
            validate_topic_name(&topic.name).map_err(|m| ConfigError::invalid(origin, &key, m))?;
            if !seen.insert(topic.name.as_str()) {
                return Err(ConfigError::invalid(
                    origin,
                    key,
                    format!("topic `{}` is declared twice", topic.name),
                ));
            }
        }
        validate_topic_name(&self.offsets.topic)
            .map_err(|m| ConfigError::invalid(origin, "offsets.topic", m))?;
        if self.shutdown_timeout < std::time::Duration::from_secs(3) {
            return Err(ConfigError::invalid(
                origin,
                "shutdown_timeout",
                "must be at least 3s (connectors, the producer and the broker each need a share)",
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, c) in self.connectors.iter().enumerate() {
            if c.name.is_empty()
                || !c
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'))
            {
                return Err(ConfigError::invalid(
                    origin,
                    format!("connectors[{i}].name"),
                    format!("`{}`: use letters, digits, `.`, `_` and `-`", c.name),
                ));
            }
            if !names.insert(c.name.as_str()) {
                return Err(ConfigError::invalid(
                    origin,
                    format!("connectors[{i}].name"),
                    format!("connector `{}` is declared twice", c.name),
                ));
            }
        }
        let mut listeners = vec![("admin.listen", self.admin.listen)];
        if self.kafka.bootstrap_servers.is_none() {
            listeners.push(("embedded_broker.listen", self.embedded_broker.listen));
        }
        if self.schema_registry.serves() {
            listeners.push(("schema_registry.listen", self.schema_registry.listen));
        }
        if let Some(d) = &self.demo {
            listeners.push(("demo.listen", d.listen));
        }
        for (i, (key, addr)) in listeners.iter().enumerate() {
            if let Some((other, _)) = listeners[..i].iter().find(|(_, a)| a == addr) {
                return Err(ConfigError::invalid(
                    origin,
                    *key,
                    format!("{addr} is also `{other}`"),
                ));
            }
        }
        Ok(())
    }
}

/// Kafka's own rule for topic names: 1 to 249 characters from `[a-zA-Z0-9._-]`,
/// and not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err(format!(
            "topic name `{name}` must be 1 to 249 characters long"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("topic name `{name}` is not allowed"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name `{name}` contains `{c}`; only letters, digits, `.`, `_` and `-` are allowed"
        ));
    }
    Ok(())
}

/// The admin HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin API (`/health`, `/ready`, `/metrics`).
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8083)),
        }
    }
}

/// Logging settings. `RUST_LOG` overrides `level` when set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `info,ferry::kafka=debug`.
    pub level: String,
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A topic Ferry makes sure exists.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    #[serde(default = "default_partitions")]
    pub partitions: NonZeroU32,
    /// Replication factor. Unset: the broker's `default.replication.factor`.
    #[serde(default)]
    pub replication_factor: Option<NonZeroU32>,
    /// Topic-level configs, e.g. `cleanup.policy: compact`, `retention.ms: "604800000"`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// The Avro schema of record values: a `.avsc` file in
    /// `schema_registry.schemas_dir`, registered at startup under the
    /// topic's value subject.
    #[serde(default)]
    pub value_schema: Option<PathBuf>,
    /// The Avro schema of record keys, if keys are Avro (unset: keys are plain strings).
    #[serde(default)]
    pub key_schema: Option<PathBuf>,
}

impl TopicSpec {
    /// A compacted topic with no schema (Ferry's own state topics).
    pub fn compacted(name: &str, partitions: NonZeroU32) -> Self {
        Self {
            name: name.to_owned(),
            partitions,
            replication_factor: None,
            config: BTreeMap::from([("cleanup.policy".to_owned(), "compact".to_owned())]),
            value_schema: None,
            key_schema: None,
        }
    }
}

fn default_partitions() -> NonZeroU32 {
    NonZeroU32::MIN.saturating_add(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("contacts.v1_raw-x").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("has space").is_err());
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
    }
}
