//! What HTTP connectors share: authentication and the error mapping from a
//! response or a transport failure to a classified `ConnectorError`.

pub mod auth;

use ferry::error::ConnectorError;

/// A transport failure (no answer): the peer may come back.
pub fn transport_error(what: &str, url: &str, e: &reqwest::Error) -> ConnectorError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    ConnectorError::external(format!("{what} {url}: {kind}: {e}"))
}

/// A non-2xx answer: retryable for 408, 429 and 5xx; otherwise the request
/// itself is wrong. Only the first 200 characters of the body are kept.
pub fn status_error(what: &str, url: &str, status: u16, body: &str) -> ConnectorError {
    let excerpt: String = body.chars().take(200).collect();
    ConnectorError::http_status(status, format!("{what} {url}: HTTP {status}: {excerpt}"))
}

/// Deserializes a map whose values may be written as strings, numbers or
/// booleans (`limit: 10`), keeping them as text for headers and queries.
pub fn scalar_map<'de, D>(d: D) -> Result<std::collections::BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    use serde::Deserialize;
    let raw = std::collections::BTreeMap::<String, serde_json::Value>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            serde_json::Value::Number(n) => Ok((k, n.to_string())),
            serde_json::Value::Bool(b) => Ok((k, b.to_string())),
            other => Err(D::Error::custom(format!(
                "`{k}`: expected text, a number or a boolean, found {other}"
            ))),
        })
        .collect()
}
