//! Sinks through group changes and broker faults, with the real `ferry`
//! binary, a real broker, a producer that keeps writing and a fake target
//! that records what it gets in arrival order:
//!
//! - two `ferry run` processes share one `http` sink while members join and
//!   leave: nothing is lost, each key's versions reach the target in order,
//!   and what is delivered twice stays inside the documented window for
//!   graceful rebalances;
//! - the broker process is killed mid-run and restarted: the sink logs and
//!   counts the consumer errors, stays RUNNING without a restart, and
//!   delivers everything.

use crate::ferry_bin;
use crate::webhook_support::Broker;
use ferry_connectors::demo::{Demo, DemoApi};
use ferry_connectors::sinks::http::RECORDS_PER_WRITE;
use ferry_testkit::{free_addr, http_get, repo_root, FerryProcess, TestBroker};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The sink connector's name in every config here.
const SINK: &str = "contacts-to-target";
/// Distinct keys the producer writes, in turn.
const KEYS: usize = 45;

// ---------------------------------------------------------------------------
// The producer
// ---------------------------------------------------------------------------

/// One record the broker acknowledged: key, version, and its place in the
/// order the producer sent records.
#[derive(Debug, Clone)]
struct Acked {
    id: String,
    version: u64,
    seq: usize,
}

/// A background producer: JSON values `{"id": "k7", "version": 12}` keyed by
/// `id`, `KEYS` keys in turn, versions increasing per key, `per_tick`
/// records every 10 ms. Idempotent, so librdkafka's retries never reorder
/// a partition: per key, Kafka holds the versions in increasing order.
struct Feed {
    stop: Arc<AtomicBool>,
    per_tick: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
    acked: Arc<Mutex<Vec<Acked>>>,
    failed: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Feed {
    fn start(bootstrap: &str, topic: &str, per_tick: usize) -> Self {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "20")
            .create()
            .expect("producer");
        let stop = Arc::new(AtomicBool::new(false));
        let per_tick = Arc::new(AtomicUsize::new(per_tick));
        let sent = Arc::new(AtomicUsize::new(0));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let topic = topic.to_owned();
        let task = {
            let (stop, rate, sent, acked, failed) = (
                Arc::clone(&stop),
                Arc::clone(&per_tick),
                Arc::clone(&sent),
                Arc::clone(&acked),
                Arc::clone(&failed),
            );
            tokio::spawn(async move {
                let mut versions = [0u64; KEYS];
                let mut deliveries = Vec::new();
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    tick.tick().await;
                    for _ in 0..rate.load(Ordering::SeqCst) {
                        let k = n % KEYS;
                        let id = format!("k{k}");
                        let version = versions[k] + 1;
                        let value = serde_json::json!({"id": id, "version": version}).to_string();
                        let record = FutureRecord::to(&topic).key(&id).payload(&value);
                        match producer.send_result(record) {
                            Ok(delivery) => {
                                versions[k] = version;
                                let seq = sent.fetch_add(1, Ordering::SeqCst);
                                let (acked, failed) = (Arc::clone(&acked), Arc::clone(&failed));
                                deliveries.push(tokio::spawn(async move {
                                    match delivery.await {
                                        Ok(Ok(_)) => lock(&acked).push(Acked { id, version, seq }),
                                        Ok(Err((e, _))) => {
                                            lock(&failed).push(format!("{id} v{version}: {e}"))
                                        }
                                        Err(_) => {
                                            lock(&failed).push(format!("{id} v{version}: canceled"))
                                        }
                                    }
                                }));
                            }
                            // The local queue is full: this version was never
                            // sent, the next attempt reuses it.
                            Err(_) => break,
                        }
                        n += 1;
                    }
                }
                for d in deliveries {
                    let _ = d.await;
                }
            })
        };
        Self {
            stop,
            per_tick,
            sent,
            acked,
            failed,
            task,
        }
    }

    /// Records sent every 10 ms from now on.
    fn set_rate(&self, per_tick: usize) {
        self.per_tick.store(per_tick, Ordering::SeqCst);
    }

    fn acked_count(&self) -> usize {
        lock(&self.acked).len()
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    /// Stops sending, waits for every outstanding delivery report; returns
    /// what was acknowledged and what failed.
    async fn stop(self) -> (Vec<Acked>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("every delivery report within 60 s")
            .expect("producer task");
        let acked = std::mem::take(&mut *lock(&self.acked));
        let failed = std::mem::take(&mut *lock(&self.failed));
        (acked, failed)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// Processes and the admin API
// ---------------------------------------------------------------------------

/// The admin and registry ports of one Ferry process (every process serves
/// its own registry over the shared `_ferry_schemas` topic).
struct Ports {
    admin: SocketAddr,
    registry: SocketAddr,
}

impl Ports {
    fn new() -> Self {
        Self {
            admin: free_addr(),
            registry: free_addr(),
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("FERRY__ADMIN__LISTEN", self.admin.to_string()),
            ("FERRY__SCHEMA_REGISTRY__LISTEN", self.registry.to_string()),
        ];
        // For diagnosis: `REBALANCE_LOG=debug`, `REBALANCE_RDKAFKA_DEBUG=cgrp`.
        if let Ok(l) = std::env::var("REBALANCE_LOG") {
            env.push(("FERRY__LOG__LEVEL", l));
        }
        if let Ok(d) = std::env::var("REBALANCE_RDKAFKA_DEBUG") {
            env.push(("FERRY__KAFKA__LIBRDKAFKA__DEBUG", d));
        }
        env
    }
}

/// Starts `ferry <command> <config>` and waits until it is up (off the async
/// workers: the broker, the producer and the target run on them).
pub(crate) async fn start_ferry(
    command: &'static str,
    config: &Path,
    env: Vec<(&'static str, String)>,
) -> FerryProcess {
    let config = config.display().to_string();
    tokio::task::spawn_blocking(move || {
        let mut p = FerryProcess::spawn(&ferry_bin(), &[command, &config], &repo_root(), &env);
        p.wait_for_stdout("Press Ctrl-C to stop.", Duration::from_secs(90));
        p
    })
    .await
    .expect("start task")
}

/// Sends `signal` and waits for the exit.
pub(crate) async fn stop_ferry(
    p: FerryProcess,
    signal: &'static str,
    within: Duration,
) -> (FerryProcess, ExitStatus) {
    tokio::task::spawn_blocking(move || {
        let mut p = p;
        p.signal(signal);
        let status = p.wait(within);
        (p, status)
    })
    .await
    .expect("stop task")
}

/// GET `path` on an admin API; empty when it does not answer.
pub(crate) async fn admin_get(addr: SocketAddr, path: &'static str) -> String {
    tokio::task::spawn_blocking(move || http_get(addr, path).map(|(_, b)| b).unwrap_or_default())
        .await
        .unwrap_or_default()
}

/// The sum of a Prometheus metric's series in a `/metrics` body (0 if absent).
pub(crate) fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn sink_records(admin: SocketAddr) -> f64 {
    metric(
        &admin_get(admin, "/metrics").await,
        "ferry_sink_records_total",
    )
}

/// The sink connector's (state, restarts) on `/connectors`.
async fn sink_status(admin: SocketAddr) -> Option<(String, u64, String)> {
    let body = admin_get(admin, "/connectors").await;
    let all: serde_json::Value = serde_json::from_str(&body).ok()?;
    let c = all.as_array()?.iter().find(|c| c["name"] == SINK)?;
    Some((
        c["state"].as_str()?.to_owned(),
        c["restarts"].as_u64()?,
        c.to_string(),
    ))
}

/// With `REBALANCE_DUMP` set, prints a process's whole log (for diagnosis).
fn dump(who: &str, p: &FerryProcess) {
    if std::env::var_os("REBALANCE_DUMP").is_some() {
        eprintln!("===== {who} =====\n{}", p.stderr());
    }
}

pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits until `done` holds, checking every 200 ms; panics with `why()`.
async fn wait_until<F, Fut>(what: &str, within: Duration, mut done: F, why: impl Fn() -> String)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}\n{}",
            why()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the target has received every acknowledged record.
async fn wait_delivered(demo: &Demo, acked: &[Acked], within: Duration, why: impl Fn() -> String) {
    let expected: BTreeSet<(String, u64)> =
        acked.iter().map(|a| (a.id.clone(), a.version)).collect();
    let deadline = Instant::now() + within;
    loop {
        let received: BTreeSet<(String, u64)> = demo.received().into_iter().collect();
        let missing: Vec<&(String, u64)> = expected.difference(&received).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "lost: {} of {} acknowledged records never reached the target within {within:?} (e.g. {:?})\n{}",
            missing.len(),
            expected.len(),
            &missing[..missing.len().min(10)],
            why()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the target got, against what the producer had acknowledged.
struct Delivery {
    received: usize,
    unique: usize,
    /// Deliveries of an (id, version) already delivered.
    duplicates: usize,
    /// (key, version, the newer version it arrived after).
    out_of_order: Vec<(String, u64, u64)>,
    /// Keys whose last write is not their newest acknowledged version:
    /// (key, last written, newest).
    stale_last: Vec<(String, u64, u64)>,
}

fn analyse(received: &[(String, u64)], acked: &[Acked]) -> Delivery {
    let mut newest_seen: BTreeMap<&str, u64> = BTreeMap::new();
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut duplicates = 0;
    let mut out_of_order = Vec::new();
    for (k, v) in received {
        if let Some(newest) = newest_seen.get(k.as_str()) {
            if v < newest {
                out_of_order.push((k.clone(), *v, *newest));
            }
        }
        let n = newest_seen.entry(k).or_insert(*v);
        *n = (*n).max(*v);
        last.insert(k, *v);
        if !seen.insert((k, v)) {
            duplicates += 1;
        }
    }
    let mut newest_acked: BTreeMap<&str, u64> = BTreeMap::new();
    for a in acked {
        let n = newest_acked.entry(&a.id).or_insert(a.version);
        *n = (*n).max(a.version);
    }
    let stale_last = newest_acked
        .iter()
        .filter(|(k, v)| last.get(*k) != Some(*v))
        .map(|(k, v)| ((*k).to_owned(), last.get(*k).copied().unwrap_or(0), *v))
        .collect();
    Delivery {
        received: received.len(),
        unique: seen.len(),
        duplicates,
        out_of_order,
        stale_last,
    }
}

/// The demo API's target behind a fixed delay per request. With 4 ms one
/// sink writes about 200 records a second: slower than the producer (300/s)
/// when one process has every partition, faster when two share them. So a
/// sink alone builds a backlog, and when its partitions move it is writing
/// a batch of them and holding more: the handover under load.
struct SlowTarget {
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl SlowTarget {
    async fn serve(demo: &Demo, delay: Duration) -> Self {
        let router = demo.router().layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| async move {
                tokio::time::sleep(delay).await;
                next.run(request).await
            },
        ));
        let listener = tokio::net::TcpListener::bind(free_addr())
            .await
            .expect("fake target listens");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, server }
    }

    async fn stop(self) {
        self.server.abort();
        let _ = self.server.await;
    }
}

fn schemas_dir() -> PathBuf {
    repo_root().join("schemas")
}

// ---------------------------------------------------------------------------
// 1. Two processes, members joining and leaving
// ---------------------------------------------------------------------------

const SHARED_TOPIC: &str = "rebalance.contacts";

/// Two Ferry processes share one `http` sink (one consumer group,
/// `ferry-sink-contacts-to-target`, on 6 partitions) while a producer keeps
/// writing: A runs alone, B joins, A leaves (SIGTERM), A comes back, B
/// leaves. Every change is graceful, so the runtime's guarantee is that a
/// partition changes hands only after its old owner finished the batch in
/// the target and committed: nothing lost, no key ever steps back to an
/// older version, and (almost) nothing is delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_a_sink_through_leaves_and_joins() {
    let t0 = Instant::now();
    let broker = TestBroker::start().await;
    let demo = Demo::default();
    let api = SlowTarget::serve(&demo, Duration::from_millis(4)).await;
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("ferry.yaml");
    let (a_ports, b_ports, a2_ports) = (Ports::new(), Ports::new(), Ports::new());
    // No instance_id: dynamic members, so a stopping Ferry leaves the group
    // at once (a static member would hold its partitions until
    // session_timeout). Every member has the same group timings (tansu
    // adopts the first joiner's).
    let text = format!(
        r#"
data_dir: {data}
kafka:
  bootstrap_servers: "{bootstrap}"
  consumer:
    session_timeout: 6s
  librdkafka:
    heartbeat.interval.ms: "500"
# Each process moves these with FERRY__ADMIN__LISTEN and
# FERRY__SCHEMA_REGISTRY__LISTEN.
admin:
  listen: "{admin}"
schema_registry:
  listen: "{registry}"
  schemas_dir: {schemas}
topics:
  - name: {SHARED_TOPIC}
    partitions: 6
connectors:
  - name: {SINK}
    type: http
    topic: {SHARED_TOPIC}
    method: PUT
    url: http://{api}/target/contacts/{{{{ key }}}}
    body: value
    timeout: 5s
"#,
        data = dir.path().display(),
        bootstrap = broker.bootstrap,
        admin = a_ports.admin,
        registry = a_ports.registry,
        schemas = schemas_dir().display(),
        api = api.addr,
    );
    std::fs::write(&config, text).expect("write config");

    // A alone (it creates the topic with 6 partitions).
    let a = start_ferry("run", &config, a_ports.env()).await;
    let feed = Feed::start(&broker.bootstrap, SHARED_TOPIC, 3);
    wait_until(
        "A delivers",
        Duration::from_secs(30),
        || {
            let n = demo.received().len();
            async move { n >= 200 }
        },
        || tail(&a.stderr(), 40),
    )
    .await;

    // B joins: A must hand some partitions over.
    let b = start_ferry("run", &config, b_ports.env()).await;
    wait_until(
        "B takes partitions from A and delivers",
        Duration::from_secs(30),
        {
            let admin = b_ports.admin;
            move || async move { sink_records(admin).await > 0.0 }
        },
        || {
            format!(
                "A:\n{}\nB:\n{}",
                tail(&a.stderr(), 40),
                tail(&b.stderr(), 40)
            )
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let a_metrics = admin_get(a_ports.admin, "/metrics").await;
    let a_records = metric(&a_metrics, "ferry_sink_records_total");
    assert!(
        a.stderr().contains("partitions revoked"),
        "B's join revoked partitions from A:\n{}",
        tail(&a.stderr(), 40)
    );

    // A leaves: B takes everything.
    let (a, status) = stop_ferry(a, "TERM", Duration::from_secs(60)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "A exits cleanly:\n{}",
        tail(&a.stderr(), 60)
    );
    let b_before = sink_records(b_ports.admin).await;
    wait_until(
        "B delivers alone",
        Duration::from_secs(30),
        {
            let admin = b_ports.admin;
            move || async move { sink_records(admin).await >= b_before + 200.0 }
        },
        || tail(&b.stderr(), 40),
    )
    .await;

    // A comes back: B must hand some partitions over.
    let a2 = start_ferry("run", &config, a2_ports.env()).await;
    wait_until(
        "A (restarted) takes partitions from B and delivers",
        Duration::from_secs(30),
        {
            let admin = a2_ports.admin;
            move || async move { sink_records(admin).await > 0.0 }
        },
        || {
            format!(
                "B:\n{}\nA2:\n{}",
                tail(&b.stderr(), 40),
                tail(&a2.stderr(), 40)
            )
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b_metrics = admin_get(b_ports.admin, "/metrics").await;
    let b_records = metric(&b_metrics, "ferry_sink_records_total");
    assert!(
        b.stderr().matches("partitions revoked").count() >= 1,
        "A's return revoked partitions from B:\n{}",
        tail(&b.stderr(), 40)
    );

    // B leaves: A takes everything.
    let (b, status) = stop_ferry(b, "TERM", Duration::from_secs(60)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "B exits cleanly:\n{}",
        tail(&b.stderr(), 60)
    );
    let a2_before = sink_records(a2_ports.admin).await;
    wait_until(
        "A delivers alone",
        Duration::from_secs(30),
        {
            let admin = a2_ports.admin;
            move || async move { sink_records(admin).await >= a2_before + 200.0 }
        },
        || tail(&a2.stderr(), 40),
    )
    .await;

    let (acked, failed) = feed.stop().await;
    assert!(failed.is_empty(), "the producer's sends failed: {failed:?}");
    wait_delivered(&demo, &acked, Duration::from_secs(30), || {
        format!(
            "A2:\n{}\nB:\n{}\nA:\n{}",
            tail(&a2.stderr(), 40),
            tail(&b.stderr(), 40),
            tail(&a.stderr(), 40)
        )
    })
    .await;
    let a2_records = sink_records(a2_ports.admin).await;
    let received = demo.received();
    let d = analyse(&received, &acked);

    // Both processes really delivered, in each of their lives.
    assert!(
        a_records > 0.0 && b_records > 0.0 && a2_records > 0.0,
        "every member delivered: A {a_records}, B {b_records}, A again {a2_records}"
    );
    assert_eq!(
        d.unique,
        acked.len(),
        "the target got exactly what was produced"
    );
    assert!(
        d.out_of_order.is_empty(),
        "{} deliveries of an older version after a newer one (key, version, after): {:?}",
        d.out_of_order.len(),
        &d.out_of_order[..d.out_of_order.len().min(20)]
    );
    assert!(
        d.stale_last.is_empty(),
        "the last write of these keys is not their newest version (key, last, newest): {:?}",
        d.stale_last
    );
    // The duplicate window of a graceful rebalance (README): the member
    // giving partitions away drops its buffered records of them unwritten,
    // finishes its batch in the target (within drain_within) and commits
    // before releasing them, so nothing repeats, unless that batch overran
    // drain_within and was abandoned: then its new owner writes it again,
    // at most RECORDS_PER_WRITE (what the `http` sink is handed at a time)
    // per abandoned batch. Each abandonment is logged.
    let abandoned = [&a, &b, &a2]
        .iter()
        .map(|p| {
            let log = p.stderr();
            log.matches("the batch is abandoned").count()
                + log.matches("sink did not finish its batch in time").count()
        })
        .sum::<usize>();
    assert!(
        d.duplicates <= abandoned * RECORDS_PER_WRITE,
        "{} duplicates with {abandoned} abandoned batch(es) of at most {RECORDS_PER_WRITE}",
        d.duplicates
    );
    // The joins moved partitions while a batch of theirs was in the target
    // (the target is about as fast as the producer, so a sink alone has a
    // backlog): the case where finishing it before releasing matters.
    let finishing = "finishing the batch in the sink before releasing them";
    let handovers_in_flight = [&a, &b, &a2]
        .iter()
        .map(|p| p.stderr().matches(finishing).count())
        .sum::<usize>();
    assert!(
        handovers_in_flight >= 1,
        "no revocation found a batch in the target, so no handover was tested under load:\nA:\n{}\nB:\n{}",
        tail(&a.stderr(), 40),
        tail(&b.stderr(), 40)
    );
    let released = metric(&a_metrics, "ferry_sink_records_released_total")
        + metric(&b_metrics, "ferry_sink_records_released_total");
    eprintln!(
        "rebalance: {} produced, {} delivered ({} unique, {} duplicates); per process: A {a_records}, B {b_records}, A again {a2_records}; revocations with a batch in the target: {handovers_in_flight}; buffered records dropped at revocations: {released}; {:.1} s",
        acked.len(),
        d.received,
        d.unique,
        d.duplicates,
        t0.elapsed().as_secs_f64()
    );

    let (a2, status) = stop_ferry(a2, "INT", Duration::from_secs(60)).await;
    for (who, p) in [("A", &a), ("B", &b), ("A again", &a2)] {
        dump(who, p);
    }
    assert_eq!(status.code(), Some(0), "{}", tail(&a2.stderr(), 60));
    api.stop().await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------
// 2. The broker goes away mid-run
// ---------------------------------------------------------------------------

const OUTAGE_TOPIC: &str = "outage.contacts";

/// The broker runs as its own process (`ferry up` with no connectors), so
/// killing it drops every connection, as when a real broker dies. The Ferry
/// under test (`ferry run`) keeps its sink through the outage: librdkafka's
/// transport errors are logged and counted, the connector stays RUNNING
/// with no restart, and once the broker is back everything produced is
/// delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_mid_run_does_not_fail_the_sink() {
    let t0 = Instant::now();
    let broker_process = Broker::new(&format!(
        "topics:\n  - name: {OUTAGE_TOPIC}\n    partitions: 3\n"
    ));
    let broker_addr = broker_process.addr;
    let broker = broker_process.start().await;

    let api = DemoApi::serve(free_addr(), Demo::default())
        .await
        .expect("fake target listens");
    let demo = api.demo().clone();
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("ferry.yaml");
    let ports = Ports::new();
    std::fs::write(
        &config,
        format!(
            r#"
data_dir: {data}
kafka:
  bootstrap_servers: "{broker_addr}"
  consumer:
    session_timeout: 6s
  librdkafka:
    heartbeat.interval.ms: "500"
admin:
  listen: "{admin}"
schema_registry:
  listen: "{registry}"
  schemas_dir: {schemas}
connectors:
  - name: {SINK}
    type: http
    topic: {OUTAGE_TOPIC}
    method: PUT
    url: http://{api}/target/contacts/{{{{ key }}}}
    body: value
    timeout: 5s
"#,
            data = dir.path().display(),
            admin = ports.admin,
            registry = ports.registry,
            schemas = schemas_dir().display(),
            api = api.addr(),
        ),
    )
    .expect("write config");
    let ferry = start_ferry("run", &config, ports.env()).await;
    let feed = Feed::start(&broker_addr.to_string(), OUTAGE_TOPIC, 2);

    // Records flow.
    wait_until(
        "the sink delivers",
        Duration::from_secs(30),
        || {
            let n = demo.received().len();
            async move { n >= 300 }
        },
        || tail(&ferry.stderr(), 40),
    )
    .await;
    // The sink's (state, restarts) on /connectors, sampled throughout.
    let mut samples = vec![("before", sink_status(ports.admin).await)];
    // A burst, so that the sink is working through a backlog (batches in
    // the target, offsets being committed) when the broker dies.
    feed.set_rate(30);
    tokio::time::sleep(Duration::from_millis(500)).await;
    feed.set_rate(2);
    let burst_end = feed.sent();
    wait_until(
        "the burst is acknowledged",
        Duration::from_secs(30),
        || {
            let n = feed.acked_count();
            async move { n >= burst_end }
        },
        || tail(&ferry.stderr(), 40),
    )
    .await;

    // The broker dies: every connection drops.
    let acked_at_kill = feed.acked_count();
    let delivered_at_kill = demo.received().len();
    let (broker, status) = stop_ferry(broker, "KILL", Duration::from_secs(30)).await;
    assert_eq!(status.code(), None, "the broker was killed");
    drop(broker);
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(6) {
        samples.push(("during", sink_status(ports.admin).await));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let errors_in_outage = metric(
        &admin_get(ports.admin, "/metrics").await,
        "ferry_kafka_consume_errors_total",
    );

    let delivered_in_outage = demo.received().len() - delivered_at_kill;
    // Back on the same port with the same data; the producer keeps going.
    let broker = broker_process.start().await;
    let outage_len = outage.elapsed();
    let sent_at_restart = feed.sent();
    let restarted = Instant::now();
    while restarted.elapsed() < Duration::from_secs(5) {
        samples.push(("after", sink_status(ports.admin).await));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let acked_before_stop = feed.acked_count();
    let (acked, failed) = feed.stop().await;
    let why = || {
        format!(
            "connectors: {:?}\nferry's log:\n{}\nbroker's log:\n{}",
            samples.last(),
            tail(&ferry.stderr(), 80),
            tail(&broker.stderr(), 20)
        )
    };
    wait_delivered(&demo, &acked, Duration::from_secs(60), why).await;
    let status_end = sink_status(ports.admin).await;
    let metrics = admin_get(ports.admin, "/metrics").await;
    let consume_errors = metric(&metrics, "ferry_kafka_consume_errors_total");
    let received = demo.received();
    let d = analyse(&received, &acked);

    // The fault happened: the sink saw the broker go (the metric counts the
    // errors of sink consumers only; the log line names the connector).
    assert!(
        consume_errors > 0.0
            && ferry.stderr().lines().any(|l| {
                l.contains("Kafka consumer error") && l.contains(&format!("connector=\"{SINK}\""))
            }),
        "the sink counted no consumer error, so it never saw the outage\nmetrics:\n{}\nferry's log:\n{}",
        metrics.lines().filter(|l| l.starts_with("ferry_")).collect::<Vec<_>>().join("\n"),
        tail(&ferry.stderr(), 80)
    );
    // Records sent after the broker came back were delivered too.
    assert!(
        acked.iter().any(|a| a.seq >= sent_at_restart),
        "nothing sent after the restart was acknowledged ({} acked, {} failed: {:?})",
        acked.len(),
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    // The connector never failed or restarted: before, during, after.
    let status_end_sample = ("end", status_end);
    for (when, s) in samples.iter().chain(std::iter::once(&status_end_sample)) {
        match s {
            Some((state, restarts, _)) if state == "RUNNING" && *restarts == 0 => {}
            other => panic!(
                "{when} the outage the sink is {other:?}, not RUNNING without restarts\nferry's log:\n{}",
                tail(&ferry.stderr(), 80)
            ),
        }
    }
    assert_eq!(
        d.unique,
        acked.len(),
        "the target got exactly what was acknowledged"
    );
    // At-least-once: the group gave the partitions away (the session expired
    // while the broker was down), so what was written and not committed is
    // delivered again. The runtime's window (sink_task's doc): a batch's
    // offsets are stored only once the commit before it is done, so at most
    // two batches are ever written and not committed, and a lost assignment
    // (like a crash) repeats at most the batch in the sink, abandoned, and
    // the one before it: 2 x RECORDS_PER_WRITE (the `http` sink's hand-over
    // size). A 41st repeat means a batch was written after the assignment
    // was lost.
    assert!(
        d.duplicates <= 2 * RECORDS_PER_WRITE,
        "{} duplicates after the outage, more than the batch in the sink and the one before it ({RECORDS_PER_WRITE} each)\nferry's log:\n{}",
        d.duplicates,
        tail(&ferry.stderr(), 80)
    );
    let lost_assignment =
        ferry.stderr().contains("lost: true") || ferry.stderr().contains("lost=true");
    eprintln!(
        "outage: broker down {:.1} s; {} consumer errors ({} during the outage); {} sent, {} acked ({} when stopping), {} failed sends; {} delivered before the kill ({} acknowledged), {} while the broker was down, {} in all ({} unique, {} duplicates, {} out of order); assignment lost: {lost_assignment}; {:.1} s",
        outage_len.as_secs_f64(),
        consume_errors as u64,
        errors_in_outage as u64,
        sent_at_restart,
        acked.len(),
        acked_before_stop,
        failed.len(),
        delivered_at_kill,
        acked_at_kill,
        delivered_in_outage,
        d.received,
        d.unique,
        d.duplicates,
        d.out_of_order.len(),
        t0.elapsed().as_secs_f64()
    );

    let (ferry, status) = stop_ferry(ferry, "INT", Duration::from_secs(60)).await;
    dump("ferry", &ferry);
    assert_eq!(status.code(), Some(0), "{}", tail(&ferry.stderr(), 60));
    let (broker, status) = stop_ferry(broker, "INT", Duration::from_secs(60)).await;
    dump("broker", &broker);
    assert_eq!(status.code(), Some(0), "{}", tail(&broker.stderr(), 60));
    api.stop().await;
}
