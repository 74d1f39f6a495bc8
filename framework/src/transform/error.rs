//! The two ways a mapping fails: its config does not fit the schema
//! ([`MappingConfigError`], found once by `Mapping::compile`), or one record
//! does not fit the mapping ([`MappingError`], the record's fault: never
//! worth retrying, always worth a dead-letter entry).

use crate::error::{ConnectorError, Domain, Retry};
use std::fmt;

/// The check a record failed: a normalizer's name, or one of the mapping's
/// own checks. Its text is what `rule` shows in errors and dead-letter headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// A field the schema requires was missing from the payload.
    Required,
    /// A value of the wrong kind for its Avro type (an object for a string).
    Type,
    /// The original payload could not be kept (bytes that are not UTF-8 for a
    /// `string` field).
    Raw,
    Trim,
    Lowercase,
    Uppercase,
    Email,
    Phone,
    Name,
    Timestamp,
    Country,
    Map,
    Number,
    Integer,
    Boolean,
    /// A [`Transform`](super::Transform) written in Rust, named by its author.
    Custom(&'static str),
}

impl Rule {
    pub fn as_str(&self) -> &'static str {
        match self {
            Rule::Required => "required",
            Rule::Type => "type",
            Rule::Raw => "raw",
            Rule::Trim => "trim",
            Rule::Lowercase => "lowercase",
            Rule::Uppercase => "uppercase",
            Rule::Email => "email",
            Rule::Phone => "phone",
            Rule::Name => "name",
            Rule::Timestamp => "timestamp",
            Rule::Country => "country",
            Rule::Map => "map",
            Rule::Number => "number",
            Rule::Integer => "integer",
            Rule::Boolean => "boolean",
            Rule::Custom(name) => name,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record that does not fit its mapping. Retrying cannot help: the same
/// payload fails the same way, so the record belongs on the dead-letter
/// topic with this error's parts as headers.
///
/// Displays as one line, e.g. ``field `email` from /email_address, rule
/// email: not an email address: "bob(at)x"``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct MappingError {
    /// The target field: `email`, `address.city`, `tags[2]`; empty for the
    /// record as a whole.
    pub field: String,
    /// The check that failed.
    pub rule: Rule,
    /// The payload location read, as a JSON pointer (`/email_address`); or
    /// every location tried when none had a value (`/contactId`, `/id`);
    /// empty for constants and the raw payload.
    pub sources: Vec<String>,
    /// What was wrong, quoting the offending value.
    pub reason: String,
}

impl MappingError {
    /// A failure of `rule` on the value at hand; the field and source are
    /// filled in by the levels above it.
    pub fn new(rule: Rule, reason: impl Into<String>) -> Self {
        Self {
            field: String::new(),
            rule,
            sources: Vec::new(),
            reason: reason.into(),
        }
    }

    /// The source locations as one string (`/contactId, /id`), if any.
    pub fn source(&self) -> Option<String> {
        (!self.sources.is_empty()).then(|| self.sources.join(", "))
    }

    /// Never: the record is at fault, and the same record fails again.
    pub fn is_retryable(&self) -> bool {
        false
    }

    /// The failure inside field `name` of the record being built.
    pub(crate) fn in_field(mut self, name: &str) -> Self {
        self.field = if self.field.is_empty() {
            name.to_owned()
        } else if self.field.starts_with('[') {
            format!("{name}{}", self.field)
        } else {
            format!("{name}.{}", self.field)
        };
        self
    }

    /// The failure inside item `i` of the array (or entry `key` of the map)
    /// being built; the source gains the same step.
    pub(crate) fn in_item(mut self, item: &dyn fmt::Display) -> Self {
        self.field = if self.field.is_empty() || self.field.starts_with('[') {
            format!("[{item}]{}", self.field)
        } else {
            format!("[{item}].{}", self.field)
        };
        let step = format!("/{item}");
        if self.sources.is_empty() {
            self.sources.push(step);
        } else {
            self = self.under(&step);
        }
        self
    }

    /// The failing value was read at `path`, relative to which the sources
    /// found so far (if any) are given.
    pub(crate) fn read_at(mut self, path: &str) -> Self {
        if self.sources.is_empty() {
            if !path.is_empty() {
                self.sources.push(path.to_owned());
            }
            self
        } else {
            self.under(path)
        }
    }

    /// Every location looked in for a value that was missing.
    pub(crate) fn tried(mut self, paths: impl IntoIterator<Item = String>) -> Self {
        self.sources = paths.into_iter().collect();
        self
    }

    /// The sources found so far are relative to `path`; an error with none
    /// (a constant, the raw payload) stays without.
    pub(crate) fn under(mut self, path: &str) -> Self {
        if !path.is_empty() {
            for s in &mut self.sources {
                s.insert_str(0, path);
            }
        }
        self
    }
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str("record")?;
        } else {
            write!(f, "field `{}`", self.field)?;
        }
        if !self.sources.is_empty() {
            write!(f, " from {}", self.sources.join(", "))?;
        }
        write!(f, ", rule {}: {}", self.rule, self.reason)
    }
}

impl From<MappingError> for ConnectorError {
    /// The data's fault, about this record only, not retried: the runtime
    /// dead-letters it.
    fn from(e: MappingError) -> Self {
        use crate::runtime::headers::dead_letter as h;
        let error = ConnectorError::user(e.to_string())
            .with_detail(h::MAPPING_FIELD, e.field.clone())
            .with_detail(h::MAPPING_RULE, e.rule.as_str())
            .with_detail(h::MAPPING_SOURCE, e.source().unwrap_or_default());
        debug_assert!(error.domain == Domain::User && error.retry == Retry::No);
        error
    }
}

/// A mapping config that cannot work with its schema. Found by
/// `Mapping::compile`, before any record is read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mapping field `{field}`, {rule}: {reason}")]
pub struct MappingConfigError {
    /// The target field, `address.city` or `tags[].sku`; empty for the
    /// mapping as a whole.
    pub field: String,
    /// The config key or normalizer at fault (`from`, `normalize phone`,
    /// `fields`, `schema`).
    pub rule: String,
    pub reason: String,
}

impl MappingConfigError {
    pub(crate) fn new(field: &str, rule: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            rule: rule.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_compose_from_the_inside_out() {
        let e = MappingError::new(Rule::Email, "not an email address: \"x\"")
            .read_at("/email")
            .in_item(&2)
            .read_at("/contacts")
            .in_field("contacts");
        assert_eq!(e.field, "contacts[2]");
        assert_eq!(e.source().as_deref(), Some("/contacts/2/email"));
        let e = MappingError::new(Rule::Required, "missing")
            .tried(["/first".to_owned(), "/last".to_owned()])
            .in_item(&0)
            .under("/people");
        assert_eq!(e.sources, ["/people/0/first", "/people/0/last"]);
        let e = MappingError::new(Rule::Raw, "x").under("/a").read_at("");
        assert_eq!(e.source(), None);
        let e = MappingError::new(Rule::Type, "x")
            .in_field("city")
            .in_field("address");
        assert_eq!(e.field, "address.city");
        let e = MappingError::new(Rule::Type, "x")
            .in_field("sku")
            .in_item(&0);
        assert_eq!(e.field, "[0].sku");
    }

    #[test]
    fn reads_well_in_a_header_and_is_never_retried() {
        let e = MappingError::new(Rule::Email, "not an email address: \"bob(at)x\"")
            .read_at("/email_address")
            .in_field("email");
        assert_eq!(
            e.to_string(),
            "field `email` from /email_address, rule email: not an email address: \"bob(at)x\""
        );
        assert!(!e.is_retryable());
        let c = ConnectorError::from(e);
        assert!(!c.is_retryable());
        assert_eq!(c.domain, Domain::User);
    }
}
