//! A client for any Confluent-compatible registry: Ferry's own (served when
//! `schema_registry.url` is unset) and external ones go through this same code.

use super::api::{
    code, CompatibilityAnswer, ConfigAnswer, ConfigUpdate, ErrorBody, RegisteredId, SchemaById,
    SchemaRequest, SubjectVersion, VersionRef, CONTENT_TYPE,
};
use crate::config::Secret;
use crate::schema::CompatibilityLevel;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// A registry call that failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The registry answered with an error body.
    #[error("schema registry {method} {url}: HTTP {status}, error code {code}: {message}")]
    Api {
        method: Method,
        url: String,
        status: u16,
        code: u32,
        message: String,
    },
    /// No answer (connection refused, timeout, TLS).
    #[error("schema registry {method} {url}: {source}")]
    Transport {
        method: Method,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// An answer that is not what the API promises.
    #[error("schema registry {method} {url}: unexpected answer (HTTP {status}): {message}")]
    Decode {
        method: Method,
        url: String,
        status: u16,
        message: String,
    },
    #[error("schema registry URL `{0}` is not a valid http(s) URL")]
    BadUrl(String),
}

impl ClientError {
    /// Confluent's error code, when the registry sent one.
    pub fn code(&self) -> Option<u32> {
        match self {
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether asking again later can help: the registry was unreachable or
    /// failed on its side. A 4xx answer will not change.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Api { status, .. } | Self::Decode { status, .. } => *status >= 500,
            Self::BadUrl(_) => false,
        }
    }

    fn is_not_found(&self) -> bool {
        matches!(
            self.code(),
            Some(code::SUBJECT_NOT_FOUND | code::VERSION_NOT_FOUND | code::SCHEMA_NOT_FOUND)
        )
    }
}

/// HTTP basic credentials for a registry that needs them.
#[derive(Debug, Clone)]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}

/// Talks to one registry. Cheap to clone (one connection pool).
#[derive(Debug, Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    auth: Option<BasicAuth>,
}

impl RegistryClient {
    /// A client for the registry at `url` (e.g. `http://127.0.0.1:8081`).
    pub fn new(url: &str, auth: Option<BasicAuth>, timeout: Duration) -> Result<Self, ClientError> {
        let parsed = url::Url::parse(url).map_err(|_| ClientError::BadUrl(url.to_owned()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ClientError::BadUrl(url.to_owned()));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|_| ClientError::BadUrl(url.to_owned()))?;
        Ok(Self {
            http,
            base: url.trim_end_matches('/').to_owned(),
            auth,
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header(reqwest::header::ACCEPT, CONTENT_TYPE);
        if let Some(a) = &self.auth {
            req = req.basic_auth(&a.username, Some(a.password.expose()));
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .body(serde_json::to_vec(b).unwrap_or_default());
        }
        let transport = |source| ClientError::Transport {
            method: method.clone(),
            url: url.clone(),
            source,
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
                method,
                url,
                status: status.as_u16(),
                message: e.to_string(),
            });
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => Err(ClientError::Api {
                method,
                url,
                status: status.as_u16(),
                code: e.error_code,
                message: e.message,
            }),
            Err(_) => Err(ClientError::Api {
                method,
                url,
                status: status.as_u16(),
                code: u32::from(status.as_u16()),
                message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            }),
        }
    }

    /// Registers `schema` under `subject` (or finds it there) and returns its id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, ClientError> {
        let r: RegisteredId = self
            .call(
                Method::POST,
                &format!("/subjects/{}/versions", enc(subject)),
                Some(&avro(schema)),
            )
            .await?;
        Ok(r.id)
    }

    /// The version of `subject` that holds `schema`, if any.
    pub async fn lookup(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<Option<SubjectVersion>, ClientError> {
        let found = self
            .call(
                Method::POST,
                &format!("/subjects/{}", enc(subject)),
                Some(&avro(schema)),
            )
            .await;
        not_found_is_none(found)
    }

    pub async fn subjects(&self) -> Result<Vec<String>, ClientError> {
        self.call(Method::GET, "/subjects", None::<&()>).await
    }

    pub async fn versions(&self, subject: &str) -> Result<Vec<u32>, ClientError> {
        self.call(
            Method::GET,
            &format!("/subjects/{}/versions", enc(subject)),
            None::<&()>,
        )
        .await
    }

    pub async fn version(
        &self,
        subject: &str,
        version: VersionRef,
    ) -> Result<SubjectVersion, ClientError> {
        self.call(
            Method::GET,
            &format!("/subjects/{}/versions/{version}", enc(subject)),
            None::<&()>,
        )
        .await
    }

    /// The latest live version of `subject`, or `None` if it has none.
    pub async fn latest(&self, subject: &str) -> Result<Option<SubjectVersion>, ClientError> {
        not_found_is_none(self.version(subject, VersionRef::Latest).await)
    }

    /// The schema text registered under `id`.
    pub async fn schema_by_id(&self, id: u32) -> Result<String, ClientError> {
        let r: SchemaById = self
            .call(Method::GET, &format!("/schemas/ids/{id}"), None::<&()>)
            .await?;
        Ok(r.schema)
    }

    /// Whether `schema` may follow `version` of `subject` under the subject's level.
    pub async fn check(
        &self,
        subject: &str,
        version: VersionRef,
        schema: &str,
    ) -> Result<CompatibilityAnswer, ClientError> {
        self.call(
            Method::POST,
            &format!(
                "/compatibility/subjects/{}/versions/{version}?verbose=true",
                enc(subject)
            ),
            Some(&avro(schema)),
        )
        .await
    }

    /// The level that applies to `subject` (its own, else the global one),
    /// or the global level for `None`.
    pub async fn compatibility(
        &self,
        subject: Option<&str>,
    ) -> Result<CompatibilityLevel, ClientError> {
        let path = match subject {
            Some(s) => format!("/config/{}?defaultToGlobal=true", enc(s)),
            None => "/config".to_owned(),
        };
        let r: ConfigAnswer = self.call(Method::GET, &path, None::<&()>).await?;
        Ok(r.compatibility_level)
    }

    pub async fn set_compatibility(
        &self,
        subject: Option<&str>,
        level: CompatibilityLevel,
    ) -> Result<(), ClientError> {
        let path = match subject {
            Some(s) => format!("/config/{}", enc(s)),
            None => "/config".to_owned(),
        };
        let _: ConfigUpdate = self
            .call(
                Method::PUT,
                &path,
                Some(&ConfigUpdate {
                    compatibility: level,
                }),
            )
            .await?;
        Ok(())
    }

    /// Soft-deletes `subject`; returns the versions deleted.
    pub async fn delete_subject(&self, subject: &str) -> Result<Vec<u32>, ClientError> {
        self.call(
            Method::DELETE,
            &format!("/subjects/{}", enc(subject)),
            None::<&()>,
        )
        .await
    }
}

fn avro(schema: &str) -> SchemaRequest {
    SchemaRequest {
        schema: schema.to_owned(),
        schema_type: None,
        references: Vec::new(),
    }
}

fn not_found_is_none<T>(r: Result<T, ClientError>) -> Result<Option<T>, ClientError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Subjects are path segments: escape everything but unreserved characters.
fn enc(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
