//! The registry's state, rebuilt by replaying the registry log (`_ferry_schemas`) in order.
//!
//! Every registry instance on a cluster reads the same single-partition log
//! and applies the same rules, so they agree without talking to each other.
//! A registration is a *proposal* (subject, version, id, schema, a unique
//! proposal id): it is accepted when applied only if its version is the
//! subject's next one and its id is free or already names the same schema.
//! Two instances racing for the same version or id both write; the one
//! earlier in the log wins and the other sees its proposal rejected and
//! retries. Acceptance depends only on earlier accepted schema records, which
//! are never tombstoned, so compaction cannot change a replay's outcome.

use crate::schema::CompatibilityLevel;
use apache_avro::Schema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The key of a registry log record, as JSON (Confluent's shape, plus the
/// proposal id that keeps racing proposals from sharing a compaction key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "keytype", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LogKey {
    Schema {
        subject: String,
        version: u32,
        proposal: String,
    },
    /// `subject: None` is the global config.
    Config {
        subject: Option<String>,
    },
    DeleteSubject {
        subject: String,
    },
}

/// A proposed schema version (the value of a `Schema` key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaValue {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
    pub proposal: String,
}

/// The value of a `Config` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigValue {
    pub compatibility_level: CompatibilityLevel,
}

/// The value of a `DeleteSubject` key: versions up to `version` are soft-deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteValue {
    pub subject: String,
    pub version: u32,
}

/// A schema the registry knows, under its global id.
#[derive(Debug)]
pub struct StoredSchema {
    pub id: u32,
    /// The text as first registered (what `GET /schemas/ids/{id}` returns).
    pub text: String,
    /// The identity used to decide "same schema": see [`normalize`].
    pub normalized: String,
    pub parsed: Schema,
}

/// One registered version of a subject.
#[derive(Debug, Clone)]
pub struct Version {
    pub version: u32,
    pub id: u32,
    pub proposal: String,
    pub deleted: bool,
}

/// A subject's history.
#[derive(Debug, Default, Clone)]
pub struct Subject {
    pub versions: Vec<Version>,
    pub compatibility: Option<CompatibilityLevel>,
}

impl Subject {
    /// The highest version ever accepted, deleted ones included (versions are never reused).
    pub fn max_version(&self) -> u32 {
        self.versions.last().map_or(0, |v| v.version)
    }

    /// Versions not soft-deleted, oldest first.
    pub fn live(&self) -> impl Iterator<Item = &Version> {
        self.versions.iter().filter(|v| !v.deleted)
    }

    pub fn is_live(&self) -> bool {
        self.live().next().is_some()
    }
}

/// What applying one log record did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Accepted,
    /// A schema proposal that lost a race or broke a rule; `why` says which.
    Rejected {
        why: String,
    },
    /// A tombstone or a record this registry does not understand (skipped, counted).
    Ignored {
        why: String,
    },
}

/// The whole registry, as of some log offset.
#[derive(Debug, Default)]
pub struct RegistryState {
    schemas: BTreeMap<u32, Arc<StoredSchema>>,
    by_normalized: HashMap<String, u32>,
    subjects: BTreeMap<String, Subject>,
    global: Option<CompatibilityLevel>,
    rejected: u64,
}

/// A schema's identity: its JSON re-serialized from the parsed form, so
/// whitespace and key order do not matter while defaults, aliases and docs
/// (which Avro's Parsing Canonical Form drops, but evolution depends on) do.
pub fn normalize(schema: &Schema) -> String {
    serde_json::to_string(schema).unwrap_or_else(|_| schema.canonical_form())
}

impl RegistryState {
    /// Applies one record of the log. `value: None` is a tombstone.
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Applied {
        let key: LogKey = match serde_json::from_slice(key) {
            Ok(k) => k,
            Err(e) => {
                return Applied::Ignored {
                    why: format!("unreadable key: {e}"),
                }
            }
        };
        match key {
            LogKey::Schema { .. } => match value {
                None => Applied::Ignored {
                    why: "tombstone of a rejected proposal".to_owned(),
                },
                Some(v) => match serde_json::from_slice::<SchemaValue>(v) {
                    Ok(v) => self.apply_schema(v),
                    Err(e) => Applied::Ignored {
                        why: format!("unreadable schema value: {e}"),
                    },
                },
            },
            LogKey::Config { subject } => {
                let level = match value.map(serde_json::from_slice::<ConfigValue>) {
                    None => None,
                    Some(Ok(c)) => Some(c.compatibility_level),
                    Some(Err(e)) => {
                        return Applied::Ignored {
                            why: format!("unreadable config value: {e}"),
                        }
                    }
                };
                match subject {
                    None => self.global = level,
                    Some(s) => self.subjects.entry(s).or_default().compatibility = level,
                }
                Applied::Accepted
            }
            LogKey::DeleteSubject { subject } => {
                let Some(v) = value else {
                    return Applied::Ignored {
                        why: "delete tombstone".to_owned(),
                    };
                };
                match serde_json::from_slice::<DeleteValue>(v) {
                    Ok(d) => {
                        if let Some(s) = self.subjects.get_mut(&subject) {
                            for version in &mut s.versions {
                                if version.version <= d.version {
                                    version.deleted = true;
                                }
                            }
                        }
                        Applied::Accepted
                    }
                    Err(e) => Applied::Ignored {
                        why: format!("unreadable delete value: {e}"),
                    },
                }
            }
        }
    }

    fn apply_schema(&mut self, v: SchemaValue) -> Applied {
        let outcome = self.decide_schema(v);
        if matches!(outcome, Applied::Rejected { .. }) {
            self.rejected += 1;
        }
        outcome
    }

    fn decide_schema(&mut self, v: SchemaValue) -> Applied {
        let reject = |why: String| Applied::Rejected { why };
        let parsed = match Schema::parse_str(&v.schema) {
            Ok(s) => s,
            Err(e) => return reject(format!("invalid schema: {e}")),
        };
        let normalized = normalize(&parsed);
        let next = self
            .subjects
            .get(&v.subject)
            .map_or(0, Subject::max_version)
            + 1;
        if v.version != next {
            return reject(format!(
                "subject `{}` version {} is taken (next is {next})",
                v.subject, v.version
            ));
        }
        match (self.schemas.get(&v.id), self.by_normalized.get(&normalized)) {
            (Some(existing), _) if existing.normalized != normalized => {
                return reject(format!("id {} names another schema", v.id))
            }
            (_, Some(&id)) if id != v.id => {
                return reject(format!("this schema already has id {id}, not {}", v.id))
            }
            (None, _) if v.id == 0 => return reject("id 0 is not a valid schema id".to_owned()),
            (None, _) => {
                self.by_normalized.insert(normalized.clone(), v.id);
                self.schemas.insert(
                    v.id,
                    Arc::new(StoredSchema {
                        id: v.id,
                        text: v.schema,
                        normalized,
                        parsed,
                    }),
                );
            }
            (Some(_), _) => {}
        }
        self.subjects
            .entry(v.subject)
            .or_default()
            .versions
            .push(Version {
                version: v.version,
                id: v.id,
                proposal: v.proposal,
                deleted: false,
            });
        Applied::Accepted
    }

    pub fn schema(&self, id: u32) -> Option<&Arc<StoredSchema>> {
        self.schemas.get(&id)
    }

    /// The id a schema with this normalized form has, if any subject registered it.
    pub fn id_of(&self, normalized: &str) -> Option<u32> {
        self.by_normalized.get(normalized).copied()
    }

    /// The id the next new schema would get.
    pub fn next_id(&self) -> u32 {
        self.schemas.keys().next_back().map_or(1, |id| id + 1)
    }

    pub fn subject(&self, name: &str) -> Option<&Subject> {
        self.subjects.get(name)
    }

    /// Subjects with at least one live version (or every subject that ever
    /// had one, with `deleted`).
    pub fn subject_names(&self, deleted: bool) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(_, s)| {
                if deleted {
                    !s.versions.is_empty()
                } else {
                    s.is_live()
                }
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    pub fn global_compatibility(&self) -> Option<CompatibilityLevel> {
        self.global
    }

    /// Schema proposals the log rejected so far (races lost, mostly).
    pub fn rejected_proposals(&self) -> u64 {
        self.rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"U","fields":[{"name":"id","type":"string"}]}"#;
    const V1_SPACED: &str =
        r#"{ "name": "U", "type": "record", "fields": [ { "type": "string", "name": "id" } ] }"#;
    const V2: &str = r#"{"type":"record","name":"U","fields":[{"name":"id","type":"string"},{"name":"e","type":["null","string"],"default":null}]}"#;

    fn key(subject: &str, version: u32, proposal: &str) -> Vec<u8> {
        serde_json::to_vec(&LogKey::Schema {
            subject: subject.into(),
            version,
            proposal: proposal.into(),
        })
        .expect("key")
    }

    fn propose(
        st: &mut RegistryState,
        subject: &str,
        version: u32,
        id: u32,
        schema: &str,
        p: &str,
    ) -> Applied {
        let value = serde_json::to_vec(&SchemaValue {
            subject: subject.into(),
            version,
            id,
            schema: schema.into(),
            proposal: p.into(),
        })
        .expect("value");
        st.apply(&key(subject, version, p), Some(&value))
    }

    #[test]
    fn the_earlier_of_two_racing_proposals_wins() {
        let mut st = RegistryState::default();
        assert_eq!(propose(&mut st, "s", 1, 1, V1, "a"), Applied::Accepted);
        // Both instances saw version 1 and proposed version 2, id 2.
        assert_eq!(propose(&mut st, "s", 2, 2, V2, "b"), Applied::Accepted);
        assert!(matches!(
            propose(&mut st, "s", 2, 2, V1_SPACED, "c"),
            Applied::Rejected { .. }
        ));
        let s = st.subject("s").expect("subject");
        assert_eq!(s.versions.len(), 2);
        assert_eq!(s.versions[1].proposal, "b");
    }

    #[test]
    fn an_id_names_one_schema_and_a_schema_has_one_id() {
        let mut st = RegistryState::default();
        assert_eq!(propose(&mut st, "a", 1, 1, V1, "p1"), Applied::Accepted);
        // Another subject racing for id 1 with a different schema loses.
        assert!(matches!(
            propose(&mut st, "b", 1, 1, V2, "p2"),
            Applied::Rejected { .. }
        ));
        // The same schema (written differently) under a new subject keeps id 1.
        assert!(matches!(
            propose(&mut st, "b", 1, 2, V1_SPACED, "p3"),
            Applied::Rejected { .. }
        ));
        assert_eq!(
            propose(&mut st, "b", 1, 1, V1_SPACED, "p4"),
            Applied::Accepted
        );
        assert_eq!(st.schema(1).expect("id 1").text, V1, "first text is kept");
        assert_eq!(st.next_id(), 2);
    }

    #[test]
    fn soft_delete_hides_versions_but_never_reuses_numbers() {
        let mut st = RegistryState::default();
        propose(&mut st, "s", 1, 1, V1, "p1");
        let k = serde_json::to_vec(&LogKey::DeleteSubject {
            subject: "s".into(),
        })
        .expect("k");
        let v = serde_json::to_vec(&DeleteValue {
            subject: "s".into(),
            version: 1,
        })
        .expect("v");
        assert_eq!(st.apply(&k, Some(&v)), Applied::Accepted);
        assert!(st.subject_names(false).is_empty());
        assert_eq!(st.subject_names(true), vec!["s".to_owned()]);
        assert!(matches!(
            propose(&mut st, "s", 1, 1, V1, "p2"),
            Applied::Rejected { .. }
        ));
        assert_eq!(propose(&mut st, "s", 2, 1, V1, "p3"), Applied::Accepted);
        assert_eq!(st.subject_names(false), vec!["s".to_owned()]);
    }

    #[test]
    fn config_records_set_and_clear_levels() {
        let mut st = RegistryState::default();
        let k = serde_json::to_vec(&LogKey::Config { subject: None }).expect("k");
        let v = serde_json::to_vec(&ConfigValue {
            compatibility_level: CompatibilityLevel::Full,
        })
        .expect("v");
        st.apply(&k, Some(&v));
        assert_eq!(st.global_compatibility(), Some(CompatibilityLevel::Full));
        let k = serde_json::to_vec(&LogKey::Config {
            subject: Some("s".into()),
        })
        .expect("k");
        st.apply(&k, Some(&v));
        assert_eq!(
            st.subject("s").and_then(|s| s.compatibility),
            Some(CompatibilityLevel::Full)
        );
        st.apply(&k, None);
        assert_eq!(st.subject("s").and_then(|s| s.compatibility), None);
    }

    #[test]
    fn foreign_and_garbled_records_are_skipped_not_fatal() {
        let mut st = RegistryState::default();
        assert!(matches!(
            st.apply(b"not json", Some(b"x")),
            Applied::Ignored { .. }
        ));
        assert!(matches!(
            st.apply(br#"{"keytype":"NOOP","magic":0}"#, None),
            Applied::Ignored { .. }
        ));
        assert!(matches!(
            propose(&mut st, "s", 1, 1, "{not a schema", "p"),
            Applied::Rejected { .. }
        ));
    }

    #[test]
    fn log_keys_look_like_confluents() {
        let k = serde_json::to_string(&LogKey::Config { subject: None }).expect("k");
        assert_eq!(k, r#"{"keytype":"CONFIG","subject":null}"#);
    }
}
