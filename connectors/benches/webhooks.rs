//! Accepted webhooks per second, and their latency, beside the two ceilings
//! that bound them.
//!
//! `cargo bench -p ferry-connectors --bench webhooks` (env: `WARMUP`,
//! default `2s`; `MEASURE`, default `10s`; `RUNS`, default 3; `LINGERS`,
//! default `5ms,1ms,0ms`; `STORAGE`, `sqlite` (default) or `memory`;
//! `MAX_LOAD`, unset: when set, each run first waits, up to 20 minutes,
//! until the 1-minute load average is below it; `DIAG=1` adds a raw
//! rdkafka case whose records have the size and headers of Ferry's). One
//! process, one embedded broker per run, shared by every case of that run.
//! 64 closed-loop workers, each waiting for its answer before sending the
//! next, 1 KiB JSON bodies:
//! - **HTTP ceiling**: an axum router on `axum_server` (as the webhook
//!   listener serves) whose handler reads the body and answers 200;
//! - **Kafka ceiling**: a plain rdkafka `FutureProducer` with Ferry's
//!   producer settings (`KafkaConfig::producer_config`: idempotent,
//!   `acks=all`, lz4), each worker awaiting its record's acknowledgement;
//! - **Ferry**: a `type: webhook` connector (Standard Webhooks signatures,
//!   delivery-id deduplication on, one topic of 3 partitions, no key) served
//!   by Ferry's runtime, which answers 200 once Kafka acknowledged the event.
//!
//! The HTTP cases send the same signed requests (a unique `webhook-id`,
//! `webhook-timestamp`, `webhook-signature`, `content-type:
//! application/json`) over keep-alive connections (reqwest, one pool, 64
//! connections). A request is signed before its clock starts: the latency is
//! the round trip; the signing (a few µs) still uses the shared CPU. Only 200
//! answers count as accepted; others are counted and printed. A request is
//! counted when its answer arrives inside the measured window. Each linger
//! in `LINGERS` gives a Kafka ceiling and a Ferry case with that
//! `kafka.producer.linger`; the HTTP ceiling does not depend on it. The
//! order of the cases is reversed every other run. Each line also shows the
//! CPU the whole process (client, server, broker) used in the window, as a
//! share of the 2 cores, and for Ferry the mean of its own
//! `ferry_webhook_request_duration_seconds` (arrival to answer inside the
//! handler): the client's mean minus it is the time spent outside Ferry's
//! handler (HTTP, scheduling).

use axum::body::Bytes;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ferry::kafka::{BrokerStorage, DevBroker, KafkaAdmin, KafkaConfig};
use ferry::runtime::{BrokerMode, Running};
use hmac::{Hmac, Mac};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "support/stats.rs"]
mod stats;
use stats::{median, spread};

const CONCURRENCY: usize = 64;
const BODY_BYTES: usize = 1024;
/// Distinct bodies, so lz4 cannot shrink a batch to nothing.
const BODIES: usize = 1000;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PATH: &str = "/webhooks/bench";
/// Vector 0.58, `http_server` → `kafka` with end-to-end acknowledgements,
/// measured on this machine under the same load (from the issue).
const VECTOR_RATE: f64 = 7_800.0;

fn free() -> SocketAddr {
    ferry_testkit::free_addr()
}

fn env_duration(name: &str, default: Duration) -> Duration {
    std::env::var(name)
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy)]
struct Phases {
    warmup: Duration,
    measure: Duration,
}

/// What one case's workers saw in the measured window.
#[derive(Default)]
struct Tally {
    /// Round trips of the accepted requests, in µs.
    latencies_us: Vec<u32>,
    /// Answers other than 200, by status.
    other: BTreeMap<u16, u64>,
    /// Requests that got no answer (connection errors, Kafka errors).
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (status, n) in other.other {
            *self.other.entry(status).or_default() += n;
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// One case of one run.
#[derive(Clone, Debug)]
struct Outcome {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
    /// Share of the 2 cores the whole process used in the window.
    cpu: f64,
    /// Answers other than 200, and failures, as text.
    refused: String,
    /// Ferry's own view, from its metrics: the server-side request duration.
    server: String,
}

/// The process's CPU time so far (user + system), from /proc.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which ends with the last `)`.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// Runs `CONCURRENCY` workers in a closed loop: each calls `make(worker,
/// seq)` (its synchronous part, e.g. signing, runs before the clock
/// starts), awaits the future and records the round trip. Answers arriving
/// in the measured window count.
async fn closed_loop<F, Fut>(phases: Phases, make: F) -> Outcome
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u16, String>> + Send + 'static,
{
    let make = Arc::new(make);
    let start = Instant::now();
    let (from, until) = (
        start + phases.warmup,
        start + phases.warmup + phases.measure,
    );
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            let make = Arc::clone(&make);
            tokio::spawn(async move {
                let mut tally = Tally::default();
                tally.latencies_us.reserve(200_000 / CONCURRENCY);
                for seq in 0.. {
                    let request = make(w, seq);
                    let sent = Instant::now();
                    if sent >= until {
                        break;
                    }
                    let answer = request.await;
                    let done = Instant::now();
                    if done < from || done >= until {
                        continue;
                    }
                    match answer {
                        Ok(200) => {
                            let us = done.duration_since(sent).as_micros();
                            tally
                                .latencies_us
                                .push(u32::try_from(us).unwrap_or(u32::MAX));
                        }
                        Ok(status) => *tally.other.entry(status).or_default() += 1,
                        Err(e) => {
                            tally.errors += 1;
                            tally.first_error.get_or_insert(e);
                        }
                    }
                }
                tally
            })
        })
        .collect();
    tokio::time::sleep_until(from.into()).await;
    let cpu_from = cpu_time();
    tokio::time::sleep_until(until.into()).await;
    let cpu = (cpu_time() - cpu_from).as_secs_f64() / phases.measure.as_secs_f64() / 2.0;
    let mut tally = Tally::default();
    for w in workers {
        tally.merge(w.await.expect("worker"));
    }
    let mut l = tally.latencies_us;
    l.sort_unstable();
    let pct = |p: usize| {
        l.get((l.len() * p / 100).min(l.len().saturating_sub(1)))
            .map_or(0.0, |&us| f64::from(us) / 1000.0)
    };
    let mut refused: Vec<String> = tally
        .other
        .iter()
        .map(|(s, n)| format!("{n}x {s}"))
        .collect();
    if tally.errors > 0 {
        refused.push(format!(
            "{}x failed ({})",
            tally.errors,
            tally.first_error.unwrap_or_default()
        ));
    }
    Outcome {
        rate: l.len() as f64 / phases.measure.as_secs_f64(),
        p50_ms: pct(50),
        p99_ms: pct(99),
        mean_ms: l.iter().map(|&us| f64::from(us)).sum::<f64>() / l.len().max(1) as f64 / 1000.0,
        cpu,
        refused: refused.join(", "),
        server: String::new(),
    }
}

/// The mean of `ferry_webhook_request_duration_seconds` of `connector`
/// (arrival to answer inside Ferry, warm-up included), from its exact sum
/// and count.
fn server_side(connector: &str) -> String {
    let rendered = ferry::telemetry::metrics::install().render();
    let value = |suffix: &str| {
        let prefix = format!("ferry_webhook_request_duration_seconds_{suffix}{{");
        rendered
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .find(|l| l.contains(&format!("connector=\"{connector}\"")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    match (value("sum"), value("count")) {
        (Some(sum), Some(count)) if count > 0.0 => {
            format!("server-side mean {:.2} ms", sum / count * 1000.0)
        }
        _ => String::new(),
    }
}

/// `BODIES` JSON bodies of exactly `BODY_BYTES` bytes, with random content.
fn bodies() -> Arc<Vec<Bytes>> {
    let bodies = (0..BODIES)
        .map(|i| {
            let head = format!(
                r#"{{"type":"invoice.paid","id":"evt_{i:06}","data":{{"object":"invoice","pad":""#
            );
            let tail = r#""}}"#;
            let mut pad = String::new();
            while head.len() + pad.len() + tail.len() < BODY_BYTES {
                pad.push_str(&uuid::Uuid::new_v4().simple().to_string());
            }
            pad.truncate(BODY_BYTES - head.len() - tail.len());
            let body = format!("{head}{pad}{tail}");
            debug_assert!(serde_json::from_str::<serde_json::Value>(&body).is_ok());
            Bytes::from(body)
        })
        .collect();
    Arc::new(bodies)
}

/// Which body delivery `seq` of `worker` carries.
fn pick(worker: usize, seq: u64, len: usize) -> usize {
    let n = (worker as u64).wrapping_mul(7919).wrapping_add(seq);
    usize::try_from(n % len as u64).unwrap_or(0)
}

/// Signs and sends Standard Webhooks deliveries to `url`.
struct Sender {
    client: reqwest::Client,
    url: String,
    key: Vec<u8>,
    bodies: Arc<Vec<Bytes>>,
    /// Makes delivery ids unique across cases.
    case: String,
}

impl Sender {
    fn new(addr: SocketAddr, bodies: &Arc<Vec<Bytes>>, case: &str) -> Self {
        let key = B64
            .decode(SECRET.trim_start_matches("whsec_"))
            .expect("the secret is base64");
        let client = reqwest::Client::builder()
            .http1_only()
            .pool_max_idle_per_host(CONCURRENCY)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Self {
            client,
            url: format!("http://{addr}{PATH}"),
            key,
            bodies: Arc::clone(bodies),
            case: case.to_owned(),
        }
    }

    /// Signs delivery `seq` of `worker` now; the returned future sends it
    /// and reads the answer.
    fn request(&self, worker: usize, seq: u64) -> impl Future<Output = Result<u16, String>> {
        let body = self.bodies[pick(worker, seq, self.bodies.len())].clone();
        let id = format!("msg_{}_{worker}_{seq}", self.case);
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        for part in [id.as_bytes(), b".", ts.as_bytes(), b".", &body] {
            mac.update(part);
        }
        let signature = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
        let request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts)
            .header("webhook-signature", signature)
            .body(body);
        async move {
            let response = request.send().await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            // Read the answer, so the connection goes back to the pool.
            response.bytes().await.map_err(|e| e.to_string())?;
            Ok(status)
        }
    }
}

/// (a) The HTTP ceiling: the listener's server, a handler that reads the
/// body and answers 200, and nothing else.
async fn http_ceiling(phases: Phases, bodies: &Arc<Vec<Bytes>>, run: usize) -> Outcome {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    socket.set_nonblocking(true).expect("nonblocking");
    let addr = socket.local_addr().expect("addr");
    let router = axum::Router::new()
        .fallback(|_body: Bytes| async { axum::http::StatusCode::OK })
        .into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let mut server = axum_server::from_tcp(socket).handle(handle.clone());
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let served = tokio::spawn(server.serve(router));
    let sender = Arc::new(Sender::new(addr, bodies, &format!("http{run}")));
    let outcome = closed_loop(phases, move |w, seq| sender.request(w, seq)).await;
    handle.graceful_shutdown(Some(Duration::from_secs(1)));
    let _ = served.await;
    outcome
}

/// (b) The Kafka ceiling: each worker produces a body with Ferry's producer
/// settings and waits for its acknowledgement before the next.
async fn kafka_ceiling(
    phases: Phases,
    bodies: &Arc<Vec<Bytes>>,
    bootstrap: &str,
    admin: &KafkaAdmin,
    topic: String,
    linger: Duration,
    shaped: bool,
) -> Outcome {
    admin
        .ensure_topic(&topic_spec(&topic))
        .await
        .expect("raw topic");
    let mut kafka = KafkaConfig::default();
    kafka.producer.linger = linger;
    let producer: FutureProducer = kafka.producer_config(bootstrap).create().expect("producer");
    let (producer, topic) = (Arc::new(producer), Arc::new(topic));
    let bodies = Arc::clone(bodies);
    closed_loop(phases, move |w, seq| {
        let body = bodies[pick(w, seq, bodies.len())].clone();
        let (producer, topic) = (Arc::clone(&producer), Arc::clone(&topic));
        async move {
            let mut record: FutureRecord<'_, (), [u8]> =
                FutureRecord::to(&topic).payload(&body[..]);
            let envelope;
            if shaped {
                envelope = [&ENVELOPE_EXTRA[..], &body[..]].concat();
                record = record.payload(&envelope[..]).headers(ferry_headers(w, seq));
            }
            match producer.send(record, Timeout::Never).await {
                Ok(_) => Ok(200),
                Err((e, _)) => Err(e.to_string()),
            }
        }
    })
    .await
}

/// About what a 1 KiB body's event envelope adds around it (Confluent
/// framing, id, source, type, times, correlation id, content type, the
/// delivery id attribute): for the `DIAG` case only.
const ENVELOPE_EXTRA: [u8; 200] = [b'e'; 200];

/// The headers Ferry's webhook path puts on a record, with values of the
/// same size.
fn ferry_headers(worker: usize, seq: u64) -> rdkafka::message::OwnedHeaders {
    let id = format!("msg_diag_{worker}_{seq}");
    [
        ("ferry-correlation-id", id.as_str()),
        ("ferry-source-connector", "hooks-r0-linger0"),
        ("ferry-schema-subject", "bench.webhooks.r0-linger0-value"),
        ("ferry-schema-version", "1"),
        ("ferry-content-type", "application/json"),
        ("ferry-delivery-id", id.as_str()),
    ]
    .into_iter()
    .fold(rdkafka::message::OwnedHeaders::new(), |h, (key, value)| {
        h.insert(rdkafka::message::Header {
            key,
            value: Some(value),
        })
    })
}

fn topic_spec(name: &str) -> ferry::config::TopicSpec {
    ferry::config::TopicSpec {
        name: name.to_owned(),
        partitions: std::num::NonZeroU32::new(3).expect("3"),
        replication_factor: None,
        config: Default::default(),
        value_schema: None,
        key_schema: None,
    }
}

/// The Ferry case: a `type: webhook` connector served by the runtime.
async fn ferry_case(
    phases: Phases,
    bodies: &Arc<Vec<Bytes>>,
    dir: &Path,
    bootstrap: &str,
    case: &str,
    linger: Duration,
) -> Outcome {
    let data = dir.join(case);
    std::fs::create_dir_all(&data).expect("data dir");
    let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas");
    let text = format!(
        "data_dir: {data}
kafka:
  bootstrap_servers: \"{bootstrap}\"
  producer:
    linger: {linger}
admin:
  listen: \"{admin}\"
schema_registry:
  listen: \"{registry}\"
  schemas_dir: {schemas}
webhooks:
  listen: \"{webhooks}\"
log:
  level: warn
connectors:
  - name: hooks-{case}
    type: webhook
    path: {PATH}
    verify:
      scheme: standard_webhooks
      secrets: [\"{SECRET}\"]
    topic: bench.webhooks.{case}
    partitions: 3
",
        data = data.display(),
        linger = humantime::format_duration(linger),
        admin = free(),
        registry = free(),
        webhooks = free(),
    );
    let path = data.join("ferry.yaml");
    std::fs::write(&path, text).expect("config");
    let mut config = ferry::config::load(&path).expect("config loads");
    ferry::telemetry::logging::init(&config.log);
    let planned = ferry_connectors::registry::plan_all(&mut config, "bench").expect("plans");
    let mut running = Running::start(&config, "bench", BrokerMode::External)
        .await
        .expect("starts");
    running
        .start_connectors(planned)
        .await
        .expect("connectors start");
    let addr = running.endpoints.webhooks.expect("the webhook listener");
    let sender = Arc::new(Sender::new(addr, bodies, case));
    // The first answer: the topic exists and the producer is connected.
    let ready = Instant::now();
    for probe in 0.. {
        match sender.request(CONCURRENCY, probe).await {
            Ok(200 | 202) => break,
            other if ready.elapsed() > Duration::from_secs(30) => {
                panic!("the webhook listener does not accept: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let mut outcome = closed_loop(phases, move |w, seq| sender.request(w, seq)).await;
    outcome.server = server_side(&format!("hooks-{case}"));
    running.shutdown().await.expect("stops");
    outcome
}

fn load() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits (polling every 30 s, up to 20 minutes) until the 1-minute load is
/// below `max`.
async fn quiet(max: f64) {
    let started = Instant::now();
    while load() >= max && started.elapsed() < Duration::from_secs(20 * 60) {
        println!("load {:.2} >= {max}: waiting", load());
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let phases = Phases {
        warmup: env_duration("WARMUP", Duration::from_secs(2)),
        measure: env_duration("MEASURE", Duration::from_secs(10)),
    };
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let lingers: Vec<Duration> = std::env::var("LINGERS")
        .unwrap_or_else(|_| "5ms,1ms,0ms".into())
        .split(',')
        .map(|l| humantime::parse_duration(l.trim()).expect("LINGERS: durations"))
        .collect();
    let storage = std::env::var("STORAGE").unwrap_or_else(|_| "sqlite".into());
    let diag = std::env::var("DIAG").is_ok_and(|v| v == "1");
    let max_load: Option<f64> = std::env::var("MAX_LOAD").ok().and_then(|v| v.parse().ok());
    let bodies = bodies();
    let dir = tempfile::tempdir().expect("dir");

    // Case name -> its outcome in each run.
    let mut results: BTreeMap<String, Vec<Outcome>> = BTreeMap::new();
    let mut ratios: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in 0..runs {
        if let Some(max) = max_load {
            quiet(max).await;
        }
        println!(
            "run {run}: load average {}",
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
        let run_dir = dir.path().join(format!("run{run}"));
        let broker_storage = match storage.as_str() {
            "memory" => BrokerStorage::Memory,
            _ => BrokerStorage::Sqlite(run_dir.join("broker.db")),
        };
        let broker = DevBroker::start(free(), broker_storage)
            .await
            .expect("broker");
        let bootstrap = broker.bootstrap_servers();
        let admin = KafkaAdmin::new(&KafkaConfig::default(), &bootstrap).expect("admin");

        let mut cases: Vec<Option<Duration>> = vec![None];
        cases.extend(lingers.iter().map(|&l| Some(l)));
        if run % 2 == 1 {
            cases.reverse();
        }
        let mut this_run: BTreeMap<String, Outcome> = BTreeMap::new();
        for case in cases {
            let outcomes = match case {
                None => vec![(
                    "http ceiling".to_owned(),
                    http_ceiling(phases, &bodies, run).await,
                )],
                Some(linger) => {
                    let ms = linger.as_millis();
                    let kafka = kafka_ceiling(
                        phases,
                        &bodies,
                        &bootstrap,
                        &admin,
                        format!("bench.raw.{run}.{ms}"),
                        linger,
                        false,
                    )
                    .await;
                    let mut all = vec![(format!("kafka ceiling, linger {ms}ms"), kafka)];
                    if diag {
                        let shaped = kafka_ceiling(
                            phases,
                            &bodies,
                            &bootstrap,
                            &admin,
                            format!("bench.shaped.{run}.{ms}"),
                            linger,
                            true,
                        )
                        .await;
                        all.push((format!("diag: raw, Ferry-shaped, {ms}ms"), shaped));
                    }
                    let ferry = ferry_case(
                        phases,
                        &bodies,
                        &run_dir,
                        &bootstrap,
                        &format!("r{run}-linger{ms}"),
                        linger,
                    )
                    .await;
                    all.push((format!("ferry webhook, linger {ms}ms"), ferry));
                    all
                }
            };
            for (name, o) in outcomes {
                let mut notes = o.server.clone();
                if !o.refused.is_empty() {
                    notes.push_str(&format!("  not 200: {}", o.refused));
                }
                println!(
                    "run {run}: {name:<28} {:>7.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  mean {:>6.2} ms  cpu {:>3.0}%  {notes}",
                    o.rate,
                    o.p50_ms,
                    o.p99_ms,
                    o.mean_ms,
                    o.cpu * 100.0,
                );
                this_run.insert(name, o);
            }
        }
        if let Some(http) = this_run.get("http ceiling").map(|o| o.rate) {
            for &linger in &lingers {
                let ms = linger.as_millis();
                let kafka = this_run[&format!("kafka ceiling, linger {ms}ms")].rate;
                let ferry = this_run[&format!("ferry webhook, linger {ms}ms")].rate;
                let ratio = ferry / http.min(kafka);
                println!("run {run}: linger {ms}ms: ferry / lower ceiling {ratio:.2}");
                ratios
                    .entry(format!("linger {ms}ms"))
                    .or_default()
                    .push(ratio);
            }
        }
        for (name, o) in this_run {
            results.entry(name).or_default().push(o);
        }
        drop(admin);
        broker.stop().await;
        let _ = std::fs::remove_dir_all(&run_dir);
    }

    println!(
        "\n{runs} runs, {CONCURRENCY} in flight, {BODY_BYTES} B bodies, broker {storage}, {:?} warm-up + {:?} measured; median (min..max)",
        phases.warmup, phases.measure
    );
    println!("| case | req/s | p50 ms | p99 ms | CPU of 2 cores | vs Vector {VECTOR_RATE:.0}/s |");
    println!("|------|-------|--------|--------|----------------|------------|");
    for (name, outcomes) in &results {
        let pick = |f: fn(&Outcome) -> f64| outcomes.iter().map(f).collect::<Vec<_>>();
        let (rate, p50, p99) = (pick(|o| o.rate), pick(|o| o.p50_ms), pick(|o| o.p99_ms));
        let ((rl, rh), (pl, ph), (ql, qh)) = (spread(&rate), spread(&p50), spread(&p99));
        println!(
            "| {name} | {:.0} ({rl:.0}..{rh:.0}) | {:.2} ({pl:.2}..{ph:.2}) | {:.2} ({ql:.2}..{qh:.2}) | {:.0}% | {:.2} |",
            median(&rate),
            median(&p50),
            median(&p99),
            median(&pick(|o| o.cpu)) * 100.0,
            median(&rate) / VECTOR_RATE,
        );
    }
    for (linger, r) in &ratios {
        let (lo, hi) = spread(r);
        println!(
            "ferry / lower ceiling, {linger}: {:.2} ({lo:.2}..{hi:.2})",
            median(r)
        );
    }
}
