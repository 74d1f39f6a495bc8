//! Schema evolution rules: Confluent's compatibility levels, checked with
//! apache-avro's schema resolution (aliases included).
//!
//! - BACKWARD: consumers on the new schema can read data written with the
//!   latest registered one (the default: upgrade consumers first).
//! - FORWARD: consumers on the latest registered schema can read data
//!   written with the new one (upgrade producers first).
//! - FULL: both. `*_TRANSITIVE`: against every earlier version, not only the
//!   latest. NONE: no check.
//!
//! A resolution that only *may* work (enum symbols or union branches that do
//! not fully overlap) counts as incompatible: it fails at read time.

use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::Schema;
use serde::{Deserialize, Serialize};

/// A subject's (or the registry's) compatibility level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityLevel {
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
    None,
}

impl CompatibilityLevel {
    /// Confluent's name for the level, e.g. `BACKWARD_TRANSITIVE`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
            Self::None => "NONE",
        }
    }
}

impl std::fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a new schema may not follow the earlier ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{level}: {direction} version {version}: {reason}")]
pub struct Incompatibility {
    pub level: CompatibilityLevel,
    /// The earlier version (1-based, in the order given) that conflicts.
    pub version: usize,
    /// "the new schema cannot read data written with" or the reverse.
    pub direction: &'static str,
    pub reason: String,
}

const NEW_READS_OLD: &str = "the new schema cannot read data written with";
const OLD_READS_NEW: &str = "data written with the new schema cannot be read by";

impl CompatibilityLevel {
    /// Checks `new` against `previous` (oldest first) under this level.
    pub fn check(self, new: &Schema, previous: &[Schema]) -> Result<(), Incompatibility> {
        use CompatibilityLevel as L;
        let (backward, forward, transitive) = match self {
            L::None => return Ok(()),
            L::Backward => (true, false, false),
            L::BackwardTransitive => (true, false, true),
            L::Forward => (false, true, false),
            L::ForwardTransitive => (false, true, true),
            L::Full => (true, true, false),
            L::FullTransitive => (true, true, true),
        };
        let first = if transitive {
            0
        } else {
            previous.len().saturating_sub(1)
        };
        for (i, old) in previous.iter().enumerate().skip(first).rev() {
            let fail = |direction, reason| Incompatibility {
                level: self,
                version: i + 1,
                direction,
                reason,
            };
            if backward {
                readable(old, new).map_err(|r| fail(NEW_READS_OLD, r))?;
            }
            if forward {
                readable(new, old).map_err(|r| fail(OLD_READS_NEW, r))?;
            }
        }
        Ok(())
    }
}

/// Whether data written with `writer` can always be read with `reader`; if
/// not, which field is at fault and why.
fn readable(writer: &Schema, reader: &Schema) -> Result<(), String> {
    let verdict = match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => return Ok(()),
        Ok(Compatibility::Partial) => {
            "reading may fail: enum symbols or union branches do not fully overlap".to_owned()
        }
        Err(e) => error_chain(&e),
    };
    Err(explain(writer, reader, &mut Vec::new()).unwrap_or(verdict))
}

/// Walks two record schemas side by side to the first field that cannot
/// always be read, and says why in terms of that field.
fn explain(writer: &Schema, reader: &Schema, path: &mut Vec<String>) -> Option<String> {
    match (writer, reader) {
        (Schema::Record(w), Schema::Record(r)) => {
            for rf in &r.fields {
                let wf = w
                    .fields
                    .iter()
                    .find(|f| f.name == rf.name || rf.aliases.contains(&f.name));
                path.push(rf.name.clone());
                let why = match wf {
                    None if rf.default.is_none() => Some(format!(
                        "field `{}` is missing from the data and has no default",
                        path.join(".")
                    )),
                    None => None,
                    Some(wf) => explain(&wf.schema, &rf.schema, path),
                };
                path.pop();
                if why.is_some() {
                    return why;
                }
            }
            None
        }
        _ => {
            let field = if path.is_empty() {
                "the top-level schema".to_owned()
            } else {
                format!("field `{}`", path.join("."))
            };
            match SchemaCompatibility::can_read(writer, reader) {
                Ok(Compatibility::Full) => None,
                Ok(Compatibility::Partial) => Some(format!(
                    "{field}: {} cannot always be read as {}",
                    writer.canonical_form(),
                    reader.canonical_form()
                )),
                Err(e) => Some(format!(
                    "{field}: {} cannot be read as {}: {}",
                    writer.canonical_form(),
                    reader.canonical_form(),
                    error_chain(&e)
                )),
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::CompatibilityLevel as L;
    use super::*;

    fn user(fields: &str) -> Schema {
        let text = format!(
            r#"{{"type": "record", "name": "User", "fields": [{{"name": "id", "type": "string"}}{fields}]}}"#
        );
        Schema::parse_str(&text).expect("test schema parses")
    }

    fn v1() -> Schema {
        user(r#", {"name": "email", "type": "string"}"#)
    }
    fn added_with_default() -> Schema {
        user(
            r#", {"name": "email", "type": "string"}, {"name": "phone", "type": ["null", "string"], "default": null}"#,
        )
    }
    fn added_without_default() -> Schema {
        user(r#", {"name": "email", "type": "string"}, {"name": "phone", "type": "string"}"#)
    }
    fn removed() -> Schema {
        user("")
    }
    fn changed_type() -> Schema {
        user(r#", {"name": "email", "type": "int"}"#)
    }
    fn renamed_with_alias() -> Schema {
        user(r#", {"name": "mail", "type": "string", "aliases": ["email"]}"#)
    }

    fn ok(level: L, new: Schema, old: &[Schema]) -> bool {
        level.check(&new, old).is_ok()
    }

    #[test]
    fn backward() {
        assert!(ok(L::Backward, added_with_default(), &[v1()]));
        assert!(ok(L::Backward, removed(), &[v1()]));
        assert!(ok(L::Backward, renamed_with_alias(), &[v1()]));
        assert!(!ok(L::Backward, added_without_default(), &[v1()]));
        assert!(!ok(L::Backward, changed_type(), &[v1()]));
    }

    #[test]
    fn forward() {
        assert!(ok(L::Forward, added_with_default(), &[v1()]));
        assert!(ok(L::Forward, added_without_default(), &[v1()]));
        assert!(!ok(L::Forward, removed(), &[v1()]));
        assert!(!ok(L::Forward, renamed_with_alias(), &[v1()]));
        assert!(!ok(L::Forward, changed_type(), &[v1()]));
    }

    #[test]
    fn full() {
        assert!(ok(L::Full, added_with_default(), &[v1()]));
        assert!(!ok(L::Full, added_without_default(), &[v1()]));
        assert!(!ok(L::Full, removed(), &[v1()]));
        assert!(!ok(L::Full, changed_type(), &[v1()]));
    }

    #[test]
    fn none_allows_anything() {
        assert!(ok(L::None, changed_type(), &[v1()]));
    }

    /// v1 {id, a: string}, v2 {id}, v3 {id, a: int = 0}: v3 reads v2's data
    /// (default) but not v1's (string is not int).
    #[test]
    fn backward_transitive_checks_every_version() {
        let history = [user(r#", {"name": "a", "type": "string"}"#), user("")];
        let v3 = user(r#", {"name": "a", "type": "int", "default": 0}"#);
        assert!(ok(L::Backward, v3.clone(), &history));
        let err = L::BackwardTransitive
            .check(&v3, &history)
            .expect_err("refused");
        assert_eq!(err.version, 1, "{err}");
        assert!(ok(L::BackwardTransitive, user(""), &history));
    }

    /// v1 {id, a: string = "x"}, v2 {id}, v3 {id, a: int}: v2 readers ignore
    /// v3's `a`, v1 readers cannot read it as a string.
    #[test]
    fn forward_transitive_checks_every_version() {
        let history = [
            user(r#", {"name": "a", "type": "string", "default": "x"}"#),
            user(""),
        ];
        let v3 = user(r#", {"name": "a", "type": "int"}"#);
        assert!(ok(L::Forward, v3.clone(), &history));
        assert!(!ok(L::ForwardTransitive, v3, &history));
        assert!(ok(
            L::ForwardTransitive,
            user(r#", {"name": "b", "type": "long"}"#),
            &history
        ));
    }

    #[test]
    fn full_transitive_checks_every_version_both_ways() {
        let history = [
            user(r#", {"name": "a", "type": "string", "default": "x"}"#),
            user(""),
        ];
        let v3 = user(r#", {"name": "a", "type": "int", "default": 0}"#);
        assert!(ok(L::Full, v3.clone(), &history));
        assert!(!ok(L::FullTransitive, v3, &history));
        let compatible = user(r#", {"name": "a", "type": "string", "default": "y"}"#);
        assert!(ok(L::FullTransitive, compatible, &history));
    }

    #[test]
    fn the_reason_names_the_field() {
        let err = L::Backward
            .check(&added_without_default(), &[v1()])
            .expect_err("refused")
            .to_string();
        assert!(err.contains("phone") && err.contains("default"), "{err}");
    }

    #[test]
    fn a_changed_union_names_the_field_and_both_types() {
        let old = user(r#", {"name": "email", "type": ["null", "string"], "default": null}"#);
        let new = user(r#", {"name": "email", "type": ["null", "int"], "default": null}"#);
        let err = L::Backward
            .check(&new, &[old])
            .expect_err("refused")
            .to_string();
        assert!(err.starts_with("BACKWARD: "), "{err}");
        assert!(err.contains("field `email`"), "{err}");
        assert!(
            err.contains(r#"["null","string"]"#) && err.contains(r#"["null","int"]"#),
            "{err}"
        );
    }

    #[test]
    fn levels_use_confluent_names() {
        for level in [
            L::Backward,
            L::BackwardTransitive,
            L::Forward,
            L::ForwardTransitive,
            L::Full,
            L::FullTransitive,
            L::None,
        ] {
            let json = serde_json::to_string(&level).expect("serializes");
            assert_eq!(json, format!("\"{level}\""));
        }
    }
}
