//! Other teams' services read the quickstart's normalized contacts with
//! their own stacks: the Python example (`confluent-kafka` with the
//! registry's `AvroDeserializer`), the Node one (`kafkajs`,
//! `@kafkajs/confluent-schema-registry` and an LZ4 codec) and the Rust one
//! (a `Contact` struct `rsgen-avro` generates from `schemas/contact.avsc`,
//! read through `ferry::consumer::TypedConsumer`) in `examples/consumers/`,
//! run as a user runs them against `ferry up` (the Rust one in process),
//! decode every `Contact` with the schema the registry holds for the topic,
//! and see each source event once, each contact's changes in order: also
//! when a replay writes the same events again (a big LZ4 batch, which
//! kafkajs codecs that misread librdkafka's frames choke on).

use crate::{ferry_bin, Sandbox};
use ferry_testkit::{http_get, node, python, repo_root, FerryProcess, Finished};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

const TOPIC: &str = "ferry.quickstart.normalized-contacts";
/// More than the demo CRM's 20 contacts: first versions and later changes.
const MIN_RECORDS: usize = 25;
/// Generous: a slow shared 2-core machine, a consumer group to join.
const TIMEOUT: Duration = Duration::from_secs(90);

/// A replay's copy: the first `COPIED` records of the topic, then each of
/// them `REPEATS` times more, in one LZ4 batch of well over 64 KiB.
const REPLAYED_TOPIC: &str = "e2e.replayed-normalized-contacts";
const COPIED: usize = 30;
const REPEATS: usize = 30;

/// Copies the first `n` records of `src` (key, value, headers) to a new
/// one-partition topic `dst`, then all of them again `repeats` times, as a
/// replay of the source events would: the same `ferry-event-id`s at new
/// offsets. One producer batch, compressed with LZ4 as Ferry's are.
const PY_REPLAY: &str = r#"
import json, sys, time
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, src, dst, n, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
admin = AdminClient({"bootstrap.servers": bootstrap})
for f in admin.create_topics([NewTopic(dst, 1, 1)]).values():
    f.result(30)
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "e2e-replay-copier",
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe([src])
got = []
deadline = time.time() + 60
while len(got) < n and time.time() < deadline:
    m = c.poll(1.0)
    if m is None or m.error():
        continue
    got.append((m.key(), m.value(), m.headers()))
c.close()
p = Producer({"bootstrap.servers": bootstrap, "compression.type": "lz4", "linger.ms": 2000,
              "batch.size": 4000000, "enable.idempotence": True})
failed = []
for _ in range(repeats + 1):
    for key, value, headers in got:
        p.produce(dst, key=key, value=value, headers=headers,
                  on_delivery=lambda err, msg: err and failed.append(str(err)))
left = p.flush(60)
print(json.dumps({"copied": len(got), "bytes": sum(len(v) for _, v, _ in got) * (repeats + 1),
                  "unflushed": left, "failed": failed}))
"#;

#[test]
fn python_node_and_rust_consumers_decode_normalized_contacts_from_ferry_up() {
    // Install first, so npm and pip do not eat into Ferry's timeouts.
    let py = python::python();
    let nodeapp = node::consumer_example();

    let sb = Sandbox::new();
    let mut ferry = FerryProcess::spawn(&ferry_bin(), &["up"], &repo_root(), &sb.env());
    ferry.wait_for_stdout("Press Ctrl-C to stop.", TIMEOUT);

    let latest = registry_latest_id(&sb, &format!("{TOPIC}-value"));
    let bootstrap = sb.broker.to_string();
    let registry = sb.registry_url();
    let consumers = Consumers {
        python: py,
        node: nodeapp,
        bootstrap: bootstrap.clone(),
        registry,
    };

    // What `ferry up` writes, while it writes it.
    let max = MIN_RECORDS.to_string();
    for (who, out) in consumers.run(
        TOPIC,
        "live",
        &["--max-records", &max, "--idle-timeout", "60"],
    ) {
        let records = check_output(who, &out, latest);
        assert!(
            records >= MIN_RECORDS,
            "{who}: {records} records, expected at least {MIN_RECORDS}\n{}",
            out.stdout
        );
    }

    // A replay: every event again at a new offset. Each consumer prints
    // each event once and says how many repeats it dropped.
    let copied = python::run_script(
        PY_REPLAY,
        &[
            &bootstrap,
            TOPIC,
            REPLAYED_TOPIC,
            &COPIED.to_string(),
            &REPEATS.to_string(),
        ],
    );
    let copied: Value = serde_json::from_str(copied.trim()).expect("the copier prints JSON");
    assert_eq!(copied["copied"], COPIED, "{copied}");
    assert_eq!(copied["unflushed"], 0, "{copied}");
    assert_eq!(copied["failed"], serde_json::json!([]), "{copied}");
    assert!(
        copied["bytes"].as_u64() > Some(2 * 64 * 1024),
        "a batch of several LZ4 blocks: {copied}"
    );
    for (who, out) in consumers.run(REPLAYED_TOPIC, "replay", &["--idle-timeout", "15"]) {
        let records = check_output(who, &out, latest);
        assert_eq!(
            records, COPIED,
            "{who} prints each replayed event once\nstdout:\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        );
        let summary: Value = out
            .stderr
            .lines()
            .rev()
            .find_map(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .filter(|v| v.get("duplicates_dropped").is_some())
            })
            .unwrap_or_else(|| panic!("{who} prints a summary on stderr:\n{}", out.stderr));
        assert_eq!(
            summary["duplicates_dropped"],
            COPIED * REPEATS,
            "{who}: {summary}"
        );
    }

    assert_eq!(
        ferry.interrupt(TIMEOUT),
        Some(0),
        "ferry stops cleanly on SIGINT\nstderr:\n{}",
        ferry.stderr()
    );
}

/// The two example consumers, run as their READMEs say.
struct Consumers {
    python: PathBuf,
    node: node::NodeApp,
    bootstrap: String,
    registry: String,
}

impl Consumers {
    /// Runs both at once on `topic` (each in its own fresh group) with the
    /// extra `args`; returns each one's outcome.
    fn run(&self, topic: &str, phase: &str, args: &[&str]) -> [(&'static str, Finished); 3] {
        let common = |who: &str| {
            let mut all = vec![
                "--bootstrap".to_owned(),
                self.bootstrap.clone(),
                "--registry".to_owned(),
                self.registry.clone(),
                "--topic".to_owned(),
                topic.to_owned(),
                "--group".to_owned(),
                format!("e2e-{who}-{phase}"),
            ];
            all.extend(args.iter().map(|a| (*a).to_owned()));
            all
        };
        let py_args = [vec!["consumer.py".to_owned()], common("python")].concat();
        let node_args = [vec!["consumer.js".to_owned()], common("node")].concat();
        let mut python = FerryProcess::spawn(
            &self.python,
            &refs(&py_args),
            &repo_root().join("examples/consumers/python"),
            &[],
        );
        let mut node = FerryProcess::spawn(&self.node.node, &refs(&node_args), &self.node.dir, &[]);
        let rust_args = [vec!["contacts-consumer".to_owned()], common("rust")].concat();
        let rust = std::thread::spawn(move || run_rust(&rust_args));
        let finished = |p: &mut FerryProcess| {
            let status = p.wait(TIMEOUT);
            Finished {
                code: status.code(),
                stdout: p.stdout(),
                stderr: p.stderr(),
            }
        };
        [
            ("python", finished(&mut python)),
            ("node", finished(&mut node)),
            ("rust", rust.join().expect("the Rust consumer's thread")),
        ]
    }
}

/// The Rust example with `args` (as its command line), in process: what it
/// prints, and its summary on "stderr" as its `main` prints it.
fn run_rust(args: &[String]) -> Finished {
    use clap::Parser as _;
    let opts = contacts_consumer::Options::try_parse_from(args).expect("the example's options");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut out = Vec::new();
    let result = runtime.block_on(async {
        tokio::time::timeout(TIMEOUT, contacts_consumer::run(&opts, &mut out)).await
    });
    let stdout = String::from_utf8_lossy(&out).into_owned();
    match result {
        Ok(Ok(summary)) => Finished {
            code: Some(0),
            stdout,
            stderr: serde_json::to_string(&summary).expect("JSON"),
        },
        Ok(Err(e)) => Finished {
            code: Some(1),
            stdout,
            stderr: format!("{e:#}"),
        },
        Err(_) => Finished {
            code: None,
            stdout,
            stderr: format!("did not finish within {TIMEOUT:?}"),
        },
    }
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The id the registry answers for `subject`'s latest version; polled,
/// since the `map` connector registers it as it starts.
fn registry_latest_id(sb: &Sandbox, subject: &str) -> u64 {
    let path = format!("/subjects/{subject}/versions/latest");
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let answer = http_get(sb.registry, &path);
        if let Ok((200, body)) = &answer {
            let v: Value = serde_json::from_str(body).expect("registry answers JSON");
            return v["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("GET {path}: no id in {body}"));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "GET {path} on {}: {answer:?}",
            sb.registry
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What a consumer service relies on: every record decodes into a
/// `Contact` of the expected shape, written with the subject's schema,
/// each source event once, each contact's changes in order.
fn check_output(who: &str, out: &Finished, schema_id: u64) -> usize {
    let context = || {
        format!(
            "{who} consumer (exit {:?})\nstdout:\n{}\nstderr:\n{}",
            out.code, out.stdout, out.stderr
        )
    };
    assert_eq!(out.code, Some(0), "{}", context());
    let records: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\n{}", context()))
        })
        .collect();

    let mut event_ids = BTreeSet::new();
    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in &records {
        let v = &r["value"];
        let id = v["id"].as_str().unwrap_or_default();
        assert!(
            id.len() > 1 && id.starts_with('c') && id[1..].bytes().all(|b| b.is_ascii_digit()),
            "id like c<digits>: {r}\n{}",
            context()
        );
        assert_eq!(r["key"], v["id"], "keyed by contact id: {r}");
        assert_eq!(v["source"], "demo-crm", "{r}");
        let email = v["email"].as_str().unwrap_or_default();
        assert!(
            email.ends_with("@example.com") && email == email.to_lowercase(),
            "a normalized email: {r}"
        );
        assert!(v["updated_at"].as_i64().is_some_and(|t| t > 0), "{r}");
        let raw: Value = serde_json::from_str(v["raw"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("raw is the CRM's JSON ({e}): {r}"));
        assert_eq!(raw["id"], v["id"], "raw is this contact's payload: {r}");
        assert_eq!(
            raw["email"].as_str().map(str::to_lowercase).as_deref(),
            Some(email),
            "{r}"
        );
        assert_eq!(
            r["schema_id"].as_u64(),
            Some(schema_id),
            "written with the registry's latest schema for the topic: {r}"
        );
        let event_id = r["event_id"]
            .as_str()
            .unwrap_or_else(|| panic!("a ferry-event-id header: {r}"));
        assert!(
            event_ids.insert(event_id.to_owned()),
            "event {event_id} printed twice\n{}",
            context()
        );
        let version = raw["version"]
            .as_u64()
            .unwrap_or_else(|| panic!("the CRM's version in raw: {r}"));
        versions.entry(id.to_owned()).or_default().push(version);
    }
    for (id, seen) in &versions {
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "{id}'s changes in order, each once: versions {seen:?}\n{}",
            context()
        );
    }
    records.len()
}
