//! The `map` processor end to end, the way webhooks are normalized: a
//! `webhook` connector writes each delivery as an event envelope to
//! `hooks.contacts`, and a `map` connector (`normalize`) maps each
//! envelope's payload into a `Contact` (schemas/contact.avsc) on
//! `crm.contacts`. The real `ferry run`, a real broker, deliveries over HTTP.
//!
//! The contract under test, as a consumer of `crm.contacts` sees it:
//! - every delivery the mapping takes is on `crm.contacts` exactly once (no
//!   failure here, so no repeat), normalized, `raw` the webhook body byte
//!   for byte, keyed like its envelope, in per-key order, with
//!   `ferry-event-id` = the envelope's id and the envelope's correlation id;
//! - a delivery the mapping refuses is in `normalize.dlq` (the envelope as
//!   it was on `hooks.contacts`, class `mapping`, the message naming the
//!   field and rule), `ferry dlq list` shows it, and the rest flowed on;
//! - the processor's input offsets are committed to the end once all that
//!   is in Kafka.
//!
//! A webhook body that is not JSON, or whose mapped record is too large for
//! Kafka, is dead-lettered the same way (never mapped as if its envelope
//! were the record; never retried forever), and what follows flows on.
//!
//! And `ferry validate` refuses a `map` connector without a `mapping:` or
//! whose `to` is its own `topic`, naming the key.

use crate::bad_input::assert_clean_failure;
use crate::ferry_bin;
use crate::pipeline::{envelope_reader, EnvelopeDecoder};
use crate::rebalance::{start_ferry, tail};
use ferry::schema::registry::{Codecs, RegistryClient};
use ferry_testkit::{free_addr, http_get, repo_root, FerryProcess, Finished, TestBroker};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const INPUT: &str = "hooks.contacts";
const OUTPUT: &str = "crm.contacts";
const PROCESSOR: &str = "normalize";
/// The processor's dead-letter topic: `<name>.dlq`.
const DLQ: &str = "normalize.dlq";
/// The processor's consumer group: `<kafka.consumer.group_id>-sink-<name>`.
const GROUP: &str = "ferry-sink-normalize";
const TOKEN: &str = "tok_ferry_processor_e2e_0123";
/// How long anything asynchronous may take on a slow shared machine.
const PATIENCE: Duration = Duration::from_secs(90);

/// The webhook bodies, in the order they are sent: two versions for each
/// of three contacts (`Id`), odd spacing and key order kept so `raw` must
/// be these bytes, not a re-serialization. Version 2 of `c-2` has an email
/// that is not one: the mapping refuses it.
const ADA_1: &str = r#"{"Id":"c-1","FirstName":"Ada","LastName":"Lovelace","email_address":"  Ada.Lovelace@Example.COM ","phone":"(650) 253-0000","LastModifiedDate":"2024-05-01T10:00:00.000+0000"}"#;
const GRACE_1: &str = r#"{ "Id" : "c-2", "Name" : "  Grace   Hopper ", "Email": "GRACE@Navy.MIL",  "Phone": "+44 20 7031 3000", "LastModifiedDate":"2024-05-01T10:00:00.000+0000" }"#;
const ALAN_1: &str = r#"{"LastName":"Turing", "FirstName":"Alan","Id":"c-3","phone":"650.253.0001","LastModifiedDate":"2024-05-01T10:00:00.000+0000"}"#;
const ADA_2: &str = r#"{"Id":"c-1","FirstName":"Ada","LastName":"Lovelace","email_address":"ADA@Example.ORG","phone":"(650) 253-0002","LastModifiedDate":"2024-05-02T10:00:00.000+0000"}"#;
const GRACE_2_BAD: &str = r#"{"Id":"c-2","Name":"Grace Hopper","Email":"grace(at)navy.mil","LastModifiedDate":"2024-05-02T10:00:00.000+0000"}"#;
const ALAN_2: &str = r#"{"Id":"c-3","FirstName":"Alan","LastName":"Turing","email_address":" Alan@Bletchley.UK","phone":"+1 650 253 0003","LastModifiedDate":"2024-05-02T10:00:00.000+0000"}"#;

const SENT: [&str; 6] = [ADA_1, GRACE_1, ALAN_1, ADA_2, GRACE_2_BAD, ALAN_2];

/// `LastModifiedDate` of version 1 and 2, as `timestamp-millis`.
const V1_MS: i64 = 1_714_557_600_000;
const V2_MS: i64 = 1_714_644_000_000;

/// The `Contact` each accepted body must become (as `ferry tail` prints
/// it), by body; the refused one has none.
fn expected(body: &str) -> Option<serde_json::Value> {
    let (id, name, email, phone, at) = match body {
        ADA_1 => (
            "c-1",
            "Ada Lovelace",
            Some("ada.lovelace@example.com"),
            "+16502530000",
            V1_MS,
        ),
        GRACE_1 => (
            "c-2",
            "Grace Hopper",
            Some("grace@navy.mil"),
            "+442070313000",
            V1_MS,
        ),
        ALAN_1 => ("c-3", "Alan Turing", None, "+16502530001", V1_MS),
        ADA_2 => (
            "c-1",
            "Ada Lovelace",
            Some("ada@example.org"),
            "+16502530002",
            V2_MS,
        ),
        ALAN_2 => (
            "c-3",
            "Alan Turing",
            Some("alan@bletchley.uk"),
            "+16502530003",
            V2_MS,
        ),
        _ => return None,
    };
    Some(json!({
        "id": id, "name": name, "email": email, "phone": phone,
        "source": "webhooks", "updated_at": at, "lifetime_value": null,
        "raw": body,
    }))
}

/// The `Id` a body carries (the webhook connector keys by it).
fn key_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    v["Id"].as_str().expect("an Id").to_owned()
}

/// The mapping of examples/salesforce/ferry.yaml, with its own `source`
/// (YAML, indented six spaces: under `mapping:`).
const FIELDS: &str = r#"      fields:
        id: { from: [/contactId, /Id, /id] }
        name: { name: { full: /Name, first: /FirstName, last: /LastName } }
        email: { from: [/email_address, /Email], normalize: email }
        phone: { from: [/phone, /Phone], normalize: { phone: { region: US } } }
        source: { const: webhooks }
        updated_at: { from: /LastModifiedDate, normalize: timestamp }
        raw: raw
"#;

/// The `ferry run` config: a token-verified webhook connector writing
/// envelopes to `hooks.contacts` (`webhook`: more of its settings, YAML
/// indented four spaces: its key, its media types), and the `map`
/// processor.
fn config(
    dir: &Path,
    bootstrap: &str,
    ports: (SocketAddr, SocketAddr, SocketAddr),
    webhook: &str,
) -> String {
    let (admin, registry, webhooks) = ports;
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
webhooks:
  listen: "{webhooks}"
  spool:
    kafka_deadline: 30s
connectors:
  - name: hooks
    type: webhook
    path: /hooks/contacts
    verify:
      scheme: token
      header: x-token
      secrets: ["{TOKEN}"]
    topic: {INPUT}
{webhook}  - name: {PROCESSOR}
    type: map
    topic: {INPUT}
    to: {OUTPUT}
    mapping:
      schema: contact.avsc
{FIELDS}"#,
        data = dir.join("data").display(),
        schemas = repo_root().join("schemas").display(),
    )
}

/// A broker and one `ferry run` with the webhook connector and the
/// processor.
struct Running {
    broker: TestBroker,
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
    admin: SocketAddr,
    registry: SocketAddr,
    url: String,
    client: reqwest::Client,
    ferry: Option<FerryProcess>,
}

impl Running {
    async fn start(webhook: &str) -> Self {
        let broker = TestBroker::start().await;
        let dir = tempfile::tempdir().expect("dir");
        let ports = (free_addr(), free_addr(), free_addr());
        let config = dir.path().join("ferry.yaml");
        std::fs::write(
            &config,
            self::config(dir.path(), &broker.bootstrap, ports, webhook),
        )
        .expect("write config");
        let ferry = start_ferry("run", &config, Vec::new()).await;
        Self {
            broker,
            _dir: dir,
            config,
            admin: ports.0,
            registry: ports.1,
            url: format!("http://{}/hooks/contacts", ports.2),
            client: reqwest::Client::new(),
            ferry: Some(ferry),
        }
    }

    /// The end of Ferry's log, for failure messages.
    fn log(&self) -> String {
        let err = self.ferry.as_ref().map(FerryProcess::stderr);
        tail(err.as_deref().unwrap_or(""), 40)
    }

    /// Delivers `body` (with `content_type` and `headers`), which must be
    /// answered 200 `stored` (Kafka has the envelope); returns the event id
    /// and correlation id it was given.
    async fn deliver(
        &self,
        content_type: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (String, String) {
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", content_type)
            .header("x-token", TOKEN)
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", self.url));
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(
            (status, answer["status"].as_str()),
            (200, Some("stored")),
            "{}: {text}\n{}",
            String::from_utf8_lossy(body),
            self.log()
        );
        let id = answer["id"].as_str().expect("an event id").to_owned();
        let correlation = answer["correlation_id"].as_str().expect("a correlation id");
        (id, correlation.to_owned())
    }

    /// Waits until `hooks.contacts` holds `n` records and the processor has
    /// committed all of them: it commits only what Kafka acknowledged on
    /// `crm.contacts` or `normalize.dlq`, so then both are complete.
    async fn wait_committed(&self, n: i64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let b = self.broker.bootstrap.clone();
            let p = tokio::task::spawn_blocking(move || progress(&b, GROUP, INPUT))
                .await
                .expect("progress");
            if p == Some((n, true)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`{PROCESSOR}` did not commit all {n} records of `{INPUT}` within {PATIENCE:?}: (records, committed to the end) = {p:?}\nconnectors: {}\n{}",
                http_get(self.admin, "/connectors").map(|(_, b)| b).unwrap_or_default(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn read(&self, topic: &str) -> Vec<Read> {
        let (bootstrap, topic) = (self.broker.bootstrap.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || read_topic(&bootstrap, &topic))
            .await
            .expect("reader")
    }

    /// The processor is RUNNING and was never restarted: refusals are the
    /// records' fault, not the connector's.
    fn assert_processor_running(&self) {
        let (status, body) = http_get(self.admin, "/connectors").expect("GET /connectors");
        assert_eq!(status, 200, "{body}");
        let all: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let state = all
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == PROCESSOR))
            .unwrap_or_else(|| panic!("{body}"));
        assert_eq!(state["state"], "RUNNING", "{state}");
        assert_eq!(state["restarts"], 0, "{state}");
    }

    /// Interrupts Ferry (it must exit cleanly) and stops the broker.
    async fn stop(mut self) {
        let mut ferry = self.ferry.take().expect("ferry is running");
        let (code, log) = tokio::task::spawn_blocking(move || {
            let code = ferry.interrupt(Duration::from_secs(60));
            (code, ferry.stderr())
        })
        .await
        .expect("stop");
        assert_eq!(code, Some(0), "ferry exits cleanly on SIGINT:\n{log}");
        self.broker.stop().await;
    }
}

/// An envelope's `id` and `payload`, from its registry-framed bytes.
fn envelope_parts(decoder: &mut EnvelopeDecoder, framed: &[u8]) -> (String, Vec<u8>) {
    use apache_avro::types::Value;
    let Value::Record(fields) = decoder.decode(framed) else {
        panic!("an envelope record");
    };
    let fields: BTreeMap<String, Value> = fields.into_iter().collect();
    let id = match fields.get("id") {
        Some(Value::Uuid(u)) => u.to_string(),
        Some(Value::String(s)) => s.clone(),
        other => panic!("envelope id: {other:?}"),
    };
    let Some(Value::Bytes(payload)) = fields.get("payload") else {
        panic!("envelope payload: {fields:?}");
    };
    (id, payload.clone())
}

/// One record read back from Kafka.
#[derive(Clone)]
struct Read {
    partition: i32,
    offset: i64,
    key: Option<String>,
    value: Vec<u8>,
    headers: BTreeMap<String, String>,
}

impl std::fmt::Debug for Read {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Read")
            .field("at", &format_args!("{}@{}", self.partition, self.offset))
            .field("key", &self.key)
            .field("value", &String::from_utf8_lossy(&self.value))
            .field("headers", &self.headers)
            .finish()
    }
}

impl Read {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Per partition of `topic`, its end offset (high watermark).
fn ends(c: &rdkafka::consumer::BaseConsumer, topic: &str) -> BTreeMap<i32, i64> {
    use rdkafka::consumer::Consumer;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .expect("metadata");
    let mut out = BTreeMap::new();
    for t in md.topics() {
        assert!(t.error().is_none(), "topic `{topic}`: {:?}", t.error());
        for p in t.partitions() {
            let (_, high) = c
                .fetch_watermarks(topic, p.id(), Duration::from_secs(30))
                .expect("watermarks");
            out.insert(p.id(), high);
        }
    }
    assert!(!out.is_empty(), "topic `{topic}` has partitions");
    out
}

/// Every record of `topic`, each partition in offset order, read from the
/// beginning to the end it had when the read started (no group offsets
/// are committed). Blocking.
fn read_topic(bootstrap: &str, topic: &str) -> Vec<Read> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers;
    use rdkafka::Message;
    let c: BaseConsumer = envelope_reader(bootstrap, "processor-check")
        .create()
        .expect("consumer");
    let mut left: BTreeMap<i32, i64> = ends(&c, topic)
        .into_iter()
        .filter(|(_, high)| *high > 0)
        .collect();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in left.keys() {
        tpl.add_partition_offset(topic, *p, rdkafka::Offset::Beginning)
            .expect("assign");
    }
    let mut out = Vec::new();
    if left.is_empty() {
        return out;
    }
    c.assign(&tpl).expect("assign");
    let deadline = Instant::now() + PATIENCE;
    while !left.is_empty() {
        assert!(
            Instant::now() < deadline,
            "`{topic}` not read to its end: {} record(s) read, partitions left {left:?}",
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
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            value: m.payload().unwrap_or_default().to_vec(),
            headers,
        });
        if left
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            left.remove(&m.partition());
        }
    }
    out
}

/// How many records `topic` holds, and whether `group` has committed
/// `topic` to its end on every partition (None: the topic is not there yet).
fn progress(bootstrap: &str, group: &str, topic: &str) -> Option<(i64, bool)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return None;
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
    let (mut total, mut done) = (0, true);
    for p in partitions {
        let (low, high) = c.fetch_watermarks(topic, p, Duration::from_secs(10)).ok()?;
        total += high - low;
        let at = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(rdkafka::Offset::Offset(o)) => o,
            _ => 0,
        };
        done &= at >= high;
    }
    Some((total, done))
}

fn ferry_cmd(args: &[&str]) -> Finished {
    FerryProcess::run(&ferry_bin(), args, &repo_root(), &[], PATIENCE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_normalized_by_a_map_processor_and_refusals_dead_lettered() {
    let started = Instant::now();
    let run = Running::start("    key: { pointer: /Id }\n").await;

    // Six deliveries, one at a time, each answered `stored`.
    let mut answers: Vec<(&str, String, String)> = Vec::new();
    for body in SENT {
        let (id, correlation) = run.deliver("application/json", &[], body.as_bytes()).await;
        answers.push((body, id, correlation));
    }
    run.wait_committed(SENT.len() as i64).await;
    let input = run.read(INPUT).await;
    let output = run.read(OUTPUT).await;
    let dead = run.read(DLQ).await;
    let log = run.log();

    // The input: one envelope per delivery, as the webhook answered.
    assert_eq!(input.len(), SENT.len(), "{input:?}");
    let mut envelopes = EnvelopeDecoder::new();
    // Per envelope id: (body, the input record, its correlation id).
    let mut by_event: BTreeMap<String, (&str, Read, String)> = BTreeMap::new();
    for r in &input {
        let (id, payload) = envelope_parts(&mut envelopes, &r.value);
        let (body, _, correlation) = answers
            .iter()
            .find(|(_, a, _)| *a == id)
            .unwrap_or_else(|| panic!("an envelope no delivery was answered with: {r:?}"));
        assert_eq!(
            payload,
            body.as_bytes(),
            "{id}: the envelope holds the body"
        );
        assert_eq!(r.key.as_deref(), Some(key_of(body).as_str()), "{r:?}");
        assert_eq!(
            r.header("ferry-correlation-id"),
            Some(correlation.as_str()),
            "{r:?}"
        );
        by_event.insert(id, (body, r.clone(), correlation.clone()));
    }

    // The output: each accepted delivery exactly once, normalized.
    let good: Vec<&str> = SENT
        .iter()
        .copied()
        .filter(|b| expected(b).is_some())
        .collect();
    assert_eq!(
        output.len(),
        good.len(),
        "`{OUTPUT}` holds each of the {} accepted deliveries once: {output:#?}\n{log}",
        good.len(),
    );
    let codecs = Codecs::new(
        RegistryClient::new(
            &format!("http://{}", run.registry),
            None,
            Duration::from_secs(30),
        )
        .expect("registry client"),
    );
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    // Per key: (partition, `updated_at`) of its records in the order read
    // (each partition in offset order).
    let mut versions: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
    for r in &output {
        let event = r
            .header("ferry-event-id")
            .unwrap_or_else(|| panic!("no ferry-event-id: {r:?}"));
        let (body, from, correlation) = by_event
            .get(event)
            .unwrap_or_else(|| panic!("ferry-event-id names no input envelope: {r:?}"));
        // Decoded with the schema the running registry has for its id.
        let (codec, value) = codecs
            .decode(&r.value)
            .await
            .unwrap_or_else(|e| panic!("not registry-framed Avro ({e}): {r:?}"));
        let got = ferry::schema::json::to_json(codec.schema(), &value);
        assert_eq!(
            Some(&got),
            expected(body).as_ref(),
            "the normalized contact of {body}"
        );
        assert_eq!(
            got["raw"].as_str().map(str::as_bytes),
            Some(body.as_bytes()),
            "`raw` is the webhook body exactly"
        );
        assert_eq!(r.key, from.key, "keyed like the input: {r:?}");
        assert_eq!(
            r.header("ferry-correlation-id"),
            Some(correlation.as_str()),
            "the input's correlation id: {r:?}"
        );
        assert_eq!(
            r.header("ferry-schema-subject"),
            Some(format!("{OUTPUT}-value").as_str()),
            "{r:?}"
        );
        assert_eq!(r.header("ferry-source-connector"), Some(PROCESSOR), "{r:?}");
        *seen.entry((*body).to_owned()).or_default() += 1;
        let at = got["updated_at"].as_i64().expect("updated_at");
        let key = r.key.clone().expect("a key");
        versions.entry(key).or_default().push((r.partition, at));
    }
    assert_eq!(
        seen,
        good.iter().map(|b| ((*b).to_owned(), 1)).collect(),
        "each accepted delivery exactly once"
    );
    for (key, v) in &versions {
        let want = if key == "c-2" {
            vec![V1_MS]
        } else {
            vec![V1_MS, V2_MS]
        };
        assert_eq!(
            v.iter().map(|(_, at)| *at).collect::<Vec<_>>(),
            want,
            "{key}: version 1 before version 2 ({v:?})"
        );
        assert!(
            v.windows(2).all(|w| w[0].0 == w[1].0),
            "{key}: one key, one partition: {v:?}"
        );
    }

    // The refused one: in the DLQ as the envelope it was, saying why.
    assert_eq!(dead.len(), 1, "one dead letter: {dead:?}\n{log}");
    let d = &dead[0];
    let (_, bad_event, bad_correlation) = answers
        .iter()
        .find(|(b, _, _)| *b == GRACE_2_BAD)
        .expect("the bad delivery was answered");
    let (_, bad_input, _) = &by_event[bad_event];
    assert!(
        d.value == bad_input.value,
        "the dead letter's value is the input record's bytes (the envelope): {d:?}"
    );
    assert_eq!(d.key.as_deref(), Some("c-2"), "{d:?}");
    assert_eq!(d.header("ferry-dlq-error-class"), Some("mapping"), "{d:?}");
    let message = d.header("ferry-dlq-error-message").unwrap_or_default();
    assert!(
        message.contains("`email`") && message.contains("rule email"),
        "the message names the field and the rule: {d:?}"
    );
    assert_eq!(d.header("ferry-dlq-mapping-field"), Some("email"), "{d:?}");
    assert_eq!(d.header("ferry-dlq-mapping-rule"), Some("email"), "{d:?}");
    assert_eq!(d.header("ferry-dlq-connector"), Some(PROCESSOR), "{d:?}");
    assert_eq!(d.header("ferry-dlq-source-topic"), Some(INPUT), "{d:?}");
    assert_eq!(
        d.header("ferry-dlq-source-partition"),
        Some(bad_input.partition.to_string().as_str()),
        "{d:?}"
    );
    assert_eq!(
        d.header("ferry-dlq-source-offset"),
        Some(bad_input.offset.to_string().as_str()),
        "{d:?}"
    );
    assert_eq!(
        d.header("ferry-correlation-id"),
        Some(bad_correlation.as_str()),
        "{d:?}"
    );

    // As a user sees it.
    let cfg = run.config.display().to_string();
    let list = tokio::task::spawn_blocking(move || ferry_cmd(&["dlq", "list", DLQ, "-c", &cfg]))
        .await
        .expect("dlq list");
    assert_eq!(list.code, Some(0), "{list:?}");
    for says in [
        format!("1 dead letter in `{DLQ}`"),
        "mapping: 1".to_owned(),
        format!(
            "{INPUT}/{}@{} key=c-2 class=mapping",
            bad_input.partition, bad_input.offset
        ),
    ] {
        assert!(list.stdout.contains(&says), "{says}\n{list:?}");
    }

    run.assert_processor_running();
    run.stop().await;
    eprintln!(
        "processor: {} mapped, {} dead-lettered in {:?}",
        output.len(),
        dead.len(),
        started.elapsed()
    );
}

/// What the processor cannot map or cannot write goes to its DLQ, and the
/// rest flows on: a webhook body that is not JSON (bytes that are not even
/// UTF-8, or text) has nothing the mapping can read, and must never be
/// mapped as if its envelope were the record; a body whose mapped record
/// is larger than Kafka takes (librdkafka's `message.max.bytes`, 1 MB) is
/// refused for good, not retried forever with its partition stuck behind
/// it. A JSON delivery after them is mapped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_mapped_or_written_is_dead_lettered_and_the_rest_flows_on() {
    let run = Running::start(
        "    key: { header: x-contact-id }\n    content_types: [application/json, text/plain]\n",
    )
    .await;
    let binary: &[u8] = b"\xff\xfe{\"Id\":\"c-7\"}";
    let text: &[u8] = b"Id=c-8";
    // A 600 kB id: the envelope (600 kB) fits, the Contact (the id, and the
    // body again in `raw`: 1.2 MB) does not.
    let huge = format!(r#"{{"Id":"{}"}}"#, "9".repeat(600_000)).into_bytes();
    let sent: [(&str, &str, &[u8]); 4] = [
        ("c-7", "text/plain", binary),
        ("c-8", "text/plain", text),
        ("c-9", "application/json", &huge),
        ("c-1", "application/json", ADA_1.as_bytes()),
    ];
    let mut ids = Vec::new();
    for (key, content_type, body) in sent {
        let (id, _) = run
            .deliver(content_type, &[("x-contact-id", key)], body)
            .await;
        ids.push(id);
    }
    run.wait_committed(sent.len() as i64).await;
    let input = run.read(INPUT).await;
    let output = run.read(OUTPUT).await;
    let dead = run.read(DLQ).await;
    let log = run.log();

    assert_eq!(
        output
            .iter()
            .map(|r| (r.key.as_deref(), r.header("ferry-event-id")))
            .collect::<Vec<_>>(),
        vec![(Some("c-1"), Some(ids[3].as_str()))],
        "only the JSON delivery that fits is mapped: {output:#?}\n{log}"
    );
    let mut envelopes = EnvelopeDecoder::new();
    let by_event: BTreeMap<String, &Read> = input
        .iter()
        .map(|r| (envelope_parts(&mut envelopes, &r.value).0, r))
        .collect();
    let mut letters: Vec<(String, String)> = Vec::new();
    for d in &dead {
        let (id, _) = envelope_parts(&mut envelopes, &d.value);
        let from = by_event
            .get(&id)
            .unwrap_or_else(|| panic!("a dead letter that is no input envelope: {d:?}"));
        assert!(d.value == from.value, "the envelope as it was: {d:?}");
        let message = d
            .header("ferry-dlq-error-message")
            .unwrap_or_default()
            .to_lowercase();
        let key = d.key.clone().unwrap_or_default();
        // Too large for Kafka: refused by the target; not JSON: by the
        // mapping (rule `json`).
        let (class, rule) = if key == "c-9" {
            ("rejected", None)
        } else {
            ("mapping", Some("json"))
        };
        assert_eq!(d.header("ferry-dlq-error-class"), Some(class), "{d:?}");
        assert_eq!(d.header("ferry-dlq-mapping-rule"), rule, "{d:?}");
        let says = if key == "c-9" {
            message.contains(OUTPUT) && message.contains("too large")
        } else {
            message.contains("not json")
        };
        assert!(says, "says why: {d:?}");
        letters.push((key, id));
    }
    letters.sort();
    assert_eq!(
        letters,
        vec![
            ("c-7".to_owned(), ids[0].clone()),
            ("c-8".to_owned(), ids[1].clone()),
            ("c-9".to_owned(), ids[2].clone()),
        ],
        "each delivery the processor cannot map or write is a dead letter: {dead:#?}\n{log}"
    );
    run.assert_processor_running();
    run.stop().await;
}

/// A config with one `map` connector; `rest` its settings after `type: map`
/// (YAML, indented four spaces).
fn map_config(rest: &str) -> String {
    format!(
        r#"
schema_registry:
  schemas_dir: {schemas}
connectors:
  - name: {PROCESSOR}
    type: map
{rest}"#,
        schemas = repo_root().join("schemas").display()
    )
}

#[test]
fn a_map_processor_needs_a_mapping_and_a_distinct_output() {
    let dir = tempfile::tempdir().expect("dir");
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write config");
        p.display().to_string()
    };
    let mapping = format!("    mapping:\n      schema: contact.avsc\n{FIELDS}");

    // The control: a complete one is valid, so each failure below is its key's.
    let good = write(
        "good.yaml",
        map_config(&format!("    topic: {INPUT}\n    to: {OUTPUT}\n{mapping}")),
    );
    let f = ferry_cmd(&["validate", &good]);
    assert_eq!(f.code, Some(0), "{f:?}");

    let no_mapping = write(
        "no-mapping.yaml",
        map_config(&format!("    topic: {INPUT}\n    to: {OUTPUT}\n")),
    );
    let f = ferry_cmd(&["validate", &no_mapping]);
    assert_clean_failure(&f, 2, &[&no_mapping, "connectors[0].mapping"]);

    let loops = write(
        "loop.yaml",
        map_config(&format!("    topic: {INPUT}\n    to: {INPUT}\n{mapping}")),
    );
    let f = ferry_cmd(&["validate", &loops]);
    assert_clean_failure(&f, 2, &[&loops, "connectors[0].to"]);
}
