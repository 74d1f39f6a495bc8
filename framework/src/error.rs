//! The error every connector returns: what went wrong, whose fault it is,
//! and whether trying again can help. The runtime decides what to do with
//! it (retry with backoff, restart the task, fail it); the connector only
//! classifies.

use std::fmt;

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// The configuration or the data (a bad URL, a 400 from the API, a record
    /// that does not fit its schema): retrying the same thing will not help.
    User,
    /// A system outside Ferry (the API is down, times out, answers 5xx or 429).
    External,
    /// A bug or an invariant broken inside Ferry.
    Internal,
}

/// Whether the same operation may succeed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    No,
    WithBackoff,
}

/// What a failure is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This record (or request): the others may well pass. A sink sends
    /// such a record to its dead-letter topic when the failure is permanent.
    Record,
    /// The connector itself (its credentials refused, its configuration
    /// wrong): every record would fail the same way, so none is
    /// dead-lettered; the connector stops (`FAILED`) or retries.
    Connector,
}

/// A connector's failure.
#[derive(Debug, Clone)]
pub struct ConnectorError {
    pub domain: Domain,
    pub retry: Retry,
    pub message: String,
    /// The HTTP status, when the failure was an answer from an HTTP peer.
    pub status: Option<u16>,
    pub scope: Scope,
    /// What in the record failed, as dead-letter headers (a mapping's
    /// field, rule and source path: `ferry-dlq-mapping-*`); usually empty.
    pub details: Vec<(&'static str, String)>,
}

impl ConnectorError {
    /// A failure of the config or the data; not retried.
    pub fn user(message: impl Into<String>) -> Self {
        Self {
            domain: Domain::User,
            retry: Retry::No,
            message: message.into(),
            status: None,
            scope: Scope::Record,
            details: Vec::new(),
        }
    }

    /// A failure of an outside system; retried with backoff.
    pub fn external(message: impl Into<String>) -> Self {
        Self {
            domain: Domain::External,
            retry: Retry::WithBackoff,
            message: message.into(),
            status: None,
            scope: Scope::Record,
            details: Vec::new(),
        }
    }

    /// A failure inside Ferry; the task is restarted with backoff.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            domain: Domain::Internal,
            retry: Retry::WithBackoff,
            message: message.into(),
            status: None,
            scope: Scope::Record,
            details: Vec::new(),
        }
    }

    /// The failure of an HTTP call that got an answer: 408, 429 and 5xx are
    /// the peer's trouble and retryable; any other status is not.
    pub fn http_status(status: u16, message: impl Into<String>) -> Self {
        let retryable = status == 408 || status == 429 || status >= 500;
        Self {
            domain: if retryable {
                Domain::External
            } else {
                Domain::User
            },
            retry: if retryable {
                Retry::WithBackoff
            } else {
                Retry::No
            },
            message: message.into(),
            status: Some(status),
            scope: Scope::Record,
            details: Vec::new(),
        }
    }

    /// The same failure, about the connector rather than one record.
    #[must_use]
    pub fn for_connector(mut self) -> Self {
        self.scope = Scope::Connector;
        self
    }

    /// The same failure, naming what in the record failed (a dead-letter
    /// header `name`; empty values are left out).
    #[must_use]
    pub fn with_detail(mut self, name: &'static str, value: impl Into<String>) -> Self {
        let value = value.into();
        if !value.is_empty() {
            self.details.push((name, value));
        }
        self
    }

    pub fn is_retryable(&self) -> bool {
        self.retry == Retry::WithBackoff
    }
}

impl fmt::Display for ConnectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConnectorError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_are_classified() {
        assert!(ConnectorError::http_status(503, "x").is_retryable());
        assert!(ConnectorError::http_status(429, "x").is_retryable());
        assert!(ConnectorError::http_status(408, "x").is_retryable());
        let e = ConnectorError::http_status(404, "x");
        assert!(!e.is_retryable());
        assert_eq!((e.domain, e.status), (Domain::User, Some(404)));
    }
}
