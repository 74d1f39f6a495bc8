//! Webhook connectors end to end: the real `ferry run` against a real broker,
//! sent deliveries over HTTP(S) the way GitHub, Stripe, Shopify or any
//! Standard Webhooks sender signs them, and attacked the way a stranger
//! would (tampered bodies, wrong and stale signatures, floods, oversized
//! bodies, replays).
//!
//! The contract under test, as a sender and a consumer see it:
//! - a 2xx answer means the event is durable; `"stored"` (200) means Kafka
//!   acknowledged it, and then the topic holds an event envelope whose
//!   `payload` is the body byte for byte, whose `id` is derived from the
//!   connector and the delivery id, with `ferry-delivery-id` and
//!   `ferry-correlation-id` headers;
//! - every refusal (401, 400, 413, 415, 422, 429, 404, 405) writes nothing
//!   and is counted in `ferry_webhook_requests_total`;
//! - a delivery id seen before is answered `"duplicate"` and not written
//!   again, also after a restart;
//! - every answer carries `x-correlation-id`.
//!
//! Each test runs one broker and one `ferry run` with several connectors on
//! distinct paths (startup is the expensive part).

use crate::pipeline::{envelope_reader, EnvelopeDecoder};
use crate::rebalance::{start_ferry, tail};
use crate::sink_setup::services_yaml;
use crate::webhook_support::{h, hmac256, now, standard, with_delivery, Headers};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ferry::schema::envelope::EventEnvelope;
use ferry_testkit::{free_addr, FerryProcess, TestBroker};
use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use sha2::Sha512;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const JSON: Option<&str> = Some("application/json");

/// `webhooks.body_limit` of every Ferry here: small, so 413 is cheap to reach.
const BODY_LIMIT: usize = 4096;
/// `webhooks.request_timeout` of every Ferry here: short, so a stalling
/// sender is cut off quickly.
const REQUEST_TIMEOUT_SECS: u64 = 2;

// Secrets as each sender hands them out.
const SW_OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_NEW: &str = "whsec_ZmVycnktbmV3LXNpZ25pbmcta2V5LTAx";
const SW_OTHER: &str = "whsec_c29tZW9uZS1lbHNlcy1zaWduaW5nLWtleQ==";
const GH_SECRET: &str = "It's a Secret to Everybody";
const STRIPE_SECRET: &str = "whsec_ferry_stripe_e2e";
const SHOPIFY_SECRET: &str = "shpss_ferry_e2e";
const HMAC_SECRET: &str = "ferry-generic-e2e";
const TOKEN: &str = "tok_ferry_e2e_0123456789";

// ---------------------------------------------------------------------------
// Ferry and its broker
// ---------------------------------------------------------------------------

/// One broker and one `ferry run` serving the given webhook connectors.
struct Ferry {
    broker: TestBroker,
    dir: tempfile::TempDir,
    config: PathBuf,
    admin: SocketAddr,
    listen: SocketAddr,
    process: Option<FerryProcess>,
}

impl Ferry {
    /// `connectors`: the `connectors:` entries (YAML, indented two spaces);
    /// `tls`: `webhooks.tls` as (cert, key) files.
    async fn start(connectors: &str, tls: Option<(&Path, &Path)>) -> Self {
        let broker = TestBroker::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let (admin, listen) = (free_addr(), free_addr());
        let tls = tls.map_or_else(String::new, |(cert, key)| {
            format!(
                "  tls:\n    cert: {}\n    key: {}\n",
                cert.display(),
                key.display()
            )
        });
        // A generous kafka_deadline: a healthy broker always acknowledges
        // within it, so every accepted delivery here must be "stored".
        let text = format!(
            r#"
data_dir: {data}
kafka:
  bootstrap_servers: "{bootstrap}"
{services}webhooks:
  listen: "{listen}"
  body_limit: {BODY_LIMIT}
  request_timeout: {REQUEST_TIMEOUT_SECS}s
  spool:
    kafka_deadline: 30s
{tls}
connectors:
{connectors}
"#,
            data = dir.path().join("data").display(),
            bootstrap = broker.bootstrap,
            services = services_yaml(admin),
        );
        let config = dir.path().join("ferry.yaml");
        std::fs::write(&config, text).expect("write config");
        let process = Some(start_ferry("run", &config, Vec::new()).await);
        Self {
            broker,
            dir,
            config,
            admin,
            listen,
            process,
        }
    }

    /// The end of Ferry's log, for failure messages.
    fn log(&self) -> String {
        let err = self.process.as_ref().map(FerryProcess::stderr);
        tail(err.as_deref().unwrap_or(""), 30)
    }

    /// Interrupts Ferry, expects a clean exit, and starts it again on the
    /// same config and data directory.
    async fn restart(&mut self) {
        let code = self.interrupt().await;
        assert_eq!(code, Some(0), "ferry exits cleanly on SIGINT");
        self.process = Some(start_ferry("run", &self.config, Vec::new()).await);
    }

    async fn interrupt(&mut self) -> Option<i32> {
        let mut p = self.process.take().expect("ferry is running");
        let (p, code) = tokio::task::spawn_blocking(move || {
            let code = p.interrupt(Duration::from_secs(60));
            (p, code)
        })
        .await
        .expect("stop task");
        if code != Some(0) {
            eprintln!("ferry stderr:\n{}", p.stderr());
        }
        code
    }

    async fn stop(mut self) {
        let code = self.interrupt().await;
        assert_eq!(code, Some(0), "ferry exits cleanly on SIGINT");
        self.broker.stop().await;
        drop(self.dir);
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// GET `path` of the admin API.
    async fn admin_get(&self, path: &str) -> reqwest::Response {
        reqwest::get(format!("http://{}{path}", self.admin))
            .await
            .expect("admin answers")
    }

    /// `/metrics` of the admin API.
    async fn metrics(&self) -> String {
        let r = self.admin_get("/metrics").await;
        r.text().await.expect("metrics text")
    }

    /// `/connectors` of the admin API.
    async fn connectors(&self) -> Vec<serde_json::Value> {
        let r = self.admin_get("/connectors").await;
        r.json().await.expect("connectors JSON")
    }
}

// ---------------------------------------------------------------------------
// Senders: how each scheme signs a delivery
// ---------------------------------------------------------------------------

fn hmac512(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha512>::new_from_slice(key).expect("any key length");
    parts.iter().for_each(|p| mac.update(p));
    mac.finalize().into_bytes().to_vec()
}

/// GitHub: `X-Hub-Signature-256: sha256=<hex>` over the body.
fn github(secret: &str, event: &str, delivery: &str, body: &[u8]) -> Headers {
    let sig = hex::encode(hmac256(secret.as_bytes(), &[body]));
    h(&[
        ("X-Hub-Signature-256", &format!("sha256={sig}")),
        ("X-GitHub-Event", event),
        ("X-GitHub-Delivery", delivery),
    ])
}

/// Stripe: `Stripe-Signature: t=<ts>,v1=<hex>` over `{t}.{body}`, keyed
/// with the `whsec_...` string itself.
fn stripe(secret: &str, ts: i64, body: &[u8]) -> Headers {
    let t = ts.to_string();
    let sig = hex::encode(hmac256(secret.as_bytes(), &[t.as_bytes(), b".", body]));
    h(&[("Stripe-Signature", &format!("t={t},v1={sig}"))])
}

/// Shopify: `X-Shopify-Hmac-Sha256: <base64>` over the body.
fn shopify(secret: &str, topic: &str, id: &str, body: &[u8]) -> Headers {
    let sig = B64.encode(hmac256(secret.as_bytes(), &[body]));
    h(&[
        ("X-Shopify-Hmac-Sha256", &sig),
        ("X-Shopify-Topic", topic),
        ("X-Shopify-Webhook-Id", id),
    ])
}

/// The generic `hmac` scheme as configured below: base64 HMAC-SHA512 over
/// `{X-Ts}.{body}` in `X-Sig`.
fn generic(secret: &str, ts: i64, delivery: &str, body: &[u8]) -> Headers {
    let t = ts.to_string();
    let sig = B64.encode(hmac512(secret.as_bytes(), &[t.as_bytes(), b".", body]));
    h(&[("X-Sig", &sig), ("X-Ts", &t), ("X-Delivery", delivery)])
}

fn with(mut headers: Headers, more: &[(&str, &str)]) -> Headers {
    headers.extend(h(more));
    headers
}

/// A JSON event of exactly `len` bytes.
fn sized(event_type: &str, id: &str, len: usize) -> Vec<u8> {
    let head = format!(r#"{{"type":"{event_type}","data":{{"id":"{id}","pad":""#);
    let tail = r#""}}"#;
    let pad = len - head.len() - tail.len();
    format!("{head}{}{tail}", "x".repeat(pad)).into_bytes()
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// One answer of the webhook listener.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or(serde_json::Value::Null)
    }

    fn status_field(&self) -> String {
        self.json()["status"].as_str().unwrap_or("").to_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn correlation(&self) -> Option<&str> {
        self.header("x-correlation-id")
    }
}

/// Asserts an answer's status code and the `status` its body names
/// (`stored`, `duplicate`); the rest is the failure message.
macro_rules! assert_answer {
    ($r:expr, $status:expr, $label:expr, $($message:tt)+) => {
        assert_eq!(
            ($r.status, $r.status_field().as_str()),
            ($status, $label),
            $($message)+
        )
    };
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    content_type: Option<&str>,
    headers: &Headers,
    body: &[u8],
) -> Reply {
    let req = with_delivery(client.request(method, url), content_type, headers, body);
    try_send(req)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e:?}"))
}

async fn try_send(req: reqwest::RequestBuilder) -> Result<Reply, reqwest::Error> {
    let resp = req.send().await?;
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let text = resp.text().await?;
    Ok(Reply {
        status,
        headers,
        text,
    })
}

/// A client that closes idle connections before the listener's
/// `request_timeout` would (no race between reuse and the server closing).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_millis(500))
        .build()
        .expect("HTTP client")
}

/// Writes `head` on a fresh connection and then stalls, as a slowloris
/// does; returns the head of what the listener answered (empty if it just
/// closed the connection), and when.
async fn stall(addr: SocketAddr, head: &str) -> (String, Duration) {
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await;
        match read.expect("the listener still holds a stalled connection after 20s") {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

/// POSTs a JSON body.
async fn post(client: &reqwest::Client, url: &str, headers: &Headers, body: &[u8]) -> Reply {
    send(client, reqwest::Method::POST, url, JSON, headers, body).await
}

/// POSTs `body` with `Transfer-Encoding: chunked` (no Content-Length, so the
/// listener learns the size only while reading) over a raw connection;
/// returns the status code and the answer's body.
async fn post_chunked(
    addr: SocketAddr,
    path: &str,
    headers: &Headers,
    body: &[u8],
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    for chunk in body.chunks(1000) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    // The listener may answer and close before reading it all.
    let _ = s.write_all(&raw).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer to a chunked POST: {answer:?}"));
    let text = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, text.to_owned())
}

// ---------------------------------------------------------------------------
// Kafka: what the topics hold
// ---------------------------------------------------------------------------

/// One record of a webhook topic, its value decoded.
#[derive(Debug, Clone)]
struct Stored {
    key: Option<String>,
    headers: BTreeMap<String, String>,
    id: String,
    source: String,
    event_type: String,
    correlation_id: String,
    payload: Vec<u8>,
    attributes: BTreeMap<String, String>,
}

/// Every record of `topic`, from the beginning to the end it has now.
async fn read_topic(bootstrap: &str, topic: &str) -> Vec<Stored> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || read_topic_blocking(&bootstrap, &topic))
        .await
        .expect("reader task")
}

fn read_topic_blocking(bootstrap: &str, topic: &str) -> Vec<Stored> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers as _;
    use rdkafka::Message;
    let mut envelopes = EnvelopeDecoder::new();
    let c: BaseConsumer = envelope_reader(bootstrap, "webhooks-check")
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    assert!(!partitions.is_empty(), "topic {topic} exists");
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in partitions {
        let (low, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(low))
                .expect("assign");
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    c.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ends.is_empty() {
        assert!(Instant::now() < deadline, "{topic} not read to its end");
        let Some(m) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("a record");
        let value = m.payload().expect("a value");
        assert_eq!(value[0], 0, "Confluent wire format: magic byte 0");
        let decoded = envelopes.decode(value);
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|hd| {
                        let v = hd.value.map(|v| String::from_utf8_lossy(v).into_owned());
                        (hd.key.to_owned(), v.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
        out.push(envelope(decoded, key, headers));
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&m.partition());
        }
    }
    out
}

fn envelope(
    value: apache_avro::types::Value,
    key: Option<String>,
    headers: BTreeMap<String, String>,
) -> Stored {
    use apache_avro::types::Value;
    let Value::Record(fields) = value else {
        panic!("an Avro record: {value:?}");
    };
    let fields: BTreeMap<String, Value> = fields.into_iter().collect();
    let text = |name: &str| match fields.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Uuid(u)) => u.to_string(),
        other => panic!("{name}: {other:?}"),
    };
    let Some(Value::Bytes(payload)) = fields.get("payload") else {
        panic!("payload bytes: {fields:?}");
    };
    let Some(Value::Map(attributes)) = fields.get("attributes") else {
        panic!("attributes map: {fields:?}");
    };
    let attributes = attributes
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => (k.clone(), s.clone()),
            other => panic!("attribute {k}: {other:?}"),
        })
        .collect();
    Stored {
        key,
        headers,
        id: text("id"),
        source: text("source"),
        event_type: text("type"),
        correlation_id: text("correlation_id"),
        payload: payload.clone(),
        attributes,
    }
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/// `ferry_webhook_requests_total` summed over the series whose labels
/// include every pair of `labels`.
fn requests(metrics: &str, labels: &[(&str, &str)]) -> u64 {
    let name = "ferry_webhook_requests_total{";
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter_map(|rest| {
            let (inner, value) = rest.split_once("} ")?;
            let have: BTreeMap<&str, &str> = inner
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k, v.trim_matches('"')))
                })
                .collect();
            labels
                .iter()
                .all(|(k, v)| have.get(k) == Some(v))
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum::<f64>() as u64
}

// ---------------------------------------------------------------------------
// 1. One Ferry, every scheme, and everything a stranger may send
// ---------------------------------------------------------------------------

const SIGNED: &str = r#"
  - name: wh-standard
    type: webhook
    path: /hooks/standard
    verify:
      scheme: standard_webhooks
      secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_ZmVycnktbmV3LXNpZ25pbmcta2V5LTAx"]
    routes:
      - type: "order.*"
        topic: wh.orders
    topic: wh.events
    key:
      pointer: /data/id
    keep_headers: [x-tenant]
    partitions: 2
  - name: wh-github
    type: webhook
    path: /hooks/github
    verify:
      scheme: github
      secrets: ["It's a Secret to Everybody"]
    topic: wh.github
  - name: wh-stripe
    type: webhook
    path: /hooks/stripe
    verify:
      scheme: stripe
      secrets: ["whsec_ferry_stripe_e2e"]
    routes:
      - type: "invoice.*"
        topic: wh.stripe
  - name: wh-shopify
    type: webhook
    path: /hooks/shopify
    verify:
      scheme: shopify
      secrets: ["shpss_ferry_e2e"]
    topic: wh.shopify
  - name: wh-hmac
    type: webhook
    path: /hooks/hmac
    verify:
      scheme: hmac
      header: X-Sig
      encoding: base64
      algorithm: sha512
      timestamp_header: X-Ts
      secrets: ["ferry-generic-e2e"]
    delivery_id:
      header: X-Delivery
    topic: wh.hmac
  - name: wh-token
    type: webhook
    path: /hooks/token
    verify:
      scheme: token
      prefix: "Bearer "
      secrets: ["tok_ferry_e2e_0123456789"]
    content_types: [application/json, text/plain]
    topic: wh.token
  - name: wh-limited
    type: webhook
    path: /hooks/limited
    verify:
      scheme: token
      header: x-token
      secrets: ["tok_ferry_e2e_0123456789"]
    accept_rate:
      requests_per_second: 2
      burst: 3
      per: all
    topic: wh.limited
"#;

/// What a delivery answered `stored` must look like on its topic.
#[derive(Debug)]
struct Expected {
    topic: &'static str,
    connector: &'static str,
    /// The event id the answer gave.
    id: String,
    event_type: &'static str,
    body: Vec<u8>,
    delivery_id: Option<&'static str>,
    key: Option<&'static str>,
    correlation_id: Option<String>,
    traceparent: Option<&'static str>,
    attributes: BTreeMap<String, String>,
}

/// Posts a delivery that must be accepted; checks the answer and returns
/// what the topic must then hold.
async fn accepted(ferry: &Ferry, client: &reqwest::Client, a: Attempt, want: Expected) -> Expected {
    let (path, r) = (a.path, a.send(ferry, client).await);
    assert_answer!(
        r,
        200,
        "stored",
        "{path} ({}): {r:?}\n{}",
        want.connector,
        ferry.log()
    );
    let answer = r.json();
    let id = answer["id"].as_str().expect("an event id").to_owned();
    match want.delivery_id {
        Some(d) => assert_eq!(
            id,
            EventEnvelope::delivery_event_id(want.connector, d).to_string(),
            "{path}: the event id is derived from connector and delivery id"
        ),
        None => assert!(uuid::Uuid::parse_str(&id).is_ok(), "{path}: a UUID: {id}"),
    }
    let correlation = r.correlation().expect("x-correlation-id").to_owned();
    assert_eq!(
        answer["correlation_id"].as_str(),
        Some(correlation.as_str()),
        "{path}: body and header give the same correlation id"
    );
    if let Some(c) = &want.correlation_id {
        assert_eq!(&correlation, c, "{path}: correlation id");
    }
    Expected {
        id,
        correlation_id: Some(correlation),
        ..want
    }
}

fn record(
    topic: &'static str,
    connector: &'static str,
    event_type: &'static str,
    body: &[u8],
    delivery_id: Option<&'static str>,
) -> Expected {
    let mut attributes = BTreeMap::new();
    if let Some(d) = delivery_id {
        attributes.insert("delivery_id".to_owned(), d.to_owned());
    }
    Expected {
        topic,
        connector,
        id: String::new(),
        event_type,
        body: body.to_vec(),
        delivery_id,
        key: None,
        correlation_id: None,
        traceparent: None,
        attributes,
    }
}

/// A request a sender makes.
struct Attempt {
    path: &'static str,
    content_type: Option<&'static str>,
    headers: Headers,
    body: Vec<u8>,
}

fn attempt(
    path: &'static str,
    content_type: Option<&'static str>,
    headers: Headers,
    body: &[u8],
) -> Attempt {
    Attempt {
        path,
        content_type,
        headers,
        body: body.to_vec(),
    }
}

impl Attempt {
    async fn send(&self, ferry: &Ferry, client: &reqwest::Client) -> Reply {
        let url = ferry.url(self.path);
        send(
            client,
            reqwest::Method::POST,
            &url,
            self.content_type,
            &self.headers,
            &self.body,
        )
        .await
    }
}

/// How a refused request must be answered and counted: the status, and the
/// `outcome` and `reason` labels of `ferry_webhook_requests_total`.
type Refused = (u16, &'static str, &'static str);

const BAD_REQUEST: Refused = (400, "bad_request", "none");
const BAD_SIGNATURE: Refused = (401, "unauthorized", "bad_signature");
const EXPIRED: Refused = (401, "unauthorized", "expired");
const FUTURE: Refused = (401, "unauthorized", "future");
const MISSING_SIGNATURE: Refused = (401, "unauthorized", "missing_signature");
const MALFORMED_SIGNATURE: Refused = (401, "unauthorized", "malformed_signature");
const TOO_LARGE: Refused = (413, "too_large", "none");
const UNSUPPORTED_MEDIA_TYPE: Refused = (415, "unsupported_media_type", "none");
const UNKNOWN_TYPE: Refused = (422, "unknown_type", "none");

/// Signed deliveries of every scheme are answered 200 `stored` and land on
/// the topic their event type routes to, the body byte for byte, with the
/// envelope id, type, key, kept headers and correlation id the sender can
/// predict; every refusal (bad, stale or missing signatures, a retired
/// secret, oversized bodies, wrong media types, unroutable types, bodies
/// that are not JSON, floods past `accept_rate`) is answered with its status,
/// counted, and leaves nothing on any topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_deliveries_are_stored_byte_exact_and_refusals_write_nothing() {
    let t0 = Instant::now();
    let ferry = Ferry::start(SIGNED, None).await;
    let client = client();
    eprintln!("ferry up in {:?}", t0.elapsed());
    let mut want: Vec<Expected> = Vec::new();

    // --- Every scheme, routed, byte-exact ---------------------------------
    // Odd spacing, escapes, non-ASCII and a trailing newline: any
    // re-serialisation would show.
    let order = "{\"type\":\"order.created\",  \"data\":{\"id\":\"ord_1\",\"note\":\"caf\u{e9} \u{2615}\\u00e9\"}}\n";
    let ts = now();
    let mut e = record(
        "wh.orders",
        "wh-standard",
        "order.created",
        order.as_bytes(),
        Some("msg_order_1"),
    );
    e.key = Some("ord_1");
    e.attributes.insert("x-tenant".into(), "acme".into());
    let headers = with(
        standard(SW_OLD, "msg_order_1", ts, order.as_bytes()),
        &[("x-tenant", "acme")],
    );
    let a = attempt("/hooks/standard", JSON, headers, order.as_bytes());
    want.push(accepted(&ferry, &client, a, e).await);

    // The second secret of a rotation signs as well; a type no route names
    // goes to the default topic; the delivery id is the correlation id.
    let customer = br#"{ "type": "customer.updated", "data": { "id": 42 } }"#;
    let mut e = record(
        "wh.events",
        "wh-standard",
        "customer.updated",
        customer,
        Some("msg_customer_1"),
    );
    e.key = Some("42");
    e.correlation_id = Some("msg_customer_1".into());
    let headers = standard(SW_NEW, "msg_customer_1", now(), customer);
    let a = attempt("/hooks/standard", JSON, headers, customer);
    want.push(accepted(&ferry, &client, a, e).await);

    // GitHub, with a W3C traceparent: its trace id is the correlation id,
    // and the traceparent travels on in the Kafka headers.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let push = br#"{"ref":"refs/heads/main","commits":[{"id":"abc","message":"fix: \u00e9"}]}"#;
    let mut e = record(
        "wh.github",
        "wh-github",
        "push",
        push,
        Some("72d3162e-cc78-11e3-81ab-4c9367dc0958"),
    );
    e.correlation_id = Some(trace.into());
    e.traceparent = Some(traceparent);
    let headers = with(
        github(
            GH_SECRET,
            "push",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            push,
        ),
        &[
            ("traceparent", traceparent),
            ("x-request-id", "not-this-one"),
        ],
    );
    let a = attempt(
        "/hooks/github",
        Some("application/vnd.github+json"),
        headers,
        push,
    );
    want.push(accepted(&ferry, &client, a, e).await);

    // Stripe: type and delivery id come from the body.
    let invoice = br#"{"id":"evt_1Nx","object":"event","type":"invoice.paid","data":{"object":{"id":"in_1"}}}"#;
    let e = record(
        "wh.stripe",
        "wh-stripe",
        "invoice.paid",
        invoice,
        Some("evt_1Nx"),
    );
    let headers = stripe(STRIPE_SECRET, now(), invoice);
    let a = attempt(
        "/hooks/stripe",
        Some("application/json; charset=utf-8"),
        headers,
        invoice,
    );
    want.push(accepted(&ferry, &client, a, e).await);

    // Shopify, with X-Request-Id as the correlation id.
    let shop = br#"{"id":820982911946154508,"email":"jon@example.com"}"#;
    let mut e = record(
        "wh.shopify",
        "wh-shopify",
        "orders/create",
        shop,
        Some("b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"),
    );
    e.correlation_id = Some("req-shopify-42".into());
    let headers = with(
        shopify(
            SHOPIFY_SECRET,
            "orders/create",
            "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
            shop,
        ),
        &[("X-Request-Id", "req-shopify-42")],
    );
    let a = attempt("/hooks/shopify", JSON, headers, shop);
    want.push(accepted(&ferry, &client, a, e).await);

    // The generic scheme: SHA-512, base64, signed timestamp.
    let generic_body = br#"{"event":"thing.happened","n":1}"#;
    let e = record("wh.hmac", "wh-hmac", "webhook", generic_body, Some("gen-1"));
    let headers = generic(HMAC_SECRET, now(), "gen-1", generic_body);
    let a = attempt("/hooks/hmac", JSON, headers, generic_body);
    want.push(accepted(&ferry, &client, a, e).await);

    // A shared token over a body that is not even UTF-8: still byte-exact.
    let raw: &[u8] = b"plain \xff\xfe bytes\r\n\x00end";
    let e = record("wh.token", "wh-token", "webhook", raw, None);
    let headers = h(&[("Authorization", &format!("Bearer {TOKEN}"))]);
    let a = attempt("/hooks/token", Some("text/plain"), headers, raw);
    want.push(accepted(&ferry, &client, a, e).await);
    eprintln!("every scheme stored by {:?}", t0.elapsed());

    // --- Refusals -----------------------------------------------------------
    // Two stalling senders, cut off while the rest goes on: one stops in
    // the middle of its body, one in the middle of its headers.
    let slow_body = tokio::spawn(stall(
        ferry.listen,
        "POST /hooks/github HTTP/1.1\r\nHost: ferry\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"partial\":",
    ));
    let slow_headers = tokio::spawn(stall(
        ferry.listen,
        "POST /hooks/github HTTP/1.1\r\nHost: ferry\r\nContent-Ty",
    ));
    let signed = br#"{"type":"order.refused","data":{"id":"refused-1"}}"#;
    let tampered = br#"{"type":"order.refused","data":{"id":"refused-2"}}"#;
    let reencoded = br#"{"type": "order.refused", "data": {"id": "refused-1"}}"#;
    let (old, ahead) = (now() - 600, now() + 600);
    let big = sized("order.big", "refused-big", BODY_LIMIT + 1);
    let not_json = b"refused-not-json: this is not JSON";
    // The key pointer finds an object, not a string or number.
    let object_key = br#"{"type":"order.created","data":{"id":{"nested":"refused-3"}}}"#;
    // Authentic, but longer than a delivery id may be (it is stored and logged).
    let long_id = format!("msg_{}", "9".repeat(1100));
    let customer_created = br#"{"id":"evt_refused","object":"event","type":"customer.created"}"#;
    let wrong_algo = {
        // SHA-256 where SHA-512 is configured.
        let t = now().to_string();
        let sig = B64.encode(hmac256(
            HMAC_SECRET.as_bytes(),
            &[t.as_bytes(), b".", signed],
        ));
        h(&[("X-Sig", &sig), ("X-Ts", &t), ("X-Delivery", "gen-refused")])
    };
    let (json, text) = (JSON, Some("text/plain"));
    // A request on each connector's path, with the connector it counts for.
    let on = |path: &'static str, connector: &'static str| {
        move |content_type, headers, body: &[u8]| {
            (attempt(path, content_type, headers, body), connector)
        }
    };
    let sw = on("/hooks/standard", "wh-standard");
    let gh = on("/hooks/github", "wh-github");
    let st = on("/hooks/stripe", "wh-stripe");
    let sh = on("/hooks/shopify", "wh-shopify");
    let hm = on("/hooks/hmac", "wh-hmac");
    let tk = on("/hooks/token", "wh-token");
    #[rustfmt::skip]
    let cases = [
        (sw(json, standard(SW_OLD, "msg_r12", now(), object_key), object_key), BAD_REQUEST),
        (sw(json, standard(SW_OLD, &long_id, now(), signed), signed), BAD_REQUEST),
        (gh(json, github(GH_SECRET, "", "gh-no-type", push), push), BAD_REQUEST),
        (sw(json, standard(SW_OLD, "msg_r1", now(), signed), tampered), BAD_SIGNATURE),
        (sw(json, standard(SW_OTHER, "msg_r2", now(), signed), signed), BAD_SIGNATURE),
        (sw(json, standard(SW_OLD, "msg_r3", old, signed), signed), EXPIRED),
        (sw(json, standard(SW_OLD, "msg_r4", ahead, signed), signed), FUTURE),
        (sw(json, h(&[("webhook-id", "msg_r5")]), signed), MISSING_SIGNATURE),
        // The signature is over the raw bytes: re-encoded JSON is refused.
        (sw(json, standard(SW_OLD, "msg_r6", now(), reencoded), signed), BAD_SIGNATURE),
        (sw(json, standard(SW_OLD, "msg_r7", now(), &big), &big), TOO_LARGE),
        (sw(text, standard(SW_OLD, "msg_r8", now(), signed), signed), UNSUPPORTED_MEDIA_TYPE),
        (sw(None, standard(SW_OLD, "msg_r9", now(), signed), signed), UNSUPPORTED_MEDIA_TYPE),
        (sw(json, standard(SW_OLD, "msg_r10", now(), not_json), not_json), BAD_REQUEST),
        (gh(json, github("not the secret", "push", "gh-refused", push), push), BAD_SIGNATURE),
        (st(json, stripe(STRIPE_SECRET, now(), invoice), tampered), BAD_SIGNATURE),
        (st(json, stripe(STRIPE_SECRET, old, invoice), invoice), EXPIRED),
        (st(json, stripe(STRIPE_SECRET, now(), customer_created), customer_created), UNKNOWN_TYPE),
        (sh(json, shopify("shpss_wrong", "orders/create", "shop-refused", shop), shop), BAD_SIGNATURE),
        (hm(json, wrong_algo, signed), BAD_SIGNATURE),
        (hm(json, generic(HMAC_SECRET, old, "gen-old", signed), signed), EXPIRED),
        (tk(json, h(&[("Authorization", "Bearer tok_guess")]), signed), BAD_SIGNATURE),
        (tk(json, h(&[("Authorization", TOKEN)]), signed), MALFORMED_SIGNATURE),
    ];
    let mut counted: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    for ((a, connector), (status, outcome, reason)) in cases {
        let (path, r) = (a.path, a.send(&ferry, &client).await);
        assert_eq!(r.status, status, "{path} {outcome}/{reason}: {r:?}");
        assert!(
            r.correlation().is_some(),
            "{path} {status}: x-correlation-id on a refusal: {r:?}"
        );
        for secret in [
            SW_OLD,
            SW_NEW,
            GH_SECRET,
            STRIPE_SECRET,
            SHOPIFY_SECRET,
            HMAC_SECRET,
            TOKEN,
        ] {
            assert!(
                !r.text.contains(secret),
                "{path}: a refusal names no secret: {}",
                r.text
            );
        }
        *counted.entry((connector, outcome, reason)).or_default() += 1;
    }
    // Over the limit without a Content-Length: found out while reading.
    let (status, text) = post_chunked(
        ferry.listen,
        "/hooks/standard",
        &standard(SW_OLD, "msg_r11", now(), &big),
        &big,
    )
    .await;
    assert_eq!(status, 413, "a chunked body over body_limit: {text}");
    *counted
        .entry(("wh-standard", "too_large", "none"))
        .or_default() += 1;
    // Not a webhook: an unknown path, a method other than POST.
    let nowhere = post(&client, &ferry.url("/hooks/nowhere"), &Vec::new(), signed).await;
    assert_eq!(nowhere.status, 404, "{nowhere:?}");
    let get = send(
        &client,
        reqwest::Method::GET,
        &ferry.url("/hooks/github"),
        None,
        &Vec::new(),
        b"",
    )
    .await;
    assert_eq!(
        (get.status, get.header("allow")),
        (405, Some("POST")),
        "{get:?}"
    );

    // Exactly body_limit is not over it, with or without a Content-Length.
    let at_limit = sized("limit.exact", "at-limit-1", BODY_LIMIT);
    let mut e = record(
        "wh.events",
        "wh-standard",
        "limit.exact",
        &at_limit,
        Some("msg_limit_1"),
    );
    e.key = Some("at-limit-1");
    let headers = standard(SW_OLD, "msg_limit_1", now(), &at_limit);
    let a = attempt("/hooks/standard", JSON, headers, &at_limit);
    want.push(accepted(&ferry, &client, a, e).await);
    let at_limit = sized("limit.exact", "at-limit-2", BODY_LIMIT);
    let headers = standard(SW_OLD, "msg_limit_2", now(), &at_limit);
    let (status, text) = post_chunked(ferry.listen, "/hooks/standard", &headers, &at_limit).await;
    assert_eq!(status, 200, "a chunked body of exactly body_limit: {text}");
    let mut e = record(
        "wh.events",
        "wh-standard",
        "limit.exact",
        &at_limit,
        Some("msg_limit_2"),
    );
    e.key = Some("at-limit-2");
    e.id = EventEnvelope::delivery_event_id("wh-standard", "msg_limit_2").to_string();
    e.correlation_id = Some("msg_limit_2".into());
    want.push(e);
    let limit = Duration::from_secs(REQUEST_TIMEOUT_SECS + 3);
    let (answer, after) = slow_body.await.expect("slow body task");
    assert!(
        answer.starts_with("HTTP/1.1 408") && after < limit,
        "a body stalled past request_timeout: 408 within {limit:?}, got {answer:?} after {after:?}"
    );
    *counted.entry(("wh-github", "timeout", "none")).or_default() += 1;
    let (answer, after) = slow_headers.await.expect("slow headers task");
    assert!(
        after < limit,
        "headers stalled past request_timeout: closed within {limit:?}, got {answer:?} after {after:?}"
    );
    // A sender announcing a body over the limit and waiting for
    // `100 Continue` is refused at once, before sending it.
    let (answer, after) = stall(
        ferry.listen,
        "POST /hooks/standard HTTP/1.1\r\nHost: ferry\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 100000000\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 413") && after < Duration::from_secs(REQUEST_TIMEOUT_SECS),
        "413 before the body, not {answer:?} after {after:?}"
    );
    *counted
        .entry(("wh-standard", "too_large", "none"))
        .or_default() += 1;
    // HTTP/2 with prior knowledge (h2c) on the plain port would escape the
    // header-read timeout (an HTTP/1 setting): the listener speaks HTTP/1
    // only and lets go of such a connection at once, where an HTTP/2
    // server would answer SETTINGS and hold it open.
    let (answer, after) = stall(ferry.listen, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert!(
        after < limit && (answer.is_empty() || answer.starts_with("HTTP/1.1 ")),
        "an h2c preface is refused within {limit:?}, not held: {answer:?} after {after:?}"
    );

    // A refused delivery does not take its id: the genuine delivery (or the
    // sender's corrected retry) with that id is stored, not a "duplicate".
    // Otherwise a forger could silence deliveries by guessing their ids.
    for (id, key) in [
        ("msg_r2", "ord_r2"),
        ("msg_r8", "ord_r8"),
        ("msg_r10", "ord_r10"),
    ] {
        let body = format!(r#"{{"type":"order.created","data":{{"id":"{key}"}}}}"#);
        let mut e = record(
            "wh.orders",
            "wh-standard",
            "order.created",
            body.as_bytes(),
            Some(id),
        );
        e.key = Some(key);
        let headers = standard(SW_OLD, id, now(), body.as_bytes());
        let a = attempt("/hooks/standard", JSON, headers, body.as_bytes());
        want.push(accepted(&ferry, &client, a, e).await);
    }
    eprintln!("refusals answered by {:?}", t0.elapsed());

    // --- accept_rate: 2/s, burst 3, for all senders together --------------
    let flood_started = Instant::now();
    let flood = (0..10).map(|i| {
        let (client, url) = (&client, ferry.url("/hooks/limited"));
        async move {
            let body = format!(r#"{{"flood":{i}}}"#);
            let headers = h(&[("x-token", TOKEN)]);
            (
                body.clone(),
                post(client, &url, &headers, body.as_bytes()).await,
            )
        }
    });
    let replies = futures::future::join_all(flood).await;
    let elapsed = flood_started.elapsed().as_secs_f64();
    let mut limited = 0;
    for (body, r) in replies {
        match r.status {
            200 => {
                assert_eq!(r.status_field(), "stored", "{r:?}");
                let mut e = record("wh.limited", "wh-limited", "webhook", body.as_bytes(), None);
                e.id = r.json()["id"].as_str().expect("id").to_owned();
                e.correlation_id = r.correlation().map(str::to_owned);
                want.push(e);
            }
            429 => {
                limited += 1;
                let wait = r.header("retry-after").and_then(|v| v.parse::<u64>().ok());
                assert!(
                    wait.is_some_and(|w| w >= 1),
                    "429 with Retry-After in whole seconds >= 1: {r:?}"
                );
                assert!(
                    r.correlation().is_some(),
                    "x-correlation-id on a 429: {r:?}"
                );
            }
            other => panic!("a flood is answered 200 or 429, not {other}: {r:?}"),
        }
    }
    let admitted = 10 - limited;
    let bound = 3 + (2.0 * elapsed).floor() as u64 + 1;
    assert!(
        (3..=bound).contains(&admitted),
        "burst 3 at 2/s over {elapsed:.2}s admits 3..={bound}, admitted {admitted}"
    );
    counted.insert(("wh-limited", "rate_limited", "none"), limited);
    // The budget refills: a second later, a sender gets through again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = br#"{"flood":"after the wait"}"#;
    let e = record("wh.limited", "wh-limited", "webhook", after, None);
    let headers = h(&[("x-token", TOKEN)]);
    let a = attempt("/hooks/limited", JSON, headers, after);
    want.push(accepted(&ferry, &client, a, e).await);
    eprintln!("flood: {admitted} of 10 admitted in {elapsed:.2}s");

    // --- What the topics hold: exactly the accepted deliveries ------------
    for topic in [
        "wh.orders",
        "wh.events",
        "wh.github",
        "wh.stripe",
        "wh.shopify",
        "wh.hmac",
        "wh.token",
        "wh.limited",
    ] {
        let records = read_topic(&ferry.broker.bootstrap, topic).await;
        let mut expected: Vec<&Expected> = want.iter().filter(|e| e.topic == topic).collect();
        assert_eq!(
            records.len(),
            expected.len(),
            "{topic}: one record per accepted delivery, none for a refusal: {:#?}",
            records
                .iter()
                .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
                .collect::<Vec<_>>()
        );
        for r in &records {
            let at = expected
                .iter()
                .position(|e| e.id == r.id)
                .unwrap_or_else(|| panic!("{topic}: a record no answer announced: {r:?}"));
            let e = expected.swap_remove(at);
            assert_eq!(
                r.payload, e.body,
                "{topic}: the payload is the body, byte for byte"
            );
            assert_eq!(
                (r.source.as_str(), r.event_type.as_str()),
                (e.connector, e.event_type),
                "{topic}"
            );
            assert_eq!(r.key.as_deref(), e.key, "{topic}: the record key");
            assert_eq!(
                r.attributes, e.attributes,
                "{topic}: attributes (delivery id and kept headers only)"
            );
            assert_eq!(
                Some(&r.correlation_id),
                e.correlation_id.as_ref(),
                "{topic}: envelope correlation id"
            );
            assert_eq!(
                r.headers.get("ferry-correlation-id"),
                e.correlation_id.as_ref(),
                "{topic}: ferry-correlation-id header"
            );
            assert_eq!(
                r.headers.get("ferry-delivery-id").map(String::as_str),
                e.delivery_id,
                "{topic}: ferry-delivery-id header"
            );
            assert_eq!(
                r.headers.get("traceparent").map(String::as_str),
                e.traceparent,
                "{topic}: traceparent header"
            );
            for (k, v) in &r.headers {
                for secret in [
                    SW_OLD,
                    GH_SECRET,
                    STRIPE_SECRET,
                    SHOPIFY_SECRET,
                    HMAC_SECRET,
                    TOKEN,
                ] {
                    assert!(!v.contains(secret), "{topic}: header {k} carries a secret");
                }
            }
        }
    }
    eprintln!("topics checked by {:?}", t0.elapsed());

    // --- Counted, and nothing left in a spool -------------------------------
    let metrics = ferry.metrics().await;
    for ((connector, outcome, reason), n) in &counted {
        let labels = [
            ("connector", *connector),
            ("outcome", *outcome),
            ("reason", *reason),
        ];
        assert_eq!(
            requests(&metrics, &labels),
            *n,
            "{connector} {outcome}/{reason}"
        );
    }
    for connector in [
        "wh-standard",
        "wh-github",
        "wh-stripe",
        "wh-shopify",
        "wh-hmac",
        "wh-token",
        "wh-limited",
    ] {
        let stored = want.iter().filter(|e| e.connector == connector).count() as u64;
        let labels = [("connector", connector), ("outcome", "stored_kafka")];
        assert_eq!(
            requests(&metrics, &labels),
            stored,
            "{connector} stored_kafka"
        );
        let spooled = [("connector", connector), ("outcome", "stored_spool")];
        assert_eq!(requests(&metrics, &spooled), 0, "{connector} stored_spool");
    }
    let connectors = ferry.connectors().await;
    for name in [
        "wh-standard",
        "wh-github",
        "wh-stripe",
        "wh-shopify",
        "wh-hmac",
        "wh-token",
        "wh-limited",
    ] {
        let c = connectors
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} on /connectors: {connectors:?}"));
        assert_eq!(c["spool"]["records"], 0, "{name}: an empty spool: {c}");
        assert_eq!(
            c["spool"]["bytes"].as_u64().map(|_| ()),
            Some(()),
            "{name}: spool bytes: {c}"
        );
    }

    ferry.stop().await;
    eprintln!("done in {:?}", t0.elapsed());
}

// ---------------------------------------------------------------------------
// 2. Replays: one delivery, one record, even across a restart
// ---------------------------------------------------------------------------

const REPLAYED: &str = r#"
  - name: wh-replay
    type: webhook
    path: /hooks/replay
    verify:
      scheme: standard_webhooks
      secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
    topic: wh.replay
  - name: wh-replay-other
    type: webhook
    path: /hooks/other
    verify:
      scheme: standard_webhooks
      secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
    topic: wh.replay-other
  - name: wh-replay-stripe
    type: webhook
    path: /hooks/stripe
    verify:
      scheme: stripe
      secrets: ["whsec_ferry_stripe_e2e"]
    topic: wh.replay-stripe
"#;

/// Delivery ids (Stripe's come from the body, so anything JSON can hold)
/// chosen to break a line-based file of seen ids: separators, escapes,
/// and one that is the prefix of another.
const HOSTILE_IDS: [&str; 6] = [
    "evt_with space",
    "evt_line\\nbreak",
    "evt_line\\\\nbreak",
    "evt_cr\\r\\n1700000000000 evt_forged",
    "evt_tr\\u00e9s \\u2615 \\\\",
    "evt_tab\\tend",
];

/// What the hostile ids must not be mistaken for once reloaded.
const INNOCENT_IDS: [&str; 4] = ["evt_line", "break", "evt_forged", "evt_cr"];

/// Posts a signed Stripe event for each delivery id in `ids`; each must be
/// answered 200 `label` (`note` follows the id in a failure message).
async fn post_stripe_events(
    client: &reqwest::Client,
    url: &str,
    ids: &[&str],
    label: &str,
    note: &str,
) {
    for id in ids {
        let body = format!(r#"{{"id":"{id}","object":"event","type":"charge.succeeded"}}"#);
        let body = body.as_bytes();
        let r = post(client, url, &stripe(STRIPE_SECRET, now(), body), body).await;
        assert_answer!(r, 200, label, "{id}{note}: {r:?}");
    }
}

/// A sender that retries (the same delivery, re-signed or not, one after
/// another or at once) gets 200 each time, but the topic holds the event
/// once; after Ferry restarts, a retry is still recognised. Another
/// connector has a window of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_delivery_is_stored_once_even_across_a_restart() {
    let t0 = Instant::now();
    let mut ferry = Ferry::start(REPLAYED, None).await;
    let client = client();
    let url = ferry.url("/hooks/replay");
    let event_id = |d: &str| EventEnvelope::delivery_event_id("wh-replay", d).to_string();
    let first = br#"{"type":"invoice.paid","data":{"id":"in_1"}}"#;
    let second = br#"{"type":"invoice.paid","data":{"id":"in_2"}}"#;
    let third = br#"{"type":"invoice.paid","data":{"id":"in_3"}}"#;

    let signed = standard(SW_OLD, "msg_replay_1", now(), first);
    let r = post(&client, &url, &signed, first).await;
    assert_answer!(r, 200, "stored", "{r:?}\n{}", ferry.log());
    assert_eq!(
        r.json()["id"].as_str(),
        Some(event_id("msg_replay_1").as_str())
    );
    // The same request again, and re-signed with a later timestamp.
    for headers in [
        signed.clone(),
        standard(SW_OLD, "msg_replay_1", now() + 1, first),
    ] {
        let r = post(&client, &url, &headers, first).await;
        assert_answer!(r, 200, "duplicate", "{r:?}");
        assert_eq!(
            r.json()["id"].as_str(),
            Some(event_id("msg_replay_1").as_str()),
            "same event id"
        );
        assert!(r.correlation().is_some(), "{r:?}");
    }

    // Five copies at once: one is stored, none twice.
    let copies = (0..5).map(|_| {
        let (client, url) = (&client, url.clone());
        async move {
            post(
                client,
                &url,
                &standard(SW_OLD, "msg_replay_2", now(), second),
                second,
            )
            .await
        }
    });
    let replies = futures::future::join_all(copies).await;
    let stored = replies
        .iter()
        .filter(|r| r.status == 200 && r.status_field() == "stored")
        .count();
    assert_eq!(stored, 1, "exactly one copy stored: {replies:#?}");
    for r in &replies {
        let ok = (r.status == 200 && ["stored", "duplicate"].contains(&r.status_field().as_str()))
            || (r.status == 409 && r.header("retry-after").is_some());
        assert!(
            ok,
            "a concurrent copy is stored, a duplicate, or 409 with Retry-After: {r:?}"
        );
    }

    // The same delivery id on another connector is another delivery.
    let other = post(&client, &ferry.url("/hooks/other"), &signed, first).await;
    assert_answer!(other, 200, "stored", "{other:?}");
    assert_eq!(
        other.json()["id"].as_str(),
        Some(
            EventEnvelope::delivery_event_id("wh-replay-other", "msg_replay_1")
                .to_string()
                .as_str()
        )
    );

    let stripe_url = ferry.url("/hooks/stripe");
    post_stripe_events(&client, &stripe_url, &HOSTILE_IDS, "stored", "").await;

    ferry.restart().await;
    eprintln!("restarted by {:?}", t0.elapsed());
    let stripe_url = ferry.url("/hooks/stripe");
    let again = " after a restart";
    post_stripe_events(&client, &stripe_url, &HOSTILE_IDS, "duplicate", again).await;
    let never = " was never delivered";
    post_stripe_events(&client, &stripe_url, &INNOCENT_IDS, "stored", never).await;
    let url = ferry.url("/hooks/replay");
    for (id, body) in [("msg_replay_1", first), ("msg_replay_2", second)] {
        let r = post(&client, &url, &standard(SW_OLD, id, now(), body), body).await;
        assert_answer!(
            r,
            200,
            "duplicate",
            "{id} after a restart: {r:?}\n{}",
            ferry.log()
        );
    }
    let r = post(
        &client,
        &url,
        &standard(SW_OLD, "msg_replay_3", now(), third),
        third,
    )
    .await;
    assert_answer!(r, 200, "stored", "a new delivery after the restart: {r:?}");

    let records = read_topic(&ferry.broker.bootstrap, "wh.replay").await;
    let mut ids: Vec<(String, Vec<u8>)> = records
        .iter()
        .map(|r| (r.id.clone(), r.payload.clone()))
        .collect();
    ids.sort();
    let mut expected = vec![
        (event_id("msg_replay_1"), first.to_vec()),
        (event_id("msg_replay_2"), second.to_vec()),
        (event_id("msg_replay_3"), third.to_vec()),
    ];
    expected.sort();
    assert_eq!(ids, expected, "each delivery once on the topic");
    assert_eq!(
        read_topic(&ferry.broker.bootstrap, "wh.replay-other")
            .await
            .len(),
        1
    );
    let stripe_records = read_topic(&ferry.broker.bootstrap, "wh.replay-stripe").await;
    assert_eq!(
        stripe_records.len(),
        HOSTILE_IDS.len() + INNOCENT_IDS.len(),
        "each Stripe event once: {:?}",
        stripe_records
            .iter()
            .map(|r| &r.attributes)
            .collect::<Vec<_>>()
    );
    let metrics = ferry.metrics().await;
    let duplicates = [("connector", "wh-replay"), ("outcome", "duplicate")];
    assert_eq!(
        requests(&metrics, &duplicates),
        2,
        "the restarted Ferry counted both repeats"
    );

    ferry.stop().await;
    eprintln!("done in {:?}", t0.elapsed());
}

// ---------------------------------------------------------------------------
// 3. HTTPS
// ---------------------------------------------------------------------------

/// A self-signed certificate for 127.0.0.1, made with the `openssl` CLI.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            // A leaf, not a CA: rustls refuses a CA certificate as the server's.
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap_or_else(|e| {
            panic!("this test needs the `openssl` command line tool to make a certificate: {e}")
        });
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// With `webhooks.tls`, the listener speaks HTTPS: a sender that trusts the
/// certificate delivers signed webhooks, and plain HTTP on the same port
/// gets no answer and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_https_listener_takes_signed_deliveries_and_refuses_plain_http() {
    let t0 = Instant::now();
    let certs = tempfile::tempdir().expect("dir");
    let (cert, key) = self_signed(certs.path());
    let connectors = r#"
  - name: wh-tls
    type: webhook
    path: /hooks/github
    verify:
      scheme: github
      secrets: ["It's a Secret to Everybody"]
    topic: wh.tls
"#;
    let ferry = Ferry::start(connectors, Some((&cert, &key))).await;
    let pem = std::fs::read(&cert).expect("cert");
    let client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_millis(500))
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM certificate"))
        .build()
        .expect("HTTPS client");
    let https = format!("https://{}/hooks/github", ferry.listen);
    let body = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let r = post(
        &client,
        &https,
        &github(GH_SECRET, "ping", "tls-1", body),
        body,
    )
    .await;
    assert_answer!(r, 200, "stored", "{r:?}\n{}", ferry.log());
    // Refusals are answered over TLS as well.
    let r = post(
        &client,
        &https,
        &github("wrong", "ping", "tls-2", body),
        body,
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");

    let plain_body = br#"{"zen":"sent in the clear"}"#;
    let plain = try_send(with_delivery(
        reqwest::Client::new().post(ferry.url("/hooks/github")),
        JSON,
        &github(GH_SECRET, "ping", "tls-plain", plain_body),
        plain_body,
    ))
    .await;
    match &plain {
        Err(_) => {}
        Ok(r) => assert!(
            !(200..300).contains(&r.status),
            "plain HTTP to the HTTPS listener must not be accepted: {r:?}"
        ),
    }

    let records = read_topic(&ferry.broker.bootstrap, "wh.tls").await;
    assert_eq!(records.len(), 1, "only the HTTPS delivery: {records:?}");
    assert_eq!(records[0].payload, body.to_vec());
    assert_eq!(
        records[0].id,
        EventEnvelope::delivery_event_id("wh-tls", "tls-1").to_string()
    );

    ferry.stop().await;
    eprintln!("done in {:?}", t0.elapsed());
}

// ---------------------------------------------------------------------------
// 4. Correlation ids
// ---------------------------------------------------------------------------

/// Every answer of the webhook listener carries `x-correlation-id`, so a
/// sender can quote it: the trace id of a valid `traceparent`, else
/// `X-Request-Id`, else the delivery id, else a fresh UUID. Accepted or
/// refused, on a served path or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_a_correlation_id() {
    let connectors = r#"
  - name: wh-corr
    type: webhook
    path: /hooks/github
    verify:
      scheme: github
      secrets: ["It's a Secret to Everybody"]
    topic: wh.corr
"#;
    let ferry = Ferry::start(connectors, None).await;
    let client = client();
    let url = ferry.url("/hooks/github");
    let body = br#"{"zen":"Design for failure."}"#;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let signed = |delivery: &str| github(GH_SECRET, "ping", delivery, body);
    let forged = |delivery: &str| github("forged", "ping", delivery, body);

    // (what is sent, the status, the correlation id; None: any)
    let cases = [
        (
            with(
                signed("corr-1"),
                &[("traceparent", traceparent), ("x-request-id", "req-1")],
            ),
            200,
            Some(trace),
        ),
        (
            with(signed("corr-2"), &[("x-request-id", "req-2")]),
            200,
            Some("req-2"),
        ),
        (signed("corr-3"), 200, Some("corr-3")),
        // A malformed traceparent is ignored.
        (
            with(signed("corr-4"), &[("traceparent", "00-zz-yy-01")]),
            200,
            Some("corr-4"),
        ),
        (
            with(forged("corr-5"), &[("traceparent", traceparent)]),
            401,
            Some(trace),
        ),
        (
            with(forged("corr-6"), &[("x-request-id", "req-6")]),
            401,
            Some("req-6"),
        ),
        (forged("corr-7"), 401, None),
    ];
    for (headers, status, correlation) in &cases {
        let r = post(&client, &url, headers, body).await;
        assert_eq!(r.status, *status, "{headers:?}: {r:?}");
        let got = r
            .correlation()
            .unwrap_or_else(|| panic!("x-correlation-id: {r:?}"));
        match correlation {
            Some(c) => assert_eq!(got, *c, "{headers:?}"),
            None => assert!(!got.is_empty(), "{headers:?}"),
        }
    }
    let traced = h(&[("traceparent", traceparent)]);
    let wrong_type = send(
        &client,
        reqwest::Method::POST,
        &url,
        Some("text/plain"),
        &traced,
        body,
    )
    .await;
    assert_eq!(
        (wrong_type.status, wrong_type.correlation()),
        (415, Some(trace)),
        "{wrong_type:?}"
    );

    // Not a webhook path, not a POST: still an answer of the listener.
    let nowhere = post(&client, &ferry.url("/hooks/nowhere"), &traced, body).await;
    let get = send(&client, reqwest::Method::GET, &url, None, &traced, b"").await;
    assert_eq!(
        [
            (nowhere.status, nowhere.correlation()),
            (get.status, get.correlation())
        ],
        [(404, Some(trace)), (405, Some(trace))],
        "{nowhere:?}\n{get:?}"
    );

    ferry.stop().await;
}
