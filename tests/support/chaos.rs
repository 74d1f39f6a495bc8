//! A fault-injecting HTTP/1.1 proxy for end-to-end tests, and a rate-limit
//! referee to put behind it.
//!
//! [`ChaosProxy`] stands between `ferry` and a fake third-party API (the
//! *upstream*): configure the connector with [`ChaosProxy::url`], then
//! [`ChaosProxy::set`] a [`Fault`] to make the path to the API slow, failing,
//! resetting or silent, and check what the proxy saw ([`ChaosProxy::seen`])
//! against what the API got. A fault applies to requests read after it is
//! set; a request already read keeps the fault it was read under.
//!
//! [`LimitedApi`] is an upstream that enforces a fixed-window rate limit and
//! advertises it the way real APIs do (`X-RateLimit-*`, `Retry-After` on
//! `429`), counting every request over the limit as a violation: the referee
//! for "Ferry never exceeds the API's limit".
//!
//! Limits of the proxy (a test double, not a production proxy):
//! - Clear-text HTTP/1.x only: no TLS, no `CONNECT`, no upgrades (WebSocket,
//!   h2c), no HTTP/2.
//! - Request bodies need a `Content-Length`; a request with
//!   `Transfer-Encoding` (a chunked body) is answered `501` and its
//!   connection closed.
//! - Clients may keep their connection alive, but every request goes
//!   upstream on a fresh connection with `Connection: close`, and the answer
//!   is read to EOF and buffered whole before the client gets it, re-framed
//!   with `Content-Length` (a chunked answer is de-chunked, trailers
//!   dropped). Answers that stream (server-sent events, long polls) arrive
//!   all at once, and only when the upstream closes.
//! - Faults are wall-clock: `tokio::time::pause` does not speed them up in a
//!   test that also does real network I/O.
//! - [`Fault::Latency`] delays a request even if its client gives up
//!   meanwhile: the upstream still gets it, as over a slow network.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// A request head larger than this is answered `431`.
const MAX_HEAD: usize = 64 * 1024;
/// A request body larger than this is answered `413`.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// What the proxy does with the requests it reads.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Forward as is.
    None,
    /// Wait this long before forwarding.
    Latency(Duration),
    /// Answer the next `count` requests (`None` = every request) with
    /// `status` without forwarding, adding `Retry-After: <retry_after>` when
    /// set (the value verbatim: `"2"` or an HTTP date). After `count`
    /// requests the proxy forwards again (as [`Fault::None`]).
    Status {
        status: u16,
        count: Option<u32>,
        retry_after: Option<String>,
    },
    /// Read the request, then reset the connection (TCP RST) without
    /// answering and without forwarding.
    Reset,
    /// Read the request, then never answer and never forward: the connection
    /// stays open until the proxy stops.
    BlackHole,
    /// Forward, then send the answer's head at once and its body in pieces
    /// of `chunk` bytes, `every` apart.
    SlowBody { chunk: usize, every: Duration },
}

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When the proxy had read the whole request.
    pub at: Instant,
    pub method: String,
    /// Path and query, as the client sent them.
    pub path: String,
    /// Whether it was sent upstream.
    pub forwarded: bool,
    /// The status the proxy answered the client with (set just before the
    /// answer is written); `None` for a reset or a black hole.
    pub answered: Option<u16>,
}

/// The proxy, on a port of its own; stopped by [`ChaosProxy::stop`] or when
/// dropped.
pub struct ChaosProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop_tx: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

struct Shared {
    upstream: SocketAddr,
    fault: Mutex<FaultState>,
    seen: Mutex<Vec<Seen>>,
    forwarded: AtomicUsize,
}

struct FaultState {
    fault: Fault,
    /// For [`Fault::Status`] with a count: how many requests it still takes.
    left: Option<u32>,
}

impl FaultState {
    /// The fault for the request just read, counting it against a
    /// [`Fault::Status`] budget.
    fn take(&mut self) -> Fault {
        if let Fault::Status { .. } = self.fault {
            match self.left {
                Some(0) => {
                    self.fault = Fault::None;
                    self.left = None;
                }
                Some(n) => self.left = Some(n - 1),
                None => {}
            }
        }
        self.fault.clone()
    }
}

/// A lock that a panicking test thread cannot make unusable for the others.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ChaosProxy {
    /// Listens on `127.0.0.1:<free port>`, forwarding to `upstream` until a
    /// fault is set.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the chaos proxy");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            upstream,
            fault: Mutex::new(FaultState {
                fault: Fault::None,
                left: None,
            }),
            seen: Mutex::new(Vec::new()),
            forwarded: AtomicUsize::new(0),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), stop_rx));
        Self {
            addr,
            shared,
            stop_tx,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies to requests read from now on.
    pub fn set(&self, fault: Fault) {
        let left = match &fault {
            Fault::Status { count, .. } => *count,
            _ => None,
        };
        *lock(&self.shared.fault) = FaultState { fault, left };
    }

    /// Every request read, in order.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }

    /// How many requests were forwarded upstream.
    pub fn forwarded(&self) -> usize {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Closes the listener and every connection, held ones included.
    pub async fn stop(self) {
        let _ = self.stop_tx.send(());
        let _ = self.task.await;
    }
}

/// Accepts until told to stop (or until the [`ChaosProxy`] is dropped, which
/// drops the sender); then every connection task is aborted, closing its
/// socket.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop_rx: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop_rx => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                // Out of descriptors and the like: let it pass, try again.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    connections.shutdown().await;
}

/// A parsed request, body included.
struct Request {
    method: String,
    target: String,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    minor: u8,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    /// Whether the client wants its connection closed after this exchange.
    fn wants_close(&self) -> bool {
        has_token(&self.headers, "connection", "close")
            || (self.minor == 0 && !has_token(&self.headers, "connection", "keep-alive"))
    }

    /// Path and query, also for an absolute-form target.
    fn path(&self) -> String {
        match self.target.split_once("://") {
            Some((_, rest)) => match rest.find('/') {
                Some(i) => rest[i..].to_owned(),
                None => "/".to_owned(),
            },
            None => self.target.clone(),
        }
    }
}

/// Why no request could be read.
enum ReadError {
    /// The connection failed or closed: nothing to answer.
    Gone,
    /// The request is unusable: answer this status and close.
    Refuse(u16, &'static str),
}

impl From<std::io::Error> for ReadError {
    fn from(_: std::io::Error) -> Self {
        Self::Gone
    }
}

/// Serves one client connection: request after request, until either side
/// closes or the proxy stops.
async fn serve_connection(mut client: TcpStream, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    loop {
        let request = match read_request(&mut client, &mut buf).await {
            Ok(Some(r)) => r,
            Ok(None) | Err(ReadError::Gone) => return,
            Err(ReadError::Refuse(status, why)) => {
                let answer = Answer::synthetic(status, None, why);
                let _ = write_answer(&mut client, &answer, false, true, None).await;
                let _ = client.shutdown().await;
                return;
            }
        };
        let fault = lock(&shared.fault).take();
        let index = {
            let mut seen = lock(&shared.seen);
            seen.push(Seen {
                at: Instant::now(),
                method: request.method.clone(),
                path: request.path(),
                forwarded: false,
                answered: None,
            });
            seen.len() - 1
        };
        let update = |forwarded: bool, answered: u16| {
            if let Some(s) = lock(&shared.seen).get_mut(index) {
                s.forwarded = forwarded;
                s.answered = Some(answered);
            }
        };
        let head_only = request.method.eq_ignore_ascii_case("HEAD");
        let close = request.wants_close();
        let mut slow = None;
        let answer = match fault {
            Fault::Reset => {
                // Zero linger: closing sends RST instead of FIN (and, unlike
                // a non-zero linger, does not block the thread).
                let _ = client.set_zero_linger();
                return;
            }
            Fault::BlackHole => {
                // Held until the proxy stops and aborts this task.
                std::future::pending::<()>().await;
                return;
            }
            Fault::Status {
                status,
                retry_after,
                ..
            } => {
                update(false, status);
                Answer::synthetic(status, retry_after, "injected by the chaos proxy")
            }
            Fault::Latency(delay) => {
                tokio::time::sleep(delay).await;
                forward(&shared, &request, index).await
            }
            Fault::None => forward(&shared, &request, index).await,
            Fault::SlowBody { chunk, every } => {
                slow = Some((chunk.max(1), every));
                forward(&shared, &request, index).await
            }
        };
        if write_answer(&mut client, &answer, head_only, close, slow)
            .await
            .is_err()
        {
            return;
        }
        if close {
            let _ = client.shutdown().await;
            return;
        }
    }
}

/// Sends `request` upstream and reads its answer; a failure becomes a `502`.
/// Records the outcome in the request's [`Seen`] before returning.
async fn forward(shared: &Shared, request: &Request, index: usize) -> Answer {
    let (forwarded, answer) = match exchange_upstream(shared.upstream, request).await {
        Ok(answer) => (true, answer),
        Err((forwarded, why)) => (
            forwarded,
            Answer::synthetic(502, None, &format!("chaos proxy: upstream {why}")),
        ),
    };
    if forwarded {
        shared.forwarded.fetch_add(1, Ordering::SeqCst);
    }
    if let Some(s) = lock(&shared.seen).get_mut(index) {
        s.forwarded = forwarded;
        s.answered = Some(answer.status);
    }
    answer
}

/// One request on a fresh upstream connection. The error says whether the
/// request had been sent when things went wrong, and what went wrong.
async fn exchange_upstream(
    upstream: SocketAddr,
    request: &Request,
) -> Result<Answer, (bool, String)> {
    let mut conn = TcpStream::connect(upstream)
        .await
        .map_err(|e| (false, format!("{upstream} refused the connection: {e}")))?;
    let mut out = format!("{} {} HTTP/1.1\r\n", request.method, request.target);
    let dropped = connection_tokens(&request.headers);
    let mut has_host = false;
    for (name, value) in &request.headers {
        let lower = name.to_ascii_lowercase();
        if is_hop_by_hop(&lower) || lower == "expect" || dropped.contains(&lower) {
            continue;
        }
        has_host |= lower == "host";
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !has_host {
        out.push_str(&format!("Host: {upstream}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&request.body);
    conn.write_all(&bytes)
        .await
        .map_err(|e| (false, format!("{upstream} write failed: {e}")))?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)
        .await
        .map_err(|e| (true, format!("{upstream} read failed: {e}")))?;
    parse_answer(&raw, request.method.eq_ignore_ascii_case("HEAD"))
        .map_err(|why| (true, format!("{upstream} answered badly: {why}")))
}

/// An answer for the client.
struct Answer {
    status: u16,
    reason: String,
    /// End-to-end headers, without `Content-Length` and hop-by-hop ones.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// For an answer to `HEAD`: the upstream's `Content-Length`, if any.
    head_length: Option<String>,
}

impl Answer {
    fn synthetic(status: u16, retry_after: Option<String>, text: &str) -> Self {
        let mut headers = vec![("Content-Type".to_owned(), "text/plain".to_owned())];
        if let Some(value) = retry_after {
            headers.push(("Retry-After".to_owned(), value));
        }
        Self {
            status,
            reason: reason(status).to_owned(),
            headers,
            body: format!("{text}\n").into_bytes(),
            head_length: None,
        }
    }
}

/// Writes `answer` to the client, re-framed with `Content-Length`; with
/// `slow`, the body goes in `(chunk, every)` pieces after the head.
async fn write_answer(
    client: &mut TcpStream,
    answer: &Answer,
    head_only: bool,
    close: bool,
    slow: Option<(usize, Duration)>,
) -> std::io::Result<()> {
    let bodiless = (100..200).contains(&answer.status) || matches!(answer.status, 204 | 304);
    let mut head = format!("HTTP/1.1 {} {}\r\n", answer.status, answer.reason);
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !bodiless {
        if !head_only {
            head.push_str(&format!("Content-Length: {}\r\n", answer.body.len()));
        } else if let Some(length) = &answer.head_length {
            head.push_str(&format!("Content-Length: {length}\r\n"));
        }
    }
    head.push_str(if close {
        "Connection: close\r\n\r\n"
    } else {
        "Connection: keep-alive\r\n\r\n"
    });
    let body: &[u8] = if bodiless || head_only {
        &[]
    } else {
        &answer.body
    };
    match slow {
        None => {
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(body);
            client.write_all(&bytes).await?;
        }
        Some((chunk, every)) => {
            client.write_all(head.as_bytes()).await?;
            client.flush().await?;
            for (i, piece) in body.chunks(chunk).enumerate() {
                if i > 0 {
                    tokio::time::sleep(every).await;
                }
                client.write_all(piece).await?;
                client.flush().await?;
            }
        }
    }
    client.flush().await
}

/// Reads one request from `client`; `buf` keeps what was read past it (a
/// pipelined next request). `Ok(None)`: the client closed between requests.
async fn read_request(
    client: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<Option<Request>, ReadError> {
    let head_end = loop {
        // Empty lines before a request line are allowed (RFC 9112, 2.2).
        while buf.starts_with(b"\r\n") {
            buf.drain(..2);
        }
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadError::Refuse(431, "request head too large"));
        }
        if fill(client, buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(ReadError::Gone)
            };
        }
    };
    let head: Vec<u8> = buf.drain(..head_end + 4).collect();
    let head = std::str::from_utf8(&head[..head_end])
        .map_err(|_| ReadError::Refuse(400, "request head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Refuse(400, "malformed request line"));
    };
    let minor = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return Err(ReadError::Refuse(505, "only HTTP/1.0 and 1.1")),
    };
    if method.is_empty() || target.is_empty() {
        return Err(ReadError::Refuse(400, "malformed request line"));
    }
    let headers = parse_headers(lines).ok_or(ReadError::Refuse(400, "malformed header"))?;
    if header(&headers, "transfer-encoding").is_some() {
        return Err(ReadError::Refuse(
            501,
            "the chaos proxy does not support request bodies with Transfer-Encoding; send Content-Length",
        ));
    }
    let length = content_length(&headers)
        .map_err(|()| ReadError::Refuse(400, "invalid Content-Length"))?
        .unwrap_or(0);
    if length > MAX_BODY {
        return Err(ReadError::Refuse(413, "request body too large"));
    }
    if length > buf.len() && has_token(&headers, "expect", "100-continue") {
        client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    while buf.len() < length {
        if fill(client, buf).await? == 0 {
            return Err(ReadError::Gone);
        }
    }
    let body = buf.drain(..length).collect();
    Ok(Some(Request {
        method: method.to_owned(),
        target: target.to_owned(),
        minor,
        headers,
        body,
    }))
}

/// Reads what is available onto `buf`; `0` at EOF.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Parses a whole upstream answer (read to EOF), skipping interim `1xx`
/// answers and de-chunking a chunked body.
fn parse_answer(mut raw: &[u8], head_only: bool) -> Result<Answer, &'static str> {
    loop {
        let end = find(raw, b"\r\n\r\n").ok_or("no complete head")?;
        let head = std::str::from_utf8(&raw[..end]).map_err(|_| "head is not UTF-8")?;
        let rest = &raw[end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
            return Err("malformed status line");
        };
        if !version.starts_with("HTTP/1.") {
            return Err("not HTTP/1.x");
        }
        let status: u16 = code.parse().map_err(|_| "malformed status code")?;
        let reason = parts.next().unwrap_or_default().to_owned();
        let headers = parse_headers(lines).ok_or("malformed header")?;
        if status == 101 {
            return Err("switched protocols, which the proxy does not support");
        }
        if (100..200).contains(&status) {
            raw = rest;
            continue;
        }
        let chunked = header(&headers, "transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        let length = content_length(&headers).map_err(|()| "invalid Content-Length")?;
        let bodiless = head_only || matches!(status, 204 | 304);
        let body = if bodiless {
            Vec::new()
        } else if chunked {
            dechunk(rest)?
        } else if let Some(length) = length {
            rest.get(..length)
                .ok_or("closed before the end of its body")?
                .to_vec()
        } else {
            rest.to_vec()
        };
        let head_length = if head_only {
            header(&headers, "content-length").map(str::to_owned)
        } else {
            None
        };
        let dropped = connection_tokens(&headers);
        let headers = headers
            .into_iter()
            .filter(|(name, _)| {
                let lower = name.to_ascii_lowercase();
                !is_hop_by_hop(&lower) && lower != "content-length" && !dropped.contains(&lower)
            })
            .collect();
        return Ok(Answer {
            status,
            reason,
            headers,
            body,
            head_length,
        });
    }
}

/// The payload of a chunked body; trailers are dropped.
fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut body = Vec::new();
    loop {
        let line_end = find(raw, b"\r\n").ok_or("chunked body cut short")?;
        let line = std::str::from_utf8(&raw[..line_end]).map_err(|_| "bad chunk size")?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| "bad chunk size")?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let data = raw.get(..size).ok_or("chunked body cut short")?;
        body.extend_from_slice(data);
        raw = raw
            .get(size..)
            .and_then(|r| r.strip_prefix(b"\r\n"))
            .ok_or("chunk not followed by CRLF")?;
    }
}

/// `name: value` lines; `None` if one is malformed (obsolete line folding
/// included).
fn parse_headers<'a>(lines: impl Iterator<Item = &'a str>) -> Option<Vec<(String, String)>> {
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        if name.is_empty() || name.contains(|c: char| c.is_ascii_whitespace()) {
            return None;
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    Some(headers)
}

/// The first value of header `name` (case-insensitive).
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Whether any `name` header lists `token` (comma-separated, any case).
fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Header names a `Connection` header marks as hop-by-hop, lower-cased.
fn connection_tokens(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect()
}

/// `Content-Length`: `Ok(None)` if absent, `Err` if invalid or if several
/// disagree.
fn content_length(headers: &[(String, String)]) -> Result<Option<usize>, ()> {
    let mut length = None;
    for (_, value) in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        let n: usize = value.trim().parse().map_err(|_| ())?;
        if length.is_some_and(|l| l != n) {
            return Err(());
        }
        length = Some(n);
    }
    Ok(length)
}

fn is_hop_by_hop(lower: &str) -> bool {
    matches!(
        lower,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn reason(status: u16) -> &'static str {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

/// A fake API with a fixed-window rate limit, on a port of its own.
///
/// Every request is answered `200` with `{"ok":true}` (`{"items":[]}` for a
/// `GET` of a path starting `/items`), with `X-RateLimit-Limit`,
/// `X-RateLimit-Remaining` (in the current window) and `X-RateLimit-Reset`
/// (seconds until the window ends, rounded up). Window `k` is
/// `[start + k*window, start + (k+1)*window)`, `start` being when the server
/// started. A request arriving when its window has already had `limit`
/// requests is answered `429` with `Retry-After` (seconds until the window
/// ends, rounded up) and counted as a violation; it still counts as a
/// request in its window.
pub struct LimitedApi {
    addr: SocketAddr,
    referee: Arc<Referee>,
    task: JoinHandle<()>,
}

struct Referee {
    limit: u32,
    window: Duration,
    start: Instant,
    state: Mutex<Tally>,
}

#[derive(Default)]
struct Tally {
    /// The index of the current window.
    window: u128,
    /// Requests that arrived in it, refused ones included.
    count: u32,
    max: u32,
    violations: usize,
    requests: Vec<(Instant, String, String)>,
}

impl LimitedApi {
    pub async fn start(limit: u32, window: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the limited API");
        let addr = listener.local_addr().expect("addr");
        let referee = Arc::new(Referee {
            limit,
            window,
            start: Instant::now(),
            state: Mutex::new(Tally::default()),
        });
        let app = Router::new()
            .fallback(judge)
            .with_state(Arc::clone(&referee));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            referee,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests answered `429` because their window was full.
    pub fn violations(&self) -> usize {
        lock(&self.referee.state).violations
    }

    /// The most requests that arrived in one window (refused ones included):
    /// at most `limit` if the client kept to the limit.
    pub fn max_in_any_window(&self) -> u32 {
        lock(&self.referee.state).max
    }

    /// Every request, in arrival order: when, `"<METHOD> <path and query>"`,
    /// and the body (lossy UTF-8).
    pub fn requests(&self) -> Vec<(Instant, String, String)> {
        lock(&self.referee.state).requests.clone()
    }

    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn judge(
    State(referee): State<Arc<Referee>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let now = Instant::now();
    let window = referee.window.as_nanos().max(1);
    let since = now.saturating_duration_since(referee.start).as_nanos();
    let index = since / window;
    let reset =
        u64::try_from((window - since % window).div_ceil(1_000_000_000)).unwrap_or(u64::MAX);
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let (count, limited) = {
        let mut tally = lock(&referee.state);
        tally.requests.push((
            now,
            format!("{method} {target}"),
            String::from_utf8_lossy(&body).into_owned(),
        ));
        if tally.window != index {
            tally.window = index;
            tally.count = 0;
        }
        let limited = tally.count >= referee.limit;
        tally.count = tally.count.saturating_add(1);
        tally.max = tally.max.max(tally.count);
        if limited {
            tally.violations += 1;
        }
        (tally.count, limited)
    };
    let mut response = if limited {
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            [(CONTENT_TYPE, "application/json")],
            r#"{"error":"rate limit exceeded"}"#,
        )
            .into_response();
        r.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(reset));
        r
    } else if method == Method::GET && uri.path().starts_with("/items") {
        ([(CONTENT_TYPE, "application/json")], r#"{"items":[]}"#).into_response()
    } else {
        ([(CONTENT_TYPE, "application/json")], r#"{"ok":true}"#).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("x-ratelimit-limit"),
        HeaderValue::from(referee.limit),
    );
    headers.insert(
        HeaderName::from_static("x-ratelimit-remaining"),
        HeaderValue::from(referee.limit.saturating_sub(count)),
    );
    headers.insert(
        HeaderName::from_static("x-ratelimit-reset"),
        HeaderValue::from(reset),
    );
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::ErrorKind;
    use tokio::time::timeout;

    /// What the test upstream received.
    #[derive(Debug, Clone)]
    struct Got {
        path: String,
        connection: String,
        body: String,
    }

    /// Answers `/slow` with 40 bytes, `/empty` with 204, a request with a
    /// body with that body, anything else with `hello`.
    struct Upstream {
        addr: SocketAddr,
        got: Arc<Mutex<Vec<Got>>>,
        task: JoinHandle<()>,
    }

    const SLOW_BODY: &str = "0123456789abcdefghijABCDEFGHIJ!@#$%^&*()";

    impl Upstream {
        async fn start() -> Self {
            let got = Arc::new(Mutex::new(Vec::new()));
            let app = Router::new()
                .fallback(
                    |State(got): State<Arc<Mutex<Vec<Got>>>>,
                     uri: Uri,
                     headers: axum::http::HeaderMap,
                     body: Bytes| async move {
                        let connection = headers
                            .get("connection")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        got.lock().unwrap().push(Got {
                            path: uri.to_string(),
                            connection,
                            body: String::from_utf8_lossy(&body).into_owned(),
                        });
                        match uri.path() {
                            "/slow" => SLOW_BODY.into_response(),
                            "/empty" => StatusCode::NO_CONTENT.into_response(),
                            _ if !body.is_empty() => body.into_response(),
                            _ => "hello".into_response(),
                        }
                    },
                )
                .with_state(Arc::clone(&got));
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            Self { addr, got, task }
        }

        fn got(&self) -> Vec<Got> {
            self.got.lock().unwrap().clone()
        }
    }

    impl Drop for Upstream {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// An answer as the test client read it.
    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            header(&self.headers, name)
        }
    }

    /// Writes a request with a `Content-Length` body.
    async fn send(conn: &mut TcpStream, method: &str, path: &str, body: &str) {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(request.as_bytes()).await.unwrap();
    }

    /// Reads one answer, byte by byte so nothing of the next is consumed;
    /// trusts `Content-Length` (the proxy always sends it).
    async fn receive(conn: &mut TcpStream, head_only: bool) -> std::io::Result<Reply> {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            if conn.read(&mut byte).await? == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let mut lines = head.trim_end().split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.to_owned(), v.trim().to_owned())
            })
            .collect();
        let length: usize = match header(&headers, "content-length") {
            Some(l) if !head_only => l.parse().unwrap(),
            _ => 0,
        };
        let mut body = vec![0u8; length];
        conn.read_exact(&mut body).await?;
        Ok(Reply {
            status: status.parse().unwrap(),
            headers,
            body: String::from_utf8(body).unwrap(),
        })
    }

    /// One request on a fresh connection.
    async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Reply {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        send(&mut conn, method, path, body).await;
        timeout(Duration::from_secs(5), receive(&mut conn, false))
            .await
            .expect("an answer within 5 s")
            .unwrap()
    }

    #[tokio::test]
    async fn none_forwards_on_a_kept_alive_connection() {
        let upstream = Upstream::start().await;
        let proxy = ChaosProxy::start(upstream.addr).await;
        assert_eq!(proxy.url(), format!("http://{}", proxy.addr()));

        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        send(&mut conn, "GET", "/a?x=1", "").await;
        let first = receive(&mut conn, false).await.unwrap();
        send(&mut conn, "POST", "/echo", "ping").await;
        let second = receive(&mut conn, false).await.unwrap();
        // HEAD: a length but no body; the connection stays usable.
        send(&mut conn, "HEAD", "/", "").await;
        let third = receive(&mut conn, true).await.unwrap();
        send(&mut conn, "GET", "/empty", "").await;
        let fourth = receive(&mut conn, false).await.unwrap();

        assert_eq!((first.status, first.body.as_str()), (200, "hello"));
        assert_eq!(first.header("connection"), Some("keep-alive"));
        assert_eq!((second.status, second.body.as_str()), (200, "ping"));
        assert_eq!(third.status, 200);
        assert_eq!(third.header("content-length"), Some("5"));
        assert_eq!(fourth.status, 204);
        let got = upstream.got();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].path, "/a?x=1");
        assert_eq!(got[1].body, "ping");
        assert!(got.iter().all(|g| g.connection == "close"), "{got:?}");
        assert_eq!(proxy.forwarded(), 4);
        let seen = proxy.seen();
        assert_eq!(seen[0].method, "GET");
        assert_eq!(seen[0].path, "/a?x=1");
        assert!(seen.iter().all(|s| s.forwarded));
        let answered: Vec<_> = seen.iter().map(|s| s.answered).collect();
        assert_eq!(answered, [Some(200), Some(200), Some(200), Some(204)]);
        proxy.stop().await;
    }

    #[tokio::test]
    async fn latency_delays_the_request() {
        let upstream = Upstream::start().await;
        let proxy = ChaosProxy::start(upstream.addr).await;
        let delay = Duration::from_millis(250);
        proxy.set(Fault::Latency(delay));

        let started = Instant::now();
        let reply = request(proxy.addr(), "GET", "/", "").await;

        assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
        assert_eq!((reply.status, reply.body.as_str()), (200, "hello"));
        assert_eq!(upstream.got().len(), 1);
        proxy.stop().await;
    }

    #[tokio::test]
    async fn status_answers_count_requests_then_forwards() {
        let upstream = Upstream::start().await;
        let proxy = ChaosProxy::start(upstream.addr).await;
        proxy.set(Fault::Status {
            status: 503,
            count: Some(2),
            retry_after: Some("2".into()),
        });

        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut replies = Vec::new();
        for _ in 0..3 {
            send(&mut conn, "POST", "/", "record").await;
            replies.push(receive(&mut conn, false).await.unwrap());
        }

        let statuses: Vec<_> = replies.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [503, 503, 200]);
        assert_eq!(replies[0].header("retry-after"), Some("2"));
        assert_eq!(replies[1].header("retry-after"), Some("2"));
        assert_eq!(replies[2].header("retry-after"), None);
        assert_eq!(replies[2].body, "record");
        assert_eq!(upstream.got().len(), 1);
        assert_eq!(proxy.forwarded(), 1);
        let seen: Vec<_> = proxy
            .seen()
            .iter()
            .map(|s| (s.forwarded, s.answered))
            .collect();
        assert_eq!(
            seen,
            [(false, Some(503)), (false, Some(503)), (true, Some(200))]
        );
        proxy.stop().await;
    }

    #[tokio::test]
    async fn reset_answers_nothing_and_forwards_nothing() {
        let upstream = Upstream::start().await;
        let proxy = ChaosProxy::start(upstream.addr).await;
        proxy.set(Fault::Reset);

        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        send(&mut conn, "POST", "/", "record").await;
        let outcome = timeout(Duration::from_secs(2), receive(&mut conn, false))
            .await
            .expect("the connection ends at once");

        let kind = outcome.expect_err("no answer").kind();
        assert!(
            matches!(kind, ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof),
            "{kind:?}"
        );
        assert!(upstream.got().is_empty());
        let seen = proxy.seen();
        assert_eq!(seen.len(), 1);
        assert!(!seen[0].forwarded);
        assert_eq!(seen[0].answered, None);
        proxy.stop().await;
    }

    #[tokio::test]
    async fn black_hole_holds_the_request_until_stop() {
        let upstream = Upstream::start().await;
        let proxy = ChaosProxy::start(upstream.addr).await;
        proxy.set(Fault::BlackHole);

        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        send(&mut conn, "POST", "/", "record").await;
        let waited = timeout(Duration::from_millis(300), receive(&mut conn, false)).await;

        assert!(waited.is_err(), "answered: {waited:?}");
        assert!(upstream.got().is_empty());
        let seen = proxy.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].forwarded, seen[0].answered), (false, None));
        // Stopping the proxy lets go of the held connection.
        proxy.stop().await;
        let after = timeout(Duration::from_secs(2), receive(&mut conn, false))
            .await
            .expect("closed when the proxy stops");
        assert!(after.is_err(), "answered after stop: {after:?}");
    }

    #[tokio::test]
    async fn slow_body_trickles_the_whole_body() {
        let upstream = Upstream::start().await;
        let proxy = ChaosProxy::start(upstream.addr).await;
        let every = Duration::from_millis(60);
        proxy.set(Fault::SlowBody { chunk: 10, every });

        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        let started = Instant::now();
        send(&mut conn, "GET", "/slow", "").await;
        // The head comes at once: read it alone, then time the body.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            assert_eq!(conn.read(&mut byte).await.unwrap(), 1);
            head.push(byte[0]);
        }
        let head_at = started.elapsed();
        let head = String::from_utf8(head).unwrap();
        let mut body = vec![0u8; SLOW_BODY.len()];
        conn.read_exact(&mut body).await.unwrap();
        let body_at = started.elapsed();

        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert!(head.contains(&format!("Content-Length: {}\r\n", SLOW_BODY.len())));
        assert_eq!(String::from_utf8(body).unwrap(), SLOW_BODY);
        // Four chunks: three gaps.
        assert!(body_at >= every * 3, "{body_at:?}");
        assert!(
            body_at - head_at >= every * 2,
            "head {head_at:?}, body {body_at:?}"
        );
        proxy.stop().await;
    }

    #[tokio::test]
    async fn chunked_request_body_is_refused_with_501() {
        let upstream = Upstream::start().await;
        let proxy = ChaosProxy::start(upstream.addr).await;

        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        conn.write_all(
            b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nping\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
        let reply = timeout(Duration::from_secs(2), receive(&mut conn, false))
            .await
            .expect("answered at once")
            .unwrap();

        assert_eq!(reply.status, 501);
        assert_eq!(reply.header("connection"), Some("close"));
        assert!(upstream.got().is_empty());
        proxy.stop().await;
    }

    #[tokio::test]
    async fn chunked_answer_is_reframed_with_content_length() {
        // An upstream that answers every request with a chunked body.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = Vec::new();
                while find(&buf, b"\r\n\r\n").is_none() {
                    if fill(&mut conn, &mut buf).await.unwrap() == 0 {
                        break;
                    }
                }
                let answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kept: yes\r\n\r\n\
                              5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
                let _ = conn.write_all(answer.as_bytes()).await;
            }
        });
        let proxy = ChaosProxy::start(upstream).await;

        let reply = request(proxy.addr(), "GET", "/", "").await;

        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, "hello world");
        assert_eq!(reply.header("content-length"), Some("11"));
        assert_eq!(reply.header("transfer-encoding"), None);
        assert_eq!(reply.header("x-kept"), Some("yes"));
        proxy.stop().await;
        server.abort();
    }

    #[tokio::test]
    async fn unreachable_upstream_is_a_502() {
        // A port nobody listens on any more.
        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = gone.local_addr().unwrap();
        drop(gone);
        let proxy = ChaosProxy::start(upstream).await;

        let reply = request(proxy.addr(), "GET", "/", "").await;

        assert_eq!(reply.status, 502);
        assert_eq!(proxy.forwarded(), 0);
        proxy.stop().await;
    }

    #[tokio::test]
    async fn limited_api_refuses_the_request_over_the_limit() {
        let api = LimitedApi::start(3, Duration::from_secs(1)).await;

        let mut replies = vec![
            request(api.addr(), "GET", "/items?page=1", "").await,
            request(api.addr(), "POST", "/records", "r1").await,
        ];
        // Through the proxy: the limit headers pass, an injected answer does
        // not reach the API.
        let proxy = ChaosProxy::start(api.addr()).await;
        proxy.set(Fault::Status {
            status: 500,
            count: Some(1),
            retry_after: None,
        });
        assert_eq!(
            request(proxy.addr(), "POST", "/records", "r2").await.status,
            500
        );
        replies.push(request(proxy.addr(), "POST", "/records", "r2").await);
        replies.push(request(api.addr(), "POST", "/records", "r3").await);

        let statuses: Vec<_> = replies.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 200, 200, 429]);
        assert_eq!(replies[0].body, r#"{"items":[]}"#);
        assert_eq!(replies[1].body, r#"{"ok":true}"#);
        let remaining: Vec<_> = replies
            .iter()
            .map(|r| r.header("x-ratelimit-remaining").unwrap())
            .collect();
        assert_eq!(remaining, ["2", "1", "0", "0"]);
        assert!(replies
            .iter()
            .all(|r| r.header("x-ratelimit-limit") == Some("3")
                && r.header("x-ratelimit-reset") == Some("1")));
        assert_eq!(replies[3].header("retry-after"), Some("1"));
        assert_eq!(api.violations(), 1);
        assert_eq!(api.max_in_any_window(), 4);
        let requests: Vec<_> = api
            .requests()
            .into_iter()
            .map(|(_, what, body)| (what, body))
            .collect();
        assert_eq!(
            requests,
            [
                ("GET /items?page=1".to_owned(), String::new()),
                ("POST /records".to_owned(), "r1".to_owned()),
                ("POST /records".to_owned(), "r2".to_owned()),
                ("POST /records".to_owned(), "r3".to_owned()),
            ]
        );
        proxy.stop().await;
        api.stop().await;
    }

    #[tokio::test]
    async fn limited_api_starts_a_new_count_each_window() {
        let window = Duration::from_millis(200);
        let api = LimitedApi::start(1, window).await;

        let first = request(api.addr(), "GET", "/", "").await;
        // A full window later is always another window.
        tokio::time::sleep(window + Duration::from_millis(20)).await;
        let second = request(api.addr(), "GET", "/", "").await;

        assert_eq!((first.status, second.status), (200, 200));
        assert_eq!(api.violations(), 0);
        assert_eq!(api.max_in_any_window(), 1);
        api.stop().await;
    }
}
