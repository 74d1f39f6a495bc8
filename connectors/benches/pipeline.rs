//! Connector throughput, beside raw rdkafka on the same broker.
//!
//! `cargo bench -p ferry-connectors --bench pipeline` (env: `RECORDS`,
//! default 50000; `RUNS`, default 5). On the embedded broker (tansu, memory
//! engine), in one process: the demo CRM API serves `RECORDS` contacts; the
//! `http_poll` source writes them to Kafka (pages of 1000); then the `http`
//! sink delivers them to the demo target (one request per record). Raw
//! rdkafka produce and consume of the same number of records of the same
//! size give the ratios. The four variants alternate (raw produce, source,
//! raw consume, sink), `RUNS` times, each run on fresh topics and groups,
//! and the bench prints each variant's median with its spread (min..max),
//! and the median of the per-run ratios: one run moves by more than the
//! differences worth measuring.
//!
//! Then the memory bound: `BACKLOG` records (default 1,000,000) wait in a
//! topic while the `ferry` binary (release build, a process of its own) runs
//! an `http` sink against a target that never answers; its peak resident
//! memory is sampled from /proc for 30 s after the sink pauses.

#[path = "support/broker.rs"]
mod broker;
use broker::{
    config, free, metric, random_text, raw_consume, raw_produce, run_until, start, topic,
};
use ferry::kafka::{BrokerStorage, DevBroker};
use ferry_connectors::demo::{Demo, DemoApi};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Median and spread of a variant's runs.
fn summary(rates: &[f64]) -> (f64, f64, f64) {
    let mut v = rates.to_vec();
    v.sort_by(f64::total_cmp);
    let median = if v.is_empty() {
        0.0
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (
        median,
        v.first().copied().unwrap_or(0.0),
        v.last().copied().unwrap_or(0.0),
    )
}

/// The `connectors:` section from `template`, for run `run` against `api`.
fn connectors(template: &str, run: usize, api: SocketAddr) -> String {
    let connectors = template
        .replace("{run}", &run.to_string())
        .replace("{api}", &api.to_string());
    format!("connectors:\n{connectors}")
}

const SOURCE: &str = "  - name: crm{run}\n    type: http_poll\n    url: http://{api}/contacts\n    topic: bench.contacts.{run}\n    interval: 1s\n    items: /data\n    key: /id\n    query:\n      limit: 1000\n    pagination:\n      type: cursor\n      from: /next_cursor\n      param: cursor\n    incremental:\n      field: /updated_at\n      param: updated_since\n";
const SINK: &str = "  - name: target{run}\n    type: http\n    topic: bench.contacts.{run}\n    method: PUT\n    url: http://{api}/target/contacts/{{ key }}\n    body: payload\n";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let dir = tempfile::tempdir().expect("dir");
    let broker = DevBroker::start(free(), BrokerStorage::Memory)
        .await
        .expect("broker");
    let bootstrap = broker.bootstrap_servers();
    let admin = ferry::kafka::KafkaAdmin::new(&ferry::kafka::KafkaConfig::default(), &bootstrap)
        .expect("admin");
    let api = DemoApi::serve(free(), Demo::default())
        .await
        .expect("demo API");
    for i in 0..n {
        api.demo().upsert(&format!("c{i:07}"));
    }
    // As big as an envelope the source writes (about 330 bytes), and about as
    // compressible as real data: a thousand distinct random payloads, so
    // lz4 cannot shrink a batch to nothing (which would make every byte
    // limit on the consumer side count compressed bytes only).
    let values: Vec<Vec<u8>> = (0..1000).map(|_| random_text(330).into_bytes()).collect();

    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let (mut raw_ps, mut raw_cs, mut sources, mut sinks) = (vec![], vec![], vec![], vec![]);
    let (mut source_ratios, mut sink_ratios) = (vec![], vec![]);
    for run in 0..runs {
        let raw_topic = format!("bench.raw.{run}");
        admin
            .ensure_topic(&topic(&raw_topic, 3))
            .await
            .expect("raw topic");
        let raw_p = raw_produce(&bootstrap, &raw_topic, n, &values).await;

        let source_cfg = config(dir.path(), &bootstrap, &connectors(SOURCE, run, api.addr()));
        let label = format!("connector=\"crm{run}\"");
        let (running, planned) = start(&source_cfg).await;
        let source = run_until(running, planned, || {
            std::future::ready(metric("ferry_source_records_total", &label) >= n as f64)
        })
        .await;
        let source_rate = n as f64 / source.as_secs_f64();

        let raw_c = tokio::task::spawn_blocking({
            let b = bootstrap.clone();
            move || raw_consume(&b, &raw_topic, n)
        })
        .await
        .expect("consume");

        let sink_cfg = config(dir.path(), &bootstrap, &connectors(SINK, run, api.addr()));
        let demo = api.demo().clone();
        let before = demo.received().len();
        let (running, planned) = start(&sink_cfg).await;
        let sink = run_until(running, planned, || {
            std::future::ready(demo.received().len() >= before + n)
        })
        .await;
        let sink_rate = n as f64 / sink.as_secs_f64();
        println!(
            "run {run}: raw produce {raw_p:.0}, source {source_rate:.0} ({:.2}), raw consume {raw_c:.0}, sink {sink_rate:.0} ({:.2}) rec/s",
            source_rate / raw_p,
            sink_rate / raw_c
        );
        raw_ps.push(raw_p);
        raw_cs.push(raw_c);
        sources.push(source_rate);
        sinks.push(sink_rate);
        source_ratios.push(source_rate / raw_p);
        sink_ratios.push(sink_rate / raw_c);
    }

    println!("records: {n}, runs: {runs} (median, min..max)");
    for (name, rates) in [
        ("raw rdkafka produce", &raw_ps),
        ("raw rdkafka consume", &raw_cs),
        ("http_poll source", &sources),
        ("http sink", &sinks),
    ] {
        let (m, lo, hi) = summary(rates);
        println!("{name:<20} {m:>9.0} rec/s  ({lo:.0}..{hi:.0})");
    }
    let (m, lo, hi) = summary(&source_ratios);
    println!("source / raw produce: {m:.2} ({lo:.2}..{hi:.2})");
    let (m, lo, hi) = summary(&sink_ratios);
    println!("sink / raw consume:   {m:.2} ({lo:.2}..{hi:.2})");

    let backlog: usize = std::env::var("BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    if backlog > 0 {
        admin
            .ensure_topic(&topic("bench.backlog", 3))
            .await
            .expect("backlog topic");
        let json_values: Vec<Vec<u8>> = (0..1000)
            .map(|i| {
                serde_json::to_vec(&serde_json::json!({
                    "id": format!("c{i:07}"), "version": 1, "name": random_text(200), "email": "c@example.com"
                }))
                .expect("json")
            })
            .collect();
        raw_produce(&bootstrap, "bench.backlog", backlog, &json_values).await;
        api.demo().set_stalled(true);
        let sink = "  - name: stalled\n    type: http\n    topic: bench.backlog\n    method: PUT\n    url: http://{api}/target/contacts/{{ key }}\n    timeout: 600s\n";
        let cfg = config(dir.path(), &bootstrap, &connectors(sink, 0, api.addr()));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("run")
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("ferry starts");
        let started = Instant::now();
        let mut peak = 0.0f64;
        let mut paused_at = None;
        let mut at_pause = 0.0;
        while started.elapsed() < Duration::from_secs(120) {
            let rss = rss_mib(child.id());
            peak = peak.max(rss);
            let status = ferry_status(&cfg);
            if paused_at.is_none() && status.contains("PAUSED") {
                paused_at = Some(Instant::now());
                at_pause = rss;
            }
            if paused_at.is_some_and(|t| t.elapsed() > Duration::from_secs(30)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let end = rss_mib(child.id());
        let _ = child.kill();
        let _ = child.wait();
        println!(
            "stalled sink, {backlog} records waiting: peak RSS {peak:.1} MiB; {at_pause:.1} MiB when the sink paused, {end:.1} MiB 30 s later ({})",
            if paused_at.is_some() { "sink paused" } else { "sink never paused" }
        );
    }
    api.stop().await;
    broker.stop().await;
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// `/connectors` of the ferry running `cfg` (its admin address is in the file).
fn ferry_status(cfg: &std::path::Path) -> String {
    let text = std::fs::read_to_string(cfg).unwrap_or_default();
    let Some(addr) = text
        .lines()
        .skip_while(|l| !l.starts_with("admin:"))
        .find_map(|l| l.trim().strip_prefix("listen: "))
        .map(|a| a.trim_matches('"').to_owned())
    else {
        return String::new();
    };
    let Ok(mut s) = std::net::TcpStream::connect(addr.as_str()) else {
        return String::new();
    };
    use std::io::{Read, Write};
    let _ = write!(s, "GET /connectors HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}
