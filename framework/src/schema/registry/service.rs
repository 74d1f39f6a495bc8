//! The registry's operations, independent of HTTP: what the REST handlers
//! call. Reads answer from the replayed state (catching up once on a miss, so
//! a schema another instance just registered is found); writes go through the
//! log and are read back from it.

use super::api::{code, CompatibilityAnswer, SchemaRequest, SubjectVersion, VersionRef};
use super::log::{LogError, SchemaLog};
use super::state::{normalize, ConfigValue, DeleteValue, LogKey, SchemaValue, Subject};
use crate::kafka::KafkaConfig;
use crate::schema::CompatibilityLevel;
use apache_avro::Schema;
use std::time::Duration;

/// How many times a registration is re-proposed after losing a race.
const MAX_PROPOSALS: usize = 16;

/// A refused request, with Confluent's error code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {version} not found for subject '{subject}'.")]
    VersionNotFound {
        subject: String,
        version: VersionRef,
    },
    #[error("{0}")]
    SchemaNotFound(String),
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound(String),
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: {reason}")]
    Incompatible { subject: String, reason: String },
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    #[error("The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"")]
    InvalidVersion(String),
    #[error("Invalid compatibility level: {0}")]
    InvalidCompatibility(String),
    #[error("Error in the backend data store: {0}")]
    Store(#[source] Box<LogError>),
    #[error("Register operation timed out: {0}")]
    Contention(String),
}

impl ServiceError {
    /// Confluent's error code for this refusal.
    pub fn code(&self) -> u32 {
        match self {
            Self::SubjectNotFound(_) => code::SUBJECT_NOT_FOUND,
            Self::VersionNotFound { .. } => code::VERSION_NOT_FOUND,
            Self::SchemaNotFound(_) => code::SCHEMA_NOT_FOUND,
            Self::SubjectConfigNotFound(_) => code::SUBJECT_CONFIG_NOT_FOUND,
            Self::Incompatible { .. } => code::INCOMPATIBLE_SCHEMA,
            Self::InvalidSchema(_) => code::INVALID_SCHEMA,
            Self::InvalidVersion(_) => code::INVALID_VERSION,
            Self::InvalidCompatibility(_) => code::INVALID_COMPATIBILITY_LEVEL,
            Self::Store(e) if matches!(**e, LogError::Timeout { .. }) => code::STORE_TIMEOUT,
            Self::Contention(_) => code::STORE_TIMEOUT,
            Self::Store(_) => code::STORE_ERROR,
        }
    }
}

impl From<LogError> for ServiceError {
    fn from(e: LogError) -> Self {
        Self::Store(Box::new(e))
    }
}

/// Settings of a served registry.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    pub topic: String,
    /// The level used when neither the subject nor `PUT /config` set one.
    pub default_compatibility: CompatibilityLevel,
    /// How long a request may wait for the log.
    pub timeout: Duration,
}

/// A registry instance.
pub struct Registry {
    log: SchemaLog,
    default_compatibility: CompatibilityLevel,
}

/// A parsed, checked schema from a request.
struct Candidate {
    text: String,
    parsed: Schema,
    normalized: String,
}

fn candidate(req: &SchemaRequest) -> Result<Candidate, ServiceError> {
    if let Some(t) = req.schema_type.as_deref().filter(|t| *t != "AVRO") {
        return Err(ServiceError::InvalidSchema(format!(
            "schemaType {t} is not supported; Ferry's registry stores AVRO schemas"
        )));
    }
    if !req.references.is_empty() {
        return Err(ServiceError::InvalidSchema(
            "schema references are not supported; inline the referenced types".into(),
        ));
    }
    let parsed =
        Schema::parse_str(&req.schema).map_err(|e| ServiceError::InvalidSchema(e.to_string()))?;
    Ok(Candidate {
        text: req.schema.clone(),
        normalized: normalize(&parsed),
        parsed,
    })
}

impl Registry {
    /// Opens the log (creating the topic) and replays it.
    pub async fn open(
        kafka: &KafkaConfig,
        bootstrap: &str,
        settings: &RegistrySettings,
    ) -> Result<Self, LogError> {
        let log = SchemaLog::open(kafka, bootstrap, &settings.topic, settings.timeout).await?;
        Ok(Self {
            log,
            default_compatibility: settings.default_compatibility,
        })
    }

    /// Runs `read` on the state; if it says "not found", catches up with the
    /// log and runs it once more.
    async fn read<T>(
        &self,
        read: impl Fn(&super::state::RegistryState) -> Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
        let first = read(&self.log.state());
        match first {
            Err(
                ServiceError::SubjectNotFound(_)
                | ServiceError::VersionNotFound { .. }
                | ServiceError::SchemaNotFound(_),
            ) => {
                self.log.catch_up().await?;
                read(&self.log.state())
            }
            other => other,
        }
    }

    /// `POST /subjects/{s}/versions`: the id of `req` under `subject`,
    /// registering it as the next version if it is new there.
    pub async fn register(&self, subject: &str, req: &SchemaRequest) -> Result<u32, ServiceError> {
        let c = candidate(req)?;
        for attempt in 0..MAX_PROPOSALS {
            if attempt > 0 {
                // Lost a race: back off a random while, so racing instances
                // do not keep colliding in lockstep.
                let jitter = uuid::Uuid::new_v4().as_u128() % (20 * attempt as u128);
                tokio::time::sleep(Duration::from_millis(u64::try_from(jitter).unwrap_or(0))).await;
            }
            self.log.catch_up().await?;
            let proposal = uuid::Uuid::new_v4().to_string();
            let value = {
                let st = self.log.state();
                let history = st.subject(subject);
                let existing = st.id_of(&c.normalized);
                if let (Some(h), Some(id)) = (history, existing) {
                    if h.live().any(|v| v.id == id) {
                        return Ok(id);
                    }
                }
                let level = self.level_of(&st, subject);
                let previous: Vec<Schema> = history
                    .into_iter()
                    .flat_map(Subject::live)
                    .filter_map(|v| st.schema(v.id).map(|s| s.parsed.clone()))
                    .collect();
                level
                    .check(&c.parsed, &previous)
                    .map_err(|e| ServiceError::Incompatible {
                        subject: subject.to_owned(),
                        reason: e.to_string(),
                    })?;
                SchemaValue {
                    subject: subject.to_owned(),
                    version: history.map_or(0, Subject::max_version) + 1,
                    id: existing.unwrap_or_else(|| st.next_id()),
                    schema: c.text.clone(),
                    proposal: proposal.clone(),
                }
            };
            let key = json(&LogKey::Schema {
                subject: subject.to_owned(),
                version: value.version,
                proposal: proposal.clone(),
            });
            self.log.append(key.clone(), Some(json(&value))).await?;
            let won = self
                .log
                .state()
                .subject(subject)
                .and_then(|s| s.versions.iter().find(|v| v.version == value.version))
                .is_some_and(|v| v.proposal == proposal);
            if won {
                tracing::info!(
                    subject,
                    version = value.version,
                    id = value.id,
                    "schema registered"
                );
                return Ok(value.id);
            }
            // Lost a race: tombstone the losing proposal so compaction drops it.
            self.log.append(key, None).await?;
        }
        Err(ServiceError::Contention(format!(
            "subject '{subject}': {MAX_PROPOSALS} proposals in a row lost to concurrent registrations"
        )))
    }

    /// `POST /subjects/{s}`: the version of `subject` that holds this schema.
    pub async fn lookup(
        &self,
        subject: &str,
        req: &SchemaRequest,
        deleted: bool,
    ) -> Result<SubjectVersion, ServiceError> {
        let c = candidate(req)?;
        self.read(|st| {
            let s = st
                .subject(subject)
                .filter(|s| deleted || s.is_live())
                .ok_or_else(|| ServiceError::SubjectNotFound(subject.to_owned()))?;
            let id = st
                .id_of(&c.normalized)
                .ok_or_else(|| ServiceError::SchemaNotFound("Schema not found".into()))?;
            let v = s
                .versions
                .iter()
                .rev()
                .find(|v| v.id == id && (deleted || !v.deleted))
                .ok_or_else(|| ServiceError::SchemaNotFound("Schema not found".into()))?;
            Ok(SubjectVersion {
                subject: subject.to_owned(),
                version: v.version,
                id,
                schema: st.schema(id).map(|s| s.text.clone()).unwrap_or_default(),
            })
        })
        .await
    }

    /// `GET /subjects`.
    pub async fn subjects(&self, deleted: bool) -> Result<Vec<String>, ServiceError> {
        self.log.catch_up().await?;
        Ok(self.log.state().subject_names(deleted))
    }

    /// `GET /subjects/{s}/versions`.
    pub async fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<u32>, ServiceError> {
        self.read(|st| {
            let versions: Vec<u32> = st
                .subject(subject)
                .map(|s| {
                    s.versions
                        .iter()
                        .filter(|v| deleted || !v.deleted)
                        .map(|v| v.version)
                        .collect()
                })
                .unwrap_or_default();
            if versions.is_empty() {
                Err(ServiceError::SubjectNotFound(subject.to_owned()))
            } else {
                Ok(versions)
            }
        })
        .await
    }

    /// `GET /subjects/{s}/versions/{v}`.
    pub async fn version(
        &self,
        subject: &str,
        version: VersionRef,
        deleted: bool,
    ) -> Result<SubjectVersion, ServiceError> {
        self.read(|st| {
            let s = st
                .subject(subject)
                .filter(|s| deleted || s.is_live())
                .ok_or_else(|| ServiceError::SubjectNotFound(subject.to_owned()))?;
            let v = match version {
                VersionRef::Latest => s.versions.iter().rev().find(|v| deleted || !v.deleted),
                VersionRef::Number(n) => s
                    .versions
                    .iter()
                    .find(|v| v.version == n && (deleted || !v.deleted)),
            }
            .ok_or_else(|| ServiceError::VersionNotFound {
                subject: subject.to_owned(),
                version,
            })?;
            Ok(SubjectVersion {
                subject: subject.to_owned(),
                version: v.version,
                id: v.id,
                schema: st.schema(v.id).map(|s| s.text.clone()).unwrap_or_default(),
            })
        })
        .await
    }

    /// `GET /schemas/ids/{id}`.
    pub async fn schema_by_id(&self, id: u32) -> Result<String, ServiceError> {
        self.read(|st| {
            st.schema(id)
                .map(|s| s.text.clone())
                .ok_or_else(|| ServiceError::SchemaNotFound(format!("Schema {id} not found")))
        })
        .await
    }

    /// `POST /compatibility/subjects/{s}/versions/{v}`: `latest` checks under
    /// the subject's level (every version for a transitive one); a number
    /// checks against that version alone.
    pub async fn check(
        &self,
        subject: &str,
        version: VersionRef,
        req: &SchemaRequest,
    ) -> Result<CompatibilityAnswer, ServiceError> {
        let c = candidate(req)?;
        let (level, previous) = self
            .read(|st| {
                let s = st
                    .subject(subject)
                    .filter(|s| s.is_live())
                    .ok_or_else(|| ServiceError::SubjectNotFound(subject.to_owned()))?;
                let chosen: Vec<Schema> = match version {
                    VersionRef::Latest => s
                        .live()
                        .filter_map(|v| st.schema(v.id).map(|x| x.parsed.clone()))
                        .collect(),
                    VersionRef::Number(n) => {
                        let v = s.live().find(|v| v.version == n).ok_or_else(|| {
                            ServiceError::VersionNotFound {
                                subject: subject.to_owned(),
                                version,
                            }
                        })?;
                        st.schema(v.id)
                            .map(|x| x.parsed.clone())
                            .into_iter()
                            .collect()
                    }
                };
                Ok((self.level_of(st, subject), chosen))
            })
            .await?;
        Ok(match level.check(&c.parsed, &previous) {
            Ok(()) => CompatibilityAnswer {
                is_compatible: true,
                messages: Vec::new(),
            },
            Err(e) => CompatibilityAnswer {
                is_compatible: false,
                messages: vec![e.to_string()],
            },
        })
    }

    /// `GET /config` (subject `None`) and `GET /config/{s}`. With
    /// `default_to_global`, a subject without its own level gets the global one.
    pub async fn config(
        &self,
        subject: Option<&str>,
        default_to_global: bool,
    ) -> Result<CompatibilityLevel, ServiceError> {
        self.log.catch_up().await?;
        let st = self.log.state();
        let global = st
            .global_compatibility()
            .unwrap_or(self.default_compatibility);
        match subject {
            None => Ok(global),
            Some(s) => match st.subject(s).and_then(|x| x.compatibility) {
                Some(level) => Ok(level),
                None if default_to_global => Ok(global),
                None => Err(ServiceError::SubjectConfigNotFound(s.to_owned())),
            },
        }
    }

    /// `PUT /config` and `PUT /config/{s}`.
    pub async fn set_config(
        &self,
        subject: Option<&str>,
        level: CompatibilityLevel,
    ) -> Result<(), ServiceError> {
        let key = json(&LogKey::Config {
            subject: subject.map(str::to_owned),
        });
        let value = json(&ConfigValue {
            compatibility_level: level,
        });
        self.log.append(key, Some(value)).await?;
        Ok(())
    }

    /// `DELETE /config/{s}`: the subject falls back to the global level.
    pub async fn clear_config(&self, subject: &str) -> Result<CompatibilityLevel, ServiceError> {
        let level = self.config(Some(subject), false).await?;
        let key = json(&LogKey::Config {
            subject: Some(subject.to_owned()),
        });
        self.log.append(key, None).await?;
        Ok(level)
    }

    /// `DELETE /subjects/{s}` (soft): the versions that were deleted.
    pub async fn delete_subject(&self, subject: &str) -> Result<Vec<u32>, ServiceError> {
        let live = self.versions(subject, false).await?;
        let last = live.last().copied().unwrap_or_default();
        let key = json(&LogKey::DeleteSubject {
            subject: subject.to_owned(),
        });
        let value = json(&DeleteValue {
            subject: subject.to_owned(),
            version: last,
        });
        self.log.append(key, Some(value)).await?;
        Ok(live)
    }

    /// Schema proposals this instance has seen lost to an earlier one in the
    /// log (its own and other instances').
    pub fn rejected_proposals(&self) -> u64 {
        self.log.state().rejected_proposals()
    }

    fn level_of(&self, st: &super::state::RegistryState, subject: &str) -> CompatibilityLevel {
        st.subject(subject)
            .and_then(|s| s.compatibility)
            .or(st.global_compatibility())
            .unwrap_or(self.default_compatibility)
    }
}

/// Log keys and values are plain serde structs; serializing them cannot fail.
fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}
