//! The one table of connectors: `type:` name to factory (Arroyo's
//! `connectors()` map). Adding a connector is a module and a line here.

use ferry::config::{ConfigError, FerryConfig, TopicSpec};
use ferry::resilience::ResilienceConfig;
use ferry::runtime::{ConnectorSpec, Planned};
use serde::de::DeserializeOwned;

/// What a factory is given.
pub struct Context<'a> {
    pub spec: &'a ConnectorSpec,
    /// `connectors[i]`, for error messages.
    pub key: String,
    pub origin: &'a str,
    /// `kafka.consumer.group_id`: sinks' groups default to `<it>-sink-<name>`.
    pub group_prefix: &'a str,
}

impl Context<'_> {
    /// A sink's consumer group: its own `group_id`, else `<prefix>-sink-<name>`.
    pub fn sink_group(&self, own: Option<&str>) -> String {
        own.map_or_else(
            || format!("{}-sink-{}", self.group_prefix, self.spec.name),
            str::to_owned,
        )
    }
}

impl Context<'_> {
    /// An error about `field` of this connector.
    pub fn invalid(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::invalid(self.origin, format!("{}.{field}", self.key), message)
    }
}

type Factory = fn(&Context<'_>) -> Result<Planned, ConfigError>;

/// Every built-in connector type.
pub const CONNECTORS: &[(&str, Factory)] = &[
    ("http_poll", crate::sources::http_poll::plan),
    ("webhook", crate::sources::webhook::plan),
    ("http", crate::sinks::http::plan),
];

/// The keys every connector that calls a third party accepts beside its
/// own settings ([`ferry::resilience::ResilienceConfig`]).
pub const RESILIENCE_KEYS: &[&str] = &[
    "retry",
    "circuit_breaker",
    "rate_limit",
    "bulkhead",
    "timeout",
    "dead_letter",
    "fallback",
    "ordering",
];

impl Context<'_> {
    /// The connector's resilience settings (defaults for what is unset),
    /// validated.
    pub fn resilience(&self) -> Result<ResilienceConfig, ConfigError> {
        let own: serde_json::Map<String, serde_json::Value> = self
            .spec
            .settings
            .iter()
            .filter(|(k, _)| RESILIENCE_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let cfg: ResilienceConfig = deserialize_at(self, own)?;
        cfg.validate(|key, message| self.invalid(key, message))?;
        Ok(cfg)
    }
}

/// Parses a connector's own settings (all but [`RESILIENCE_KEYS`]) into its
/// typed config, naming the key at fault.
pub fn parse_settings<T: DeserializeOwned>(ctx: &Context<'_>) -> Result<T, ConfigError> {
    let own = ctx
        .spec
        .settings
        .iter()
        .filter(|(k, _)| !RESILIENCE_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    deserialize_at(ctx, own)
}

fn deserialize_at<T: DeserializeOwned>(
    ctx: &Context<'_>,
    map: serde_json::Map<String, serde_json::Value>,
) -> Result<T, ConfigError> {
    let value = serde_json::Value::Object(map);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        ConfigError::invalid(
            ctx.origin,
            if field.is_empty() {
                ctx.key.clone()
            } else {
                format!("{}.{field}", ctx.key)
            },
            e.into_inner().to_string(),
        )
    })
}

/// Plans every connector in `config` (no I/O), and adds the topics sources
/// write to (with their schemas) to `config.topics` unless declared there.
pub fn plan_all(
    config: &mut FerryConfig,
    origin: &str,
) -> Result<Vec<(String, Planned)>, ConfigError> {
    let mut planned = Vec::new();
    for (i, spec) in config.connectors.iter().enumerate() {
        let ctx = Context {
            spec,
            key: format!("connectors[{i}]"),
            origin,
            group_prefix: &config.kafka.consumer.group_id,
        };
        let factory = CONNECTORS
            .iter()
            .find(|(name, _)| *name == spec.kind)
            .map(|(_, f)| f)
            .ok_or_else(|| {
                let known: Vec<&str> = CONNECTORS.iter().map(|(n, _)| *n).collect();
                ConfigError::invalid(
                    origin,
                    format!("connectors[{i}].type"),
                    format!(
                        "unknown connector type `{}` (known: {})",
                        spec.kind,
                        known.join(", ")
                    ),
                )
            })?;
        planned.push((spec.name.clone(), factory(&ctx)?));
    }
    let mut paths: Vec<(&str, &str)> = Vec::new();
    for (i, (name, plan)) in planned.iter().enumerate() {
        if let Planned::Push { mount, .. } = plan {
            if let Some((_, other)) = paths.iter().find(|(p, _)| *p == mount.path) {
                return Err(ConfigError::invalid(
                    origin,
                    format!("connectors[{i}].path"),
                    format!(
                        "`{}` is already the path of connector `{other}`",
                        mount.path
                    ),
                ));
            }
            paths.push((&mount.path, name));
        }
    }
    for (_, plan) in &planned {
        match plan {
            Planned::Source { topic, .. } => add_topic(&mut config.topics, topic),
            Planned::Push { topics, .. } => {
                for topic in topics {
                    add_topic(&mut config.topics, topic);
                }
            }
            Planned::Sink { .. } => {}
        }
    }
    Ok(planned)
}

/// A declared topic wins; if it has no value schema, the source's is used.
fn add_topic(topics: &mut Vec<TopicSpec>, topic: &TopicSpec) {
    match topics.iter_mut().find(|t| t.name == topic.name) {
        Some(t) => {
            if t.value_schema.is_none() {
                t.value_schema.clone_from(&topic.value_schema);
            }
        }
        None => topics.push(topic.clone()),
    }
}
