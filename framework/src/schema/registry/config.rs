//! The `schema_registry` section of a Ferry config file.

use super::client::{BasicAuth, ClientError, RegistryClient};
use super::service::RegistrySettings;
use crate::config::{validate_topic_name, ConfigError, Secret};
use crate::schema::{CompatibilityLevel, SubjectNameStrategy};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

fn embedded_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let url = Option::<String>::deserialize(d)?
        .map(|u| crate::config::secret::resolve_embedded(&u).map_err(serde::de::Error::custom))
        .transpose()?;
    if let Some(u) = &url {
        crate::config::secret::register_url_credentials(u);
    }
    Ok(url)
}

/// The default registry topic.
pub const DEFAULT_TOPIC: &str = "_ferry_schemas";

/// Where schemas are registered and how subjects are named.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaRegistryConfig {
    /// URL of an external Confluent-compatible registry (Confluent, Karapace,
    /// Apicurio's ccompat API, Redpanda). Unset: Ferry serves its own on
    /// `listen`. May hold secret references.
    #[serde(deserialize_with = "embedded_url")]
    pub url: Option<String>,
    /// Where Ferry's own registry listens when `url` is unset.
    pub listen: SocketAddr,
    /// The compacted topic Ferry's registry keeps schemas in. Not
    /// Confluent Schema Registry's `_schemas`: the two formats differ, and on
    /// one cluster they would corrupt each other. Name an existing topic
    /// only if it is Ferry's.
    pub topic: String,
    /// The compatibility level of Ferry's registry until `PUT /config` sets one.
    pub compatibility: CompatibilityLevel,
    /// How topics' key and value subjects are named: `topic_name`
    /// (`<topic>-value`), `record_name` or `topic_record_name`.
    pub subject_name_strategy: SubjectNameStrategy,
    /// The folder holding `.avsc` files; `topics[].value_schema` names files in it.
    pub schemas_dir: PathBuf,
    /// Credentials for an external registry that wants HTTP basic auth.
    pub basic_auth: Option<BasicAuthConfig>,
    /// How long one registry request may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// HTTP basic credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    pub username: String,
    /// A secret: `${env:VAR}` or `${file:/path}`.
    pub password: Secret,
}

impl Default for SchemaRegistryConfig {
    fn default() -> Self {
        Self {
            url: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            topic: DEFAULT_TOPIC.to_owned(),
            compatibility: CompatibilityLevel::Backward,
            subject_name_strategy: SubjectNameStrategy::TopicName,
            schemas_dir: PathBuf::from("schemas"),
            basic_auth: None,
            timeout: Duration::from_secs(10),
        }
    }
}

impl SchemaRegistryConfig {
    /// Checks without I/O; `origin` names the config file.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        if let Some(url) = &self.url {
            let ok = url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                return Err(ConfigError::invalid(
                    origin,
                    "schema_registry.url",
                    format!("`{url}` is not an http:// or https:// URL"),
                ));
            }
        }
        validate_topic_name(&self.topic)
            .map_err(|m| ConfigError::invalid(origin, "schema_registry.topic", m))?;
        if self.timeout.is_zero() {
            return Err(ConfigError::invalid(
                origin,
                "schema_registry.timeout",
                "must be more than 0s",
            ));
        }
        Ok(())
    }

    /// Whether Ferry serves the registry itself.
    pub fn serves(&self) -> bool {
        self.url.is_none()
    }

    /// The URL clients use: the external registry, or Ferry's own.
    pub fn client_url(&self) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }

    /// A client for [`client_url`](Self::client_url) (`url_override` wins).
    pub fn client(&self, url_override: Option<&str>) -> Result<RegistryClient, ClientError> {
        let url = url_override.map_or_else(|| self.client_url(), str::to_owned);
        let auth = self.basic_auth.as_ref().map(|a| BasicAuth {
            username: a.username.clone(),
            password: a.password.clone(),
        });
        RegistryClient::new(&url, auth, self.timeout)
    }

    /// Settings for serving the registry.
    pub fn settings(&self) -> RegistrySettings {
        RegistrySettings {
            topic: self.topic.clone(),
            default_compatibility: self.compatibility,
            timeout: self.timeout,
        }
    }
}
