//! `ferry dlq list` and `ferry dlq replay` against a running sink, with the
//! real binary, a real broker and a fake target: dead letters are counted
//! and listed; once the target takes them, a replay delivers each one
//! again exactly once, never one whose key has newer data (unless
//! `--force`); a replayed record that fails again returns to the
//! dead-letter topic with its source coordinates and replay count, and the
//! replay itself ends.

use crate::fake_target::FakeTarget;
use crate::ferry_bin;
use crate::sink_setup::{create_topics, SinkSetup};
use ferry_testkit::{repo_root, FerryProcess, Finished, TestBroker};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const DLQ: &str = "sink.dlq";

/// The shared sink harness, with the `ferry dlq` commands against its broker.
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

    /// A config with one `http` sink delivering to `url`.
    fn config(&self, url: &str) -> PathBuf {
        self.0.config(&format!("    url: {url}\n"), "")
    }

    /// `ferry dlq ARGS -b <this broker>`, run to its end (it must end).
    fn dlq(&self, args: &[&str]) -> Finished {
        dlq(&self.broker.bootstrap, args)
    }

    /// `dlq list --json`: the summary, then the dead letters.
    fn list_json(&self) -> (serde_json::Value, Vec<serde_json::Value>) {
        let f = self.dlq(&["list", DLQ, "--json"]);
        assert_eq!(f.code, Some(0), "{f:?}");
        let mut lines = f.stdout.lines().map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{f:?}"))
        });
        let summary = lines.next().expect("a summary line");
        assert_eq!(summary["kind"], "summary", "{summary}");
        (summary, lines.collect())
    }

    /// Waits until `sink.dlq` holds `n` dead letters; returns them.
    async fn wait_dead_letters(&self, n: u64, ferry: &FerryProcess) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (summary, letters) = self.list_json();
            if summary["total"] == n {
                assert_eq!(letters.len() as u64, n);
                return letters;
            }
            assert!(
                Instant::now() < deadline,
                "{summary} (waiting for {n})\n{}",
                ferry.stderr()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn stop(self) {
        self.0.stop().await;
    }
}

fn dlq(bootstrap: &str, args: &[&str]) -> Finished {
    let mut all = vec!["dlq"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-b", bootstrap]);
    FerryProcess::run(
        &ferry_bin(),
        &all,
        &repo_root(),
        &[],
        Duration::from_secs(90),
    )
}

/// A JSON value naming its key and version.
fn value(key: &str, version: u32) -> Vec<u8> {
    serde_json::json!({ "id": key, "v": version })
        .to_string()
        .into_bytes()
}

/// Waits until `cond` holds for the target.
async fn wait_for(
    what: &str,
    target: &FakeTarget,
    ferry: &FerryProcess,
    cond: impl Fn(&FakeTarget) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond(target) {
        assert!(
            Instant::now() < deadline,
            "{what}: {:?}\n{}",
            target.seen(),
            ferry.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn count(delivered: &[String], key: &str) -> usize {
    delivered.iter().filter(|k| *k == key).count()
}

/// Requests for `/ok/{key}` from index `from` on whose body is version `v`.
fn requests_with(target: &FakeTarget, from: usize, key: &str, v: u32) -> usize {
    let path = format!("/ok/{key}");
    let marker = format!("\"v\":{v}");
    target.seen()[from..]
        .iter()
        .filter(|r| r.path == path && r.body.replace(' ', "").contains(&marker))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_replayed_once_never_over_newer_data_and_never_in_a_loop() {
    let s = Setup::new("dlq.src").await;
    let target = FakeTarget::start().await;
    target.refuse("bad1");
    target.refuse("bad2");
    let config = s.config(&format!("{}/ok/{{{{ key }}}}", target.url()));
    let mut ferry = s.run(&config);

    // The sink created its dead-letter topic at startup: empty.
    let empty = s.dlq(&["list", DLQ]);
    assert_eq!(empty.code, Some(0), "{empty:?}");
    assert!(empty.stdout.contains("0 dead letters"), "{empty:?}");

    // Offsets 0..=5; bad1 at 3, bad2 at 4.
    let keys = ["a0", "a1", "a2", "bad1", "bad2", "a3"];
    let records: Vec<(&str, Vec<u8>)> = keys.iter().map(|k| (*k, value(k, 1))).collect();
    s.produce(&records).await;
    wait_for("a0..a3 delivered", &target, &ferry, |t| {
        t.delivered().len() >= 4
    })
    .await;
    let letters = s.wait_dead_letters(2, &ferry).await;
    assert_eq!(target.delivered(), ["a0", "a1", "a2", "a3"]);
    for (l, (key, offset)) in letters.iter().zip([("bad1", 3), ("bad2", 4)]) {
        assert_eq!(l["key"], key, "{l}");
        assert_eq!(l["class"], "rejected", "{l}");
        assert_eq!(l["status"], 400, "{l}");
        assert_eq!(l["source_topic"], "dlq.src", "{l}");
        assert_eq!(l["source_offset"], offset, "{l}");
        assert_eq!(l["replays"], 0, "{l}");
        assert_eq!(l["value"]["v"], 1, "{l}");
    }

    let list = s.dlq(&["list", DLQ]);
    assert_eq!(list.code, Some(0), "{list:?}");
    for says in [
        "2 dead letters in `sink.dlq`",
        "rejected: 2 (status 400: 2)",
        "oldest: 20",
        "newest: 20",
        "dlq.src/0@3 key=bad1 class=rejected status=400",
        "dlq.src/0@4 key=bad2 class=rejected status=400",
        "HTTP 400",
    ] {
        assert!(list.stdout.contains(says), "{says}\n{list:?}");
    }

    // bad2 gets newer data, which the target takes.
    target.allow("bad2");
    s.produce(&[("bad2", value("bad2", 2))]).await;
    wait_for("the newer bad2 delivered", &target, &ferry, |t| {
        count(&t.delivered(), "bad2") == 1
    })
    .await;
    target.allow("bad1");
    let before = target.seen().len();

    // A dry run says what would happen and writes nothing.
    let dry = s.dlq(&["replay", DLQ, "--dry-run"]);
    assert_eq!(dry.code, Some(0), "{dry:?}");
    assert!(
        dry.stdout.contains("dry run: would replay 1, skip 1"),
        "{dry:?}"
    );

    let replay = s.dlq(&["replay", DLQ]);
    assert_eq!(replay.code, Some(0), "{replay:?}");
    assert!(
        replay.stdout.contains("replayed 1, skipped 1"),
        "{replay:?}"
    );
    assert!(
        replay
            .stdout
            .contains("skipped: key bad2 has a newer record at dlq.src/0@6"),
        "{replay:?}"
    );
    wait_for("bad1 replayed", &target, &ferry, |t| {
        count(&t.delivered(), "bad1") >= 1
    })
    .await;
    // Time for anything extra (the dry run, a second copy) to show up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let delivered = target.delivered();
    assert_eq!(
        delivered,
        ["a0", "a1", "a2", "a3", "bad2", "bad1"],
        "bad1 once more, nothing else"
    );
    assert_eq!(
        requests_with(&target, before, "bad2", 1),
        0,
        "the old bad2 never overwrote the newer one"
    );

    // Forced, the old bad2 goes anyway.
    let forced = s.dlq(&["replay", DLQ, "--filter", "key=bad2", "--force"]);
    assert_eq!(forced.code, Some(0), "{forced:?}");
    assert!(
        forced.stdout.contains("replayed 1, skipped 0"),
        "{forced:?}"
    );
    wait_for("the old bad2 delivered", &target, &ferry, |t| {
        requests_with(t, before, "bad2", 1) == 1
    })
    .await;
    assert_eq!(count(&target.delivered(), "bad2"), 2);
    assert_eq!(count(&target.delivered(), "bad1"), 1);

    // A replayed record that fails again goes back to the dead-letter topic
    // once, with its source offset and replay count, and the replay ends.
    target.refuse("bad1");
    let bad1_requests = |t: &FakeTarget| t.seen().iter().filter(|r| r.path == "/ok/bad1").count();
    let tried = bad1_requests(&target);
    let again = s.dlq(&["replay", DLQ, "--filter", "key=bad1"]);
    assert_eq!(again.code, Some(0), "{again:?}");
    assert!(again.stdout.contains("replayed 1, skipped 0"), "{again:?}");
    let letters = s.wait_dead_letters(3, &ferry).await;
    let back = &letters[2];
    assert_eq!(back["key"], "bad1", "{back}");
    assert_eq!(back["replays"], 1, "{back}");
    assert_eq!(back["source_topic"], "dlq.src", "{back}");
    assert_eq!(back["source_offset"], 3, "{back}");
    assert_eq!(back["class"], "rejected", "{back}");
    assert_eq!(back["value"]["v"], 1, "the original value: {back}");
    let list = s.dlq(&["list", DLQ]);
    assert!(list.stdout.contains("3 dead letters"), "{list:?}");
    assert!(
        list.stdout
            .contains("dlq.src/0@3 key=bad1 class=rejected status=400 attempts=1 replays=1"),
        "{list:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.list_json().0["total"], 3, "no loop");
    assert_eq!(bad1_requests(&target), tried + 1, "tried once, not again");

    // Replaying everything now sends bad1 once (its latest dead letter)
    // and bad2 once: the first bad1 letter is superseded.
    let dry = s.dlq(&["replay", DLQ, "--dry-run", "--force"]);
    assert!(
        dry.stdout.contains("dry run: would replay 2, skip 1"),
        "{dry:?}"
    );
    assert!(dry.stdout.contains("has a later dead letter"), "{dry:?}");

    let status = s.status();
    assert_eq!(status["state"], "RUNNING", "{status}");
    assert_eq!(status["restarts"], 0, "{status}");
    assert_eq!(ferry.interrupt(Duration::from_secs(60)), Some(0));
    target.stop().await;
    s.stop().await;
}

/// A missing dead-letter topic, a missing replay topic and a bad filter
/// each fail in one line naming what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_commands_name_what_is_missing_or_wrong() {
    let broker = TestBroker::start().await;
    let b = broker.bootstrap.clone();

    let missing = dlq(&b, &["list", "nope.dlq"]);
    assert_eq!(missing.code, Some(1), "{missing:?}");
    assert!(
        missing.stderr.contains("`nope.dlq` does not exist"),
        "{missing:?}"
    );

    create_topics(&b, &["orphan.dlq"]).await;
    let empty = dlq(&b, &["list", "orphan.dlq", "--json"]);
    assert_eq!(empty.code, Some(0), "{empty:?}");
    let summary: serde_json::Value =
        serde_json::from_str(empty.stdout.trim()).expect("one summary line");
    assert_eq!(summary["total"], 0, "{summary}");

    let orphan = dlq(&b, &["replay", "orphan.dlq"]);
    assert_eq!(orphan.code, Some(1), "{orphan:?}");
    assert!(
        orphan
            .stderr
            .contains("start the connector once (ferry up/run) so it creates orphan.dlq.replay"),
        "{orphan:?}"
    );

    for (filter, says) in [
        ("foo", "`foo` is not KEY=VALUE"),
        ("colour=red", "unknown filter key `colour`"),
    ] {
        let bad = dlq(&b, &["replay", "orphan.dlq", "--filter", filter]);
        assert_eq!(bad.code, Some(2), "{bad:?}");
        assert!(bad.stderr.contains(says), "{bad:?}");
    }
    broker.stop().await;
}
