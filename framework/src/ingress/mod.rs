//! Receiving pushed events (webhooks): one shared HTTP listener, and what
//! makes an accepted event durable before Ferry answers its sender.
//!
//! A connector that receives pushes implements [`Endpoint`]: given one
//! request (headers, the raw body, the peer), it verifies and routes it and
//! returns the record to write, or why it refuses. The framework owns the
//! rest, the same for every such connector:
//! - the listener ([`listener`]): HTTP or HTTPS, request timeouts, the body
//!   limit, one `path` per connector;
//! - admission before any work ([`admission`]): `accept_rate` per sender IP
//!   or overall (429 with `Retry-After`), content type (415);
//! - deduplication by delivery id over a window that survives a restart
//!   ([`seen`]);
//! - durability ([`lane`]): the sender gets 2xx only once the event is
//!   acknowledged by Kafka (`acks=all`), or, when Kafka is down or slower
//!   than `webhooks.spool.kafka_deadline`, once it is appended to the
//!   connector's spool on disk and fsynced ([`spool`]). A background task
//!   drains the spool to Kafka in arrival order. While the spool holds
//!   anything, new events join it behind the older ones, so one
//!   connector's events reach Kafka in the order they were accepted.
//!
//! Why not the source contract's push form (`SourceRecord::acknowledged`):
//! a source's batch is acknowledged in full before the next `poll`, a
//! barrier every concurrent request would wait behind (one acknowledgement
//! round trip each, in series with the batch before it); and when Kafka is
//! late, a pushed event must go to the spool, which a source cannot do.
//! Here each request waits for its own acknowledgement while the others
//! are in flight.
//!
//! What a crash can cost: nothing that was answered 2xx. An event whose
//! acknowledgement came late may be written twice (once by librdkafka,
//! once from the spool): both copies carry the same envelope `id` and
//! `ferry-delivery-id` header, so consumers can drop the repeat.

pub mod admission;
pub mod config;
pub mod lane;
pub mod listener;
pub mod seen;
pub mod spool;

pub use config::{SpoolConfig, TlsConfig, WebhooksConfig};

use apache_avro::types::Value;
use axum::http::{HeaderMap, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;

/// One request as the endpoint sees it.
#[derive(Debug)]
pub struct Inbound<'a> {
    pub headers: &'a HeaderMap,
    /// The body exactly as received.
    pub body: &'a [u8],
    pub peer: SocketAddr,
    /// Unix seconds when the request arrived.
    pub now: i64,
}

/// What an endpoint makes of an accepted request: one record to write.
#[derive(Debug)]
pub struct Accepted {
    /// The sender's delivery id, when the request carries one: repeats
    /// within the connector's window are answered 2xx and not written again.
    pub delivery_id: Option<String>,
    /// One of the topics the endpoint declared.
    pub topic: String,
    pub key: Option<String>,
    /// The value, in the topic's value schema.
    pub value: Value,
    /// Extra Kafka headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The media type of the body.
    pub content_type: String,
    /// The event's id (returned to the sender).
    pub event_id: String,
    /// The event type, for logs.
    pub event_type: String,
    /// From [`correlation_id`]: returned to the sender, carried in the
    /// `ferry-correlation-id` header and in logs.
    pub correlation_id: String,
}

/// Why an endpoint refused a request. Each is answered with its status and
/// a terse reason that tells an attacker nothing about secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// 401: a missing, malformed or wrong signature, or a timestamp out of
    /// tolerance. `reason` is a metric label (a bounded set).
    Unauthorized { reason: &'static str },
    /// 400: the body or a header the endpoint needs is malformed.
    BadRequest { why: String },
    /// 422: an event type no route takes.
    UnknownType { event_type: String },
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::UnknownType { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

/// A connector that receives pushed requests.
pub trait Endpoint: Send + Sync + 'static {
    /// Verifies and routes one request. Cheap and synchronous: it runs on
    /// the request's task.
    fn receive(&self, request: &Inbound<'_>) -> Result<Accepted, Rejection>;
}

/// A connector's place on the listener, as its factory plans it.
#[derive(Clone)]
pub struct Mount {
    /// The request path it is served on, e.g. `/webhooks/github`.
    pub path: String,
    /// Media types accepted (`application/json` also takes
    /// `application/*+json`); anything else is answered 415.
    pub content_types: Vec<String>,
    pub accept_rate: Option<admission::AcceptRate>,
    /// How long a delivery id is remembered.
    pub dedup_window: std::time::Duration,
    /// The most delivery ids remembered.
    pub dedup_max: usize,
    pub endpoint: Arc<dyn Endpoint>,
}

impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mount")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The correlation id of a request: the trace id of a valid W3C
/// `traceparent`, else `X-Request-Id` (printable, at most 128 bytes), else
/// the delivery id, else a new UUID.
pub fn correlation_id(headers: &HeaderMap, delivery_id: Option<&str>) -> String {
    if let Some(trace) = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(trace_id)
    {
        return trace.to_owned();
    }
    if let Some(id) = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| printable(v))
    {
        return id.to_owned();
    }
    match delivery_id.filter(|d| printable(d)) {
        Some(d) => d.to_owned(),
        None => uuid::Uuid::new_v4().to_string(),
    }
}

fn printable(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`),
/// unless it is malformed or all zeros.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    let ok = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0')
        && (version != "00" || parts.next().is_none());
    ok.then_some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_valid_traceparent_gives_the_correlation_id() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        h.insert("x-request-id", HeaderValue::from_static("req-1"));
        assert_eq!(
            correlation_id(&h, Some("d")),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            assert_eq!(trace_id(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        /// Any header text: no panic, and the id is always printable and
        /// bounded (it goes into a response header and a Kafka header).
        #[test]
        fn any_header_gives_a_usable_correlation_id(tp in ".*", rid in ".*", d in proptest::option::of(".*")) {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&tp) {
                h.insert("traceparent", v);
            }
            if let Ok(v) = HeaderValue::from_str(&rid) {
                h.insert("x-request-id", v);
            }
            let id = correlation_id(&h, d.as_deref());
            proptest::prop_assert!(printable(&id), "{id:?}");
            proptest::prop_assert!(HeaderValue::from_str(&id).is_ok());
        }
    }

    #[test]
    fn then_the_request_id_then_the_delivery_id() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("req-1"));
        assert_eq!(correlation_id(&h, Some("d")), "req-1");
        let h = HeaderMap::new();
        assert_eq!(correlation_id(&h, Some("msg_1")), "msg_1");
        assert_eq!(correlation_id(&h, Some("has space")).len(), 36);
        assert_eq!(correlation_id(&h, None).len(), 36);
    }
}
