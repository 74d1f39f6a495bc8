//! The `http` sink's throughput through the resilience stack, as a ratio
//! to the same sink without it, against a healthy local target.
//!
//! `cargo bench -p ferry-connectors --bench http_sink` (env: `RECORDS`,
//! default 20000; `RUNS`, default 7). One process: an axum target on
//! 127.0.0.1 answering `200` to every `POST`, and an `HttpSink` writing
//! `RECORDS` records to it in hand-overs of 50 (as the runtime hands them
//! over without `batch`), one request per record. The two variants — the
//! default stack (`Outbound::new`) and no layers (`Outbound::bare`) —
//! alternate `RUNS` times; the bench prints each one's median and spread
//! (min..max) and the median of the per-run ratios. No Kafka: the sink's
//! own cost is what the layers add to.

use axum::routing::post;
use ferry::resilience::{Outbound, ResilienceConfig};
use ferry::sink::{Sink, SinkRecord};
use ferry_connectors::sinks::http::config::HttpSinkConfig;
use ferry_connectors::sinks::http::sink::HttpSink;
use std::time::Instant;

#[path = "support/stats.rs"]
mod stats;
use stats::{median, spread};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn records(n: usize) -> Vec<SinkRecord> {
    (0..n)
        .map(|i| SinkRecord {
            topic: "bench".into(),
            partition: 0,
            offset: i64::try_from(i).unwrap_or(i64::MAX),
            timestamp: None,
            key: Some(format!("k{}", i % 100)),
            raw_key: None,
            value: serde_json::json!({"id": i, "email": "someone@example.com", "name": "Some One"}),
            raw: None,
            headers: Vec::new(),
            correlation_id: format!("c{i}"),
        })
        .collect()
}

async fn run(sink: &mut HttpSink, batch: &[SinkRecord]) -> f64 {
    let started = Instant::now();
    for chunk in batch.chunks(50) {
        if let Err(f) = sink.write(chunk).await {
            panic!("the healthy target failed: {:?}", f.first_error());
        }
    }
    batch.len() as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env("RECORDS", 20_000);
    let runs = env("RUNS", 7);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route("/c/{key}", post(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let cfg: HttpSinkConfig = serde_json::from_value(serde_json::json!({
        "topic": "bench",
        "url": format!("http://{addr}/c/{{{{ key }}}}"),
    }))
    .expect("config");
    let resilience = ResilienceConfig::default();
    let mut with =
        HttpSink::new("with", cfg.clone(), Outbound::new("with", &resilience)).expect("sink");
    let mut without =
        HttpSink::new("without", cfg, Outbound::bare("without", &resilience)).expect("sink");
    let batch = records(n);
    // Warm both (connections, allocator).
    run(&mut with, &batch[..n.min(1000)]).await;
    run(&mut without, &batch[..n.min(1000)]).await;
    let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        // Alternate which goes first.
        let (x, y) = if i % 2 == 0 {
            let x = run(&mut with, &batch).await;
            (x, run(&mut without, &batch).await)
        } else {
            let y = run(&mut without, &batch).await;
            (run(&mut with, &batch).await, y)
        };
        println!(
            "run {i}: with stack {x:.0} rec/s, without {y:.0} rec/s, ratio {:.3}",
            x / y
        );
        a.push(x);
        b.push(y);
        ratios.push(x / y);
    }
    let ((amin, amax), (bmin, bmax)) = (spread(&a), spread(&b));
    println!(
        "http sink, {n} records x {runs} runs: with the stack {:.0} rec/s ({amin:.0}..{amax:.0}), without {:.0} rec/s ({bmin:.0}..{bmax:.0}); median ratio {:.3} ({:.3}..{:.3})",
        median(&a),
        median(&b),
        median(&ratios),
        spread(&ratios).0,
        spread(&ratios).1,
    );
}
