//! A fake third-party HTTP API for the sink fault suites: it records every
//! request it gets and answers by route (and, on `/ok`, by key), so a test
//! can make a target that redirects, refuses one record, or echoes secrets.
//!
//! Routes (every method):
//! - `/ok/{key}`: 204, unless `key` is in the refused set (then 400), the
//!   unavailable set (then 503) or the unauthorized set (then 401).
//! - `/redirect/{key}`: 302 to `/elsewhere/{key}`.
//! - `/r307/{key}`: 307 to `/ok/{key}` (a client may re-send the body).
//! - `/elsewhere/{key}`: 200 (a redirect's landing page).
//! - `/echo/{key}`: 500, with the request's query and its `authorization`
//!   and `x-*` headers in the body.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: String,
}

#[derive(Default)]
struct Inner {
    seen: Mutex<Vec<Seen>>,
    refused: Mutex<BTreeSet<String>>,
    unavailable: Mutex<BTreeSet<String>>,
    unauthorized: Mutex<BTreeSet<String>>,
    /// Keys `/ok` answered 204 for, in arrival order.
    accepted: Mutex<Vec<String>>,
}

/// The fake, served on a port of its own.
pub struct FakeTarget {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeTarget {
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/ok/{key}", any(ok))
            .route("/redirect/{key}", any(redirect))
            .route("/r307/{key}", any(redirect_307))
            .route("/elsewhere/{key}", any(elsewhere))
            .route("/echo/{key}", any(echo))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake target");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, inner, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `/ok/{key}` answers 400 for these keys.
    pub fn refuse(&self, key: &str) {
        self.inner
            .refused
            .lock()
            .expect("lock")
            .insert(key.to_owned());
    }

    /// `/ok/{key}` accepts this key again.
    pub fn allow(&self, key: &str) {
        self.inner.refused.lock().expect("lock").remove(key);
    }

    /// `/ok/{key}` answers 503 for this key (until `available`).
    pub fn unavailable(&self, key: &str) {
        self.inner
            .unavailable
            .lock()
            .expect("lock")
            .insert(key.to_owned());
    }

    /// `/ok/{key}` answers 401 for this key (credentials refused).
    pub fn unauthorized(&self, key: &str) {
        self.inner
            .unauthorized
            .lock()
            .expect("lock")
            .insert(key.to_owned());
    }

    /// `/ok/{key}` stops answering 503 for this key.
    pub fn available(&self, key: &str) {
        self.inner.unavailable.lock().expect("lock").remove(key);
    }

    /// Every request, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().expect("lock").clone()
    }

    /// Keys `/ok` accepted (204), in arrival order.
    pub fn delivered(&self) -> Vec<String> {
        self.inner.accepted.lock().expect("lock").clone()
    }

    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn record(inner: &Inner, method: &Method, uri: &Uri, body: &Bytes) {
    inner.seen.lock().expect("lock").push(Seen {
        method: method.to_string(),
        path: uri.path().to_owned(),
        body: String::from_utf8_lossy(body).into_owned(),
    });
}

async fn ok(
    State(inner): State<Arc<Inner>>,
    Path(key): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> StatusCode {
    record(&inner, &method, &uri, &body);
    if inner.refused.lock().expect("lock").contains(&key) {
        StatusCode::BAD_REQUEST
    } else if inner.unavailable.lock().expect("lock").contains(&key) {
        StatusCode::SERVICE_UNAVAILABLE
    } else if inner.unauthorized.lock().expect("lock").contains(&key) {
        StatusCode::UNAUTHORIZED
    } else {
        inner.accepted.lock().expect("lock").push(key);
        StatusCode::NO_CONTENT
    }
}

async fn redirect(
    State(inner): State<Arc<Inner>>,
    Path(key): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    record(&inner, &method, &uri, &body);
    (
        StatusCode::FOUND,
        [("location", format!("/elsewhere/{key}"))],
    )
        .into_response()
}

async fn redirect_307(
    State(inner): State<Arc<Inner>>,
    Path(key): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    record(&inner, &method, &uri, &body);
    (
        StatusCode::TEMPORARY_REDIRECT,
        [("location", format!("/ok/{key}"))],
    )
        .into_response()
}

async fn elsewhere(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> StatusCode {
    record(&inner, &method, &uri, &body);
    StatusCode::OK
}

async fn echo(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&inner, &method, &uri, &body);
    // The query and the credential-like headers first, so they are in any
    // excerpt of the body a client keeps.
    let mut text = format!("query: {}\n", uri.query().unwrap_or_default());
    let mut sensitive: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.as_str() == "authorization" || k.as_str().starts_with("x-"))
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    sensitive.sort();
    for (k, v) in sensitive {
        text.push_str(&format!("{k}: {v}\n"));
    }
    (StatusCode::INTERNAL_SERVER_ERROR, text).into_response()
}
