//! Secrets in config: written as `${env:NAME}`, `${file:/path}` or (discouraged)
//! a literal. The value never appears in `Debug`, `Display` or error output,
//! and every resolved value is registered with the redaction policy
//! ([`crate::telemetry::redact`]), so no log line or status shows it either.
//!
//! A reference can also sit *inside* a string wherever a credential can go
//! (a header value `Bearer ${env:TOKEN}`, a URL, a query parameter, a raw
//! librdkafka option such as `ssl.key.password`): [`resolve_embedded`]
//! replaces each one and registers its value.

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
        let value = if let Some(name) = reference(raw, "env") {
            env_secret(name)?
        } else if let Some(path) = reference(raw, "file") {
            file_secret(path)?
        } else if raw.starts_with("${") {
            return Err("a secret reference must be `${env:NAME}` or `${file:/path}`".to_owned());
        } else {
            raw.to_owned()
        };
        crate::telemetry::redact::register(&value);
        Ok(Self(value))
    }
}

fn env_secret(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| {
        format!("the secret refers to environment variable `{name}`, which is not set")
    })
}

fn file_secret(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
        .map_err(|e| format!("the secret refers to file `{path}`, which cannot be read: {e}"))
}

/// Replaces each `${env:NAME}` and `${file:/path}` inside `text` with the
/// secret's value, registering it for redaction. Other text is kept.
pub fn resolve_embedded(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let Some(close) = tail.find('}') else {
            out.push_str(tail);
            return Ok(out);
        };
        let whole = &tail[..=close];
        let value = if let Some(name) = reference(whole, "env") {
            Some(env_secret(name)?)
        } else if let Some(path) = reference(whole, "file") {
            Some(file_secret(path)?)
        } else {
            None
        };
        match value {
            Some(v) => {
                crate::telemetry::redact::register(&v);
                out.push_str(&v);
            }
            None => out.push_str(whole),
        }
        rest = &tail[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Serde helper: a string that may hold secret references. A URL's
/// password and the values of its query parameters named like credentials
/// (`api_key=...`) count as secrets even when written literally.
pub fn embedded<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let raw = String::deserialize(d)?;
    let resolved = resolve_embedded(&raw).map_err(serde::de::Error::custom)?;
    register_url_credentials(&resolved);
    Ok(resolved)
}

/// Registers a URL's password and secret-named query values.
pub fn register_url_credentials(text: &str) {
    let Ok(u) = url::Url::parse(text) else {
        return;
    };
    if let Some(p) = u.password() {
        crate::telemetry::redact::register(p);
    }
    for (k, v) in u.query_pairs() {
        crate::telemetry::redact::register_named(&k, &v);
    }
}

/// Serde helper: a map of strings whose values may hold secret references.
pub fn embedded_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    let raw = std::collections::BTreeMap::<String, String>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| {
            let v = resolve_embedded(&v)
                .map_err(|e| serde::de::Error::custom(format!("`{k}`: {e}")))?;
            crate::telemetry::redact::register_named(&k, &v);
            Ok((k, v))
        })
        .collect()
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
    fn references_inside_a_string_are_resolved_and_registered() {
        std::env::set_var("FERRY_SECRET_TEST_EMBEDDED", "tok-3141");
        let s = resolve_embedded("Bearer ${env:FERRY_SECRET_TEST_EMBEDDED}; ${HOME_NOT_OURS}")
            .expect("resolves");
        assert_eq!(s, "Bearer tok-3141; ${HOME_NOT_OURS}");
        assert_eq!(
            crate::telemetry::redact::scrub(&s),
            "Bearer ***; ${HOME_NOT_OURS}"
        );
        let e = resolve_embedded("x ${env:FERRY_SECRET_TEST_NOT_SET} y").expect_err("unset");
        assert!(e.contains("FERRY_SECRET_TEST_NOT_SET"), "{e}");
    }

    #[test]
    fn malformed_reference_is_refused() {
        assert!(Secret::resolve("${vault:x}").is_err());
    }
}
