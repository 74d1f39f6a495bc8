//! Secrets in config: written as `${env:NAME}`, `${file:/path}` or (discouraged)
//! a literal. The value never appears in `Debug`, `Display` or error output.

use serde::{Deserialize, Deserializer};
use std::fmt;

/// A secret value (password, token, key). Resolved when the config is loaded.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value that is already resolved.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call this only where the value is handed to the
    /// system that needs it (a client config, an auth header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Resolves `${env:NAME}` and `${file:/path}` references; anything else is
    /// taken literally. The error text never contains the secret.
    pub fn resolve(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if let Some(name) = reference(raw, "env") {
            return std::env::var(name).map(Self).map_err(|_| {
                format!("the secret refers to environment variable `{name}`, which is not set")
            });
        }
        if let Some(path) = reference(raw, "file") {
            return std::fs::read_to_string(path)
                .map(|s| Self(s.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|e| {
                    format!("the secret refers to file `{path}`, which cannot be read: {e}")
                });
        }
        if raw.starts_with("${") {
            return Err("a secret reference must be `${env:NAME}` or `${file:/path}`".to_owned());
        }
        Ok(Self(raw.to_owned()))
    }
}

fn reference<'a>(raw: &'a str, kind: &str) -> Option<&'a str> {
    raw.strip_prefix("${")?
        .strip_suffix('}')?
        .strip_prefix(kind)?
        .strip_prefix(':')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::resolve(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_and_env_references_resolve() {
        assert_eq!(
            Secret::resolve("plain").map(|s| s.0),
            Ok("plain".to_owned())
        );
        std::env::set_var("FERRY_SECRET_TEST_PRESENT", "s3cret");
        let s = Secret::resolve("${env:FERRY_SECRET_TEST_PRESENT}").map_err(|e| e.to_string());
        assert_eq!(s.map(|s| s.expose().to_owned()), Ok("s3cret".to_owned()));
    }

    #[test]
    fn missing_env_names_the_variable() {
        let err = Secret::resolve("${env:FERRY_SECRET_TEST_ABSENT}").err();
        assert!(err.is_some_and(|e| e.contains("FERRY_SECRET_TEST_ABSENT")));
    }

    #[test]
    fn file_reference_trims_the_trailing_newline() {
        let dir = tempfile::tempdir().map_err(|e| e.to_string());
        let dir = dir
            .as_ref()
            .map(|d| d.path().to_owned())
            .unwrap_or_default();
        let path = dir.join("secret.txt");
        std::fs::write(&path, "from-file\n").ok();
        let s = Secret::resolve(&format!("${{file:{}}}", path.display()));
        assert_eq!(s.map(|s| s.0), Ok("from-file".to_owned()));
    }

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
    }

    #[test]
    fn malformed_reference_is_refused() {
        assert!(Secret::resolve("${vault:x}").is_err());
    }
}
