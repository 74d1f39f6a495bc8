//! The resilience layer under injected faults, end to end: the real `ferry`
//! binary on a real broker, its `http` sink calling a fake target through
//! the chaos proxy (or a rate-limited fake API). Each test asserts a
//! guarantee a user relies on, with bounds derived from the configuration
//! rather than from what one run happened to give:
//!
//! - through 503 bursts, resets, latency, slow bodies, `429`s and a black
//!   hole, no record is lost, order per key holds, and a record is repeated
//!   only when the answer to a request the target got was lost;
//! - an API's advertised rate limit is never exceeded;
//! - nothing is sent inside a `Retry-After` window;
//! - an open circuit breaker lets only its probes reach the target (one per
//!   `open_for`), and the sink recovers without failing once the target does;
//! - a record the target refuses for good goes to the dead-letter topic,
//!   with headers saying why, and the records after it flow on.

use crate::fake_target::FakeTarget;
use crate::sink_setup::{committed_offset, SinkSetup};
use ferry_testkit::chaos::{ChaosProxy, Fault, LimitedApi, Seen};
use ferry_testkit::{http_get, FerryProcess};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The sink's connector name; its group is `ferry-sink-sink`, its
/// dead-letter topic `sink.dlq`.
const SINK: &str = "sink";

/// The shared sink harness, read from off the async workers.
struct Setup(SinkSetup);

impl std::ops::Deref for Setup {
    type Target = SinkSetup;
    fn deref(&self) -> &SinkSetup {
        &self.0
    }
}

impl Setup {
    async fn new(topic: &str) -> Self {
        Self(SinkSetup::new(topic).await)
    }

    fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.broker.bootstrap)
            .set("enable.idempotence", "true")
            .create()
            .expect("producer")
    }

    /// Writes `records` (key, raw value) in order, each acknowledged before
    /// the next is sent.
    async fn produce(&self, producer: &FutureProducer, records: &[(String, Vec<u8>)]) {
        for (key, value) in records {
            producer
                .send(
                    FutureRecord::to(&self.topic).key(key).payload(value),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("acknowledged");
        }
    }

    /// A config with the `http` sink; `sink` holds its settings after
    /// `type: http` and `topic` (YAML, indented four spaces).
    fn config(&self, sink: &str) -> PathBuf {
        self.0.config(sink, "")
    }

    /// The sink's entry on `/connectors` (`null` if the admin API does not
    /// answer).
    async fn status(&self) -> serde_json::Value {
        let (_, body) = get(self.admin, "/connectors").await;
        let all: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        all.as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == SINK).cloned())
            .unwrap_or_default()
    }

    /// `ferry_circuit_state{target="<target>"}` on `/metrics`, if shown.
    async fn circuit_gauge(&self, target: SocketAddr) -> Option<f64> {
        let (_, body) = get(self.admin, "/metrics").await;
        let prefix = format!("ferry_circuit_state{{target=\"{target}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
    }

    /// The offset the sink's group committed on partition 0 of the topic.
    async fn committed(&self) -> Option<i64> {
        let (bootstrap, topic) = (self.broker.bootstrap.clone(), self.topic.clone());
        tokio::task::spawn_blocking(move || {
            committed_offset(&bootstrap, &format!("ferry-sink-{SINK}"), &topic)
        })
        .await
        .expect("the committed-offsets lookup ran")
    }

    /// Waits until the sink's group has committed `offset`.
    async fn wait_committed(&self, offset: i64, ferry: &FerryProcess) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let committed = self.committed().await;
            if committed == Some(offset) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sink's group committed {committed:?}, not {offset}\n{}",
                ferry.stderr()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn stop(self) {
        self.0.stop().await;
    }
}

/// `http_get` off the async workers, so the proxy's clock readings are not
/// held up by a blocking read.
async fn get(addr: SocketAddr, path: &'static str) -> (u16, String) {
    tokio::task::spawn_blocking(move || http_get(addr, path).unwrap_or_default())
        .await
        .unwrap_or_default()
}

/// Polls `done` until it holds; panics with Ferry's log after `within`.
async fn wait_for(
    what: &str,
    within: Duration,
    ferry: &FerryProcess,
    mut done: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}\n{}",
            ferry.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Record `seq` of a stream spread over `keys` keys: key `k<seq % keys>`,
/// value `{"key": .., "seq": ..}`.
fn keyed(seq: usize, keys: usize) -> (String, Vec<u8>) {
    let key = format!("k{}", seq % keys);
    let value = serde_json::json!({ "key": key, "seq": seq })
        .to_string()
        .into_bytes();
    (key, value)
}

fn keyed_range(from: usize, to: usize, keys: usize) -> Vec<(String, Vec<u8>)> {
    (from..to).map(|seq| keyed(seq, keys)).collect()
}

/// `(key, seq)` of every request the fake target accepted on `/ok`, in
/// arrival order (the key from the path, checked against the body).
fn deliveries(target: &FakeTarget) -> Vec<(String, usize)> {
    target
        .seen()
        .into_iter()
        .filter_map(|s| {
            let key = s.path.strip_prefix("/ok/")?.to_owned();
            let body: serde_json::Value = serde_json::from_str(&s.body).ok()?;
            assert_eq!(body["key"], key.as_str(), "the body went to its key's URL");
            let seq = body["seq"].as_u64().and_then(|n| usize::try_from(n).ok())?;
            Some((key, seq))
        })
        .collect()
}

/// How many distinct records (by `seq`) the target has.
fn distinct(target: &FakeTarget) -> usize {
    deliveries(target)
        .into_iter()
        .map(|(_, seq)| seq)
        .collect::<BTreeSet<_>>()
        .len()
}

/// Requests the proxy read at or after `since` and answered with `status`.
fn answered_with(seen: &[Seen], since: Instant, status: u16) -> usize {
    seen.iter()
        .filter(|s| s.at >= since && s.answered == Some(status))
        .count()
}

/// Requests the proxy read at or after `since` and neither forwarded nor
/// answered (reset, or held in the black hole).
fn unanswered(seen: &[Seen], since: Instant) -> usize {
    seen.iter()
        .filter(|s| s.at >= since && !s.forwarded && s.answered.is_none())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_record_is_lost_or_reordered_through_target_faults() {
    const RECORDS: usize = 200;
    const KEYS: usize = 4;
    /// The attempt timeout configured below.
    const TIMEOUT: Duration = Duration::from_secs(1);
    let s = Setup::new("chaos.faults").await;
    let target = FakeTarget::start().await;
    let proxy = ChaosProxy::start(target.addr).await;
    // `open_for` is short here so that twenty 503s (each failing probe
    // reopens the breaker) take seconds, not a minute; the breaker's own
    // bound is the subject of another test.
    let config = s.config(&format!(
        "    url: {}/ok/{{{{ key }}}}
    retry: {{ initial_backoff: 50ms, max_backoff: 500ms }}
    circuit_breaker: {{ min_calls: 4, window: 10s, open_for: 500ms, half_open_probes: 1 }}
    timeout: 1s
",
        proxy.url()
    ));
    let producer = s.producer();
    let started = Instant::now();
    let mut ferry = s.run(&config);
    let mut produced = 0;

    // 1. A burst of twenty 503s.
    let burst = Instant::now();
    proxy.set(Fault::Status {
        status: 503,
        count: Some(20),
        retry_after: None,
    });
    s.produce(&producer, &keyed_range(produced, produced + 40, KEYS))
        .await;
    produced += 40;
    wait_for(
        "twenty 503s answered",
        Duration::from_secs(40),
        &ferry,
        || answered_with(&proxy.seen(), burst, 503) >= 20,
    )
    .await;

    // 2. Connections reset after the request is read.
    let resets = Instant::now();
    proxy.set(Fault::Reset);
    s.produce(&producer, &keyed_range(produced, produced + 30, KEYS))
        .await;
    produced += 30;
    wait_for(
        "three requests reset",
        Duration::from_secs(10),
        &ferry,
        || unanswered(&proxy.seen(), resets) >= 3,
    )
    .await;

    // 3. Latency, under the timeout; then 4. a slow body (the target's
    // 204 has no body to trickle: the head comes at once, as it should).
    proxy.set(Fault::Latency(Duration::from_millis(300)));
    s.produce(&producer, &keyed_range(produced, produced + 30, KEYS))
        .await;
    produced += 30;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.set(Fault::SlowBody {
        chunk: 1,
        every: Duration::from_millis(20),
    });
    s.produce(&producer, &keyed_range(produced, produced + 30, KEYS))
        .await;
    produced += 30;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 5. Three 429s asking for a second's pause each.
    let limited = Instant::now();
    proxy.set(Fault::Status {
        status: 429,
        count: Some(3),
        retry_after: Some("1".into()),
    });
    s.produce(&producer, &keyed_range(produced, produced + 30, KEYS))
        .await;
    produced += 30;
    wait_for(
        "three 429s answered",
        Duration::from_secs(15),
        &ferry,
        || answered_with(&proxy.seen(), limited, 429) >= 3,
    )
    .await;

    // 6. A black hole for two seconds, twice the attempt timeout.
    let hole = Instant::now();
    proxy.set(Fault::BlackHole);
    s.produce(&producer, &keyed_range(produced, produced + 20, KEYS))
        .await;
    produced += 20;
    wait_for("a request held", Duration::from_secs(10), &ferry, || {
        unanswered(&proxy.seen(), hole) >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 7. The target is reachable again.
    proxy.set(Fault::None);
    s.produce(&producer, &keyed_range(produced, RECORDS, KEYS))
        .await;
    wait_for(
        "every record delivered",
        Duration::from_secs(30),
        &ferry,
        || distinct(&target) == RECORDS,
    )
    .await;
    s.wait_committed(i64::try_from(RECORDS).expect("fits"), &ferry)
        .await;
    let took = started.elapsed();

    let delivered = deliveries(&target);
    let seen = proxy.seen();
    // Per key, the order in which records first reached the target is the
    // order they were produced in.
    let mut first = BTreeSet::new();
    let mut per_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (key, seq) in &delivered {
        if first.insert(*seq) {
            per_key.entry(key.clone()).or_default().push(*seq);
        }
    }
    assert_eq!(
        first,
        (0..RECORDS).collect::<BTreeSet<_>>(),
        "every record delivered"
    );
    for (key, seqs) in &per_key {
        let produced_order: Vec<usize> = (0..RECORDS)
            .filter(|seq| keyed(*seq, KEYS).0 == *key)
            .collect();
        assert_eq!(
            seqs, &produced_order,
            "key {key}: first deliveries out of production order"
        );
    }
    // Duplicates. Ferry sends a record again only when an attempt for it
    // failed, and an attempt whose request the proxy did not forward (an
    // injected status, a reset, the black hole) never reached the target.
    // So a record reaches the target twice only if a forwarded request's
    // answer was lost to Ferry (the README's window for a target that is
    // down or slow). The proxy resets or holds only requests it does not
    // forward, so a forwarded request's answer is lost either because the
    // proxy gave none (`forwarded` and no `answered`), or because it came
    // after the attempt `timeout`. In the second case Ferry gave up on the
    // attempt a full `timeout` after sending it, and since the sink has
    // one request in flight at a time (one write in the sink, one request
    // per record, in order), the next request reached the proxy at least
    // about a `timeout` later: a forwarded request followed by a quiet gap
    // of at least half the timeout (the other half covers the time between
    // Ferry sending a request and the proxy having read it), or the last
    // one, is a candidate. Nothing else repeats a write here: no restart
    // (checked below), no rebalance, no stop before the end.
    let answer_lost = seen
        .iter()
        .filter(|s| s.forwarded && s.answered.is_none())
        .count();
    let maybe_timed_out = seen
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            s.forwarded
                && seen
                    .get(i + 1)
                    .is_none_or(|next| next.at - s.at >= TIMEOUT / 2)
        })
        .count();
    let duplicates = delivered.len() - RECORDS;
    assert!(
        duplicates <= answer_lost + maybe_timed_out,
        "{duplicates} duplicates; at most {answer_lost} answers lost + {maybe_timed_out} forwarded requests followed by a gap of {:?} or more\n{}",
        TIMEOUT / 2,
        ferry.stderr()
    );
    assert_eq!(
        target.seen().len(),
        proxy.forwarded(),
        "the target got exactly what the proxy forwarded"
    );
    let status = s.status().await;
    assert_eq!(status["state"], "RUNNING", "{status}");
    assert_eq!(status["restarts"], 0, "no restart under faults: {status}");
    let unforwarded = seen.iter().filter(|s| !s.forwarded).count();
    eprintln!(
        "target faults: {RECORDS} records in {took:?}; proxy read {} requests, {unforwarded} not forwarded (503 {}, 429 {}, reset/held {}); {duplicates} duplicates (bound {})",
        seen.len(),
        answered_with(&seen, burst, 503),
        answered_with(&seen, burst, 429),
        unanswered(&seen, burst),
        answer_lost + maybe_timed_out
    );
    assert_eq!(
        ferry.interrupt(Duration::from_secs(60)),
        Some(0),
        "{}",
        ferry.stderr()
    );
    proxy.stop().await;
    target.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_advertised_rate_limit_is_never_exceeded() {
    const RECORDS: usize = 60;
    const LIMIT: u32 = 5;
    const WINDOW: Duration = Duration::from_secs(1);
    let s = Setup::new("chaos.limited").await;
    let producer = s.producer();
    s.produce(&producer, &keyed_range(0, RECORDS, 4)).await;
    let api = LimitedApi::start(LIMIT, WINDOW).await;
    // No `rate_limit` key: the defaults obey the API's advertised limits.
    let config = s.config(&format!("    url: {}/records/{{{{ key }}}}\n", api.url()));
    let mut ferry = s.run(&config);
    wait_for("every record sent", Duration::from_secs(45), &ferry, || {
        api.requests().len() >= RECORDS
    })
    .await;
    s.wait_committed(i64::try_from(RECORDS).expect("fits"), &ferry)
        .await;
    // Anything still to come (a retry) would show up here.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    assert_eq!(
        api.violations(),
        0,
        "a request arrived in a full window (answered 429)\n{}",
        ferry.stderr()
    );
    assert!(
        api.max_in_any_window() <= LIMIT,
        "{}",
        api.max_in_any_window()
    );
    let requests = api.requests();
    assert_eq!(
        requests.len(),
        RECORDS,
        "one request per record, none refused or repeated"
    );
    assert!(
        requests
            .iter()
            .all(|(_, what, _)| what.starts_with("POST /records/k")),
        "{requests:?}"
    );
    let seqs: BTreeSet<u64> = requests
        .iter()
        .filter_map(|(_, _, body)| {
            serde_json::from_str::<serde_json::Value>(body).ok()?["seq"].as_u64()
        })
        .collect();
    assert_eq!(seqs.len(), RECORDS, "every record, once");
    // A sanity bound that follows from the limit alone: 60 requests at most
    // 5 per fixed window touch at least 12 windows, so the first and the
    // last are at least 11 windows apart by index. The first may come at
    // the very end of its window and the last at the very start of its
    // own: at least 10 windows of time between them.
    let span = requests[RECORDS - 1].0 - requests[0].0;
    let windows = u32::try_from(RECORDS.div_ceil(LIMIT as usize)).expect("fits");
    assert!(
        span >= WINDOW * (windows - 2),
        "{RECORDS} requests in {span:?}: faster than {LIMIT} per {WINDOW:?} allows"
    );
    eprintln!(
        "rate limit: {RECORDS} requests in {span:?}, at most {} in a window, {} violations",
        api.max_in_any_window(),
        api.violations()
    );
    assert_eq!(ferry.interrupt(Duration::from_secs(60)), Some(0));
    api.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_sent_inside_a_retry_after_window() {
    const RECORDS: usize = 10;
    let s = Setup::new("chaos.retry_after").await;
    let producer = s.producer();
    s.produce(&producer, &keyed_range(0, RECORDS, 2)).await;
    let target = FakeTarget::start().await;
    let proxy = ChaosProxy::start(target.addr).await;
    proxy.set(Fault::Status {
        status: 429,
        count: Some(1),
        retry_after: Some("2".into()),
    });
    let config = s.config(&format!("    url: {}/ok/{{{{ key }}}}\n", proxy.url()));
    let mut ferry = s.run(&config);
    wait_for(
        "every record delivered",
        Duration::from_secs(30),
        &ferry,
        || distinct(&target) == RECORDS,
    )
    .await;

    let seen = proxy.seen();
    let refused: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| s.answered == Some(429))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(refused.len(), 1, "{seen:?}");
    let at = seen[refused[0]].at;
    let next = seen.get(refused[0] + 1).expect("a request after the 429");
    // The proxy stamps a request when it has read it, before it answers;
    // Ferry starts waiting only once it has read the answer, and waits the
    // whole `Retry-After` (whole seconds). So the next request comes at
    // least 2 s after the 429's stamp; 100 ms of slack for timer rounding.
    let window = Duration::from_millis(1900);
    let inside: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.at > at && s.at < at + window)
        .collect();
    assert!(
        inside.is_empty(),
        "requests inside the Retry-After window: {inside:?}\n{}",
        ferry.stderr()
    );
    let gap = next.at - at;
    let delivered: Vec<usize> = deliveries(&target).into_iter().map(|(_, q)| q).collect();
    assert_eq!(
        delivered,
        (0..RECORDS).collect::<Vec<_>>(),
        "every record once, in order"
    );
    eprintln!("retry-after: the next request came {gap:?} after the 429");
    assert_eq!(ferry.interrupt(Duration::from_secs(60)), Some(0));
    proxy.stop().await;
    target.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_lets_only_probes_reach_the_target() {
    const RECORDS: usize = 10;
    const OPEN_FOR: Duration = Duration::from_secs(2);
    const WATCH: Duration = Duration::from_secs(5);
    let s = Setup::new("chaos.breaker").await;
    let producer = s.producer();
    s.produce(&producer, &keyed_range(0, RECORDS, 2)).await;
    let target = FakeTarget::start().await;
    let proxy = ChaosProxy::start(target.addr).await;
    proxy.set(Fault::Status {
        status: 503,
        count: None,
        retry_after: None,
    });
    let config = s.config(&format!(
        "    url: {}/ok/{{{{ key }}}}
    retry: {{ max_attempts: 2, initial_backoff: 50ms, max_backoff: 100ms }}
    circuit_breaker: {{ min_calls: 4, window: 30s, open_for: 2s, half_open_probes: 1 }}
    timeout: 1s
",
        proxy.url()
    ));
    let mut ferry = s.run(&config);
    let mut states = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = s.status().await;
        states.insert(state_of(&status));
        if status["circuit"] == "open" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the breaker never opened: {status}\n{}",
            ferry.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let opened = Instant::now();
    let mut gauge_open = false;
    while opened.elapsed() < WATCH {
        gauge_open |= s.circuit_gauge(proxy.addr()).await == Some(2.0);
        states.insert(state_of(&s.status().await));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = proxy.seen();
    let watched: Vec<&Seen> = seen
        .iter()
        .filter(|r| r.at >= opened && r.at < opened + WATCH)
        .collect();
    // While open, nothing goes out; a failed probe opens it again for
    // `open_for` from when its answer was read, so two probes are at least
    // `open_for` apart (one in flight at a time: `half_open_probes: 1`).
    // In 5 s that is at most 1 + floor(5 s / 2 s) = 3 probes.
    let bound = 1 + (WATCH.as_millis() / OPEN_FOR.as_millis()) as usize;
    assert!(
        watched.len() <= bound,
        "{} requests reached the proxy in {WATCH:?} with the breaker open: {watched:?}\n{}",
        watched.len(),
        ferry.stderr()
    );
    // The same from the first trip on: the 4th failed call (`min_calls`,
    // all failures) opens it, and every request after that is a probe.
    for pair in seen[3..].windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= OPEN_FOR - Duration::from_millis(50),
            "two requests {gap:?} apart with the breaker open: {seen:?}"
        );
    }
    assert!(
        seen.iter().all(|r| !r.forwarded),
        "nothing reached the target"
    );
    assert!(
        gauge_open,
        "ferry_circuit_state{{target=\"{}\"}} never showed 2 (open)",
        proxy.addr()
    );

    // The target recovers: the next probe passes, the breaker closes, the
    // backlog flows.
    proxy.set(Fault::None);
    let recovered = Instant::now();
    let deadline = recovered + Duration::from_secs(20);
    while distinct(&target) < RECORDS {
        states.insert(state_of(&s.status().await));
        assert!(
            Instant::now() < deadline,
            "{} of {RECORDS} delivered after recovery\n{}",
            distinct(&target),
            ferry.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered: Vec<usize> = deliveries(&target).into_iter().map(|(_, q)| q).collect();
    assert_eq!(
        delivered,
        (0..RECORDS).collect::<Vec<_>>(),
        "every record once, in order: none was forwarded before"
    );
    let status = s.status().await;
    assert_eq!(status["circuit"], "closed", "{status}");
    assert_eq!(status["state"], "RUNNING", "{status}");
    assert_eq!(status["restarts"], 0, "{status}");
    assert!(
        !states.contains("FAILED"),
        "the sink went FAILED while its target was down: {states:?}"
    );
    s.wait_committed(i64::try_from(RECORDS).expect("fits"), &ferry)
        .await;
    eprintln!(
        "breaker: {} requests in {WATCH:?} while open (bound {bound}); {} requests before recovery; recovered in {:?}; states {states:?}",
        watched.len(),
        seen.len(),
        recovered.elapsed()
    );
    assert_eq!(ferry.interrupt(Duration::from_secs(60)), Some(0));
    proxy.stop().await;
    target.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_refused_for_good_goes_to_the_dead_letter_topic_and_the_rest_flows() {
    let s = Setup::new("chaos.refused").await;
    let value = |key: &str| serde_json::json!({ "id": key }).to_string().into_bytes();
    let mut records: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| format!("a{i}"))
        .map(|k| (k.clone(), value(&k)))
        .collect();
    records.push(("bad".to_owned(), value("bad")));
    records.extend(
        (0..5)
            .map(|i| format!("b{i}"))
            .map(|k| (k.clone(), value(&k))),
    );
    let producer = s.producer();
    s.produce(&producer, &records).await;
    let target = FakeTarget::start().await;
    target.refuse("bad");
    let config = s.config(&format!("    url: {}/ok/{{{{ key }}}}\n", target.url()));
    let before_ms = ferry::schema::envelope::now_millis();
    let mut ferry = s.run(&config);
    wait_for(
        "a0..a4 and b0..b4 delivered",
        Duration::from_secs(30),
        &ferry,
        || target.delivered().len() >= 10,
    )
    .await;
    s.wait_committed(11, &ferry).await;

    let dlq = format!("{SINK}.dlq");
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &s.broker.bootstrap)
        .set("group.id", "chaos-dlq-check")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[dlq.as_str()]).expect("subscribe");
    let mut letters = Vec::new();
    // Until the dead letter is in, then a while longer for any second one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let wait = if letters.is_empty() {
            deadline.saturating_duration_since(Instant::now())
        } else {
            Duration::from_secs(3)
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Ok(m)) => {
                let headers: BTreeMap<String, String> = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                letters.push((
                    m.key().map(<[u8]>::to_vec),
                    m.payload().map(<[u8]>::to_vec),
                    headers,
                ));
            }
            Ok(Err(e)) => panic!("reading {dlq}: {e}"),
            Err(_) => break,
        }
    }
    drop(consumer);
    let after_ms = ferry::schema::envelope::now_millis();

    assert_eq!(
        target.delivered(),
        ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2", "b3", "b4"],
        "every other record once, in order"
    );
    let bad_attempts = target.seen().iter().filter(|r| r.path == "/ok/bad").count();
    assert_eq!(bad_attempts, 1, "a 400 is not retried");
    assert_eq!(
        letters.len(),
        1,
        "exactly one dead letter: {letters:?}\n{}",
        ferry.stderr()
    );
    let (key, payload, headers) = &letters[0];
    assert_eq!(key.as_deref(), Some(b"bad".as_slice()));
    assert_eq!(
        payload.as_deref(),
        Some(value("bad").as_slice()),
        "the original value"
    );
    let header = |name: &str| {
        headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header: {headers:?}"))
            .as_str()
    };
    assert_eq!(header("ferry-dlq-error-class"), "rejected");
    assert_eq!(header("ferry-dlq-error-status"), "400");
    assert_eq!(header("ferry-dlq-connector"), SINK);
    assert_eq!(header("ferry-dlq-source-topic"), s.topic);
    assert_eq!(header("ferry-dlq-source-partition"), "0");
    assert_eq!(header("ferry-dlq-source-offset"), "5");
    assert_eq!(header("ferry-dlq-attempts"), "1", "one attempt, no retry");
    let first: i64 = header("ferry-dlq-first-failure-ms")
        .parse()
        .expect("epoch ms");
    let last: i64 = header("ferry-dlq-last-failure-ms")
        .parse()
        .expect("epoch ms");
    assert!(
        before_ms <= first && first <= last && last <= after_ms,
        "failure times {first}..{last} outside the run {before_ms}..{after_ms}"
    );
    assert!(
        !header("ferry-dlq-error-message").trim().is_empty(),
        "{headers:?}"
    );
    let status = s.status().await;
    assert_eq!(status["state"], "RUNNING", "{status}");
    assert_eq!(status["restarts"], 0, "{status}");
    eprintln!("dead letter: {headers:?}");
    assert_eq!(ferry.interrupt(Duration::from_secs(60)), Some(0));
    target.stop().await;
    s.stop().await;
}

/// The `state` on a `/connectors` entry (`?` when there is none).
fn state_of(status: &serde_json::Value) -> String {
    status["state"].as_str().unwrap_or("?").to_owned()
}
