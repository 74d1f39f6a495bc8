//! What HTTP connectors share: authentication and the error mapping from a
//! response or a transport failure to a classified `ConnectorError`.

pub mod auth;

use ferry::error::ConnectorError;
use ferry::telemetry::redact;

/// A transport failure (no answer): the peer may come back. The URL is
/// printed through the redaction policy, and reqwest's own text (which
/// repeats the URL with its query) is scrubbed.
pub fn transport_error(what: &str, url: &str, e: &reqwest::Error) -> ConnectorError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // reqwest's Display names the URL; print the cause chain without it.
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    let cause = if cause.is_empty() {
        e.to_string()
    } else {
        cause
    };
    ConnectorError::external(format!(
        "{what} {}: {kind}: {}",
        redact::url(url),
        redact::scrub(&cause)
    ))
}

/// A non-2xx answer: retryable for 408, 429 and 5xx; otherwise the request
/// itself is wrong. The answer's body is kept, scrubbed and cut to 200
/// characters, because it usually says what is wrong.
pub fn status_error(what: &str, url: &str, status: u16, body: &str) -> ConnectorError {
    let excerpt: String = redact::scrub(body).chars().take(200).collect();
    ConnectorError::http_status(
        status,
        format!("{what} {}: HTTP {status}: {excerpt}", redact::url(url)),
    )
}

/// Where a redirect answer points (`nowhere` without a `Location`).
pub fn location(resp: &reqwest::Response) -> &str {
    resp.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("nowhere")
}

/// Reads a response body, refusing one larger than `limit` bytes (a
/// permanent failure: the same answer will be as large next time).
pub async fn read_capped(
    mut resp: reqwest::Response,
    limit: usize,
    what: &str,
    url: &str,
) -> Result<Vec<u8>, ConnectorError> {
    let too_large = || {
        ConnectorError::user(format!(
            "{what} {}: the answer is larger than {limit} bytes (max_response_bytes); raise it, or ask for smaller pages",
            redact::url(url)
        ))
    };
    if resp
        .content_length()
        .is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX))
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport_error(what, url, &e))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads at most `limit` bytes of an error answer's body, for the message.
pub async fn error_excerpt(mut resp: reqwest::Response, limit: usize) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= limit {
            body.truncate(limit);
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// Deserializes a map whose values may be written as strings, numbers or
/// booleans (`limit: 10`), keeping them as text for headers and queries.
/// Values may hold secret references (`Bearer ${env:TOKEN}`).
pub fn scalar_map<'de, D>(d: D) -> Result<std::collections::BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    use serde::Deserialize;
    let raw = std::collections::BTreeMap::<String, serde_json::Value>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => {
                let s = ferry::config::secret::resolve_embedded(&s)
                    .map_err(|e| D::Error::custom(format!("`{k}`: {e}")))?;
                // `api_key: literal` or `Authorization: Bearer literal`.
                redact::register_named(&k, &s);
                Ok((k, s))
            }
            serde_json::Value::Number(n) => {
                let n = n.to_string();
                redact::register_named(&k, &n);
                Ok((k, n))
            }
            serde_json::Value::Bool(b) => Ok((k, b.to_string())),
            other => Err(D::Error::custom(format!(
                "`{k}`: expected text, a number or a boolean, found {other}"
            ))),
        })
        .collect()
}
