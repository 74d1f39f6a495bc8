//! Writes records to an HTTP API: one request per record, or one per batch
//! (a JSON array). 2xx is success; anything else is a failure carrying the
//! status, retryable for the `retry.retry_on` statuses. Each request goes
//! through the connector's resilience stack (breaker, rate limit, bulkhead,
//! timeout, retries: `ferry::resilience::stack`); what still fails is
//! reported to the runtime, which retries the batch or dead-letters the
//! record.
//!
//! Redirects are never followed by default: a client following `302` turns
//! a POST into a bodyless GET whose `200` would count as delivered. A 3xx
//! is a permanent failure. With `follow_redirects: true`, `307` and `308`
//! (which keep the method and body, and reqwest re-sends the body) to the
//! same origin are followed; `301`, `302` and `303` still fail.

use super::config::{Body, HttpSinkConfig, IdempotencyKey};
use super::template::{render_body, Template};
use crate::http::auth::Authenticator;
use crate::http::status_error;
use ferry::error::ConnectorError;
use ferry::resilience::{FallbackConfig, Outbound, WhenOpen};
use ferry::sink::{Sink, SinkFailure, SinkRecord};
use serde_json::Value as Json;

pub struct HttpSink {
    name: String,
    cfg: HttpSinkConfig,
    method: reqwest::Method,
    url: Template,
    /// `fallback: { url }`: where a record goes while the target is unavailable.
    fallback_url: Option<Template>,
    headers: Vec<(String, Template)>,
    client: reqwest::Client,
    auth: Authenticator,
    outbound: Outbound,
}

impl HttpSink {
    /// Builds from a validated config (templates already checked).
    pub fn new(
        name: &str,
        cfg: HttpSinkConfig,
        outbound: Outbound,
    ) -> Result<Self, ConnectorError> {
        let method = cfg
            .method
            .to_uppercase()
            .parse::<reqwest::Method>()
            .map_err(|e| ConnectorError::user(format!("method `{}`: {e}", cfg.method)))?;
        let url = Template::parse(&cfg.url).map_err(ConnectorError::user)?;
        let fallback_url = match &outbound.config().fallback {
            Some(FallbackConfig::Url(u)) => Some(Template::parse(u).map_err(ConnectorError::user)?),
            _ => None,
        };
        let headers = cfg
            .headers
            .iter()
            .map(|(k, v)| Ok((k.clone(), Template::parse(v)?)))
            .collect::<Result<Vec<_>, String>>()
            .map_err(ConnectorError::user)?;
        let client = reqwest::Client::builder()
            .timeout(outbound.config().timeout)
            .redirect(redirect_policy(cfg.follow_redirects))
            .build()
            .map_err(|e| ConnectorError::internal(format!("HTTP client: {e}")))?;
        Ok(Self {
            name: name.to_owned(),
            auth: Authenticator::new(cfg.auth.clone()),
            method,
            url,
            fallback_url,
            headers,
            client,
            outbound,
            cfg,
        })
    }

    fn body(&self, r: &SinkRecord) -> Json {
        match &self.cfg.body {
            Body::Value => r.value.clone(),
            Body::Payload => match r.value.get("payload") {
                Some(Json::String(text)) => {
                    serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.clone()))
                }
                Some(other) => other.clone(),
                None => r.value.clone(),
            },
            Body::Template(t) => render_body(t, r),
        }
    }

    fn idempotency_key(&self, records: &[SinkRecord]) -> Option<String> {
        let (first, last) = (records.first()?, records.last()?);
        match &self.cfg.idempotency_key {
            IdempotencyKey::None => None,
            IdempotencyKey::Offset if records.len() == 1 => Some(format!(
                "{}-{}-{}",
                first.topic, first.partition, first.offset
            )),
            IdempotencyKey::Offset => Some(format!(
                "{}-{}-{}-{}",
                first.topic, first.partition, first.offset, last.offset
            )),
            IdempotencyKey::Field(ptr) => {
                let keys: Vec<String> = records
                    .iter()
                    .filter_map(|r| r.value.pointer(ptr))
                    .map(|v| match v {
                        Json::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                (!keys.is_empty()).then(|| keys.join(","))
            }
        }
    }

    /// One request for `records` (one record, or a batch as an array).
    async fn send(&mut self, records: &[SinkRecord], body: Json) -> Result<(), ConnectorError> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        let url = self.url.render(first, true);
        // With a fallback, an open breaker is not waited out: the record
        // goes to the fallback (a URL here, a topic in the runtime).
        let when_open = if self.outbound.config().fallback.is_some() {
            WhenOpen::Skip
        } else {
            WhenOpen::Wait
        };
        match self.send_to(records, &body, &url, when_open).await {
            Err(e) if e.is_retryable() => match &self.fallback_url {
                Some(fallback) => {
                    let fallback = fallback.render(first, true);
                    tracing::warn!(connector = %self.name, at = %first.at(), error = %e, fallback = %ferry::telemetry::redact::url(&fallback), "target unavailable; sending to the fallback URL");
                    self.send_to(records, &body, &fallback, WhenOpen::Wait)
                        .await
                }
                None => Err(e),
            },
            other => other,
        }
    }

    /// One request for `records` to `url`, through the resilience stack.
    async fn send_to(
        &mut self,
        records: &[SinkRecord],
        body: &Json,
        url: &str,
        when_open: WhenOpen,
    ) -> Result<(), ConnectorError> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        let what = format!("connector `{}`: {}", self.name, self.method);
        let target = url::Url::parse(url).map_err(|e| {
            ConnectorError::user(format!(
                "{what} {}: not a URL: {e}",
                ferry::telemetry::redact::url(url)
            ))
        })?;
        for attempt in 0..2 {
            let mut req = self
                .client
                .request(self.method.clone(), target.clone())
                .header("x-correlation-id", first.correlation_id.as_str());
            if self.method != reqwest::Method::GET && self.method != reqwest::Method::DELETE {
                req = req.json(body);
            }
            for (k, t) in &self.headers {
                req = req.header(k.as_str(), t.render(first, false));
            }
            if let Some(key) = self.idempotency_key(records) {
                req = req.header("idempotency-key", key);
            }
            let request = self
                .auth
                .apply(&self.client, req)
                .await?
                .build()
                .map_err(|e| {
                    ConnectorError::user(format!("{what}: cannot build the request: {e}"))
                })?;
            let client = &self.client;
            let reply = self
                .outbound
                .call(&target, when_open, || {
                    crate::http::attempt(client, &request, None, &what)
                })
                .await
                .map_err(ferry::resilience::CallError::into_connector_error)?;
            let status = reply.status;
            if (200..300).contains(&status) {
                return Ok(());
            }
            if (300..400).contains(&status) {
                let hint = if matches!(status, 307 | 308) && !self.cfg.follow_redirects {
                    "; set `follow_redirects: true` to follow 307/308, which re-send the body"
                } else {
                    ""
                };
                return Err(ConnectorError::http_status(
                    status,
                    format!(
                        "{what} {}: HTTP {status}, a redirect to {}, not followed: the record is not delivered{hint}",
                        ferry::telemetry::redact::url(url),
                        ferry::telemetry::redact::url(reply.location())
                    ),
                ));
            }
            if status == 401 {
                if attempt == 0 && self.cfg.auth.is_some() {
                    // A fresh token first (OAuth2), then it is the credentials.
                    self.auth.invalidate();
                    continue;
                }
                // Not this record's fault: every record would get the same.
                return Err(status_error(&what, url, status, &reply.text(), false).for_connector());
            }
            return Err(status_error(
                &what,
                url,
                status,
                &reply.text(),
                self.outbound.retries(status),
            ));
        }
        Err(ConnectorError::internal(format!(
            "{}: the request was not sent",
            ferry::telemetry::redact::url(url)
        )))
    }
}

/// No redirects; or, opted in, only those that re-send method and body.
fn redirect_policy(follow: bool) -> reqwest::redirect::Policy {
    if !follow {
        return reqwest::redirect::Policy::none();
    }
    reqwest::redirect::Policy::custom(|attempt| {
        let keeps_body = matches!(attempt.status().as_u16(), 307 | 308);
        // Only to the same origin: configured headers may carry credentials
        // that another host must not get.
        let same_origin = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if keeps_body && same_origin && attempt.previous().len() < MAX_REDIRECTS {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// Redirect hops followed at most (opted in).
const MAX_REDIRECTS: usize = 5;

impl Sink for HttpSink {
    async fn write(&mut self, batch: &[SinkRecord]) -> Result<(), SinkFailure> {
        if self.cfg.batch.is_some() {
            let body = Json::Array(batch.iter().map(|r| self.body(r)).collect());
            return self
                .send(batch, body)
                .await
                .map_err(|e| SinkFailure::batch(batch.len(), e));
        }
        for (i, r) in batch.iter().enumerate() {
            let body = self.body(r);
            self.send(std::slice::from_ref(r), body)
                .await
                .map_err(|error| SinkFailure::at(batch.len(), i, error))?;
        }
        Ok(())
    }
}
