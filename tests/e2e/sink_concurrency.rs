//! `concurrency:` on the `http` sink, attacked: a target that answers each
//! request after a random delay (so requests finish in random order), a
//! topic of four partitions with many keys, sixteen batches at once.
//! Per-key order must hold (a key's next request never leaves before its
//! previous one is answered), and a kill -9 in the middle must neither lose
//! a record nor leave a committed offset ahead of a record the target never
//! answered.

use crate::sink_setup::{committed_offsets, SinkSetup};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use ferry_testkit::FerryProcess;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOPIC: &str = "ordered";
const GROUP: &str = "ferry-sink-sink";

/// One record: its key and its place in the key's sequence.
type Version = (String, u64);

#[derive(Default)]
struct Inner {
    /// Requests as they arrived.
    arrived: Mutex<Vec<Version>>,
    /// Requests answered (204), as they were answered.
    answered: Mutex<Vec<Version>>,
    /// Per key, requests being handled.
    handling: Mutex<HashMap<String, usize>>,
    /// Requests that arrived while another of their key was being handled.
    overlaps: AtomicUsize,
    /// Requests being handled, and the most at once.
    now: AtomicUsize,
    most: AtomicUsize,
    /// Keys answered 503 (not recorded as arrived).
    down: Mutex<BTreeSet<String>>,
    /// xorshift state for the delays.
    seed: AtomicU64,
    max_delay_ms: u64,
}

/// The third party: answers `POST /k/{key}` with 204 after 0 to
/// `max_delay_ms` ms, chosen at random per request.
struct SlowTarget {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowTarget {
    async fn start(max_delay_ms: u64) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        let inner = Arc::new(Inner {
            seed: AtomicU64::new(seed),
            max_delay_ms,
            ..Inner::default()
        });
        let app = Router::new()
            .route("/k/{key}", post(handle))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the target");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, inner, task }
    }

    fn arrived(&self) -> Vec<Version> {
        self.inner.arrived.lock().expect("lock").clone()
    }

    fn answered(&self) -> Vec<Version> {
        self.inner.answered.lock().expect("lock").clone()
    }

    fn down(&self, key: &str, down: bool) {
        let mut set = self.inner.down.lock().expect("lock");
        if down {
            set.insert(key.to_owned());
        } else {
            set.remove(key);
        }
    }

    fn answered_unique(&self) -> usize {
        self.answered().into_iter().collect::<BTreeSet<_>>().len()
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    Path(key): Path<String>,
    body: Bytes,
) -> StatusCode {
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let Some(seq) = value["seq"].as_u64() else {
        return StatusCode::BAD_REQUEST;
    };
    if inner.down.lock().expect("lock").contains(&key) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    {
        let mut handling = inner.handling.lock().expect("lock");
        let n = handling.entry(key.clone()).or_default();
        if *n > 0 {
            inner.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        *n += 1;
        inner.arrived.lock().expect("lock").push((key.clone(), seq));
    }
    let now = inner.now.fetch_add(1, Ordering::SeqCst) + 1;
    inner.most.fetch_max(now, Ordering::SeqCst);
    let mut x = inner.seed.load(Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    inner.seed.store(x, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(x % (inner.max_delay_ms + 1))).await;
    inner.now.fetch_sub(1, Ordering::SeqCst);
    {
        let mut handling = inner.handling.lock().expect("lock");
        if let Some(n) = handling.get_mut(&key) {
            *n -= 1;
        }
        inner.answered.lock().expect("lock").push((key, seq));
    }
    StatusCode::NO_CONTENT
}

/// A broker with a topic of `partitions` holding `keys` × `versions`
/// records (version by version, so each key's records spread over the
/// stream), and where each landed.
struct Setup {
    /// The broker, the topic (`TOPIC`), the config and the admin API.
    sink: SinkSetup,
    partitions: i32,
    /// Per (partition, offset), the record there.
    placed: BTreeMap<(i32, i64), Version>,
}

impl Setup {
    async fn new(partitions: i32, keys: usize, versions: u64) -> Self {
        let sink = SinkSetup::with_partitions(TOPIC, partitions).await;
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &sink.broker.bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        let mut sends = Vec::new();
        for seq in 0..versions {
            for k in 0..keys {
                let key = format!("k{k:03}");
                let value = serde_json::json!({ "seq": seq }).to_string();
                let delivery = producer
                    .send_result(FutureRecord::to(TOPIC).key(&key).payload(&value))
                    .map_err(|(e, _)| e)
                    .expect("queued");
                sends.push((key, seq, delivery));
            }
        }
        let mut placed = BTreeMap::new();
        for (key, seq, delivery) in sends {
            let delivered = delivery
                .await
                .expect("not cancelled")
                .map_err(|(e, _)| e)
                .expect("acknowledged");
            placed.insert((delivered.partition, delivered.offset), (key, seq));
        }
        Self {
            sink,
            partitions,
            placed,
        }
    }

    /// One `http` sink with `concurrency` and `max_in_flight_records`.
    fn config(
        &self,
        target: &SlowTarget,
        concurrency: usize,
        max_in_flight: usize,
    ) -> std::path::PathBuf {
        let sink = format!(
            "    url: \"http://{}/k/{{{{ key }}}}\"\n    concurrency: {concurrency}\n    max_in_flight_records: {max_in_flight}\n    retry: {{ initial_backoff: 50ms, max_backoff: 200ms }}",
            target.addr
        );
        self.sink.config(&sink, "")
    }

    /// Ferry with static membership: a restart takes its partitions back
    /// at once.
    fn run(&self, config: &std::path::Path) -> FerryProcess {
        self.sink.run_with(
            config,
            &[(
                "FERRY__KAFKA__CONSUMER__INSTANCE_ID",
                "concurrency-test".to_owned(),
            )],
        )
    }

    /// Every record below the group's committed offset of its partition.
    async fn committed_records(&self) -> Vec<Version> {
        let bootstrap = self.sink.broker.bootstrap.clone();
        let partitions = self.partitions;
        let committed = tokio::task::spawn_blocking(move || {
            committed_offsets(&bootstrap, GROUP, TOPIC, partitions)
        })
        .await
        .expect("committed offsets");
        self.placed
            .iter()
            .filter(|((p, o), _)| {
                usize::try_from(*p)
                    .ok()
                    .and_then(|p| committed.get(p).copied().flatten())
                    .is_some_and(|c| *o < c)
            })
            .map(|(_, v)| v.clone())
            .collect()
    }

    async fn wait_answered(&self, target: &SlowTarget, n: usize, ferry: &FerryProcess) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while target.answered_unique() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {n} records answered\n{}",
                target.answered_unique(),
                ferry.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Per key, the sequence of requests must go 0, 1, 2, ... and may step
/// back after a crash (a replay from the committed offset) but never skip
/// ahead: a skip is a record sent before an earlier one of its key, or one
/// lost. Returns how many requests repeated a version already sent.
fn check_key_order(arrived: &[Version]) -> usize {
    let mut last: HashMap<&str, u64> = HashMap::new();
    let mut seen: BTreeSet<(&str, u64)> = BTreeSet::new();
    let mut repeats = 0;
    for (key, seq) in arrived {
        let next = last.get(key.as_str()).map_or(0, |l| l + 1);
        assert!(
            *seq <= next,
            "{key}: version {seq} was sent when {next} was due (a skip: out of order or lost)"
        );
        if !seen.insert((key.as_str(), *seq)) {
            repeats += 1;
        }
        last.insert(key, *seq);
    }
    repeats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_batches_at_once_keep_each_keys_order_against_a_target_answering_in_random_order() {
    const KEYS: usize = 100;
    const VERSIONS: u64 = 20;
    let total = KEYS * usize::try_from(VERSIONS).unwrap_or(0);
    let target = SlowTarget::start(10).await;
    // One partition: what runs at once runs across keys of one partition.
    let s = Setup::new(1, KEYS, VERSIONS).await;
    let mut ferry = s.run(&s.config(&target, 16, 200));
    s.wait_answered(&target, total, &ferry).await;

    let arrived = target.arrived();
    assert_eq!(check_key_order(&arrived), 0, "no fault, no repeat");
    assert_eq!(arrived.len(), total);
    assert_eq!(
        target.inner.overlaps.load(Ordering::SeqCst),
        0,
        "a key's request arrived while its previous one was still being answered"
    );
    let most = target.inner.most.load(Ordering::SeqCst);
    assert!(
        most >= 4,
        "at most {most} requests were in flight at once: the sink ran (nearly) in series within the partition"
    );
    // Everything delivered is committed, up to each partition's end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while s.committed_records().await.len() < total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "offsets not committed up to the end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("concurrency 16: {total} records, up to {most} requests at once");
    assert_eq!(ferry.interrupt(Duration::from_secs(60)), Some(0));
    target.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_with_sixteen_batches_in_flight_loses_nothing_and_commits_nothing_unanswered() {
    const KEYS: usize = 150;
    const VERSIONS: u64 = 20;
    const KILLS: usize = 2;
    const PARTITIONS: usize = 4;
    /// The sink's `max_in_flight_records`: small, so the bound on repeats
    /// below is well under what a Ferry that committed nothing would repeat.
    const HELD: usize = 40;
    let total = KEYS * usize::try_from(VERSIONS).unwrap_or(0);
    let target = SlowTarget::start(8).await;
    let s = Setup::new(4, KEYS, VERSIONS).await;
    let config = s.config(&target, 16, HELD);
    for kill in 1..=KILLS {
        let mut ferry = s.run(&config);
        s.wait_answered(&target, total * kill / (KILLS + 1), &ferry)
            .await;
        ferry.signal("KILL");
        ferry.wait(Duration::from_secs(30));
        // The offsets left behind never pass a record the target did not
        // answer (answered ⊇ acknowledged to the sink).
        let answered: BTreeSet<Version> = target.answered().into_iter().collect();
        let committed = s.committed_records().await;
        let ahead: Vec<&Version> = committed
            .iter()
            .filter(|v| !answered.contains(*v))
            .take(5)
            .collect();
        assert!(
            ahead.is_empty(),
            "kill {kill}: committed but never answered: {ahead:?}"
        );
        assert!(
            committed.len() < total,
            "kill {kill} came after everything was committed: nothing was in flight"
        );
    }
    let mut ferry = s.run(&config);
    s.wait_answered(&target, total, &ferry).await;
    let repeats = check_key_order(&target.arrived());
    // What a crash may repeat (the module doc of the sink runtime, and the
    // README): 1.5 × max_in_flight_records per partition plus 3 ×
    // max_in_flight_records in all.
    let bound = KILLS * (PARTITIONS * HELD * 3 / 2 + 3 * HELD);
    assert!(bound < total / 2, "a bound that can fail");
    assert!(
        repeats <= bound,
        "{repeats} repeats after {KILLS} kills; the window allows {bound}"
    );
    let mut last: HashMap<String, u64> = HashMap::new();
    for (k, v) in target.arrived() {
        last.insert(k, v);
    }
    assert!(
        last.values().all(|v| *v == VERSIONS - 1),
        "every key's last request is its last version"
    );
    eprintln!("concurrency 16, {KILLS} kills: {total} records, {repeats} repeats (bound {bound})");
    assert_eq!(ferry.interrupt(Duration::from_secs(60)), Some(0));
    target.task.abort();
}

/// A key the target keeps refusing (503, retried forever: `ordering:
/// strict`) holds back its batch and its own partition, not the others:
/// the other partitions are delivered in full; the other keys of its
/// partition flow past it, but only about a window's worth (the
/// partition's committed offset stays at the stuck record, so a crash would
/// repeat what flowed past); once the key recovers, everything arrives in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_key_holds_back_its_partition_after_a_window_and_not_the_others() {
    const KEYS: usize = 40;
    const VERSIONS: u64 = 25;
    /// The sink's `max_in_flight_records`; its window is half of it.
    const HELD: usize = 100;
    let total = KEYS * usize::try_from(VERSIONS).unwrap_or(0);
    let target = SlowTarget::start(2).await;
    target.down("k007", true);
    let s = Setup::new(4, KEYS, VERSIONS).await;
    let stuck_partition = s
        .placed
        .iter()
        .find(|(_, (k, _))| k == "k007")
        .map(|((p, _), _)| *p)
        .expect("k007 produced");
    let mut ferry = s.run(&s.config(&target, 8, HELD));
    // Until nothing more arrives for a while: the other partitions finish,
    // the stuck one runs ahead to its window.
    let mut last = 0;
    let mut still_since = tokio::time::Instant::now();
    let deadline = still_since + Duration::from_secs(120);
    loop {
        let now = target.answered_unique();
        if now != last {
            last = now;
            still_since = tokio::time::Instant::now();
        } else if still_since.elapsed() >= Duration::from_secs(3) && now > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answered: BTreeSet<Version> = target.answered().into_iter().collect();
    let in_stuck: Vec<&Version> = s
        .placed
        .iter()
        .filter(|((p, _), _)| *p == stuck_partition)
        .map(|(_, v)| v)
        .collect();
    let past_it = in_stuck.iter().filter(|v| answered.contains(*v)).count();
    let first_stuck = in_stuck.iter().position(|(k, _)| k == "k007").unwrap_or(0);
    assert!(
        answered.iter().all(|(k, _)| k != "k007"),
        "k007 was refused"
    );
    assert!(
        past_it > first_stuck,
        "records of other keys behind k007's first one flowed past it ({past_it} answered, k007 first at {first_stuck})"
    );
    // Past the stuck record, fewer than the partition's window (half the
    // in-flight bound) when the last batch was handed over, and what was
    // in the sink then (at most the in-flight bound).
    assert!(
        past_it < first_stuck + HELD / 2 + HELD,
        "{past_it} records of the stuck partition answered, k007 first at {first_stuck}: the partition ran past its window"
    );
    let other_partitions = s
        .placed
        .iter()
        .filter(|((p, _), _)| *p != stuck_partition)
        .count();
    assert_eq!(
        answered.len() - past_it,
        other_partitions,
        "the other partitions are delivered in full"
    );
    // The committed offset stays at k007's first record.
    let committed = s.committed_records().await;
    assert!(
        committed
            .iter()
            .all(|v| !in_stuck[first_stuck..].contains(&v)),
        "committed past the stuck record"
    );
    target.down("k007", false);
    s.wait_answered(&target, total, &ferry).await;
    assert_eq!(check_key_order(&target.arrived()), 0);
    assert_eq!(ferry.interrupt(Duration::from_secs(60)), Some(0));
    target.task.abort();
}
