//! What a connector's factory is given ([`Context`]) and the settings every
//! connector shares beside its own: resilience, `mapping:`, `api_version`.
//! Connectors depend on this module; the table of connectors
//! ([`crate::registry`]) depends on them, never back.

use ferry::config::{ConfigError, FerryConfig};
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
    /// The whole config (for a mapping's schema file in `schemas_dir`).
    pub config: &'a FerryConfig,
    /// The Rust transforms a `mapping: { transform: NAME }` may name
    /// (`registry::TRANSFORMS`).
    pub transforms: &'a [(&'static str, TransformFactory)],
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

/// Plans one connector of a type from its entry in the config (no I/O).
pub type Factory = fn(&Context<'_>) -> Result<Planned, ConfigError>;

/// Builds a Rust transform for a topic's value schema, or says why the
/// schema is not one it builds.
pub type TransformFactory =
    fn(&apache_avro::Schema) -> Result<std::sync::Arc<dyn ferry::transform::Transform>, String>;

/// The key of a source's `mapping:` section ([`crate::mapping`]), which
/// every source accepts beside its own settings.
pub const MAPPING_KEY: &str = "mapping";

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

/// The most batches a sink writes at once.
pub const MAX_CONCURRENCY: usize = 256;

/// A sink's `concurrency`, checked: 1 to [`MAX_CONCURRENCY`].
pub fn concurrency(ctx: &Context<'_>, n: usize) -> Result<usize, ConfigError> {
    if (1..=MAX_CONCURRENCY).contains(&n) {
        Ok(n)
    } else {
        Err(ctx.invalid(
            "concurrency",
            format!(
                "{n}: batches written at once, 1 (in series, the default) to {MAX_CONCURRENCY}"
            ),
        ))
    }
}

/// Parses a connector's own settings ([`own_settings`]) into its
/// typed config, naming the key at fault.
pub fn parse_settings<T: DeserializeOwned>(ctx: &Context<'_>) -> Result<T, ConfigError> {
    deserialize_at(ctx, own_settings(ctx.spec))
}

/// A connector's own settings: all but the keys every connector shares
/// ([`RESILIENCE_KEYS`], [`MAPPING_KEY`], [`API_VERSION_KEY`]).
pub fn own_settings(spec: &ConnectorSpec) -> serde_json::Map<String, serde_json::Value> {
    spec.settings
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            !RESILIENCE_KEYS.contains(&k) && k != MAPPING_KEY && k != API_VERSION_KEY
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
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

/// The key naming the version of the API a connector integrates
/// (`api_version: v2`): every `{api_version}` in its settings (URL, topic,
/// mapping) becomes it, so two versions of one integration run side by
/// side with their own endpoints, topics and subjects (`crm.contacts.v1`).
pub const API_VERSION_KEY: &str = "api_version";
const API_VERSION_PLACEHOLDER: &str = "{api_version}";

/// `spec` with `{api_version}` replaced in every setting.
pub(crate) fn versioned(
    spec: &ConnectorSpec,
    origin: &str,
    i: usize,
) -> Result<ConnectorSpec, ConfigError> {
    let key = |k: &str| format!("connectors[{i}].{k}");
    let version = match spec.settings.get(API_VERSION_KEY) {
        None => None,
        Some(serde_json::Value::String(v))
            if !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) =>
        {
            Some(v.clone())
        }
        Some(other) => {
            return Err(ConfigError::invalid(
                origin,
                key(API_VERSION_KEY),
                format!(
                "expected a version such as `v2` (letters, digits, `.`, `_`, `-`), found {other}"
            ),
            ))
        }
    };
    fn walk(v: &mut serde_json::Value, path: &str, version: Option<&str>) -> Result<(), String> {
        match v {
            serde_json::Value::String(s) if s.contains(API_VERSION_PLACEHOLDER) => match version {
                Some(version) => {
                    *s = s.replace(API_VERSION_PLACEHOLDER, version);
                    Ok(())
                }
                None => Err(path.to_owned()),
            },
            serde_json::Value::Array(items) => items
                .iter_mut()
                .enumerate()
                .try_for_each(|(n, item)| walk(item, &format!("{path}[{n}]"), version)),
            serde_json::Value::Object(map) => map
                .iter_mut()
                .try_for_each(|(k, item)| walk(item, &format!("{path}.{k}"), version)),
            _ => Ok(()),
        }
    }
    let mut out = spec.clone();
    for (k, v) in &mut out.settings {
        walk(v, k, version.as_deref()).map_err(|at| {
            ConfigError::invalid(
                origin,
                key(&at),
                format!("uses `{API_VERSION_PLACEHOLDER}` but the connector sets no `{API_VERSION_KEY}`"),
            )
        })?;
    }
    Ok(out)
}
