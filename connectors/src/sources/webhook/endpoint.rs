//! What the webhook connector does with one request: verify it, read its
//! event type, delivery id and key, pick the topic, and build the event
//! envelope with the body exactly as received.

use super::config::{Locator, RouteRule};
use super::verify::Verifier;
use axum::http::{header, HeaderMap, HeaderName};
use ferry::ingress::{Accepted, Endpoint, Inbound, Rejection};
use ferry::schema::envelope::EventEnvelope;
use std::collections::HashMap;

/// The longest delivery id or key taken (they are stored and logged).
const MAX_ID_BYTES: usize = 1024;

/// The event type of a sender that does not say.
pub const DEFAULT_EVENT_TYPE: &str = "webhook";

/// One webhook connector's endpoint.
#[derive(Debug)]
pub struct WebhookEndpoint {
    pub name: String,
    pub verifier: Verifier,
    pub routes: Vec<RouteRule>,
    pub default_topic: Option<String>,
    pub event_type: Option<Locator>,
    pub delivery_id: Option<Locator>,
    pub key: Option<Locator>,
    /// Headers copied into `attributes`, lower-case.
    pub keep_headers: Vec<HeaderName>,
}

impl WebhookEndpoint {
    fn needs_json(&self) -> bool {
        [&self.event_type, &self.delivery_id, &self.key]
            .iter()
            .any(|l| matches!(l, Some(Locator::Pointer(_))))
    }

    /// The topic for `event_type`: the first matching route, else the
    /// default topic.
    pub fn route(&self, event_type: &str) -> Option<&str> {
        self.routes
            .iter()
            .find(|r| glob(&r.event_type, event_type))
            .map(|r| r.topic.as_str())
            .or(self.default_topic.as_deref())
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

/// Reads a locator's value: a header (valid UTF-8), or a JSON string or
/// number at a pointer. `Err` names what is malformed.
fn locate(
    locator: &Locator,
    headers: &HeaderMap,
    json: Option<&serde_json::Value>,
) -> Result<Option<String>, String> {
    match locator {
        Locator::Header(name) => match headers.get(name.as_str()) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.trim().to_owned()))
                .map_err(|_| format!("header `{name}` is not text")),
        },
        Locator::Pointer(pointer) => match json.and_then(|j| j.pointer(pointer)) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(format!("`{pointer}` in the body is not a string or number")),
        },
    }
}

fn describe(locator: &Locator) -> String {
    match locator {
        Locator::Header(h) => format!("header `{h}`"),
        Locator::Pointer(p) => format!("`{p}` in the body"),
    }
}

impl Endpoint for WebhookEndpoint {
    fn receive(&self, request: &Inbound<'_>) -> Result<Accepted, Rejection> {
        let headers = request.headers;
        self.verifier
            .verify(headers, request.body, request.now)
            .map_err(|r| Rejection::Unauthorized { reason: r.reason() })?;
        let bad = |why: String| Rejection::BadRequest { why };
        let json = if self.needs_json() {
            Some(
                serde_json::from_slice::<serde_json::Value>(request.body)
                    .map_err(|e| bad(format!("the body is not JSON: {e}")))?,
            )
        } else {
            None
        };
        let json = json.as_ref();
        let event_type = match &self.event_type {
            Some(l) => locate(l, headers, json)
                .map_err(bad)?
                .filter(|t| !t.is_empty())
                .ok_or_else(|| bad(format!("no event type in {}", describe(l))))?,
            None => DEFAULT_EVENT_TYPE.to_owned(),
        };
        let topic = self
            .route(&event_type)
            .ok_or_else(|| Rejection::UnknownType {
                event_type: event_type.chars().take(200).collect(),
            })?
            .to_owned();
        let delivery_id = match &self.delivery_id {
            Some(l) => {
                let id = locate(l, headers, json)
                    .map_err(bad)?
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| bad(format!("no delivery id in {}", describe(l))))?;
                if id.len() > MAX_ID_BYTES {
                    return Err(bad(format!(
                        "the delivery id is longer than {MAX_ID_BYTES} bytes"
                    )));
                }
                Some(id)
            }
            None => None,
        };
        let key = match &self.key {
            Some(l) => {
                let k = locate(l, headers, json).map_err(bad)?;
                if k.as_ref().is_some_and(|k| k.len() > MAX_ID_BYTES) {
                    return Err(bad(format!("the key is longer than {MAX_ID_BYTES} bytes")));
                }
                k
            }
            None => None,
        };
        let correlation_id = ferry::ingress::correlation_id(headers, delivery_id.as_deref());
        let id = delivery_id.as_deref().map_or_else(uuid::Uuid::new_v4, |d| {
            EventEnvelope::delivery_event_id(&self.name, d)
        });
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let mut attributes = HashMap::new();
        if let Some(d) = &delivery_id {
            attributes.insert("delivery_id".to_owned(), d.clone());
        }
        for name in &self.keep_headers {
            if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
                attributes.insert(name.as_str().to_owned(), v.to_owned());
            }
        }
        let mut extra = Vec::new();
        if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
            if ferry::ingress::trace_id(tp).is_some() {
                extra.push(("traceparent".to_owned(), tp.as_bytes().to_vec()));
            }
        }
        let envelope = EventEnvelope {
            id,
            source: self.name.clone(),
            event_type: event_type.clone(),
            occurred_at: None,
            received_at: ferry::schema::envelope::now_millis(),
            correlation_id: correlation_id.clone(),
            content_type: content_type.clone(),
            payload: request.body.to_vec(),
            attributes,
        };
        Ok(Accepted {
            delivery_id,
            topic,
            key,
            value: envelope.into_value(),
            headers: extra,
            content_type,
            event_id: id.to_string(),
            event_type,
            correlation_id,
        })
    }
}

/// Headers never copied into attributes, whatever `keep_headers` says.
pub const NEVER_KEPT: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "webhook-signature",
    "x-hub-signature",
    "x-hub-signature-256",
    "stripe-signature",
    "x-shopify-hmac-sha256",
];
