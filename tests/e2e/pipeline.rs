//! The connector runtime end to end, as a user runs it: a fake CRM API
//! (paginated contacts that keep changing) -> `http_poll` -> Kafka ->
//! `http` sink -> a fake target that records what it receives. The broker
//! is a separate process-level component (the harness's), so killing
//! Ferry leaves Kafka up, as in production.

use crate::ferry_bin;
use ferry_connectors::demo::{Demo, DemoApi};
use ferry_testkit::{free_addr, repo_root, FerryProcess, TestBroker};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

const TOPIC: &str = "crm.contacts";

struct Pipeline {
    broker: TestBroker,
    api: DemoApi,
    dir: tempfile::TempDir,
    config: PathBuf,
    admin: std::net::SocketAddr,
}

impl Pipeline {
    /// `extra`: more `connectors:` entries (YAML, indented two spaces).
    async fn start(contacts: usize, page: usize, max_in_flight: usize, extra: &str) -> Self {
        let broker = TestBroker::start().await;
        let api = DemoApi::serve(free_addr(), Demo::default())
            .await
            .expect("fake API listens");
        for i in 0..contacts {
            api.demo().upsert(&id(i));
        }
        let dir = tempfile::tempdir().expect("dir");
        let admin = free_addr();
        let config = dir.path().join("ferry.yaml");
        let text = format!(
            r#"
data_dir: {data}
kafka:
  bootstrap_servers: "{bootstrap}"
  consumer:
    # Static membership: a restarted Ferry takes its partitions back at once.
    instance_id: pipeline-test
admin:
  listen: "{admin}"
schema_registry:
  listen: "{registry}"
  schemas_dir: {schemas}
connectors:
  - name: crm
    type: http_poll
    url: http://{api}/contacts
    topic: {TOPIC}
    interval: 200ms
    items: /data
    key: /id
    query:
      limit: {page}
    pagination:
      type: cursor
      from: /next_cursor
      param: cursor
    incremental:
      field: /updated_at
      param: updated_since
  - name: target
    type: http
    topic: {TOPIC}
    method: PUT
    url: http://{api}/target/contacts/{{{{ key }}}}
    body: payload
    timeout: 5s
    max_in_flight_records: {max_in_flight}
{extra}"#,
            data = dir.path().display(),
            bootstrap = broker.bootstrap,
            registry = free_addr(),
            schemas = repo_root().join("schemas").display(),
            api = api.addr(),
        );
        std::fs::write(&config, text).expect("write config");
        Self {
            broker,
            api,
            dir,
            config,
            admin,
        }
    }

    fn demo(&self) -> &Demo {
        self.api.demo()
    }

    /// Starts `ferry run`. For diagnosis, `PIPELINE_LOG` sets Ferry's log
    /// filter and `PIPELINE_RDKAFKA_DEBUG` librdkafka's `debug` contexts.
    fn spawn(&self) -> FerryProcess {
        let cfg = self.config.display().to_string();
        let mut env: Vec<(&str, String)> = std::env::var("PIPELINE_LOG")
            .map(|l| vec![("FERRY__LOG__LEVEL", l)])
            .unwrap_or_default();
        if let Ok(d) = std::env::var("PIPELINE_RDKAFKA_DEBUG") {
            env.push(("FERRY__KAFKA__LIBRDKAFKA__DEBUG", d));
        }
        let mut p = FerryProcess::spawn(&ferry_bin(), &["run", &cfg], &repo_root(), &env);
        p.wait_for_stdout("Press Ctrl-C to stop.", Duration::from_secs(90));
        p
    }

    async fn stop(self) {
        self.api.stop().await;
        self.broker.stop().await;
        drop(self.dir);
    }
}

fn id(i: usize) -> String {
    format!("c{i:05}")
}

/// Waits until the target has every version the CRM served and the latest
/// version of every contact.
async fn wait_delivered(
    demo: &Demo,
    within: Duration,
    ferry: &FerryProcess,
    admin: std::net::SocketAddr,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let received: BTreeSet<(String, u64)> = demo.received().into_iter().collect();
        let latest = demo.latest_versions();
        let served = demo.served();
        let missing_latest = latest
            .iter()
            .filter(|(k, v)| !received.contains(&((*k).clone(), **v)))
            .count();
        let missing_served = served.difference(&received).count();
        if missing_latest == 0 && missing_served == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered within {within:?}: {missing_latest} latest version(s) and {missing_served} served version(s) missing ({:?}...); {} received\nconnectors: {}\nmetrics:\n{}\nferry's log:\n{}",
            served.difference(&received).take(5).collect::<Vec<_>>(),
            received.len(),
            ferry_testkit::http_get(admin, "/connectors").map(|(_, b)| b).unwrap_or_default(),
            ferry_testkit::http_get(admin, "/metrics")
                .map(|(_, b)| b.lines().filter(|l| l.starts_with("ferry_")).collect::<Vec<_>>().join("\n"))
                .unwrap_or_default(),
            tail_lines(&ferry.stderr(), 60)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Per key, versions arrive in non-decreasing order (a version may repeat:
/// at-least-once); returns the number of repeated deliveries.
fn check_order_and_count_duplicates(received: &[(String, u64)]) -> usize {
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut duplicates = 0;
    for (k, v) in received {
        if let Some(prev) = last.get(k.as_str()) {
            assert!(v >= prev, "{k}: version {v} arrived after {prev}");
        }
        last.insert(k, *v);
        if !seen.insert((k, v)) {
            duplicates += 1;
        }
    }
    duplicates
}

async fn keep_changing(demo: &Demo, contacts: usize, changes: usize) {
    for n in 0..changes {
        demo.upsert(&id((n * 7) % contacts));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_version_the_crm_serves_reaches_the_target_in_order() {
    // A third connector fails on every attempt: the other two must not notice.
    let broken = "  - name: broken\n    type: http_poll\n    url: http://127.0.0.1:9/nothing\n    topic: broken.events\n";
    let p = Pipeline::start(60, 25, 500, broken).await;
    let mut ferry = p.spawn();
    keep_changing(p.demo(), 60, 300).await;
    wait_delivered(p.demo(), Duration::from_secs(90), &ferry, p.admin).await;

    let received = p.demo().received();
    let served = p.demo().served();
    let duplicates = check_order_and_count_duplicates(&received);
    let unique: BTreeSet<(String, u64)> = received.iter().cloned().collect();
    assert_eq!(
        unique, served,
        "the target got exactly the versions the CRM served"
    );
    assert_eq!(received.len(), served.len() + duplicates);
    // Without a crash, the only repeats are contacts sitting exactly on a
    // poll's `updated_since` boundary (fetched again, by design).
    assert!(
        duplicates <= received.len() / 4,
        "{duplicates} duplicates of {}",
        received.len()
    );
    eprintln!(
        "pipeline: {} versions written, {} served, {} delivered, {duplicates} duplicates",
        p.demo().versions_written(),
        served.len(),
        received.len()
    );

    // Every record carries Ferry's headers and decodes through the registry.
    let cfg = p.config.display().to_string();
    let tail = FerryProcess::run(
        &ferry_bin(),
        &[
            "tail",
            TOPIC,
            "-c",
            &cfg,
            "--from-beginning",
            "--max",
            "1",
            "--idle-timeout",
            "20s",
        ],
        &repo_root(),
        &[],
        Duration::from_secs(60),
    );
    let line: serde_json::Value =
        serde_json::from_str(tail.stdout.lines().next().unwrap_or_default()).unwrap_or_else(|e| {
            panic!(
                "tail prints a record ({e}): {} {}",
                tail.stdout, tail.stderr
            )
        });
    for h in [
        "ferry-correlation-id",
        "ferry-source-connector",
        "ferry-schema-subject",
        "ferry-schema-version",
        "content-type",
    ] {
        assert!(line["headers"][h].is_string(), "header {h}: {line}");
    }
    assert_eq!(line["headers"]["ferry-source-connector"], "crm");
    assert_eq!(
        line["headers"]["ferry-schema-subject"],
        "crm.contacts-value"
    );
    assert_eq!(line["value"]["source"], "crm", "{line}");
    assert_eq!(
        line["value"]["correlation_id"], line["headers"]["ferry-correlation-id"],
        "one correlation id in the envelope and the header"
    );

    let (status, body) = ferry_testkit::http_get(p.admin, "/connectors").expect("GET /connectors");
    assert_eq!(status, 200, "{body}");
    let states: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    for c in states.as_array().expect("list") {
        if c["name"] == "broken" {
            assert!(
                c["state"] == "RESTARTING" || c["state"] == "FAILED" || c["state"] == "RUNNING",
                "{c}"
            );
            assert!(
                c["restarts"].as_u64() >= Some(1),
                "restarted with backoff: {c}"
            );
            assert!(
                c["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("127.0.0.1:9")),
                "{c}"
            );
        } else {
            assert_eq!(c["state"], "RUNNING", "{c}");
            assert_eq!(c["restarts"], 0, "{c}");
        }
    }
    assert_eq!(
        ferry.interrupt(Duration::from_secs(60)),
        Some(0),
        "{}",
        ferry.stderr()
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_ferry_loses_nothing_after_restart() {
    let p = Pipeline::start(60, 10, 500, "").await;
    let mut ferry = p.spawn();
    keep_changing(p.demo(), 60, 100).await;
    // Kill it mid-run: changes keep coming, deliveries are in flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while p.demo().received().len() < 80 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ferry.signal("KILL");
    ferry.wait(Duration::from_secs(30));
    let before_restart = p.demo().received().len();
    keep_changing(p.demo(), 60, 100).await;

    let mut ferry = p.spawn();
    keep_changing(p.demo(), 60, 100).await;
    wait_delivered(p.demo(), Duration::from_secs(90), &ferry, p.admin).await;
    let received = p.demo().received();
    let duplicates = check_order_and_count_duplicates_after_crash(&received);
    let unique: BTreeSet<(String, u64)> = received.iter().cloned().collect();
    assert_eq!(
        unique,
        p.demo().served(),
        "no version lost across the crash"
    );
    // The duplicate window: what the sink wrote since its last offset commit
    // (at most everything before the kill) plus the source's unfinished
    // poll cycle (at most every contact once).
    assert!(
        duplicates <= before_restart + 60,
        "{duplicates} duplicates; {before_restart} delivered before the kill"
    );
    eprintln!(
        "crash: {} delivered ({before_restart} before the kill), {} unique, {duplicates} duplicates",
        received.len(),
        unique.len()
    );
    assert_eq!(
        ferry.interrupt(Duration::from_secs(60)),
        Some(0),
        "{}",
        ferry.stderr()
    );
    p.stop().await;
}

/// After a crash, records after the last stored offsets are delivered again,
/// so a key's sequence may step back once and replay; it never skips. Counts
/// deliveries of versions already delivered.
fn check_order_and_count_duplicates_after_crash(received: &[(String, u64)]) -> usize {
    let mut seen = BTreeSet::new();
    received
        .iter()
        .filter(|(k, v)| !seen.insert((k, v)))
        .count()
}

/// Resident memory of a process, from /proc.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

/// Records the source got into Kafka, from Ferry's `/metrics`.
fn source_records(admin: std::net::SocketAddr) -> u64 {
    let (_, body) = ferry_testkit::http_get(admin, "/metrics").unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with("ferry_source_records_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// While the target hangs, the backlog grows in Kafka, not in Ferry: the
/// sink pauses (and says so), memory stays bounded, and everything arrives
/// once the target answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_target_keeps_memory_bounded_and_gets_everything_later() {
    const CONTACTS: usize = 4_000;
    let p = Pipeline::start(CONTACTS, 500, 100, "").await;
    p.demo().set_stalled(true);
    let mut ferry = p.spawn();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let admin = p.admin;
        let size = tokio::task::spawn_blocking(move || source_records(admin))
            .await
            .expect("probe");
        if size >= CONTACTS as u64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "source wrote only {size} records\nferry's log:\n{}",
            tail_lines(&ferry.stderr(), 400)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The sink fills its in-flight bound and pauses, and says so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = ferry_testkit::http_get(p.admin, "/connectors").expect("GET /connectors");
        if body.contains("PAUSED") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sink reports backpressure: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_mib(ferry.pid());
    assert!(p.demo().received().is_empty(), "the target is stalled");
    // Loose on purpose (the tight figure belongs in BENCHMARKS.md); the
    // sink holds at most 100 records plus librdkafka's prefetch queue.
    assert!(
        rss < 150.0,
        "resident memory {rss:.0} MiB with {CONTACTS} records waiting"
    );
    eprintln!("stall: RSS {rss:.1} MiB with a backlog of {CONTACTS} records");

    p.demo().set_stalled(false);
    wait_delivered(p.demo(), Duration::from_secs(120), &ferry, p.admin).await;
    assert_eq!(
        ferry.interrupt(Duration::from_secs(60)),
        Some(0),
        "{}",
        ferry.stderr()
    );
    p.stop().await;
}
