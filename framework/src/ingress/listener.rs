//! The webhook listener: one HTTP(S) server for every push connector, each
//! on its own path. It owns what is the same for all of them, in this
//! order, cheapest refusal first: path and method, `accept_rate` (429),
//! content type (415), body size (413) and time (408), then the endpoint's
//! own checks (401, 400, 422), then the delivery-id window (a repeat is
//! answered 200 and not written again), then durability through the
//! connector's [`Lane`] (200 from Kafka, 202 from the spool, 503 when
//! neither can take it).
//!
//! Once an event passed every check, storing it runs on a task of its own:
//! a sender that hangs up cannot interrupt it half-way.

use super::admission::Admission;
use super::lane::{Lane, Stored, Unavailable};
use super::seen::Seen;
use super::{Inbound, Mount, Rejection, TlsConfig, WebhooksConfig};
use crate::kafka::OutgoingRecord;
use crate::runtime::headers;
use crate::runtime::target::{Encoded, SourceTarget};
use crate::runtime::Shutdown;
use crate::telemetry::metrics as m;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::task::JoinHandle;

/// The listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("webhooks: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("webhooks.tls: {0}")]
    Tls(String),
}

/// One connector as the listener serves it.
pub struct Served {
    pub name: String,
    pub mount: Mount,
    pub lane: Arc<Lane>,
    pub seen: Arc<Mutex<Seen>>,
    /// The topics the endpoint may route to, with their value schemas.
    pub targets: HashMap<String, SourceTarget>,
}

struct Route {
    served: Served,
    admission: Option<Admission>,
    /// Delivery ids being stored right now: a concurrent repeat is answered
    /// 409, so two copies are never stored at once.
    in_flight: Mutex<HashSet<String>>,
}

#[derive(Clone)]
struct App {
    routes: Arc<HashMap<String, Arc<Route>>>,
    /// Requests being handled at once, over every connector: what bounds
    /// the memory bodies take (`max_in_flight` x `body_limit`).
    permits: Arc<tokio::sync::Semaphore>,
    body_limit: usize,
    request_timeout: Duration,
}

/// The bound socket and what to serve on it.
pub struct Listener {
    socket: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    config: WebhooksConfig,
}

impl Listener {
    /// Binds `webhooks.listen` and loads the TLS certificate, so a port in
    /// use or a bad certificate fails at startup.
    pub fn bind(config: &WebhooksConfig) -> Result<Self, ListenError> {
        let addr = config.listen;
        let socket = std::net::TcpListener::bind(addr)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|source| ListenError::Bind { addr, source })?;
        let tls = config.tls.as_ref().map(server_config).transpose()?;
        Ok(Self {
            socket,
            tls,
            config: config.clone(),
        })
    }

    /// The address it listens on (the port, when `listen` asked for 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr().ok()
    }

    /// Serves `served` until `shutdown`; then finishes the requests in
    /// progress within `drain`.
    pub fn serve(self, served: Vec<Served>, shutdown: Shutdown, drain: Duration) -> JoinHandle<()> {
        let routes = served
            .into_iter()
            .map(|s| {
                let admission = s.mount.accept_rate.clone().map(Admission::new);
                (
                    s.mount.path.clone(),
                    Arc::new(Route {
                        served: s,
                        admission,
                        in_flight: Mutex::new(HashSet::new()),
                    }),
                )
            })
            .collect();
        let app = App {
            routes: Arc::new(routes),
            permits: Arc::new(tokio::sync::Semaphore::new(self.config.max_in_flight)),
            body_limit: self.config.body_limit,
            request_timeout: self.config.request_timeout,
        };
        let router = Router::new()
            .fallback(dispatch)
            .with_state(app)
            .into_make_service_with_connect_info::<SocketAddr>();
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            stopper.graceful_shutdown(Some(drain));
        });
        let timeout = self.config.request_timeout;
        let addr = self.config.listen;
        tokio::spawn(async move {
            let served = match self.tls {
                Some(tls) => {
                    let mut server = axum_server::from_tcp_rustls(
                        self.socket,
                        axum_server::tls_rustls::RustlsConfig::from_config(tls),
                    )
                    .handle(handle);
                    header_timeout(server.http_builder(), timeout);
                    server.serve(router).await
                }
                None => {
                    let mut server = axum_server::from_tcp(self.socket)
                        .acceptor(RefuseH2c { within: timeout })
                        .handle(handle);
                    header_timeout(server.http_builder(), timeout);
                    server.serve(router).await
                }
            };
            if let Err(e) = served {
                tracing::error!(%addr, error = %e, "webhook listener stopped");
            }
        })
    }
}

/// A sender must send its request's headers within `timeout` (HTTP/1).
fn header_timeout(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    timeout: Duration,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeout);
}

/// The plain port's acceptor: refuses HTTP/2 with prior knowledge (h2c).
/// Webhook senders speak HTTP/1.1, and hyper's header-read timeout (the
/// guard against slow senders) is an HTTP/1 setting: an h2c connection
/// would escape it. (hyper-util's `http1_only` is not honoured by the
/// upgrade-capable connection axum-server serves, hence a look at the
/// first bytes here.) A connection that sends nothing within `within` is
/// dropped too.
#[derive(Debug, Clone, Copy)]
struct RefuseH2c {
    within: Duration,
}

/// The start of HTTP/2's connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

impl<S: Send + 'static> axum_server::accept::Accept<tokio::net::TcpStream, S> for RefuseH2c {
    type Stream = tokio::net::TcpStream;
    type Service = S;
    type Future = futures::future::BoxFuture<'static, std::io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        let within = self.within;
        Box::pin(async move {
            let mut head = [0u8; H2_PREFACE.len()];
            let deadline = tokio::time::Instant::now() + within;
            loop {
                let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut head)).await;
                let n = match peeked {
                    Ok(read) => read?,
                    Err(_) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no request within the request timeout",
                        ))
                    }
                };
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                if !H2_PREFACE.starts_with(&head[..n]) {
                    return Ok((stream, service));
                }
                if n == H2_PREFACE.len() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "HTTP/2 with prior knowledge is not served: webhooks are HTTP/1.1",
                    ));
                }
                // A prefix of the preface so far: wait for more bytes.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    }
}

/// rustls' server config from the PEM files, with the ring provider.
fn server_config(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, ListenError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| ListenError::Tls(format!("cert {}: {e}", tls.cert.display())))?;
    if certs.is_empty() {
        return Err(ListenError::Tls(format!(
            "cert {}: no certificate in the file",
            tls.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| ListenError::Tls(format!("key {}: {e}", tls.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ListenError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            ListenError::Tls(format!(
                "cert {} and key {}: {e}",
                tls.cert.display(),
                tls.key.display()
            ))
        })?;
    // HTTP/1.1 only: senders of webhooks speak it, and hyper's header-read
    // timeout (the guard against slow senders) is an HTTP/1 setting.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An answer, with the outcome counted.
struct Answer {
    status: StatusCode,
    outcome: &'static str,
    reason: &'static str,
    body: serde_json::Value,
    retry_after: Option<Duration>,
    correlation_id: Option<String>,
}

impl Answer {
    fn refuse(status: StatusCode, outcome: &'static str, message: &str) -> Self {
        Self {
            status,
            outcome,
            reason: "none",
            body: serde_json::json!({ "error": message }),
            retry_after: None,
            correlation_id: None,
        }
    }
}

async fn dispatch(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = tokio::time::Instant::now();
    // What the sender sent (traceparent, X-Request-Id): refusals are
    // answered and logged with it; an accepted event may fall back to its
    // delivery id, known once the endpoint has read the request.
    let sent = super::correlation_id(&headers, None);
    let with_id = |mut response: Response, id: &str| {
        if let Ok(v) = HeaderValue::from_str(id) {
            response.headers_mut().insert("x-correlation-id", v);
        }
        response
    };
    let Some(route) = app.routes.get(uri.path()).cloned() else {
        let r = (StatusCode::NOT_FOUND, "no webhook is served here\n").into_response();
        return with_id(r, &sent);
    };
    if method != Method::POST {
        let r = (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "POST")],
            "webhooks are POSTed\n",
        )
            .into_response();
        return with_id(r, &sent);
    }
    let answer = match Arc::clone(&app.permits).try_acquire_owned() {
        Ok(_permit) => receive(&app, &route, peer, &headers, body, &sent).await,
        Err(_) => {
            let mut a = Answer::refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many requests in progress; retry",
            );
            a.retry_after = Some(Duration::from_secs(1));
            a
        }
    };
    let name = route.served.name.clone();
    metrics::counter!(m::WEBHOOK_REQUESTS_TOTAL, "connector" => name.clone(), "outcome" => answer.outcome, "reason" => answer.reason).increment(1);
    metrics::histogram!(m::WEBHOOK_REQUEST_DURATION_SECONDS, "connector" => name)
        .record(started.elapsed().as_secs_f64());
    let correlation = answer
        .correlation_id
        .clone()
        .unwrap_or_else(|| sent.clone());
    let mut response = with_id(
        (answer.status, axum::Json(answer.body)).into_response(),
        &correlation,
    );
    if let Some(wait) = answer.retry_after {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    response
}

async fn receive(
    app: &App,
    route: &Arc<Route>,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
    correlation_id: &str,
) -> Answer {
    let served = &route.served;
    if let Some(admission) = &route.admission {
        if let Err(wait) = admission.admit(peer.ip()) {
            let mut a = Answer::refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests",
            );
            a.retry_after = Some(wait);
            return a;
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !accepts(&served.mount.content_types, content_type) {
        return Answer::refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            &format!(
                "content type must be one of: {}",
                served.mount.content_types.join(", ")
            ),
        );
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.body_limit as u64) {
        return too_large(app.body_limit);
    }
    let body = match tokio::time::timeout(
        app.request_timeout,
        axum::body::to_bytes(body, app.body_limit),
    )
    .await
    {
        Err(_) => {
            return Answer::refuse(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the body took too long",
            )
        }
        Ok(Err(e)) => {
            // `to_bytes` fails on the limit or on a broken connection.
            let limited = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if limited {
                return too_large(app.body_limit);
            }
            return Answer::refuse(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the body could not be read",
            );
        }
        Ok(Ok(b)) => b,
    };
    let now = crate::schema::envelope::now_millis() / 1000;
    let inbound = Inbound {
        headers,
        body: &body,
        peer,
        now,
    };
    let accepted = match served.mount.endpoint.receive(&inbound) {
        Ok(a) => a,
        Err(rejection) => {
            let status = rejection.status();
            let mut answer = match &rejection {
                Rejection::Unauthorized { reason } => {
                    tracing::info!(connector = %served.name, %peer, correlation_id, reason, "webhook refused: signature");
                    let mut a = Answer::refuse(status, "unauthorized", "unauthorized");
                    a.reason = reason;
                    a
                }
                Rejection::BadRequest { why } => {
                    tracing::info!(connector = %served.name, %peer, correlation_id, why = %why, "webhook refused: malformed");
                    Answer::refuse(status, "bad_request", why)
                }
                Rejection::UnknownType { event_type } => {
                    tracing::info!(connector = %served.name, %peer, correlation_id, event_type = %event_type, "webhook refused: no route for its type");
                    Answer::refuse(
                        status,
                        "unknown_type",
                        &format!("no route for event type `{event_type}`"),
                    )
                }
            };
            answer.correlation_id = None;
            return answer;
        }
    };
    let correlation = accepted.correlation_id.clone();
    let mut answer = store(route, accepted).await;
    answer.correlation_id = Some(correlation);
    answer
}

fn too_large(limit: usize) -> Answer {
    Answer::refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        &format!("the body is larger than {limit} bytes"),
    )
}

/// Whether `content_type` (parameters ignored) is one of `accepted`;
/// `application/json` also takes `application/<anything>+json`.
fn accepts(accepted: &[String], content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    accepted.iter().any(|a| {
        a.eq_ignore_ascii_case(&essence)
            || (a.eq_ignore_ascii_case("application/json")
                && essence.starts_with("application/")
                && essence.ends_with("+json"))
            || a == "*/*"
    })
}

/// Removes a delivery id from the in-flight set however the store ends.
struct InFlight {
    route: Arc<Route>,
    id: Option<String>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.route
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        }
    }
}

async fn store(route: &Arc<Route>, accepted: super::Accepted) -> Answer {
    let served = &route.served;
    let event_id = accepted.event_id.clone();
    let accepted_body = |status: &'static str| serde_json::json!({ "status": status, "id": event_id, "correlation_id": accepted.correlation_id });
    let now_ms = crate::schema::envelope::now_millis();
    let guard = match &accepted.delivery_id {
        Some(id) => {
            // The window is checked while holding the in-flight set, and a
            // store records its id in the window before leaving the set: a
            // repeat sees one or the other, never neither.
            let mut in_flight = route
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let seen = served
                .seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(id, now_ms);
            if seen {
                drop(in_flight);
                tracing::info!(connector = %served.name, delivery_id = %id, "webhook repeat dropped");
                return Answer {
                    status: StatusCode::OK,
                    outcome: "duplicate",
                    reason: "none",
                    body: accepted_body("duplicate"),
                    retry_after: None,
                    correlation_id: None,
                };
            }
            if !in_flight.insert(id.clone()) {
                drop(in_flight);
                let mut a = Answer::refuse(
                    StatusCode::CONFLICT,
                    "in_progress",
                    "this delivery is being stored; retry",
                );
                a.retry_after = Some(Duration::from_secs(1));
                return a;
            }
            drop(in_flight);
            InFlight {
                route: Arc::clone(route),
                id: Some(id.clone()),
            }
        }
        None => InFlight {
            route: Arc::clone(route),
            id: None,
        },
    };
    let Some(target) = served.targets.get(&accepted.topic) else {
        tracing::error!(connector = %served.name, topic = %accepted.topic, "webhook routed to a topic it did not declare");
        return Answer::refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unavailable",
            "internal error",
        );
    };
    let encoded = target.encode(
        &served.name,
        &accepted.value,
        &accepted.correlation_id,
        &accepted.content_type,
    );
    let (topic, payload, mut hs) = match encoded {
        Ok(Encoded::Record { payload, headers }) => (accepted.topic.clone(), payload, headers),
        Ok(Encoded::DeadLetter {
            topic,
            raw,
            headers: hs,
        }) => {
            let reason = crate::runtime::target::dead_letter_reason(&hs);
            // Answered 2xx like any stored event once the dead letter is
            // durable: the sender delivered it; fixing the mapping is ours.
            tracing::warn!(connector = %served.name, correlation_id = %accepted.correlation_id, dead_letter_topic = %topic, error = %reason, "webhook event refused by the mapping; sent to the dead-letter topic");
            (topic, raw, hs)
        }
        Err(e) => {
            tracing::error!(connector = %served.name, topic = %accepted.topic, error = %e, "webhook event does not fit its topic's schema");
            return Answer::refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unavailable",
                "internal error",
            );
        }
    };
    if let Some(id) = &accepted.delivery_id {
        hs.push((headers::DELIVERY_ID.to_owned(), id.clone().into_bytes()));
    }
    hs.extend(accepted.headers.iter().cloned());
    let record_topic = topic.clone();
    let record = OutgoingRecord {
        topic,
        key: accepted.key.clone().map(String::into_bytes),
        payload: Some(payload),
        headers: hs,
        partition: None,
    };
    // On a task of its own: a sender hanging up does not cut it short.
    let (lane, seen, name) = (
        Arc::clone(&served.lane),
        Arc::clone(&served.seen),
        served.name.clone(),
    );
    let delivery_id = accepted.delivery_id.clone();
    let (event_type, correlation) = (accepted.event_type.clone(), accepted.correlation_id.clone());
    let stored = tokio::spawn(async move {
        let stored = lane.store(record).await;
        if let (Ok(_), Some(id)) = (&stored, &delivery_id) {
            // One small write to the OS (no fsync), inline: a hand-off to
            // a blocking thread cost more than the write itself (see
            // BENCHMARKS.md). The rare rewrite of the window's file runs
            // here too.
            let inserted = seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, crate::schema::envelope::now_millis());
            if let Err(e) = inserted {
                tracing::warn!(connector = %name, error = %e, "could not record the delivery id; a repeat of it would be written again");
            }
        }
        drop(guard);
        stored
    })
    .await;
    match stored {
        Ok(Ok(where_)) => {
            if record_topic != accepted.topic {
                // Counted once durable, as a sink's dead letters are.
                metrics::counter!(m::DEAD_LETTERS_TOTAL, "connector" => served.name.clone(), "class" => crate::runtime::dead_letter::Class::Mapping.as_str()).increment(1);
            }
            tracing::debug!(connector = %served.name, event_type = %event_type, correlation_id = %correlation, stored = ?where_, "webhook accepted");
            let (status, outcome, label) = match where_ {
                Stored::Kafka => (StatusCode::OK, "stored_kafka", "stored"),
                Stored::Spool => (StatusCode::ACCEPTED, "stored_spool", "spooled"),
            };
            Answer {
                status,
                outcome,
                reason: "none",
                body: accepted_body(label),
                retry_after: None,
                correlation_id: None,
            }
        }
        Ok(Err(e)) => {
            let retry = match e {
                Unavailable::Full { .. } => Duration::from_secs(30),
                Unavailable::Disk(_) => Duration::from_secs(60),
                Unavailable::Refused { reason, too_large } => {
                    tracing::warn!(connector = %served.name, error = %reason, "webhook refused: Kafka will not take the event");
                    return if too_large {
                        Answer::refuse(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "too_large",
                            "the event is larger than Kafka accepts",
                        )
                    } else {
                        Answer::refuse(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "kafka_refused",
                            "the event cannot be stored",
                        )
                    };
                }
            };
            tracing::warn!(connector = %served.name, error = %e, "webhook not accepted: cannot be made durable");
            let mut a = Answer::refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "temporarily unavailable; retry later",
            );
            a.retry_after = Some(retry);
            a
        }
        Err(e) => {
            tracing::error!(connector = %served.name, error = %e, "webhook store task failed");
            Answer::refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unavailable",
                "internal error",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn any_content_type_is_judged_without_panic(ct in ".*") {
            let json = vec!["application/json".to_owned()];
            let ok = accepts(&json, &ct);
            let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            proptest::prop_assert_eq!(ok, essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json")));
        }
    }

    #[test]
    fn content_types() {
        let json = vec!["application/json".to_owned()];
        assert!(accepts(&json, "application/json"));
        assert!(accepts(&json, "Application/JSON; charset=utf-8"));
        assert!(accepts(&json, "application/vnd.github+json"));
        assert!(!accepts(&json, "text/plain"));
        assert!(!accepts(&json, ""));
        assert!(!accepts(&json, "application/jsonx"));
        let form = vec!["application/x-www-form-urlencoded".to_owned()];
        assert!(accepts(&form, "application/x-www-form-urlencoded"));
        assert!(!accepts(&form, "application/json"));
    }
}
