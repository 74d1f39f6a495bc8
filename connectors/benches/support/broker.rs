//! Ferry's runtime on the embedded broker, and the raw rdkafka ceilings
//! beside it, for the connector benchmarks that measure through Kafka
//! (each bench binary includes this file with `#[path]`).

use ferry::config::TopicSpec;
use ferry::runtime::{BrokerMode, Planned, Running};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub fn free() -> SocketAddr {
    ferry_testkit::free_addr()
}

/// A topic of `partitions` partitions with no schema.
pub fn topic(name: &str, partitions: u32) -> TopicSpec {
    TopicSpec {
        name: name.to_owned(),
        partitions: std::num::NonZeroU32::new(partitions.max(1)).expect("at least 1"),
        replication_factor: None,
        config: Default::default(),
        value_schema: None,
        key_schema: None,
    }
}

/// The sum of a metric's series whose labels contain `label`.
pub fn metric(name: &str, label: &str) -> f64 {
    ferry::telemetry::metrics::install()
        .render()
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Produces `n` records keyed `c0000000`, `c0000001`..., cycling through
/// `values`; the rate at which Kafka acknowledged them.
pub async fn raw_produce(bootstrap: &str, topic: &str, n: usize, values: &[Vec<u8>]) -> f64 {
    produce_with(bootstrap, topic, n, values, &[]).await
}

/// [`raw_produce`] with more producer settings.
pub async fn produce_with(
    bootstrap: &str,
    topic: &str,
    n: usize,
    values: &[Vec<u8>],
    settings: &[(&str, &str)],
) -> f64 {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4");
    for (k, v) in settings {
        cfg.set(*k, *v);
    }
    let p: FutureProducer = cfg.create().expect("producer");
    let keys: Vec<String> = (0..n).map(|i| format!("c{i:07}")).collect();
    let t = Instant::now();
    let mut pending = Vec::with_capacity(1000);
    for (i, key) in keys.iter().enumerate() {
        pending.push(
            p.send(
                FutureRecord::to(topic)
                    .key(key)
                    .payload(&values[i % values.len()]),
                Duration::from_secs(60),
            ),
        );
        if pending.len() == 1000 {
            for r in futures::future::join_all(pending.drain(..)).await {
                r.expect("acked");
            }
        }
    }
    for r in futures::future::join_all(pending).await {
        r.expect("acked");
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// Consumes `n` records of `topic` from the start with a fresh group; the
/// rate (blocking: call it from `spawn_blocking`).
pub fn raw_consume(bootstrap: &str, topic: &str, n: usize) -> f64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("bench-raw-{topic}"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    let t = Instant::now();
    let mut got = 0;
    while got < n {
        if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
            got += 1;
        }
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// Writes a Ferry config into `dir`: Kafka at `bootstrap`, the admin API
/// and the schema registry on free ports, the repository's schemas, log
/// level `warn`, then `sections` (YAML: `topics:`, `connectors:`).
pub fn config(dir: &Path, bootstrap: &str, sections: &str) -> PathBuf {
    let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas");
    let text = format!(
        "data_dir: {}\nkafka:\n  bootstrap_servers: \"{bootstrap}\"\nadmin:\n  listen: \"{}\"\nschema_registry:\n  listen: \"{}\"\n  schemas_dir: {schemas}\nlog:\n  level: warn\n{sections}",
        dir.display(),
        free(),
        free()
    );
    let path = dir.join(format!("ferry-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(&path, text).expect("config");
    path
}

/// Starts Ferry's runtime from the config at `path` (its topics created,
/// their schemas registered) and plans its connectors, not yet started.
pub async fn start(path: &Path) -> (Running, Vec<(String, Planned)>) {
    let mut config = ferry::config::load(path).expect("config loads");
    ferry::telemetry::logging::init(&config.log);
    let planned = ferry_connectors::registry::plan_all(&mut config, "bench").expect("plans");
    let running = Running::start(&config, "bench", BrokerMode::External)
        .await
        .expect("starts");
    (running, planned)
}

/// Starts `planned`, polls `done` every 20 ms until it says so, stops
/// Ferry; the time from starting the connectors to `done`.
pub async fn run_until<F>(
    mut running: Running,
    planned: Vec<(String, Planned)>,
    mut done: impl FnMut() -> F,
) -> Duration
where
    F: Future<Output = bool>,
{
    let t = Instant::now();
    running
        .start_connectors(planned)
        .await
        .expect("connectors start");
    while !done().await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t.elapsed();
    running.shutdown().await.expect("stops");
    took
}

/// `len` characters of random hex.
pub fn random_text(len: usize) -> String {
    let mut s = String::with_capacity(len + 32);
    while s.len() < len {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s.truncate(len);
    s
}
