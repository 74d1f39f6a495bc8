//! The v1 → v2 transition example (`examples/crm-versions/`) as a user runs
//! it: `ferry run` on the example file itself (moved onto this test's
//! ports by environment overrides), a fake CRM serving the recorded v1 and
//! v2 responses (`tests/fixtures/crm/<version>/contacts.json`) byte for
//! byte, a real broker, and Python's `confluent-kafka` with the registry's
//! `AvroDeserializer` as the consumer of the normalized topic.
//!
//! What a consumer relies on during the transition: every contact of both
//! versions arrives as exactly the record the example's `ferry test` cases
//! expect (so `ferry test` and the running pipeline agree), all under one
//! schema id, `source` telling v1 from v2, `raw` holding the item the API
//! sent, and a contact keyed alike by both versions (same partition).

use crate::ferry_bin;
use ferry_testkit::{free_addr, http_get, python, repo_root, FerryProcess, TestBroker};
use serde_json::{Map, Value as Json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const EXAMPLE: &str = "examples/crm-versions";
const TOPIC: &str = "crm.contacts";
const SUBJECT: &str = "crm.contacts-value";
const VERSIONS: [&str; 2] = ["v1", "v2"];

/// One contact the test expects on the topic.
struct Expected {
    /// The record as the example's `ferry test` case states it (every field but `raw`).
    record: Map<String, Json>,
    /// The item as the recorded response holds it.
    item: Json,
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(path: &Path) -> Json {
    serde_yaml::from_slice(&read(path))
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

fn fixture(version: &str) -> std::path::PathBuf {
    repo_root().join(format!("tests/fixtures/crm/{version}/contacts.json"))
}

/// The example's connector for `version` (`crm-v1`, `crm-v2`).
fn connector(config: &Json, version: &str) -> Json {
    config["connectors"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["api_version"] == version)
        .cloned()
        .unwrap_or_else(|| {
            panic!("{EXAMPLE}/ferry.yaml has no connector with `api_version: {version}`")
        })
}

/// Every contact the recorded responses hold, by (`source`, `id`), with the
/// record the example's test case for that very item expects. Fails when a
/// recorded item has no case (a re-recorded response must come with its
/// cases) or a case leaves a field of the schema unstated.
fn expected() -> BTreeMap<(String, String), Expected> {
    let root = repo_root();
    let config = yaml(&root.join(EXAMPLE).join("ferry.yaml"));
    let schema: Json =
        serde_json::from_slice(&read(&root.join("schemas/contact.avsc"))).expect("contact.avsc");
    let fields: BTreeSet<&str> = schema["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .filter(|n| *n != "raw")
        .collect();
    let mut out = BTreeMap::new();
    for version in VERSIONS {
        let items_at = connector(&config, version)["items"]
            .as_str()
            .expect("`items:` is a pointer")
            .to_owned();
        let page: Json = serde_json::from_slice(&read(&fixture(version))).expect("fixture is JSON");
        let items = page
            .pointer(&items_at)
            .and_then(Json::as_array)
            .unwrap_or_else(|| {
                panic!(
                    "{}: no array at `items: {items_at}`",
                    fixture(version).display()
                )
            });
        assert!(items.len() >= 3, "a recorded page of several contacts");
        let cases_file = root.join(EXAMPLE).join(format!("{version}.test.yaml"));
        let cases = yaml(&cases_file);
        for (i, item) in items.iter().enumerate() {
            let case = cases["cases"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["input"] == *item)
                .unwrap_or_else(|| {
                    panic!(
                        "item {i} of {} has no case in {} whose `input` is it: {item}",
                        fixture(version).display(),
                        cases_file.display()
                    )
                });
            let record = case["expect"].as_object().cloned().unwrap_or_else(|| {
                panic!(
                    "{}: the case of item {i} expects a record",
                    cases_file.display()
                )
            });
            let stated: BTreeSet<&str> = record.keys().map(String::as_str).collect();
            assert_eq!(
                stated,
                fields,
                "{}: the case of item {i} states every field of contact.avsc but `raw`",
                cases_file.display()
            );
            let key = (
                record["source"].as_str().expect("source").to_owned(),
                record["id"].as_str().expect("id").to_owned(),
            );
            let dup = out.insert(
                key.clone(),
                Expected {
                    record,
                    item: item.clone(),
                },
            );
            assert!(dup.is_none(), "{key:?} is recorded twice");
        }
    }
    out
}

/// A fake CRM: `GET /<version>/contacts` answers the recorded response of
/// that version, byte for byte. Counts the requests per version.
struct FakeCrm {
    addr: SocketAddr,
    hits: Arc<[AtomicUsize; 2]>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeCrm {
    async fn start() -> Self {
        use axum::http::header::CONTENT_TYPE;
        let hits: Arc<[AtomicUsize; 2]> = Arc::default();
        let mut app = axum::Router::new();
        for (n, version) in VERSIONS.into_iter().enumerate() {
            let body = axum::body::Bytes::from(read(&fixture(version)));
            let hits = hits.clone();
            app = app.route(
                &format!("/{version}/contacts"),
                axum::routing::get(move || {
                    hits[n].fetch_add(1, Ordering::Relaxed);
                    let body = body.clone();
                    async move { ([(CONTENT_TYPE, "application/json")], body) }
                }),
            );
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake CRM");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, hits, task }
    }

    fn hits(&self) -> [usize; 2] {
        [0, 1].map(|n| self.hits[n].load(Ordering::Relaxed))
    }

    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Reads the normalized topic from the start as another team's service
/// would (confluent-kafka, the registry's AvroDeserializer) and prints one
/// JSON line per record: where it is, its key, the magic byte and schema id
/// of its frame, its headers and its value (timestamps as epoch millis, bytes
/// as text). Stops `quiet` seconds after the last record once it has `want`
/// distinct (source, id) pairs, or at the deadline with what it has.
const PY_CONSUMER: &str = r#"
import datetime, decimal, json, struct, sys, time, uuid
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

bootstrap, registry, topic = sys.argv[1:4]
want, wait, quiet = int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
deser = AvroDeserializer(SchemaRegistryClient({"url": registry}))
ctx = SerializationContext(topic, MessageField.VALUE)
c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"versions-{uuid.uuid4()}",
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe([topic])
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)

def plain(v):
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, datetime.datetime):
        return (v - EPOCH) // datetime.timedelta(milliseconds=1)
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, bytes):
        return v.decode("utf-8")
    return v

seen, last, deadline = set(), time.time(), time.time() + wait
while time.time() < deadline:
    m = c.poll(0.5)
    if m is None:
        if len(seen) >= want and time.time() - last > quiet:
            break
        continue
    if m.error():
        print(f"consumer: {m.error()}", file=sys.stderr, flush=True)
        continue
    frame = m.value()
    value = plain(deser(frame, ctx))
    seen.add((value["source"], value["id"]))
    last = time.time()
    print(json.dumps({
        "partition": m.partition(), "offset": m.offset(),
        "key": m.key().decode("utf-8") if m.key() is not None else None,
        "magic": frame[0], "schema_id": struct.unpack(">I", frame[1:5])[0],
        "headers": {k: v.decode("utf-8", "replace") for k, v in (m.headers() or [])},
        "value": value,
    }), flush=True)
c.close()
"#;

/// What the registry Ferry serves says about the normalized subject:
/// (its versions, the latest version's schema id).
fn registry_subject(registry: SocketAddr) -> (Json, Json) {
    let get = |path: &str| {
        let (status, body) = http_get(registry, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str::<Json>(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    };
    let versions = get(&format!("/subjects/{SUBJECT}/versions"));
    let latest = get(&format!("/subjects/{SUBJECT}/versions/latest"));
    (versions, latest["id"].clone())
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_versions_feed_one_normalized_topic_with_one_schema() {
    let expected = expected();
    let broker = TestBroker::start().await;
    let crm = FakeCrm::start().await;
    let data = tempfile::tempdir().expect("data dir");
    let (admin, registry) = (free_addr(), free_addr());
    let env = vec![
        ("CRM_URL", format!("http://{}", crm.addr)),
        ("FERRY__KAFKA__BOOTSTRAP_SERVERS", broker.bootstrap.clone()),
        ("FERRY__DATA_DIR", data.path().display().to_string()),
        ("FERRY__ADMIN__LISTEN", admin.to_string()),
        ("FERRY__SCHEMA_REGISTRY__LISTEN", registry.to_string()),
        (
            "FERRY__SCHEMA_REGISTRY__SCHEMAS_DIR",
            repo_root().join("schemas").display().to_string(),
        ),
    ];
    let config = format!("{EXAMPLE}/ferry.yaml");
    let mut ferry = FerryProcess::spawn(&ferry_bin(), &["run", &config], &repo_root(), &env);
    ferry.wait_for_stdout("Press Ctrl-C to stop.", Duration::from_secs(90));

    let args = [
        broker.bootstrap.clone(),
        format!("http://{registry}"),
        TOPIC.to_owned(),
        expected.len().to_string(),
        "90".to_owned(),
        "3".to_owned(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        python::run_script(PY_CONSUMER, &args)
    })
    .await
    .expect("the Python consumer ran");
    let records: Vec<Json> = out
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("python prints JSON ({e}): {l}"))
        })
        .collect();

    let got: BTreeSet<(String, String)> = records
        .iter()
        .map(|r| {
            let v = &r["value"];
            (
                v["source"].as_str().unwrap_or_default().to_owned(),
                v["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = expected.keys().cloned().collect();
    assert_eq!(
        got,
        want,
        "the contacts on `{TOPIC}` are those of both recorded responses, no more, no fewer\nfake CRM requests (v1, v2): {:?}\nconnectors: {}\nferry's log:\n{}",
        crm.hits(),
        http_get(admin, "/connectors").map(|(_, b)| b).unwrap_or_default(),
        tail_lines(&ferry.stderr(), 60)
    );

    // One schema: the subject has one version, and every record, whichever
    // API version it came from, is framed with its id.
    let (versions, schema_id) = registry_subject(registry);
    assert_eq!(
        versions,
        serde_json::json!([1]),
        "`{SUBJECT}` has exactly one version"
    );
    for r in &records {
        assert_eq!(r["magic"], 0, "Confluent wire format: {r}");
        assert_eq!(
            r["schema_id"], schema_id,
            "one schema id for every record: {r}"
        );
    }

    // Each record is exactly the one the example's test case expects (a poll
    // may repeat a contact: every copy must be right).
    let mut partitions: BTreeMap<&str, BTreeMap<&str, i64>> = BTreeMap::new();
    for r in &records {
        let value = r["value"].as_object().expect("a record");
        let source = value["source"].as_str().expect("source");
        let id = value["id"].as_str().expect("id");
        let case = &expected[&(source.to_owned(), id.to_owned())];
        let mut normalized = value.clone();
        let raw = normalized.remove("raw").expect("a `raw` field");
        assert_eq!(
            normalized, case.record,
            "{source} contact {id}: the normalized fields"
        );
        let raw: Json = serde_json::from_str(raw.as_str().expect("raw is text (JSON bytes)"))
            .unwrap_or_else(|e| panic!("{source} contact {id}: raw is not JSON: {e}"));
        // The same JSON value as the item in the response. Not the same
        // bytes: `http_poll` writes each item re-serialized (compact, keys
        // in sorted order), not its slice of the response body.
        assert_eq!(
            raw, case.item,
            "{source} contact {id}: raw is the item the API sent"
        );
        assert_eq!(
            r["key"], id,
            "{source} contact {id}: keyed by the CRM id: {r}"
        );
        assert_eq!(
            r["headers"]["ferry-source-connector"], source,
            "`source` names the connector (API version) that wrote it: {r}"
        );
        let partition = r["partition"].as_i64().expect("partition");
        let before = partitions.entry(id).or_default().insert(source, partition);
        assert!(
            before.is_none_or(|p| p == partition),
            "{source} contact {id}: one partition: {r}"
        );
    }

    // During the transition a consumer gets the same contact from either
    // version: apart from `source` (and `raw`), v1 and v2 agree, and the
    // contact's records share a partition, so they stay in order.
    let ids: BTreeSet<&str> = want.iter().map(|(_, id)| id.as_str()).collect();
    for id in ids {
        let [v1, v2] = ["crm-v1", "crm-v2"].map(|s| {
            expected
                .get(&(s.to_owned(), id.to_owned()))
                .map(|e| {
                    let mut r = e.record.clone();
                    r.remove("source");
                    r
                })
                .unwrap_or_else(|| panic!("contact {id} is in both recordings ({s} lacks it)"))
        });
        assert_eq!(v1, v2, "contact {id}: v1 and v2 normalize alike");
        let p = &partitions[id];
        assert_eq!(
            p.get("crm-v1"),
            p.get("crm-v2"),
            "contact {id}: one partition for both versions"
        );
    }

    eprintln!(
        "versions: {} records ({} contacts, {} per version) under schema id {schema_id}; fake CRM requests (v1, v2): {:?}",
        records.len(),
        want.len(),
        want.len() / VERSIONS.len(),
        crm.hits()
    );
    assert_eq!(
        ferry.interrupt(Duration::from_secs(60)),
        Some(0),
        "{}",
        ferry.stderr()
    );
    crm.stop().await;
    broker.stop().await;
}

/// The example's own contract tests, as its header says to run them.
#[test]
fn the_examples_mapping_cases_pass() {
    let f = FerryProcess::run(
        &ferry_bin(),
        &["test", EXAMPLE],
        &repo_root(),
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(f.code, Some(0), "{}{}", f.stdout, f.stderr);
    for file in ["v1.test.yaml", "v2.test.yaml"] {
        assert!(f.stdout.contains(file), "{file} ran: {}", f.stdout);
    }
    assert!(f.stdout.contains(" 0 failed"), "{}", f.stdout);
}
