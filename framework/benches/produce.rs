//! Produce throughput of Ferry's Kafka layer against the embedded broker,
//! beside a plain rdkafka `FutureProducer` with the same settings, so the
//! layer's overhead is a ratio. 1 KiB records, `acks=all`, idempotent.
//!
//! `cargo bench -p ferry --bench produce` (env: `RECORDS`, default 100000;
//! `STORAGE`, `memory` or `sqlite`, default both).

use ferry::config::TopicSpec;
use ferry::kafka::{
    BrokerStorage, DevBroker, KafkaAdmin, KafkaConfig, KafkaProducer, OutgoingRecord,
};
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

const RECORD_BYTES: usize = 1024;
/// Sends kept in flight at once by each producer under test.
const WINDOW: usize = 10_000;
/// Runs of each producer; the best is reported.
const ROUNDS: usize = 2;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let records: usize = std::env::var("RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let storages = match std::env::var("STORAGE").as_deref() {
        Ok("memory") => vec!["memory"],
        Ok("sqlite") => vec!["sqlite"],
        _ => vec!["memory", "sqlite"],
    };
    println!(
        "records: {records} x {RECORD_BYTES} B, acks=all, idempotent, lz4, linger 5ms, 3 partitions, best of {ROUNDS}"
    );
    for storage in storages {
        let dir = tempfile::tempdir().expect("temp dir");
        let kind = match storage {
            "sqlite" => BrokerStorage::Sqlite(dir.path().join("broker.db")),
            _ => BrokerStorage::Memory,
        };
        let broker = DevBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)), kind)
            .await
            .expect("broker");
        let bootstrap = broker.bootstrap_servers();
        let kafka = KafkaConfig::default();
        let admin = KafkaAdmin::new(&kafka, &bootstrap).expect("admin");
        for name in ["bench.ferry", "bench.raw"] {
            admin
                .ensure_topic(&TopicSpec {
                    name: name.into(),
                    partitions: NonZeroU32::new(3).expect("3"),
                    replication_factor: NonZeroU32::new(1),
                    config: Default::default(),
                    value_schema: None,
                    key_schema: None,
                })
                .await
                .expect("topic");
        }
        let payload = vec![b'x'; RECORD_BYTES];

        let raw: FutureProducer = kafka
            .producer_config(&bootstrap)
            .create()
            .expect("raw producer");
        let ferry = KafkaProducer::new(&kafka, &bootstrap).expect("ferry producer");
        // Alternate the two, ROUNDS times each, and keep each one's best run, so
        // neither gains from going second (warm broker, grown files).
        let (mut raw_rate, mut ferry_rate) = (0f64, 0f64);
        for _ in 0..ROUNDS {
            let r = measure(records, |i| {
                let raw = raw.clone();
                let payload = payload.clone();
                async move {
                    let key = format!("k{i}");
                    raw.send(
                        FutureRecord::to("bench.raw").key(&key).payload(&payload),
                        Duration::MAX,
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e.to_string())
                }
            })
            .await;
            raw_rate = raw_rate.max(r);
            let f = measure(records, |i| {
                let ferry = ferry.clone();
                let payload = payload.clone();
                async move {
                    ferry
                        .send(OutgoingRecord {
                            topic: "bench.ferry".into(),
                            key: Some(format!("k{i}").into_bytes()),
                            payload: Some(payload),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            })
            .await;
            ferry_rate = ferry_rate.max(f);
        }

        let mb = |r: f64| r * RECORD_BYTES as f64 / 1_048_576.0;
        println!(
            "{storage:>6}: rdkafka FutureProducer {raw_rate:>9.0} rec/s {:>7.1} MB/s | Ferry KafkaProducer {ferry_rate:>9.0} rec/s {:>7.1} MB/s | ratio {:.2}",
            mb(raw_rate),
            mb(ferry_rate),
            ferry_rate / raw_rate
        );
        drop(raw);
        drop(ferry);
        broker.stop().await;
    }
}

/// Sends `n` records with at most [`WINDOW`] in flight; returns records/s.
async fn measure<F, Fut>(n: usize, send: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut next = 0;
    let mut done = 0;
    while done < n {
        while next < n && in_flight.len() < WINDOW {
            in_flight.push(send(next));
            next += 1;
        }
        if let Some(r) = in_flight.next().await {
            r.expect("acknowledged");
            done += 1;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}
