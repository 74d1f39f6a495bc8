//! What HTTP connectors share: authentication, one attempt of a call as the
//! resilience stack sees it ([`Reply`], [`attempt`]), and the error mapping
//! from an answer or a transport failure to a classified `ConnectorError`.

pub mod auth;

use ferry::resilience::Answer;
use reqwest::header::HeaderMap;

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

/// A non-2xx answer: retryable when `retryable` (the connector's
/// `retry.retry_on`), otherwise the request itself is wrong. The answer's
/// body is kept, scrubbed and cut to 200 characters, because it usually
/// says what is wrong.
pub fn status_error(
    what: &str,
    url: &str,
    status: u16,
    body: &str,
    retryable: bool,
) -> ConnectorError {
    let excerpt: String = redact::scrub(body).chars().take(200).collect();
    let mut e = ConnectorError::http_status(
        status,
        format!("{what} {}: HTTP {status}: {excerpt}", redact::url(url)),
    );
    if retryable {
        e.retry = ferry::error::Retry::WithBackoff;
        e.domain = ferry::error::Domain::External;
    } else {
        e.retry = ferry::error::Retry::No;
        e.domain = ferry::error::Domain::User;
    }
    e
}

/// An answer, read within the attempt (so the per-attempt timeout covers
/// a slow body too).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    /// Where the answer came from (after redirects).
    pub url: String,
    /// The body: all of it for a 2xx when asked for, else an excerpt of an
    /// error answer.
    pub body: Vec<u8>,
}

impl Answer for Reply {
    fn status(&self) -> u16 {
        self.status
    }
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

impl Reply {
    /// `Location`, or `nowhere`.
    pub fn location(&self) -> &str {
        self.headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("nowhere")
    }

    /// The body as text (lossy), for error messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One attempt: sends a copy of `request` and reads the answer: a 2xx body
/// in full up to `body_limit` (`None`: not read), any other body up to 4 KiB.
pub async fn attempt(
    client: &reqwest::Client,
    request: &reqwest::Request,
    body_limit: Option<usize>,
    what: &str,
) -> Result<Reply, ConnectorError> {
    let url = request.url().to_string();
    let copy = request.try_clone().ok_or_else(|| {
        ConnectorError::internal(format!(
            "{what} {}: the request cannot be repeated",
            redact::url(&url)
        ))
    })?;
    let resp = client
        .execute(copy)
        .await
        .map_err(|e| transport_error(what, &url, &e))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let final_url = resp.url().to_string();
    let body = match body_limit {
        Some(limit) if (200..300).contains(&status) => read_capped(resp, limit, what, &url).await?,
        None if (200..300).contains(&status) => Vec::new(),
        _ => error_excerpt(resp, 4096).await.into_bytes(),
    };
    Ok(Reply {
        status,
        headers,
        url: final_url,
        body,
    })
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

#[cfg(test)]
pub mod tests_support {
    use ferry::resilience::{Outbound, ResilienceConfig};
    use std::num::NonZeroU32;
    use std::time::Duration;

    /// A stack that retries once, at once: connector tests see failures
    /// as they happen (the stack's own behaviour is tested in `ferry`).
    pub fn quick_outbound() -> Outbound {
        let mut cfg = ResilienceConfig::default();
        cfg.retry.max_attempts = NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN);
        cfg.retry.initial_backoff = Duration::from_millis(1);
        cfg.retry.max_backoff = Duration::from_millis(5);
        Outbound::new("test", &cfg)
    }
}
