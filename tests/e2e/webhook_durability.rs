//! The `webhook` connector's durability contract, attacked with real
//! faults: the broker runs as its own `ferry up` process (embedded broker,
//! sqlite) that is SIGKILLed and restarted on the same port and data, and
//! the Ferry under test (`ferry run`) is SIGKILLed with events in its spool.
//!
//! The contract (`ferry::ingress`): a sender gets 2xx only once its event
//! is durable, either acknowledged by Kafka (200 `stored`) or appended to
//! the connector's spool and fsynced (202 `spooled`); at the spool's size
//! limit it gets 503 with `Retry-After`. Spooled events reach Kafka behind
//! the older ones, so one connector's events keep their accept order. An
//! event may be written twice only if it was answered 202 (its Kafka
//! acknowledgement came too late); both copies carry the same envelope id
//! and `ferry-delivery-id` header.
//!
//! Each sender here is sequential (it sends its next event once the last
//! one got an answer, and retries an event answered 503 with the same
//! delivery id), so its accept order is its send order, and the topic has
//! one partition: the first copy of each accepted event must appear in the
//! order its sender sent them.
//!
//! The dev broker sets one limit on the faults: tansu 0.6.0 panics (and
//! then answers every request with an error until restarted) when an
//! idempotent producer writes with an epoch it did not hand out, which
//! librdkafka does after a record that may have been sent times out
//! (`message.timeout.ms`): it bumps its epoch locally. So the Ferry under
//! test keeps `delivery_timeout` longer than any outage here; a real Kafka
//! accepts the bumped epoch.
//!
//! For diagnosis: `WEBHOOK_LOG` (Ferry's log level), `WEBHOOK_RDKAFKA_DEBUG`
//! (librdkafka's `debug`), `WEBHOOK_DUMP=<dir>` (every process's whole log).

use crate::ferry_bin;
use crate::pipeline::{envelope_reader, EnvelopeDecoder};
use crate::rebalance::{admin_get, lock, metric, start_ferry, stop_ferry, tail};
use crate::sink_setup::services_yaml;
use crate::webhook_support::{now, standard, with_delivery, Broker};
use ferry_testkit::{free_addr, repo_root, FerryProcess};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const CONNECTOR: &str = "hooks";
const TOPIC: &str = "hooks.events";
const PATH: &str = "/hooks";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// `webhooks.spool.kafka_deadline`: how long a request waits for Kafka
/// before its event is spooled instead.
const DEADLINE: Duration = Duration::from_secs(1);
/// What answering may take beyond the deadline: the spool append (one
/// fsync, behind the appends queued before it) on a loaded 2-core machine.
const DISK_SLACK: Duration = Duration::from_secs(5);
/// Concurrent senders in the outage test, each sequential.
const SENDERS: usize = 3;

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// The Ferry under test: one `webhook` connector on a one-partition topic.
struct Ferry {
    config: PathBuf,
    admin: SocketAddr,
    webhooks: SocketAddr,
    dir: tempfile::TempDir,
}

impl Ferry {
    /// `spool_max_bytes`: `webhooks.spool.max_bytes` (unset: the default).
    fn new(broker: &Broker, spool_max_bytes: Option<u64>) -> Self {
        let dir = tempfile::tempdir().expect("ferry dir");
        let (admin, webhooks) = (free_addr(), free_addr());
        let config = dir.path().join("ferry.yaml");
        let max_bytes = spool_max_bytes
            .map(|b| format!("\n    max_bytes: {b}"))
            .unwrap_or_default();
        // delivery_timeout outlasts the outage and the reconnect (the dev
        // broker cannot take an epoch bump: see the module doc). A short
        // reconnect backoff keeps the recovery within the test's time.
        std::fs::write(
            &config,
            format!(
                r#"
data_dir: {data}
kafka:
  bootstrap_servers: "{broker}"
  producer:
    delivery_timeout: 60s
  librdkafka:
    reconnect.backoff.max.ms: "1000"
{services}webhooks:
  listen: "{webhooks}"
  spool:
    kafka_deadline: {deadline}s{max_bytes}
connectors:
  - name: {CONNECTOR}
    type: webhook
    path: {PATH}
    verify:
      scheme: standard_webhooks
      secrets: ["{SECRET}"]
    topic: {TOPIC}
    partitions: 1
"#,
                data = dir.path().display(),
                broker = broker.addr,
                services = services_yaml(admin),
                deadline = DEADLINE.as_secs(),
            ),
        )
        .expect("write ferry config");
        Self {
            config,
            admin,
            webhooks,
            dir,
        }
    }

    fn env() -> Vec<(&'static str, String)> {
        let mut env = Vec::new();
        // For diagnosis: `WEBHOOK_LOG=info,ferry::ingress=debug`.
        if let Ok(l) = std::env::var("WEBHOOK_LOG") {
            env.push(("FERRY__LOG__LEVEL", l));
        }
        // `WEBHOOK_RDKAFKA_DEBUG=eos,msg`: librdkafka's own debug log.
        if let Ok(d) = std::env::var("WEBHOOK_RDKAFKA_DEBUG") {
            env.push(("FERRY__KAFKA__LIBRDKAFKA__DEBUG", d));
        }
        env
    }

    async fn start(&self) -> FerryProcess {
        start_ferry("run", &self.config, Self::env()).await
    }

    /// Starts Ferry and SIGKILLs it the moment its drain has acknowledged
    /// a first batch of the spool (the spool's `cursor` file changes), so
    /// it dies with the spool half drained and a batch possibly in Kafka
    /// but not yet acknowledged. Returns the dead process.
    async fn start_and_kill_mid_drain(&self) -> FerryProcess {
        let cursor = self.spool_dir().join("cursor");
        let config = self.config.display().to_string();
        tokio::task::spawn_blocking(move || {
            let before = std::fs::read(&cursor).ok();
            let mut p =
                FerryProcess::spawn(&ferry_bin(), &["run", &config], &repo_root(), &Self::env());
            let start = std::time::Instant::now();
            while std::fs::read(&cursor).ok() == before {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "the restarted Ferry acknowledged nothing of its spool within 60 s\n{}",
                    tail(&p.stderr(), 40)
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            p.signal("KILL");
            let status = p.wait(Duration::from_secs(30));
            assert_eq!(status.code(), None, "ferry was killed mid-drain");
            p
        })
        .await
        .expect("start task")
    }

    fn url(&self) -> String {
        format!("http://{}{PATH}", self.webhooks)
    }

    fn spool_dir(&self) -> PathBuf {
        self.dir
            .path()
            .join("webhooks")
            .join(CONNECTOR)
            .join("spool")
    }

    /// The connector's spool records on `/connectors`.
    async fn spool_records(&self) -> Option<u64> {
        let body = admin_get(self.admin, "/connectors").await;
        let all: serde_json::Value = serde_json::from_str(&body).ok()?;
        let c = all.as_array()?.iter().find(|c| c["name"] == CONNECTOR)?;
        c["spool"]["records"].as_u64()
    }

    /// Waits until both `/connectors` and `/metrics` say the spool is empty.
    async fn wait_spool_empty(&self, within: Duration, why: impl Fn() -> String) -> Duration {
        let start = Instant::now();
        loop {
            let listed = self.spool_records().await;
            let metrics = admin_get(self.admin, "/metrics").await;
            let gauge = metric(&metrics, "ferry_webhook_spool_records");
            let present = metrics.contains("ferry_webhook_spool_records");
            if listed == Some(0) && present && gauge == 0.0 {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "the spool did not drain within {within:?}: /connectors says {listed:?} records, \
                 ferry_webhook_spool_records = {gauge} (exported: {present})\n{}",
                why()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// With `WEBHOOK_DUMP` set, writes a process's whole log to
/// `$WEBHOOK_DUMP/<who>.log` (for diagnosis).
fn dump(who: &str, p: &FerryProcess) {
    if let Some(dir) = std::env::var_os("WEBHOOK_DUMP") {
        let path = PathBuf::from(dir).join(format!("{who}.log"));
        let _ = std::fs::write(&path, p.stderr());
        eprintln!("{who}'s log: {}", path.display());
    }
}

/// The spool's depth and drained count on the admin API, sampled every
/// 250 ms (for the failure report).
/// When, the spool's depth on `/connectors`, and the drained count.
type Sample = (Duration, Option<u64>, f64);

struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(admin: SocketAddr, t0: Instant) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let out = Arc::clone(&samples);
        let task = tokio::spawn(async move {
            loop {
                let at = t0.elapsed();
                let body = admin_get(admin, "/connectors").await;
                let records = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|all| {
                        all.as_array()?.iter().find(|c| c["name"] == CONNECTOR)?["spool"]["records"]
                            .as_u64()
                    });
                let drained = metric(
                    &admin_get(admin, "/metrics").await,
                    "ferry_webhook_spool_drained_records_total",
                );
                lock(&out).push((at, records, drained));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Self { samples, task }
    }

    /// The last sample of each second: `spool 812, drained 2048`.
    fn by_second(&self) -> BTreeMap<u64, String> {
        lock(&self.samples)
            .iter()
            .map(|(at, records, drained)| {
                (
                    at.as_secs(),
                    format!("spool {records:?}, drained {drained}"),
                )
            })
            .collect()
    }

    fn stop(self) -> BTreeMap<u64, String> {
        self.task.abort();
        self.by_second()
    }
}

// ---------------------------------------------------------------------------
// The sender
// ---------------------------------------------------------------------------

/// One webhook event: its sender, its place in that sender's sequence, its
/// delivery id (`webhook-id`) and the exact body sent.
#[derive(Debug, Clone)]
struct Event {
    sender: usize,
    seq: u64,
    id: String,
    body: Vec<u8>,
}

impl Event {
    fn new(run: &str, sender: usize, seq: u64) -> Self {
        // Uneven spacing, escapes, non-ASCII and a random tail: any
        // re-encoding or mix-up of bodies shows in a byte comparison.
        let pad: String = (0..12)
            .map(|_| uuid::Uuid::new_v4().simple().to_string())
            .collect();
        let body = format!(
            "{{\"type\": \"durability.probe\",  \"sender\":{sender}, \"seq\": {seq},\n \"note\": \"caf\u{e9} \\u00e9 \\\"q\\\" \u{2713}\", \"pad\":\"{pad}\"}}"
        );
        Self {
            sender,
            seq,
            id: format!("msg_{run}_{sender}_{seq}"),
            body: body.into_bytes(),
        }
    }
}

#[derive(Debug, Clone)]
enum Outcome {
    Answered {
        status: u16,
        /// The body's `status` (`stored`, `spooled`, ...).
        label: String,
        retry_after: Option<String>,
    },
    Failed(String),
}

/// One request and its answer.
#[derive(Debug, Clone)]
struct Attempt {
    /// Index into [`Journal::events`].
    event: usize,
    /// When it was sent and answered, from the test's start.
    sent: Duration,
    answered: Duration,
    outcome: Outcome,
}

impl Attempt {
    fn status(&self) -> Option<u16> {
        match &self.outcome {
            Outcome::Answered { status, .. } => Some(*status),
            Outcome::Failed(_) => None,
        }
    }

    fn took(&self) -> Duration {
        self.answered.saturating_sub(self.sent)
    }
}

/// Every event sent and every answer.
#[derive(Debug, Default)]
struct Journal {
    events: Vec<Event>,
    attempts: Vec<Attempt>,
}

impl Journal {
    /// The 2xx status each event was answered (at most one: a sender stops
    /// retrying an event once it is accepted).
    fn accepted(&self) -> HashMap<usize, u16> {
        self.attempts
            .iter()
            .filter_map(|a| Some((a.event, a.status().filter(|s| (200..300).contains(s))?)))
            .collect()
    }

    fn count(&self, status: u16) -> usize {
        self.attempts
            .iter()
            .filter(|a| a.status() == Some(status))
            .count()
    }
}

impl Journal {
    /// Answers per second of the run, with the spool's state:
    /// `12s: 200x31 202x4 503x2 (slowest 1.02s) | spool Some(3), drained 812`.
    fn timeline(&self, spool: &BTreeMap<u64, String>) -> String {
        let mut seconds: BTreeMap<u64, (BTreeMap<String, usize>, Duration)> = BTreeMap::new();
        for a in &self.attempts {
            let (counts, slowest) = seconds.entry(a.sent.as_secs()).or_default();
            let key = a
                .status()
                .map_or_else(|| "error".to_owned(), |s| s.to_string());
            *counts.entry(key).or_default() += 1;
            *slowest = (*slowest).max(a.took());
        }
        seconds
            .iter()
            .map(|(s, (counts, slowest))| {
                let counts: Vec<String> = counts.iter().map(|(k, n)| format!("{k}x{n}")).collect();
                let spool = spool.get(s).map_or("", String::as_str);
                format!(
                    "{s:>3}s: {} (slowest {slowest:.2?}) | {spool}",
                    counts.join(" ")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Signs and posts events, Standard Webhooks style.
struct Client {
    http: reqwest::Client,
    url: String,
    t0: Instant,
}

impl Client {
    fn new(url: String, t0: Instant) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            url,
            t0,
        }
    }

    /// Posts `event` once; `index` is its place in the journal.
    async fn post(&self, index: usize, event: &Event) -> Attempt {
        let headers = standard(SECRET, &event.id, now(), &event.body);
        let sent = self.t0.elapsed();
        let req = self.http.post(&self.url);
        let result = with_delivery(req, Some("application/json"), &headers, &event.body)
            .send()
            .await;
        let outcome = match result {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let label = response
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|b| b["status"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                Outcome::Answered {
                    status,
                    label,
                    retry_after,
                }
            }
            Err(e) => Outcome::Failed(format!("{e:?}")),
        };
        Attempt {
            event: index,
            sent,
            answered: self.t0.elapsed(),
            outcome,
        }
    }

    /// Sends `event` until it is answered anything but 503 or gets an
    /// answer at all (as a webhook sender retries, here after 200 ms rather
    /// than the `Retry-After` asked, to keep the test short), or `stop` is
    /// set.
    async fn deliver(&self, journal: &Mutex<Journal>, event: Event, stop: &AtomicBool) {
        let index = {
            let mut j = lock(journal);
            j.events.push(event.clone());
            j.events.len() - 1
        };
        loop {
            let attempt = self.post(index, &event).await;
            let again = matches!(attempt.outcome, Outcome::Answered { status: 503, .. })
                || matches!(attempt.outcome, Outcome::Failed(_));
            lock(journal).attempts.push(attempt);
            if !again || stop.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Sequential senders running until stopped, each with its own sequence.
struct Senders {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Senders {
    fn start(client: &Arc<Client>, journal: &Arc<Mutex<Journal>>, run: &str, count: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..count)
            .map(|sender| {
                let (client, journal, stop) =
                    (Arc::clone(client), Arc::clone(journal), Arc::clone(&stop));
                let run = run.to_owned();
                tokio::spawn(async move {
                    let mut seq = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let event = Event::new(&run, sender, seq);
                        client.deliver(&journal, event, &stop).await;
                        seq += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Self { stop, tasks }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("senders stop within 60 s")
                .expect("sender task");
        }
    }
}

// ---------------------------------------------------------------------------
// What reached Kafka
// ---------------------------------------------------------------------------

/// One record of the topic, decoded.
#[derive(Debug)]
struct Written {
    offset: i64,
    /// The `ferry-delivery-id` header.
    delivery_id: Option<String>,
    /// The envelope's `id`, and `attributes.delivery_id`.
    envelope_id: String,
    attribute_delivery_id: Option<String>,
    /// The envelope's `payload`: the body as received.
    payload: Vec<u8>,
}

/// Every record of the topic's one partition, in offset order.
fn read_topic(bootstrap: &str) -> Vec<Written> {
    use apache_avro::types::Value;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers;
    use rdkafka::Message;
    let mut envelopes = EnvelopeDecoder::new();
    let c: BaseConsumer = envelope_reader(bootstrap, "check")
        // The dev broker answers a fetch with few batches: ask again soon.
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("consumer");
    let (low, high) = c
        .fetch_watermarks(TOPIC, 0, Duration::from_secs(20))
        .expect("watermarks");
    let mut out = Vec::new();
    if high <= low {
        return out;
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, rdkafka::Offset::Beginning)
        .expect("partition");
    c.assign(&tpl).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "{TOPIC} not read to offset {high} within 60 s ({} records read)",
            out.len()
        );
        let m = match c.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(e)) => panic!("reading {TOPIC}: {e}"),
            Some(Ok(m)) => m,
        };
        let Value::Record(fields) = envelopes.decode(m.payload().expect("a value")) else {
            panic!("offset {}: not a record", m.offset());
        };
        let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let envelope_id = match field("id") {
            Some(Value::Uuid(u)) => u.to_string(),
            Some(Value::String(s)) => s.clone(),
            other => panic!("offset {}: envelope id {other:?}", m.offset()),
        };
        let Some(Value::Bytes(payload)) = field("payload") else {
            panic!("offset {}: no payload bytes", m.offset());
        };
        let attribute_delivery_id = match field("attributes") {
            Some(Value::Map(map)) => match map.get("delivery_id") {
                Some(Value::String(s)) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        };
        let delivery_id = m.headers().and_then(|hs| {
            hs.iter()
                .find(|h| h.key == "ferry-delivery-id")
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        out.push(Written {
            offset: m.offset(),
            delivery_id,
            envelope_id,
            attribute_delivery_id,
            payload: payload.clone(),
        });
        if m.offset() + 1 >= high {
            return out;
        }
    }
}

/// Reads the topic until every accepted event is in it (or `within`).
async fn read_until_complete(
    bootstrap: String,
    journal: &Journal,
    within: Duration,
) -> Vec<Written> {
    let expected: Vec<String> = journal
        .accepted()
        .keys()
        .map(|&i| journal.events[i].id.clone())
        .collect();
    let start = Instant::now();
    loop {
        let b = bootstrap.clone();
        let reading = Instant::now();
        let written = tokio::task::spawn_blocking(move || read_topic(&b))
            .await
            .expect("reader");
        eprintln!(
            "read {} records of {TOPIC} in {:.1?}",
            written.len(),
            reading.elapsed()
        );
        let ids: std::collections::HashSet<&str> = written
            .iter()
            .filter_map(|w| w.delivery_id.as_deref())
            .collect();
        if expected.iter().all(|e| ids.contains(e.as_str())) || start.elapsed() > within {
            return written;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The contract's checks over what was answered and what was written;
/// panics with the evidence (and `why()`) on a violation.
#[derive(Debug, Default)]
struct Verdict {
    answered_200: usize,
    answered_202: usize,
    answered_503: usize,
    /// Events with copies beyond their first.
    duplicated_events: usize,
    extra_copies: usize,
    /// Events never accepted (only 503s) that reached Kafka anyway.
    unaccepted_written: usize,
}

fn check_contract(journal: &Journal, written: &[Written], why: impl Fn() -> String) -> Verdict {
    let accepted = journal.accepted();
    let by_id: HashMap<&str, usize> = journal
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.id.as_str(), i))
        .collect();

    // Every answer is 200 `stored`, 202 `spooled` or 503 with Retry-After.
    let mut bad_answers = Vec::new();
    for a in &journal.attempts {
        let e = &journal.events[a.event];
        match &a.outcome {
            Outcome::Answered {
                status: 200, label, ..
            } if label == "stored" => {}
            Outcome::Answered {
                status: 202, label, ..
            } if label == "spooled" => {}
            Outcome::Answered {
                status: 503,
                retry_after: Some(_),
                ..
            } => {}
            Outcome::Failed(error) => {
                bad_answers.push(format!("{} at {:?}: no answer: {error}", e.id, a.sent));
            }
            other => bad_answers.push(format!("{} at {:?}: {other:?}", e.id, a.sent)),
        }
    }
    assert!(
        bad_answers.is_empty(),
        "{} answers other than 200 stored / 202 spooled / 503 with Retry-After: {:?}\n{}",
        bad_answers.len(),
        &bad_answers[..bad_answers.len().min(10)],
        why()
    );

    // Copies per event, in offset order; each copy byte-exact, with the
    // delivery id in its header and attributes.
    let mut copies: BTreeMap<usize, Vec<&Written>> = BTreeMap::new();
    let mut first_seen: Vec<usize> = Vec::new();
    for w in written {
        let Some(&i) = w.delivery_id.as_deref().and_then(|d| by_id.get(d)) else {
            panic!(
                "offset {}: a record no sender sent (ferry-delivery-id {:?})\n{}",
                w.offset,
                w.delivery_id,
                why()
            );
        };
        let e = &journal.events[i];
        assert_eq!(
            w.payload,
            e.body,
            "offset {}: the payload of {} is not the body sent, byte for byte\n{}",
            w.offset,
            e.id,
            why()
        );
        assert_eq!(
            w.attribute_delivery_id.as_deref(),
            Some(e.id.as_str()),
            "offset {}: attributes.delivery_id",
            w.offset
        );
        let list = copies.entry(i).or_default();
        if list.is_empty() {
            first_seen.push(i);
        }
        list.push(w);
    }

    // Nothing answered 2xx is missing.
    let mut missing: Vec<(&str, u16)> = accepted
        .iter()
        .filter(|(i, _)| !copies.contains_key(i))
        .map(|(&i, &s)| (journal.events[i].id.as_str(), s))
        .collect();
    missing.sort_unstable();
    assert!(
        missing.is_empty(),
        "LOST: {} of {} events answered 2xx are not in {TOPIC} (delivery id, status): {:?}\n{}",
        missing.len(),
        accepted.len(),
        &missing[..missing.len().min(20)],
        why()
    );

    // Per sender, first copies in send (= accept) order.
    let mut last: HashMap<usize, u64> = HashMap::new();
    let mut out_of_order = Vec::new();
    for &i in &first_seen {
        if !accepted.contains_key(&i) {
            continue;
        }
        let e = &journal.events[i];
        if let Some(&prev) = last.get(&e.sender) {
            if e.seq < prev {
                out_of_order.push(format!(
                    "sender {} seq {} (answered {}) first written at offset {} after seq {prev}",
                    e.sender, e.seq, accepted[&i], copies[&i][0].offset
                ));
            }
        }
        let l = last.entry(e.sender).or_insert(e.seq);
        *l = (*l).max(e.seq);
    }
    assert!(
        out_of_order.is_empty(),
        "ORDER: {} accepted events first written after a later one of their sender: {:?}\n{}",
        out_of_order.len(),
        &out_of_order[..out_of_order.len().min(20)],
        why()
    );

    // Duplicates only of events answered 202, with one envelope id.
    let mut verdict = Verdict {
        answered_200: journal.count(200),
        answered_202: journal.count(202),
        answered_503: journal.count(503),
        ..Verdict::default()
    };
    let mut bad_duplicates = Vec::new();
    for (&i, list) in &copies {
        let e = &journal.events[i];
        assert!(
            list.iter().all(|w| w.envelope_id == list[0].envelope_id),
            "the copies of {} carry different envelope ids: {:?}",
            e.id,
            list.iter()
                .map(|w| (w.offset, &w.envelope_id))
                .collect::<Vec<_>>()
        );
        match accepted.get(&i) {
            None => verdict.unaccepted_written += 1,
            Some(_) if list.len() == 1 => {}
            Some(202) => {
                verdict.duplicated_events += 1;
                verdict.extra_copies += list.len() - 1;
            }
            Some(s) => bad_duplicates.push(format!(
                "{} answered {s}, written {} times at offsets {:?}",
                e.id,
                list.len(),
                list.iter().map(|w| w.offset).collect::<Vec<_>>()
            )),
        }
    }
    assert!(
        bad_duplicates.is_empty(),
        "DUPLICATES of events not answered 202: {:?}\n{}",
        &bad_duplicates[..bad_duplicates.len().min(20)],
        why()
    );
    verdict
}

/// How many events a starting Ferry found in its spool, from its log
/// ("webhook spool holds events from before ... records=N").
fn spooled_at_start(log: &str) -> Option<u64> {
    let line = log
        .lines()
        .find(|l| l.contains("webhook spool holds events from before"))?;
    let (_, rest) = line.split_once("records=")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// A short unique tag for one test run's delivery ids.
fn run_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

// ---------------------------------------------------------------------------
// 1. The broker dies while senders keep sending
// ---------------------------------------------------------------------------

/// Three sequential senders post signed webhooks continuously: with the
/// broker up (200s), killed for ~7 s (202s once a request missed the
/// deadline, 503s once the 1 MiB spool is full) and back (the drain
/// catches up, 200s return). No answer is other than 200/202/503, none
/// comes later than one deadline plus disk time, none is 200 while Kafka
/// cannot acknowledge anything; everything answered 2xx reaches the topic
/// byte-exact, each sender's events first appear in its order, only
/// spooled events appear twice, and the spool ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_under_load_loses_and_reorders_nothing() {
    let t0 = Instant::now();
    let broker = Broker::new("");
    let broker_p = broker.start().await;
    let ferry = Ferry::new(&broker, Some(1024 * 1024));
    let ferry_p = ferry.start().await;
    let started = t0.elapsed();

    let journal = Arc::new(Mutex::new(Journal::default()));
    let client = Arc::new(Client::new(ferry.url(), t0));
    let sampler = Sampler::start(ferry.admin, t0);
    let senders = Senders::start(&client, &journal, &run_tag(), SENDERS);

    // Steady: straight to Kafka.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let steady_200 = lock(&journal).count(200);
    assert!(
        steady_200 >= 20,
        "with the broker up only {steady_200} events were answered 200 in 3 s\n{}",
        tail(&ferry_p.stderr(), 40)
    );

    // The broker dies.
    let killed_at = t0.elapsed();
    let (broker_dead, status) = stop_ferry(broker_p, "KILL", Duration::from_secs(30)).await;
    assert_eq!(status.code(), None, "the broker was killed");
    let dead_at = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(7)).await;

    // Back on the same port with the same data.
    let restart_at = t0.elapsed();
    let broker_p = broker.start().await;
    let up_at = t0.elapsed();
    // Senders keep going until Kafka acknowledges directly again.
    let back_within = Duration::from_secs(10);
    let mut back_at = None;
    while t0.elapsed() < up_at + back_within {
        let stored_again = lock(&journal)
            .attempts
            .iter()
            .filter(|a| a.sent > up_at && a.status() == Some(200))
            .count();
        if stored_again >= 30 {
            back_at = Some(t0.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    senders.stop().await;
    let timeline = lock(&journal).timeline(&sampler.stop());
    let why = || {
        dump("ferry", &ferry_p);
        dump("broker-first-life", &broker_dead);
        dump("broker", &broker_p);
        format!(
            "answers by second sent (broker killed at {killed_at:.1?}, dead at {dead_at:.1?}, restarted at {restart_at:.1?}, up at {up_at:.1?}):\n{timeline}\nferry's log:\n{}\nbroker's log:\n{}",
            tail(&ferry_p.stderr(), 60),
            tail(&broker_p.stderr(), 15)
        )
    };
    let drained_in = ferry.wait_spool_empty(Duration::from_secs(60), &why).await;
    let journal = std::mem::take(&mut *lock(&journal));
    let written =
        read_until_complete(broker.addr.to_string(), &journal, Duration::from_secs(10)).await;
    let verdict = check_contract(&journal, &written, why);

    // The fault happened: events were spooled.
    assert!(
        verdict.answered_202 > 0,
        "no event was answered 202 (spooled): the outage was never seen, the test proved nothing\n{}",
        why()
    );
    // No 200 while Kafka could acknowledge nothing: sent after the broker
    // died, answered before it was started again.
    let impossible: Vec<String> = journal
        .attempts
        .iter()
        .filter(|a| a.status() == Some(200) && a.sent > dead_at && a.answered < restart_at)
        .map(|a| {
            format!(
                "{} sent {:?} answered {:?}",
                journal.events[a.event].id, a.sent, a.answered
            )
        })
        .collect();
    assert!(
        impossible.is_empty(),
        "answered 200 (stored in Kafka) while the broker was dead ({dead_at:?}..{restart_at:?}): {:?}",
        &impossible[..impossible.len().min(10)]
    );
    // Answered within one deadline plus disk time: a sender never waits
    // on Kafka longer than `kafka_deadline`.
    let slowest = journal
        .attempts
        .iter()
        .max_by_key(|a| a.took())
        .expect("attempts");
    assert!(
        slowest.took() <= DEADLINE + DISK_SLACK,
        "{} waited {:?} for its answer ({:?}), more than the deadline {DEADLINE:?} plus {DISK_SLACK:?}\n{}",
        journal.events[slowest.event].id,
        slowest.took(),
        slowest.outcome,
        why()
    );
    let outage_202 = journal
        .attempts
        .iter()
        .filter(|a| a.status() == Some(202) && a.sent > dead_at && a.answered < restart_at)
        .count();
    let first_spooled_after_kill = journal
        .attempts
        .iter()
        .filter(|a| a.status() == Some(202) && a.sent >= killed_at)
        .map(|a| a.answered.saturating_sub(killed_at))
        .min();
    eprintln!(
        "webhook outage: {} events from {SENDERS} senders; answers: {} x 200, {} x 202, {} x 503 ({} x 202 while the broker was dead); \
         {} records in {TOPIC}, {} events duplicated ({} extra copies, all answered 202), {} never-accepted events written anyway; \
         first 202 {:?} after the kill; slowest answer {:?}; broker down {:.1} s, 200s back {:.1} s after its restart, spool empty {:.1} s after the senders stopped; \
         startup {:.1} s, total {:.1} s",
        journal.events.len(),
        verdict.answered_200,
        verdict.answered_202,
        verdict.answered_503,
        outage_202,
        written.len(),
        verdict.duplicated_events,
        verdict.extra_copies,
        verdict.unaccepted_written,
        first_spooled_after_kill,
        slowest.took(),
        (up_at - killed_at).as_secs_f64(),
        back_at.map_or(f64::NAN, |b| (b - up_at).as_secs_f64()),
        drained_in.as_secs_f64(),
        started.as_secs_f64(),
        (t0.elapsed()).as_secs_f64(),
    );
    // Once Kafka is back and the drain has caught up, events go straight to
    // Kafka again (200): the spool is for outages, not the steady state.
    // Checked last, so that a failure here comes after the checks above.
    assert!(
        back_at.is_some(),
        "the lane never went back to Kafka: fewer than 30 events were answered 200 within {back_within:?} \
         of the broker's restart, while the senders kept the rate Kafka had acknowledged directly before the outage \
         (the spool column shows the drain keeping up but never finding the spool empty)\n{}",
        why()
    );

    let (ferry_p, status) = stop_ferry(ferry_p, "INT", Duration::from_secs(30)).await;
    dump("ferry", &ferry_p);
    assert_eq!(status.code(), Some(0), "{}", tail(&ferry_p.stderr(), 40));
    let _ = stop_ferry(broker_p, "INT", Duration::from_secs(30)).await;
}

// ---------------------------------------------------------------------------
// 2. Ferry is killed with events in its spool
// ---------------------------------------------------------------------------

/// With the broker dead, 200 events are answered 202 and held in the spool;
/// Ferry is SIGKILLed (no graceful stop), the broker and then Ferry are
/// restarted on the same data: the spool is replayed and every event
/// answered 2xx reaches the topic byte-exact, in send order, duplicated
/// only if it was spooled, and the spool ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_killed_with_a_full_spool_loses_nothing_on_restart() {
    // Many drain batches: killed after the first, the rest is still held.
    const SPOOLED: u64 = 1000;
    let t0 = Instant::now();
    let run = run_tag();
    let broker = Broker::new("");
    let broker_p = broker.start().await;
    let ferry = Ferry::new(&broker, None);
    let ferry_p = ferry.start().await;
    let client = Client::new(ferry.url(), t0);
    let journal = Mutex::new(Journal::default());
    let never = AtomicBool::new(true);
    let mut seq = 0;
    let mut send = |n: u64| {
        let range = seq..seq + n;
        seq += n;
        range
    };

    // Straight to Kafka.
    for s in send(5) {
        client
            .deliver(&journal, Event::new(&run, 0, s), &never)
            .await;
    }
    let before = lock(&journal).count(200);
    assert!(
        before >= 1 && lock(&journal).accepted().len() == 5,
        "with the broker up: {:?}\n{}",
        lock(&journal).attempts,
        tail(&ferry_p.stderr(), 40)
    );

    // The broker dies; everything from now on is spooled.
    let (broker_dead, status) = stop_ferry(broker_p, "KILL", Duration::from_secs(30)).await;
    assert_eq!(status.code(), None, "the broker was killed");
    drop(broker_dead);
    let outage = Instant::now();
    for s in send(SPOOLED) {
        client
            .deliver(&journal, Event::new(&run, 0, s), &never)
            .await;
    }
    let spooling_took = outage.elapsed();
    let spooled: Vec<String> = {
        let j = lock(&journal);
        j.attempts
            .iter()
            .skip(5)
            .filter(|a| a.status() != Some(202))
            .map(|a| format!("{}: {:?}", j.events[a.event].id, a.outcome))
            .collect()
    };
    assert!(
        spooled.is_empty(),
        "with the broker dead every event is answered 202; not these: {:?}\n{}",
        &spooled[..spooled.len().min(10)],
        tail(&ferry_p.stderr(), 40)
    );
    // Kafka acknowledged none of them, so the spool holds every one.
    let held = ferry.spool_records().await;
    assert_eq!(
        held,
        Some(SPOOLED),
        "/connectors shows the spool holding the {SPOOLED} events answered 202\n{}",
        tail(&ferry_p.stderr(), 40)
    );
    let on_disk: u64 = std::fs::read_dir(ferry.spool_dir())
        .expect("spool dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "spool"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();

    // Ferry dies with the spool full; nothing is flushed on the way out.
    let (dead, status) = stop_ferry(ferry_p, "KILL", Duration::from_secs(30)).await;
    assert_eq!(status.code(), None, "ferry was killed");
    let first_life = dead.stderr();

    // The broker back on the same data; Ferry too, and killed again as
    // soon as its drain has acknowledged a first batch of the spool.
    let broker_p = broker.start().await;
    let second_life = ferry.start_and_kill_mid_drain().await;
    let held_second = spooled_at_start(&second_life.stderr());
    // And once more: it must take up the spool where the acknowledgements
    // left it.
    let restarted = Instant::now();
    let ferry_p = ferry.start().await;
    let held_third = spooled_at_start(&ferry_p.stderr());
    assert_eq!(
        held_second,
        Some(SPOOLED),
        "the second life found every spooled event\n{}",
        tail(&second_life.stderr(), 40)
    );
    assert!(
        held_third.is_some_and(|n| n > 0 && n < SPOOLED),
        "killed mid-drain, the third life finds part of the spool acknowledged and the rest still held, not {held_third:?} of {SPOOLED}\n{}",
        tail(&ferry_p.stderr(), 40)
    );
    // New events after the restart: behind the replayed ones, or straight
    // to Kafka once they are drained.
    for s in send(5) {
        client
            .deliver(&journal, Event::new(&run, 0, s), &never)
            .await;
    }
    let why = || {
        dump("ferry-first-life", &dead);
        dump("ferry-second-life", &second_life);
        dump("ferry", &ferry_p);
        dump("broker", &broker_p);
        format!(
            "first life's log:\n{}\nferry's log:\n{}\nbroker's log:\n{}",
            tail(&first_life, 20),
            tail(&ferry_p.stderr(), 60),
            tail(&broker_p.stderr(), 15)
        )
    };
    let drained_in = ferry.wait_spool_empty(Duration::from_secs(60), &why).await;
    let drained_after_restart = restarted.elapsed();
    let journal = std::mem::take(&mut *lock(&journal));
    let written =
        read_until_complete(broker.addr.to_string(), &journal, Duration::from_secs(10)).await;
    let verdict = check_contract(&journal, &written, why);
    dump("ferry-first-life", &dead);
    dump("ferry-second-life", &second_life);
    eprintln!(
        "webhook crash: {} events; answers: {} x 200, {} x 202, {} x 503; {SPOOLED} spooled in {:.1} s ({on_disk} bytes on disk) before Ferry was killed; \
         killed again mid-drain with {held_third:?} still held; {} records in {TOPIC}, {} events duplicated ({} extra copies); \
         spool empty {:.1} s after Ferry's last start ({:.1} s in all); total {:.1} s",
        journal.events.len(),
        verdict.answered_200,
        verdict.answered_202,
        verdict.answered_503,
        spooling_took.as_secs_f64(),
        written.len(),
        verdict.duplicated_events,
        verdict.extra_copies,
        drained_in.as_secs_f64(),
        drained_after_restart.as_secs_f64(),
        t0.elapsed().as_secs_f64(),
    );

    let (ferry_p, status) = stop_ferry(ferry_p, "INT", Duration::from_secs(30)).await;
    dump("ferry", &ferry_p);
    assert_eq!(status.code(), Some(0), "{}", tail(&ferry_p.stderr(), 40));
    let _ = stop_ferry(broker_p, "INT", Duration::from_secs(30)).await;
}
