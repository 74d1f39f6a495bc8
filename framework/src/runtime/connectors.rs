//! Connectors as config declares them, and as the runtime starts them.
//!
//! Config lists connectors by `name` and `type`; the rest of each entry is
//! the type's own settings, which the connector's factory (in the
//! `ferry-connectors` table) parses into its typed, `deny_unknown_fields`
//! config. A factory only builds values, with no I/O, so `ferry validate`
//! checks connectors too; connecting happens in `open`.

use super::sink_task::SinkSettings;
use crate::config::TopicSpec;
use crate::error::ConnectorError;
use crate::sink::BoxedSink;
use crate::source::BoxedSource;
use serde::Deserialize;
use std::sync::Arc;

/// One `connectors[]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectorSpec {
    /// Unique name; keys the connector's offsets and consumer group.
    pub name: String,
    /// The connector type, e.g. `http_poll` or `http`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The type's own settings.
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// A source's `mapping:` — its records' raw payloads become records of
/// the topic's (normalized) schema. A record the mapping or the schema
/// refuses goes to `dead_letter_topic`, raw payload and reason, and the
/// source goes on.
#[derive(Clone)]
pub struct SourceMapping {
    pub transform: Arc<dyn crate::transform::Transform>,
    /// Created at startup if absent (`<connector>.dlq` unless configured).
    pub dead_letter_topic: String,
}

/// Builds a fresh source for each (re)start.
pub type SourceFactory = Arc<dyn Fn() -> Result<BoxedSource, ConnectorError> + Send + Sync>;
/// Builds a fresh sink for each (re)start.
pub type SinkFactory = Arc<dyn Fn() -> Result<BoxedSink, ConnectorError> + Send + Sync>;

/// A connector ready to start.
#[derive(Clone)]
pub enum Planned {
    /// A source writing to `topic` (created, with its value schema registered, at startup).
    Source {
        topic: TopicSpec,
        make: SourceFactory,
        /// Set by `mapping:` (any source may have one).
        mapping: Option<SourceMapping>,
    },
    /// A push source (a webhook receiver) served on the shared listener,
    /// writing to `topics` (created, with their value schemas registered, at
    /// startup).
    Push {
        topics: Vec<TopicSpec>,
        mount: crate::ingress::Mount,
        /// Set by `mapping:`, per topic: the events routed there are
        /// mapped as a poll source's records are.
        mappings: std::collections::BTreeMap<String, SourceMapping>,
    },
    /// A sink consuming per `settings`.
    Sink {
        settings: Box<SinkSettings>,
        make: SinkFactory,
    },
}

impl std::fmt::Debug for Planned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Source { topic, .. } => write!(f, "Source({})", topic.name),
            Self::Push { mount, .. } => write!(f, "Push({})", mount.path),
            Self::Sink { settings, .. } => write!(f, "Sink({:?})", settings.topics),
        }
    }
}
