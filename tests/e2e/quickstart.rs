//! The README's run command (`ferry up`, quickstart config) serves standard
//! Kafka clients and stops cleanly on SIGINT.

use crate::{ferry_bin, Sandbox};
use ferry_testkit::{http_get, python, repo_root, FerryProcess};
use std::time::Duration;

const PY_CLIENT: &str = r#"
import json, sys
from confluent_kafka import Producer, Consumer
from confluent_kafka.admin import AdminClient

bootstrap, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
admin = AdminClient({"bootstrap.servers": bootstrap})
md = admin.list_topics(timeout=20)
topics = {name: len(t.partitions) for name, t in md.topics.items()}

p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
failed = []
for i in range(n):
    p.produce(topic, key=f"k{i % 7}", value=json.dumps({"n": i}),
              on_delivery=lambda err, msg: err and failed.append(str(err)))
left = p.flush(30)

c = Consumer({"bootstrap.servers": bootstrap, "group.id": "py-interop",
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe([topic])
seen = set()
import time
deadline = time.time() + 60
while len(seen) < n and time.time() < deadline:
    m = c.poll(1.0)
    if m is None or m.error():
        continue
    seen.add(json.loads(m.value())["n"])
c.close()
print(json.dumps({"brokers": len(md.brokers), "topics": topics, "unflushed": left,
                  "failed": failed, "consumed": sorted(seen)}))
"#;

#[test]
fn quickstart_serves_standard_clients_and_stops_on_sigint() {
    let sb = Sandbox::new();
    let mut ferry = FerryProcess::spawn(&ferry_bin(), &["up"], &repo_root(), &sb.env());
    ferry.wait_for_stdout("Press Ctrl-C to stop.", Duration::from_secs(90));
    let banner = ferry.stdout();
    assert!(
        banner.contains(&sb.broker.to_string()),
        "banner names the broker: {banner}"
    );
    assert!(
        banner.contains(&sb.admin.to_string()),
        "banner names the admin API: {banner}"
    );

    // Admin API.
    let (status, body) = http_get(sb.admin, "/health").expect("GET /health");
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(sb.admin, "/ready").expect("GET /ready");
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(sb.admin, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    assert!(body.contains("ferry_build_info"), "{body}");

    // A standard client nobody here wrote: metadata, produce, consume.
    let bootstrap = sb.broker.to_string();
    let out = python::run_script(PY_CLIENT, &[&bootstrap, "ferry.quickstart.events", "100"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("python prints JSON");
    assert_eq!(v["brokers"], 1, "{v}");
    assert_eq!(
        v["topics"]["ferry.quickstart.events"], 3,
        "quickstart topics exist: {v}"
    );
    assert_eq!(v["topics"]["ferry.quickstart.contacts"], 3, "{v}");
    assert_eq!(v["unflushed"], 0, "{v}");
    assert_eq!(v["failed"], serde_json::json!([]), "{v}");
    let consumed: Vec<u64> = serde_json::from_value(v["consumed"].clone()).expect("list");
    assert_eq!(
        consumed,
        (0..100).collect::<Vec<u64>>(),
        "every record comes back"
    );

    // `ferry tail` prints what Python produced, one JSON object per line.
    let tail = FerryProcess::run(
        &ferry_bin(),
        &[
            "tail",
            "ferry.quickstart.events",
            "--from-beginning",
            "--max",
            "100",
            "-b",
            &bootstrap,
        ],
        &repo_root(),
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(tail.code, Some(0), "{}", tail.stderr);
    let lines: Vec<serde_json::Value> = tail
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 100);
    let mut ns: Vec<u64> = lines
        .iter()
        .filter_map(|l| l["value"]["n"].as_u64())
        .collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..100).collect::<Vec<u64>>());
    assert!(lines
        .iter()
        .all(|l| l["key"].as_str().is_some_and(|k| k.starts_with('k'))));

    // The banner's webhook curl, pasted as a user would: stored once, a
    // repeat is a duplicate, and the order event is on the orders topic.
    let curl: Vec<&str> = banner
        .lines()
        .skip_while(|l| !l.starts_with("curl "))
        .take_while(|l| l.starts_with("curl ") || l.starts_with("    "))
        .collect();
    assert!(
        curl.last().is_some_and(|l| l.contains("--data-raw")),
        "the banner prints a whole curl command: {banner}"
    );
    let curl = curl.join("\n");
    for expected in ["\"status\":\"stored\"", "\"status\":\"duplicate\""] {
        let out = std::process::Command::new("sh")
            .args(["-c", &curl])
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("HTTP/1.1 200") && text.contains(expected),
            "{curl}\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let orders = FerryProcess::run(
        &ferry_bin(),
        &[
            "tail",
            "ferry.quickstart.orders",
            "--from-beginning",
            "--max",
            "1",
            "-b",
            &bootstrap,
            "--registry",
            &sb.registry_url(),
        ],
        &repo_root(),
        &[],
        Duration::from_secs(60),
    );
    let order: serde_json::Value =
        serde_json::from_str(orders.stdout.trim()).expect("one JSON line");
    assert_eq!(order["key"], "ord_1", "{order}");
    assert_eq!(order["value"]["type"], "order.created", "{order}");
    assert_eq!(order["value"]["source"], "demo-webhooks", "{order}");

    // `ferry topics`.
    let run = |args: &[&str]| {
        let mut all = vec!["topics"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-b", &bootstrap]);
        FerryProcess::run(
            &ferry_bin(),
            &all,
            &repo_root(),
            &[],
            Duration::from_secs(60),
        )
    };
    let created = run(&[
        "create",
        "e2e.compacted",
        "-p",
        "2",
        "-x",
        "cleanup.policy=compact",
    ]);
    assert_eq!(created.code, Some(0), "{}", created.stderr);
    let listed = run(&["list"]);
    assert!(
        listed.stdout.contains("e2e.compacted\t2 partition(s)"),
        "{}",
        listed.stdout
    );
    let described = run(&["describe", "e2e.compacted"]);
    let d: serde_json::Value =
        serde_json::from_str(&described.stdout).expect("describe prints JSON");
    assert_eq!(d["partitions"].as_array().map(Vec::len), Some(2), "{d}");
    let missing = run(&["describe", "no.such.topic"]);
    assert_eq!(missing.code, Some(1));
    assert!(
        missing.stderr.contains("no.such.topic"),
        "{}",
        missing.stderr
    );

    assert_eq!(
        ferry.interrupt(Duration::from_secs(60)),
        Some(0),
        "{}",
        ferry.stderr()
    );
    assert!(!ferry.stderr().contains("panicked"), "{}", ferry.stderr());
}

#[test]
fn sigterm_also_stops_cleanly() {
    let sb = Sandbox::new();
    let mut ferry = FerryProcess::spawn(&ferry_bin(), &["up"], &repo_root(), &sb.env());
    ferry.wait_for_stdout("Press Ctrl-C to stop.", Duration::from_secs(90));
    ferry.signal("TERM");
    assert_eq!(
        ferry.wait(Duration::from_secs(60)).code(),
        Some(0),
        "{}",
        ferry.stderr()
    );
}

/// With `kafka.bootstrap_servers` set, nothing is embedded: `ferry run` uses
/// the Kafka it is given (here a separate broker started by the harness) and
/// creates its topics there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_uses_the_configured_kafka_and_embeds_nothing() {
    let external = ferry_testkit::TestBroker::start().await;
    let sb = Sandbox::new();
    let mut env = sb.env();
    env.push((
        "FERRY__KAFKA__BOOTSTRAP_SERVERS",
        external.bootstrap.clone(),
    ));
    let mut ferry = FerryProcess::spawn(
        &ferry_bin(),
        &["run", "examples/quickstart.yaml"],
        &repo_root(),
        &env,
    );
    ferry.wait_for_stdout("Press Ctrl-C to stop.", Duration::from_secs(90));
    let banner = ferry.stdout();
    assert!(
        banner.contains(&external.bootstrap) && !banner.contains("embedded"),
        "{banner}"
    );
    assert!(
        std::net::TcpStream::connect(sb.broker).is_err(),
        "no broker listens on the embedded address"
    );

    let admin =
        ferry::kafka::KafkaAdmin::new(&ferry::kafka::KafkaConfig::default(), &external.bootstrap)
            .expect("admin client");
    let topic = admin
        .describe("ferry.quickstart.events")
        .await
        .expect("topic created on the external broker");
    assert_eq!(topic.partitions.len(), 3);

    assert_eq!(
        ferry.interrupt(Duration::from_secs(60)),
        Some(0),
        "{}",
        ferry.stderr()
    );
    external.stop().await;
}
