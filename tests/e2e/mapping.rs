//! A source's `mapping:` section, as a user runs it: `ferry run` polls a
//! fake CRM (Salesforce's answer shape), writes each contact it can map as a
//! normalized `Contact` (schemas/contact.avsc) and each one it cannot, raw,
//! to the dead-letter topic with the field and rule in its headers: every
//! served item lands in exactly one of the two. Then the tools around it:
//! `ferry test` runs mapping cases with no broker, and `ferry validate`
//! stops a mapping that does not fit its schema before anything connects.

use crate::bad_input::assert_clean_failure;
use crate::ferry_bin;
use ferry::schema::envelope::EventEnvelope;
use ferry::schema::registry::{Codecs, RegistryClient};
use ferry_testkit::{free_addr, repo_root, FerryProcess, Finished, TestBroker};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CONNECTOR: &str = "salesforce-contacts";
const TOPIC: &str = "crm.contacts.v1";
/// The default dead-letter topic: `<connector>.dlq`.
const DLQ: &str = "salesforce-contacts.dlq";
/// Polls that get the contacts; later ones get an empty page.
const CYCLES: usize = 3;

/// The items exactly as the fake CRM sends them: odd spacing, keys in no
/// particular order, a number with a trailing zero. `raw` (and a dead
/// letter's value) must be these bytes, not a re-serialization.
pub(crate) const ADA: &str = r#"{"Id":"0035e00000AbCdEAAV","FirstName":"Ada","LastName":"Lovelace","email_address":"  Ada.Lovelace@Example.COM ","phone":"(650) 253-0000","LastModifiedDate":"2024-05-01T10:00:00.000+0000","attributes":{"type":"Contact"}}"#;
pub(crate) const GRACE: &str = r#"{ "Id" : "003B", "Name" : "  Grace   Hopper ", "Email": "GRACE@Navy.MIL",  "Phone": "+44 20 7031 3000" }"#;
/// Refused: `email`, rule `email`.
pub(crate) const BAD_EMAIL: &str =
    r#"{"Id":"003C","FirstName":"Bad","email_address":"ada(at)example.com"}"#;
pub(crate) const ALAN: &str =
    r#"{"LastName":"Turing", "FirstName":"Alan","Id":"003D","phone":"650.253.0001","Amount":1.50}"#;
/// Refused: `id`, rule `required` (no `contactId`, `Id` or `id`).
pub(crate) const NO_ID: &str = r#"{"Name":"No Id","email_address":"noid@example.com"}"#;

pub(crate) const ITEMS: [&str; 5] = [ADA, GRACE, BAD_EMAIL, ALAN, NO_ID];

/// A fake CRM: `GET /contacts` answers `{"records": [...]}` with [`ITEMS`]
/// for the first [`CYCLES`] requests, then with no records.
struct FakeCrm {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeCrm {
    async fn start() -> Self {
        use axum::routing::get;
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let app = axum::Router::new().route(
            "/contacts",
            get(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let body = if n < CYCLES {
                    format!(
                        "{{\"totalSize\":5,\"done\":true,\"records\": [\n  {}\n]}}",
                        ITEMS.join(",\n  ")
                    )
                } else {
                    r#"{"totalSize":0,"done":true,"records":[]}"#.to_owned()
                };
                async move { ([("content-type", "application/json")], body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake CRM");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// One record read back from Kafka.
#[derive(Debug)]
pub(crate) struct Read {
    pub(crate) key: Option<String>,
    pub(crate) value: Vec<u8>,
    pub(crate) headers: BTreeMap<String, String>,
}

impl Read {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Every record in `topic`, read from the beginning to the end it had when
/// the read started (no consumer group offsets are committed).
fn read_topic(bootstrap: &str, topic: &str) -> Vec<Read> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers;
    use rdkafka::Message;
    let c: BaseConsumer = crate::pipeline::envelope_reader(bootstrap, "mapping-check")
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .expect("metadata");
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for t in md.topics() {
        assert!(t.error().is_none(), "topic `{topic}`: {:?}", t.error());
        for part in t.partitions() {
            let (low, high) = c
                .fetch_watermarks(topic, part.id(), Duration::from_secs(30))
                .expect("watermarks");
            if high > low {
                ends.insert(part.id(), high);
                tpl.add_partition_offset(topic, part.id(), rdkafka::Offset::Beginning)
                    .expect("assign");
            }
        }
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "`{topic}` not read to its end: {} record(s) read, partitions left {ends:?}",
            out.len()
        );
        let Some(m) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("a record");
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        let v = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                        (h.key.to_owned(), v.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Read {
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            value: m.payload().unwrap_or_default().to_vec(),
            headers,
        });
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&m.partition());
        }
    }
    out
}

/// How many partitions `topic` has (0: none, it does not exist).
pub(crate) fn partitions(bootstrap: &str, topic: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = crate::pipeline::envelope_reader(bootstrap, "mapping-check")
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .expect("metadata");
    md.topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().len())
        .sum()
}

pub(crate) async fn read(bootstrap: &str, topic: &str) -> Vec<Read> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || read_topic(&bootstrap, &topic))
        .await
        .expect("reader")
}

/// The `ferry run` config: the mapping of examples/salesforce/ferry.yaml,
/// with the default dead-letter topic, polling every 200 ms.
fn config(
    dir: &std::path::Path,
    bootstrap: &str,
    crm: SocketAddr,
    admin: SocketAddr,
    registry: SocketAddr,
) -> String {
    format!(
        r#"
data_dir: {data}
kafka:
  bootstrap_servers: "{bootstrap}"
admin:
  listen: "{admin}"
schema_registry:
  listen: "{registry}"
  schemas_dir: {schemas}
topics:
  - name: {TOPIC}
    partitions: 3
    value_schema: contact.avsc
connectors:
  - name: {CONNECTOR}
    type: http_poll
    url: http://{crm}/contacts
    topic: {TOPIC}
    interval: 200ms
    items: /records
    key: /Id
    event_type: contact.updated
{SALESFORCE_MAPPING}"#,
        data = dir.display(),
        schemas = repo_root().join("schemas").display(),
    )
}

/// The `mapping:` of examples/salesforce/ferry.yaml, as a connector's
/// setting (YAML, indented four spaces).
pub(crate) const SALESFORCE_MAPPING: &str = "    mapping:
      schema: contact.avsc
      fields:
        id: { from: [/contactId, /Id, /id] }
        name: { name: { full: /Name, first: /FirstName, last: /LastName } }
        email: { from: [/email_address, /Email], normalize: email }
        phone: { from: [/phone, /Phone], normalize: { phone: { region: US } } }
        source: { const: salesforce }
        updated_at: { from: /LastModifiedDate, normalize: timestamp }
        raw: raw
";

pub(crate) fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The normalized record each good item must become, as JSON (the way
/// `ferry tail` prints it).
pub(crate) fn expected_contacts() -> BTreeMap<&'static str, (&'static str, serde_json::Value)> {
    BTreeMap::from([
        (
            "0035e00000AbCdEAAV",
            (
                ADA,
                json!({
                    "id": "0035e00000AbCdEAAV", "name": "Ada Lovelace",
                    "email": "ada.lovelace@example.com", "phone": "+16502530000",
                    "source": "salesforce", "updated_at": 1_714_557_600_000_i64,
                    "lifetime_value": null, "raw": ADA,
                }),
            ),
        ),
        (
            "003B",
            (
                GRACE,
                json!({
                    "id": "003B", "name": "Grace Hopper", "email": "grace@navy.mil",
                    "phone": "+442070313000", "source": "salesforce", "updated_at": null,
                    "lifetime_value": null, "raw": GRACE,
                }),
            ),
        ),
        (
            "003D",
            (
                ALAN,
                json!({
                    "id": "003D", "name": "Alan Turing", "email": null,
                    "phone": "+16502530001", "source": "salesforce", "updated_at": null,
                    "lifetime_value": null, "raw": ALAN,
                }),
            ),
        ),
    ])
}

/// Checks that `r` is the normalized contact `expected` holds for its key,
/// decoded with the schema the running registry has for its id, with `raw`
/// the source's bytes exactly as sent; returns its key and that item.
pub(crate) async fn assert_normalized(
    codecs: &Codecs,
    r: &Read,
    expected: &BTreeMap<&'static str, (&'static str, serde_json::Value)>,
) -> (String, &'static str) {
    let key = r.key.clone().expect("a mapped record is keyed by `Id`");
    let (item, want) = expected
        .get(key.as_str())
        .unwrap_or_else(|| panic!("an unexpected key on the topic: {key}"));
    let (codec, value) = codecs
        .decode(&r.value)
        .await
        .unwrap_or_else(|e| panic!("{key}: not registry-framed Avro: {e}"));
    let got = ferry::schema::json::to_json(codec.schema(), &value);
    assert_eq!(&got, want, "{key}: the normalized contact");
    assert_eq!(
        got["raw"].as_str().map(str::as_bytes),
        Some(item.as_bytes()),
        "{key}: `raw` is the source's bytes exactly as sent"
    );
    (key, item)
}

/// The envelope id `http_poll` gives an item (connector, key, exact bytes):
/// a repeat of the item is the same event.
fn event_id(key: Option<&str>, item: &str) -> String {
    EventEnvelope::event_id(CONNECTOR, key, item.as_bytes()).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_source_writes_normalized_records_and_dead_letters_the_rest() {
    let started = std::time::Instant::now();
    let broker = TestBroker::start().await;
    let crm = FakeCrm::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (admin, registry) = (free_addr(), free_addr());
    let path = dir.path().join("ferry.yaml");
    std::fs::write(
        &path,
        config(dir.path(), &broker.bootstrap, crm.addr, admin, registry),
    )
    .expect("write config");
    let cfg = path.display().to_string();
    let mut ferry = FerryProcess::spawn(&ferry_bin(), &["run", &cfg], &repo_root(), &[]);
    ferry.wait_for_stdout("Press Ctrl-C to stop.", Duration::from_secs(90));

    // The dead-letter topic is there before anything is refused, with as
    // many partitions as the topic (per-key order holds there too).
    let bootstrap = broker.bootstrap.clone();
    let dlq_partitions = tokio::task::spawn_blocking(move || partitions(&bootstrap, DLQ))
        .await
        .expect("metadata");
    assert_eq!(dlq_partitions, 3, "`{DLQ}` created at start");

    // A source task polls, produces the batch, waits until Kafka has every
    // record of it, and only then polls again: once the CRM has had
    // CYCLES + 1 requests, all CYCLES batches of contacts are in Kafka.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while crm.requests() <= CYCLES {
        // A connector that stopped for good never polls again: say why now.
        let (_, states) = ferry_testkit::http_get(admin, "/connectors").unwrap_or_default();
        assert!(
            !states.contains("\"FAILED\""),
            "the connector failed instead of dead-lettering what it could not map: {states}\nferry's log:\n{}",
            tail_lines(&ferry.stderr(), 20)
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the CRM got {} request(s), waiting for {}\nconnectors: {}\nferry's log:\n{}",
            crm.requests(),
            CYCLES + 1,
            ferry_testkit::http_get(admin, "/connectors")
                .map(|(_, b)| b)
                .unwrap_or_default(),
            tail_lines(&ferry.stderr(), 60)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let records = read(&broker.bootstrap, TOPIC).await;
    let dead = read(&broker.bootstrap, DLQ).await;

    // Without `incremental`, http_poll fetches and writes every item again
    // on every cycle (no content dedupe; only `incremental`'s boundary items
    // and an ETag's 304 are skipped, and this CRM sends neither), each time
    // as the same event (same envelope id, so the same `ferry-event-id` and
    // correlation id). So the bound is exact: each good contact is on the
    // topic once per served cycle, each bad one in the DLQ once per cycle.
    let log = || tail_lines(&ferry.stderr(), 40);
    let expected = expected_contacts();
    assert_eq!(
        records.len(),
        expected.len() * CYCLES,
        "the topic holds the {} good contacts once per cycle: {:?}\n{}",
        expected.len(),
        records.iter().map(|r| &r.key).collect::<Vec<_>>(),
        log()
    );
    assert_eq!(
        dead.len(),
        2 * CYCLES,
        "the DLQ holds the 2 bad contacts once per cycle: {dead:?}\n{}",
        log()
    );
    // Nothing lost, nothing written twice per cycle: good + dead = served.
    assert_eq!(records.len() + dead.len(), ITEMS.len() * CYCLES);

    let codecs = Codecs::new(
        RegistryClient::new(&format!("http://{registry}"), None, Duration::from_secs(30))
            .expect("registry client"),
    );
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        let (key, item) = assert_normalized(&codecs, r, &expected).await;
        let id = event_id(Some(&key), item);
        assert_eq!(
            r.header("ferry-event-id"),
            Some(id.as_str()),
            "{key}: {r:?}"
        );
        assert_eq!(
            r.header("ferry-correlation-id"),
            Some(id.as_str()),
            "{key}: {r:?}"
        );
        assert_eq!(r.header("ferry-source-connector"), Some(CONNECTOR), "{r:?}");
        assert_eq!(
            r.header("ferry-schema-subject"),
            Some(format!("{TOPIC}-value").as_str()),
            "{r:?}"
        );
        *per_key.entry(key).or_default() += 1;
    }
    assert_eq!(
        per_key,
        expected.keys().map(|k| ((*k).to_owned(), CYCLES)).collect(),
        "each good contact once per cycle"
    );

    // The dead letters: the raw item, its key where it had one, and why.
    let mut per_item: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &dead {
        let item = std::str::from_utf8(&d.value).unwrap_or_else(|_| panic!("{d:?}"));
        let (key, field, rule, source) = match item {
            BAD_EMAIL => (Some("003C"), "email", "email", Some("/email_address")),
            NO_ID => (None, "id", "required", None),
            other => panic!(
                "the DLQ holds something that is not a refused item, byte for byte: {other}\n{d:?}"
            ),
        };
        assert_eq!(d.key.as_deref(), key, "{d:?}");
        assert_eq!(d.header("ferry-dlq-error-class"), Some("mapping"), "{d:?}");
        assert_eq!(d.header("ferry-dlq-mapping-field"), Some(field), "{d:?}");
        assert_eq!(d.header("ferry-dlq-mapping-rule"), Some(rule), "{d:?}");
        if let Some(source) = source {
            assert_eq!(d.header("ferry-dlq-mapping-source"), Some(source), "{d:?}");
        }
        let message = d.header("ferry-dlq-error-message").unwrap_or_default();
        assert!(
            message.contains(field),
            "the message names the field: {d:?}"
        );
        assert_eq!(d.header("ferry-dlq-connector"), Some(CONNECTOR), "{d:?}");
        assert_eq!(d.header("ferry-dlq-source-topic"), Some(TOPIC), "{d:?}");
        let id = event_id(key, item);
        assert_eq!(d.header("ferry-correlation-id"), Some(id.as_str()), "{d:?}");
        // The raw payload is JSON, not the topic's Avro: no schema headers
        // that would send a consumer to the registry.
        assert_eq!(d.header("ferry-schema-subject"), None, "{d:?}");
        *per_item.entry(item).or_default() += 1;
    }
    assert_eq!(
        per_item,
        BTreeMap::from([(BAD_EMAIL, CYCLES), (NO_ID, CYCLES)]),
        "each refused contact once per cycle"
    );

    // Refusals are the records' fault: the connector keeps running, never
    // restarted, and counts them.
    let (status, body) = ferry_testkit::http_get(admin, "/connectors").expect("GET /connectors");
    assert_eq!(status, 200, "{body}");
    let states: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let state = states
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == CONNECTOR))
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(state["state"], "RUNNING", "{state}");
    assert_eq!(state["restarts"], 0, "{state}");
    let (_, metrics) = ferry_testkit::http_get(admin, "/metrics").expect("GET /metrics");
    let dead_letters: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("ferry_dead_letters_total") && l.contains("class=\"mapping\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        dead_letters as usize,
        dead.len(),
        "ferry_dead_letters_total:\n{metrics}"
    );

    assert_eq!(
        ferry.interrupt(Duration::from_secs(60)),
        Some(0),
        "{}",
        ferry.stderr()
    );
    crm.stop().await;
    broker.stop().await;
    eprintln!(
        "mapping: {} mapped, {} dead letters over {CYCLES} cycles in {:?}",
        records.len(),
        dead.len(),
        started.elapsed()
    );
}

fn ferry_cmd(args: &[&str]) -> Finished {
    FerryProcess::run(
        &ferry_bin(),
        args,
        &repo_root(),
        &[],
        Duration::from_secs(90),
    )
}

#[test]
fn ferry_test_passes_the_example_and_fails_with_a_diff_naming_the_field() {
    // The example's own cases pass, each listed.
    let f = ferry_cmd(&["test", "examples/salesforce"]);
    assert_eq!(f.code, Some(0), "{f:?}");
    let cases: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("examples/salesforce/contacts.test.yaml"))
            .expect("the example's cases"),
    )
    .expect("YAML");
    let names: Vec<&str> = cases["cases"]
        .as_sequence()
        .expect("cases")
        .iter()
        .map(|c| c["name"].as_str().expect("a name"))
        .collect();
    assert!(names.len() >= 5, "{names:?}");
    for name in &names {
        assert!(
            f.stdout
                .lines()
                .any(|l| l.trim() == format!("ok    {name}")),
            "case {name:?} listed ok:\n{}",
            f.stdout
        );
    }
    assert!(
        f.stdout
            .contains(&format!("{0} case(s): {0} passed, 0 failed", names.len())),
        "{}",
        f.stdout
    );

    // A wrong expectation fails the run (exit 1) with a diff naming the
    // case and the field; the other case still runs and passes.
    let dir = tempfile::tempdir().expect("dir");
    let example = repo_root().join("examples/salesforce/ferry.yaml");
    let wrong = dir.path().join("wrong.test.yaml");
    std::fs::write(
        &wrong,
        format!(
            r#"config: {config}
connector: {CONNECTOR}
cases:
  - name: the email is kept as written
    input: {{ Id: "c-9", email_address: " Ann@Example.COM " }}
    expect: {{ id: c-9, email: " Ann@Example.COM " }}
  - name: the id is read
    input: {{ Id: "c-10" }}
    expect: {{ id: c-10, source: salesforce }}
"#,
            config = example.display()
        ),
    )
    .expect("write test file");
    let f = ferry_cmd(&["test", &wrong.display().to_string()]);
    assert_eq!(f.code, Some(1), "{f:?}");
    assert!(
        f.stdout.contains("FAIL  the email is kept as written"),
        "{}",
        f.stdout
    );
    assert!(
        f.stdout
            .contains(r#"field `email`: expected " Ann@Example.COM ", got "ann@example.com""#),
        "{}",
        f.stdout
    );
    assert!(f.stdout.contains("ok    the id is read"), "{}", f.stdout);
    assert!(
        f.stdout.contains("2 case(s): 1 passed, 1 failed"),
        "{}",
        f.stdout
    );
    assert!(!f.stderr.contains("panicked"), "{}", f.stderr);

    // A connector the config does not have: a usage error (exit 2) naming it.
    let missing = dir.path().join("missing.test.yaml");
    std::fs::write(
        &missing,
        format!(
            "config: {}\nconnector: hubspot-contacts\ncases:\n  - name: any\n    input: {{ Id: x }}\n    expect: {{ id: x }}\n",
            example.display()
        ),
    )
    .expect("write test file");
    let f = ferry_cmd(&["test", &missing.display().to_string()]);
    assert_clean_failure(&f, 2, &["no connector `hubspot-contacts`", "ferry.yaml"]);
}

/// A config whose second connector maps into `contact.avsc`; `extra` adds
/// field rules.
fn mapped_config(extra: &str) -> String {
    format!(
        r#"
schema_registry:
  schemas_dir: {schemas}
connectors:
  - name: plain
    type: http_poll
    url: http://127.0.0.1:9/things
    topic: things
  - name: crm
    type: http_poll
    url: http://127.0.0.1:9/contacts
    topic: crm.contacts
    items: /records
    key: /Id
    mapping:
      schema: contact.avsc
      fields:
        id: /Id
        source: {{ const: salesforce }}
        raw: raw
{extra}"#,
        schemas = repo_root().join("schemas").display()
    )
}

#[test]
fn a_mapping_that_does_not_fit_its_schema_stops_ferry_validate() {
    let dir = tempfile::tempdir().expect("dir");
    // The control: the same config without the stray field is valid, so
    // the failure below is the field's.
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, mapped_config("")).expect("write config");
    let f = ferry_cmd(&["validate", &good.display().to_string()]);
    assert_eq!(f.code, Some(0), "{f:?}");

    let bad = dir.path().join("ferry.yaml");
    std::fs::write(&bad, mapped_config("        nickname: { from: /n }\n")).expect("write config");
    let path = bad.display().to_string();
    let f = ferry_cmd(&["validate", &path]);
    assert_clean_failure(
        &f,
        2,
        &[
            &path,
            "connectors[1].mapping.fields.nickname",
            "no such field",
        ],
    );
}
