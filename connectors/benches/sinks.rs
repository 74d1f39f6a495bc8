//! Sinks with `concurrency`: the `http` sink against a target that takes
//! 1 ms to answer, and the `postgres` sink end to end, each beside its
//! ceilings.
//!
//! `cargo bench -p ferry-connectors --bench sinks --features embedded-broker`
//! (env: `RUNS`, default 3; `HTTP_RECORDS`, default 20000, records per run
//! of the concurrent `http` variants and of its raw consume;
//! `HTTP_RECORDS_SERIAL`, default 3000, for `concurrency: 1`, which runs at
//! a few hundred records/s; `HTTP_CONCURRENCY`, default `1,16`; `PG_ROWS`,
//! default 100000; `PG_CONCURRENCY`, default `1` (the sink refuses more for
//! now); `PG_BATCH_MAX_WAIT`,
//! the sink's `batch_max_wait`, default unset (the sink's 100 ms);
//! `FERRY_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`; `HTTP_RECORDS=0` or
//! `PG_ROWS=0` skips that part; `STALL_AFTER_SECS`, default 30: a sink
//! that delivers nothing for that long has its run reported as stalled,
//! with the rates of what it delivered). One process, one embedded broker (tansu,
//! memory engine), Ferry's runtime started in process per variant, every
//! variant on topics and consumer groups of its own, `PARTITIONS`
//! partitions each, keys `c0000000`, `c0000001`... (all distinct):
//!
//! - **http**: raw rdkafka consume of the records (the ceiling), then an
//!   `http` sink (one `POST` per record, no `batch`) at each concurrency,
//!   against an axum target on 127.0.0.1 that sleeps 1 ms and answers 200,
//!   counting requests. JSON values of 263 bytes.
//! - **postgres**: `PG_ROWS` `Contact` records, Avro (`schemas/contact.avsc`,
//!   registered through the schema registry the runtime serves, as a topic
//!   declaring `value_schema` has it), consumed by a `postgres` sink
//!   (`mode: upsert`, `batch_max_records: 500`, the default `pool_size`,
//!   which is per concurrent batch) into a fresh table at each concurrency
//!   (a partition is written in order: at most one batch per partition at
//!   a time), timed from
//!   starting the connector until `ferry_sink_offsets` says every row is in
//!   (the row count is checked after). Beside it `COPY ... FROM STDIN
//!   (FORMAT csv)` of the same rows into a twin table (the database's
//!   ceiling) and raw rdkafka consume of the same records.
//!
//! The variants alternate, in reverse order every other run. The bench
//! prints each run's rates, then each variant's median with its spread
//! (min..max) and the medians of the per-run ratios. A sink's rate is given
//! twice: from starting the connector (joining the group included) and
//! from the first records seen at the target to the last (both polled
//! every 20 ms: the target's request count, the offsets table's sum).
//! Tables are dropped at the end.

#[path = "support/broker.rs"]
mod broker;
#[path = "support/contacts.rs"]
mod contacts;
#[path = "support/stats.rs"]
mod stats;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use broker::{
    config, free, metric, produce_with, random_text, raw_consume, raw_produce, run_until, start,
};
use contacts::{connect, contact, copy, csv, DDL};
use ferry::kafka::{BrokerStorage, DevBroker, KafkaAdmin, KafkaConfig};
use ferry::schema::{AvroCodec, Part};
use stats::{median, spread};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Partitions of every topic.
const PARTITIONS: u32 = 8;
/// Records per transaction of the `postgres` sink.
const PG_BATCH: usize = 500;
/// Vector 0.58's `http` sink against the same 1 ms target on this machine,
/// without per-key order (from the issue).
const VECTOR_HTTP_RATE: f64 = 6_300.0;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A comma-separated list of concurrencies (each at least 1).
fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|c| c.trim().parse::<usize>().expect("a list of integers"))
        .map(|c| c.max(1))
        .collect()
}

struct Settings {
    runs: usize,
    http_records: usize,
    http_serial: usize,
    http_concurrency: Vec<usize>,
    pg_rows: usize,
    pg_concurrency: Vec<usize>,
    pg_url: String,
    /// The `postgres` sink's `batch_max_wait` (unset: its default).
    pg_batch_max_wait: Option<String>,
    /// How long a sink may deliver nothing before its run is given up.
    stall_after: Duration,
}

impl Settings {
    fn from_env() -> Self {
        Self {
            runs: env_usize("RUNS", 3),
            http_records: env_usize("HTTP_RECORDS", 20_000),
            http_serial: env_usize("HTTP_RECORDS_SERIAL", 3_000),
            http_concurrency: env_list("HTTP_CONCURRENCY", "1,16"),
            pg_rows: env_usize("PG_ROWS", 100_000),
            pg_concurrency: env_list("PG_CONCURRENCY", "1"),
            pg_url: std::env::var("FERRY_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
            pg_batch_max_wait: std::env::var("PG_BATCH_MAX_WAIT").ok(),
            stall_after: Duration::from_secs(env_usize("STALL_AFTER_SECS", 30) as u64),
        }
    }

    /// The variants of one run, in order.
    fn variants(&self) -> Vec<Variant> {
        let mut v = Vec::new();
        if self.http_records > 0 {
            v.push(Variant::HttpRaw);
            v.extend(self.http_concurrency.iter().map(|&c| Variant::Http(c)));
        }
        if self.pg_rows > 0 {
            v.push(Variant::PgRaw);
            v.push(Variant::PgCopy);
            v.extend(self.pg_concurrency.iter().map(|&c| Variant::Pg(c)));
        }
        v
    }

    /// Records a variant moves per run.
    fn records(&self, variant: Variant) -> usize {
        match variant {
            Variant::Http(1) => self.http_serial,
            Variant::HttpRaw | Variant::Http(_) => self.http_records,
            Variant::PgRaw | Variant::PgCopy | Variant::Pg(_) => self.pg_rows,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Variant {
    /// Raw rdkafka consume of the `http` records.
    HttpRaw,
    /// The `http` sink at this concurrency.
    Http(usize),
    /// Raw rdkafka consume of the `Contact` records.
    PgRaw,
    /// `COPY` of the same rows.
    PgCopy,
    /// The `postgres` sink at this concurrency.
    Pg(usize),
}

impl Variant {
    fn label(self) -> String {
        match self {
            Self::HttpRaw => "http: raw rdkafka consume".to_owned(),
            Self::Http(c) => format!("http sink, concurrency {c}"),
            Self::PgRaw => "postgres: raw rdkafka consume".to_owned(),
            Self::PgCopy => "postgres: COPY".to_owned(),
            Self::Pg(c) => format!("postgres sink, concurrency {c}"),
        }
    }
}

/// One variant of one run.
#[derive(Clone, Copy)]
struct Measured {
    /// Records per second from the start (of the consumer, the connector,
    /// the `COPY`) to the last record.
    rate: f64,
    /// For a sink: from its first record at the target to the last.
    steady: Option<f64>,
    /// For a sink that stopped making progress: how many records it
    /// delivered (the rates are of those).
    stalled_at: Option<usize>,
}

/// A sink's progress towards `target` records, polled: when the first
/// records were seen, when the count last moved, and whether it stopped
/// moving for `stall_after` (then waiting ends, the run is reported as
/// stalled rather than hanging the bench).
struct Watch {
    target: usize,
    stall_after: Duration,
    started: Instant,
    state: Mutex<Seen>,
}

struct Seen {
    count: usize,
    /// When records were first seen, and how many.
    first: Option<(Instant, usize)>,
    /// When `count` last moved.
    moved: Instant,
}

impl Watch {
    fn new(target: usize, stall_after: Duration) -> Self {
        let now = Instant::now();
        Self {
            target,
            stall_after,
            started: now,
            state: Mutex::new(Seen {
                count: 0,
                first: None,
                moved: now,
            }),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes that `count` records are delivered; whether to stop waiting
    /// (all are, or none came for `stall_after`).
    fn note(&self, count: usize) -> bool {
        let mut seen = self.seen();
        let now = Instant::now();
        if count > seen.count {
            seen.count = count;
            seen.moved = now;
            seen.first.get_or_insert((now, count));
        }
        count >= self.target || now.duration_since(seen.moved) >= self.stall_after
    }

    fn measured(&self) -> Measured {
        let seen = self.seen();
        let rate = seen.count as f64 / seen.moved.duration_since(self.started).as_secs_f64();
        let steady = seen.first.and_then(|(at, count)| {
            let secs = seen.moved.duration_since(at).as_secs_f64();
            (secs > 0.0).then(|| (seen.count - count) as f64 / secs)
        });
        Measured {
            rate,
            steady,
            stalled_at: (seen.count < self.target).then_some(seen.count),
        }
    }
}

/// An HTTP server on 127.0.0.1 answering every request 200 after 1 ms,
/// counting the requests it answered.
struct Target {
    addr: SocketAddr,
    answered: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

async fn slow_ok(State(answered): State<Arc<AtomicUsize>>, _body: Bytes) -> StatusCode {
    tokio::time::sleep(Duration::from_millis(1)).await;
    answered.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

impl Target {
    async fn serve() -> Self {
        let answered = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .fallback(slow_ok)
            .with_state(Arc::clone(&answered));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            answered,
            server,
        }
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    fn stop(self) {
        self.server.abort();
    }
}

/// Rows `connector` has committed, from its offsets in `ferry_sink_offsets`
/// (0 before the sink created that table).
async fn committed(db: &tokio_postgres::Client, connector: &str) -> usize {
    db.query_one(
        "SELECT coalesce(sum(next_offset), 0)::bigint FROM ferry_sink_offsets WHERE connector = $1",
        &[&connector],
    )
    .await
    .ok()
    .and_then(|row| row.try_get::<_, i64>(0).ok())
    .map_or(0, |n| usize::try_from(n).unwrap_or(0))
}

async fn row_count(db: &tokio_postgres::Client, table: &str) -> i64 {
    db.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0)
}

/// Errors, dead letters and restarts the runtime counted for `connector`.
fn trouble(connector: &str) -> String {
    let label = format!("connector=\"{connector}\"");
    [
        ("sink errors", "ferry_sink_errors_total"),
        ("dead letters", "ferry_dead_letters_total"),
        ("restarts", "ferry_connector_restarts_total"),
    ]
    .into_iter()
    .filter_map(|(what, name)| {
        let n = metric(name, &label);
        (n > 0.0).then(|| format!("{n:.0} {what}"))
    })
    .collect::<Vec<_>>()
    .join(", ")
}

/// `PG_ROWS` contacts, Avro-framed under the registered id, and as CSV.
struct Contacts {
    codec_id: u32,
    payloads: Vec<Vec<u8>>,
    csv: String,
}

fn encode(codec: &AvroCodec, rows: usize) -> Vec<Vec<u8>> {
    (0..rows)
        .map(|i| {
            let value =
                ferry::schema::json::from_json(codec.schema(), &contact(i, 1)).expect("a Contact");
            codec.encode(&value).expect("encodes")
        })
        .collect()
}

/// The `Contact` schema's codec as the runtime registers it for a topic
/// declaring `value_schema: contact.avsc`.
async fn registered_codec(dir: &std::path::Path, bootstrap: &str) -> AvroCodec {
    let sections =
        "topics:\n  - name: bench.pg.schema\n    partitions: 1\n    value_schema: contact.avsc\n";
    let (running, _) = start(&config(dir, bootstrap, sections)).await;
    let codec = running
        .schema_of("bench.pg.schema", Part::Value)
        .expect("the schema is registered")
        .codec
        .clone();
    running.shutdown().await.expect("stops");
    codec
}

struct Bench {
    settings: Settings,
    dir: tempfile::TempDir,
    bootstrap: String,
    admin: KafkaAdmin,
    /// Values of the `http` records, cycled through.
    http_values: Vec<Vec<u8>>,
    contacts: Contacts,
    db: Option<tokio_postgres::Client>,
    pid: u32,
}

impl Bench {
    fn db(&self) -> &tokio_postgres::Client {
        self.db
            .as_ref()
            .expect("PostgreSQL is connected when PG_ROWS > 0")
    }

    async fn measure(&self, run: usize, variant: Variant) -> Measured {
        match variant {
            Variant::HttpRaw => self.raw(&format!("bench.http.r{run}.raw"), variant).await,
            Variant::Http(c) => self.http_sink(run, c).await,
            Variant::PgRaw => self.raw(&format!("bench.pg.r{run}.raw"), variant).await,
            Variant::PgCopy => self.pg_copy(run).await,
            Variant::Pg(c) => self.pg_sink(run, c).await,
        }
    }

    /// Creates `topic` and fills it with `n` records of `values`.
    /// Creates `topic` and writes `n` records to it. The `http` records go
    /// one per producer batch: the concurrent sink seeks a partition it
    /// held back, and the embedded broker's memory engine answers a fetch
    /// from the middle of a batch with the next batch (records skipped; see
    /// the dev-broker notes), which Kafka does not.
    async fn fill(&self, topic: &str, n: usize, values: &[Vec<u8>], one_per_batch: bool) {
        self.admin
            .ensure_topic(&broker::topic(topic, PARTITIONS))
            .await
            .expect("topic");
        let settings: &[(&str, &str)] = if one_per_batch {
            &[("batch.num.messages", "1")]
        } else {
            &[]
        };
        produce_with(&self.bootstrap, topic, n, values, settings).await;
    }

    /// Raw rdkafka consume of the records `variant` stands beside.
    async fn raw(&self, topic: &str, variant: Variant) -> Measured {
        let n = self.settings.records(variant);
        let (values, http) = match variant {
            Variant::PgRaw => (&self.contacts.payloads, false),
            _ => (&self.http_values, true),
        };
        self.fill(topic, n, values, http).await;
        let (bootstrap, topic) = (self.bootstrap.clone(), topic.to_owned());
        let rate = tokio::task::spawn_blocking(move || raw_consume(&bootstrap, &topic, n))
            .await
            .expect("consume");
        Measured {
            rate,
            steady: None,
            stalled_at: None,
        }
    }

    async fn http_sink(&self, run: usize, c: usize) -> Measured {
        let n = self.settings.records(Variant::Http(c));
        let topic = format!("bench.http.r{run}.c{c}");
        self.fill(&topic, n, &self.http_values, true).await;
        let target = Target::serve().await;
        let name = format!("http-r{run}-c{c}");
        let sections = format!(
            "connectors:\n  - name: {name}\n    type: http\n    topic: {topic}\n    url: http://{}/r/{{{{ key }}}}\n    concurrency: {c}\n",
            target.addr
        );
        let (running, planned) = start(&config(self.dir.path(), &self.bootstrap, &sections)).await;
        let watch = Watch::new(n, self.settings.stall_after);
        run_until(running, planned, || {
            std::future::ready(watch.note(target.answered()))
        })
        .await;
        if target.answered() != n {
            println!("  {name}: {} requests for {n} records", target.answered());
        }
        report(&name);
        target.stop();
        watch.measured()
    }

    fn table(&self, run: usize, what: &str) -> String {
        format!("bench_sinks_{}_r{run}_{what}", self.pid)
    }

    async fn create(&self, table: &str) {
        self.db()
            .batch_execute(&format!("CREATE TABLE {table} {DDL}"))
            .await
            .expect("create table");
    }

    async fn pg_copy(&self, run: usize) -> Measured {
        let table = self.table(run, "copy");
        self.create(&table).await;
        let text = self.contacts.csv.clone();
        let t = Instant::now();
        let copied = copy(self.db(), &table, text).await.expect("COPY");
        Measured {
            rate: copied as f64 / t.elapsed().as_secs_f64(),
            steady: None,
            stalled_at: None,
        }
    }

    async fn pg_sink(&self, run: usize, c: usize) -> Measured {
        let rows = self.settings.pg_rows;
        let topic = format!("bench.pg.r{run}.c{c}");
        let table = self.table(run, &format!("c{c}"));
        self.create(&table).await;
        let name = format!("pg-{}-r{run}-c{c}", self.pid);
        let sections = format!(
            "topics:\n  - name: {topic}\n    partitions: {PARTITIONS}\n    value_schema: contact.avsc\nconnectors:\n  - name: {name}\n    type: postgres\n    topic: {topic}\n    url: \"{url}\"\n    table: {table}\n    mode: upsert\n    batch_max_records: {PG_BATCH}\n    concurrency: {c}\n{wait}",
            url = self.settings.pg_url,
            wait = self
                .settings
                .pg_batch_max_wait
                .as_ref()
                .map(|w| format!("    batch_max_wait: {w}\n"))
                .unwrap_or_default(),
        );
        let (running, planned) = start(&config(self.dir.path(), &self.bootstrap, &sections)).await;
        let codec = &running
            .schema_of(&topic, Part::Value)
            .expect("the topic's schema is registered")
            .codec;
        let fresh;
        let payloads = if codec.id() == self.contacts.codec_id {
            &self.contacts.payloads
        } else {
            fresh = encode(codec, rows);
            &fresh
        };
        raw_produce(&self.bootstrap, &topic, rows, payloads).await;
        let watch = Watch::new(rows, self.settings.stall_after);
        let (db, connector, watching) = (self.db(), name.as_str(), &watch);
        run_until(running, planned, move || async move {
            watching.note(committed(db, connector).await)
        })
        .await;
        let in_table = row_count(db, &table).await;
        if usize::try_from(in_table).ok() != Some(rows) {
            println!("  {name}: {in_table} rows in {table}, expected {rows}");
        }
        report(&name);
        watch.measured()
    }

    /// Drops the tables and the sinks' offsets.
    async fn clean_up(&self) {
        let Some(db) = &self.db else { return };
        for run in 0..self.settings.runs {
            let whats = self.settings.pg_concurrency.iter().map(|c| format!("c{c}"));
            for what in whats.chain(["copy".to_owned()]) {
                let table = self.table(run, &what);
                let _ = db
                    .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
                    .await;
            }
        }
        let _ = db
            .execute(
                "DELETE FROM ferry_sink_offsets WHERE connector LIKE $1",
                &[&format!("pg-{}-%", self.pid)],
            )
            .await;
    }
}

/// Prints what went wrong in a connector's run, if anything did.
fn report(connector: &str) {
    let trouble = trouble(connector);
    if !trouble.is_empty() {
        println!("  {connector}: {trouble}");
    }
}

/// Each run's ratios, by name.
fn ratios(settings: &Settings, run: &BTreeMap<Variant, Measured>) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let rate = |v: Variant| run.get(&v).map(|m| m.rate);
    let steady = |v: Variant| run.get(&v).and_then(|m| m.steady);
    for &c in settings.http_concurrency.iter().filter(|&&c| c > 1) {
        if let (Some(a), Some(b)) = (rate(Variant::Http(c)), rate(Variant::Http(1))) {
            out.push((format!("http: concurrency {c} / 1, from start"), a / b));
        }
        if let (Some(a), Some(b)) = (steady(Variant::Http(c)), steady(Variant::Http(1))) {
            out.push((
                format!("http: concurrency {c} / 1, from first record"),
                a / b,
            ));
        }
    }
    for &c in &settings.http_concurrency {
        if let (Some(a), Some(b)) = (rate(Variant::Http(c)), rate(Variant::HttpRaw)) {
            out.push((format!("http: concurrency {c} / raw consume"), a / b));
        }
    }
    if let (Some(copy), Some(raw)) = (rate(Variant::PgCopy), rate(Variant::PgRaw)) {
        for &c in &settings.pg_concurrency {
            if let Some(sink) = rate(Variant::Pg(c)) {
                out.push((
                    format!("postgres: concurrency {c} / lower of (COPY, raw consume)"),
                    sink / copy.min(raw),
                ));
            }
        }
    }
    out
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn print_summary(
    settings: &Settings,
    results: &BTreeMap<Variant, Vec<Measured>>,
    ratios: &[(String, Vec<f64>)],
) {
    println!(
        "\n{} runs, {PARTITIONS} partitions; median (min..max)",
        settings.runs
    );
    println!("| variant | records | rec/s from start | rec/s from first record | stalled runs |");
    println!("|---------|---------|------------------|-------------------------|--------------|");
    for (variant, measured) in results {
        let rates: Vec<f64> = measured.iter().map(|m| m.rate).collect();
        let steady: Vec<f64> = measured.iter().filter_map(|m| m.steady).collect();
        let (lo, hi) = spread(&rates);
        let steady = if steady.is_empty() {
            String::new()
        } else {
            let (slo, shi) = spread(&steady);
            format!("{:.0} ({slo:.0}..{shi:.0})", median(&steady))
        };
        let stalled: Vec<String> = measured
            .iter()
            .filter_map(|m| m.stalled_at)
            .map(|at| format!("at {at}"))
            .collect();
        println!(
            "| {} | {} | {:.0} ({lo:.0}..{hi:.0}) | {steady} | {} |",
            variant.label(),
            settings.records(*variant),
            median(&rates),
            stalled.join(", "),
        );
    }
    for (name, r) in ratios {
        let (lo, hi) = spread(r);
        println!("{name}: {:.2} ({lo:.2}..{hi:.2})", median(r));
    }
    for (variant, measured) in results {
        if let Variant::Http(c) = variant {
            let rates: Vec<f64> = measured.iter().map(|m| m.rate).collect();
            println!(
                "http: concurrency {c} / Vector's {VECTOR_HTTP_RATE:.0}/s: {:.2}",
                median(&rates) / VECTOR_HTTP_RATE
            );
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let settings = Settings::from_env();
    let dir = tempfile::tempdir().expect("dir");
    let broker = DevBroker::start(free(), BrokerStorage::Memory)
        .await
        .expect("broker");
    let bootstrap = broker.bootstrap_servers();
    let admin = KafkaAdmin::new(&KafkaConfig::default(), &bootstrap).expect("admin");
    // 263 bytes of JSON each, a thousand distinct ones, so lz4
    // cannot shrink a batch to nothing.
    let http_values: Vec<Vec<u8>> = (0..1000)
        .map(|i| {
            serde_json::to_vec(&serde_json::json!({
                "id": format!("c{i:07}"), "version": 1, "name": random_text(200), "email": "c@example.com"
            }))
            .expect("json")
        })
        .collect();
    let (contacts, db) = if settings.pg_rows > 0 {
        let codec = registered_codec(dir.path(), &bootstrap).await;
        let contacts = Contacts {
            codec_id: codec.id(),
            payloads: encode(&codec, settings.pg_rows),
            csv: (0..settings.pg_rows).map(|i| csv(&contact(i, 1))).collect(),
        };
        (contacts, Some(connect(&settings.pg_url).await))
    } else {
        let none = Contacts {
            codec_id: 0,
            payloads: Vec::new(),
            csv: String::new(),
        };
        (none, None)
    };
    let bench = Bench {
        settings,
        dir,
        bootstrap,
        admin,
        http_values,
        contacts,
        db,
        pid: std::process::id(),
    };

    let mut results: BTreeMap<Variant, Vec<Measured>> = BTreeMap::new();
    let mut all_ratios: Vec<(String, Vec<f64>)> = Vec::new();
    for run in 0..bench.settings.runs {
        println!("run {run}: load average {}", load());
        let mut variants = bench.settings.variants();
        if run % 2 == 1 {
            variants.reverse();
        }
        let mut this_run = BTreeMap::new();
        for variant in variants {
            let m = bench.measure(run, variant).await;
            let steady = m
                .steady
                .map(|s| format!(", {s:.0} from first record"))
                .unwrap_or_default();
            let stalled = m
                .stalled_at
                .map(|at| {
                    format!(
                        "; STALLED at {at} of {} records",
                        bench.settings.records(variant)
                    )
                })
                .unwrap_or_default();
            println!(
                "run {run}: {:<32} {:>9.0} rec/s{steady}{stalled}",
                variant.label(),
                m.rate
            );
            this_run.insert(variant, m);
        }
        for (name, ratio) in ratios(&bench.settings, &this_run) {
            println!("run {run}: {name}: {ratio:.2}");
            match all_ratios.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => v.push(ratio),
                None => all_ratios.push((name, vec![ratio])),
            }
        }
        for (variant, m) in this_run {
            results.entry(variant).or_default().push(m);
        }
    }
    print_summary(&bench.settings, &results, &all_ratios);
    bench.clean_up().await;
    broker.stop().await;
}
