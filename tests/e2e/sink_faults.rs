//! Faults a sink meets at its target and in its input, with the real `ferry`
//! binary, a real broker and a fake target: a record that cannot be decoded,
//! a record the target refuses for good, a target that redirects, and a
//! target that hangs while Ferry stops. Each test checks what the README
//! promises under that fault: a bad record goes to the dead-letter topic
//! with its original key, value and the reason, the records behind it are
//! delivered, nothing is written twice, offsets are committed past it, no
//! restart loop, a stop within `shutdown_timeout`.

use crate::fake_target::FakeTarget;
use crate::sink_setup::SinkSetup as Setup;
use ferry_connectors::demo::{Demo, DemoApi};
use ferry_testkit::{free_addr, FerryProcess};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn json_record(key: &str) -> (String, Vec<u8>) {
    (
        key.to_owned(),
        serde_json::json!({ "id": key }).to_string().into_bytes(),
    )
}

/// The records around a bad one: five before, five after.
fn around(bad: (String, Vec<u8>)) -> Vec<(String, Vec<u8>)> {
    let mut records: Vec<_> = (0..5).map(|i| json_record(&format!("a{i}"))).collect();
    records.push(bad);
    records.extend((0..5).map(|i| json_record(&format!("b{i}"))));
    records
}

/// Asserts the target got every record around the bad one (a0..a4,
/// b0..b4) exactly once each, in order, and nothing else.
fn assert_everything_but_the_bad_one(target: &FakeTarget) {
    let delivered = target.delivered();
    assert_eq!(
        delivered,
        ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2", "b3", "b4"],
        "the records around the bad one, each once, in order"
    );
}

/// Waits until the target has `n` deliveries.
async fn wait_delivered(target: &FakeTarget, n: usize, ferry: &FerryProcess) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while target.delivered().len() < n {
        assert!(
            Instant::now() < deadline,
            "{:?}\n{}",
            target.seen(),
            ferry.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks the one dead letter of `s`'s sink: key, value, and why.
fn assert_one_dead_letter(
    s: &Setup,
    key: &str,
    value: &[u8],
    class: &str,
    status: Option<&str>,
    says: &str,
) {
    let letters = s.dead_letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let l = &letters[0];
    assert_eq!(l.key.as_deref(), Some(key));
    assert_eq!(l.value, value, "the original value, byte for byte");
    let h = |k: &str| l.headers.get(k).map(String::as_str);
    assert_eq!(h("ferry-dlq-error-class"), Some(class), "{l:?}");
    assert_eq!(h("ferry-dlq-error-status"), status, "{l:?}");
    assert_eq!(h("ferry-dlq-connector"), Some("sink"));
    assert_eq!(h("ferry-dlq-source-topic"), Some(s.topic.as_str()));
    assert_eq!(h("ferry-dlq-source-partition"), Some("0"));
    assert_eq!(h("ferry-dlq-source-offset"), Some("5"));
    assert!(h("ferry-correlation-id").is_some_and(|c| !c.is_empty()));
    assert!(
        h("ferry-dlq-error-message").is_some_and(|m| m.contains(says)),
        "the message says why ({says}): {l:?}"
    );
    let first: i64 = h("ferry-dlq-first-failure-ms")
        .and_then(|v| v.parse().ok())
        .expect("first failure time");
    let last: i64 = h("ferry-dlq-last-failure-ms")
        .and_then(|v| v.parse().ok())
        .expect("last failure time");
    assert!(first > 1_700_000_000_000 && last >= first, "{l:?}");
    assert!(h("ferry-dlq-attempts").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_record_is_dead_lettered_and_the_records_behind_it_are_delivered() {
    let s = Setup::new("faults.undecodable").await;
    // Confluent framing with a schema id the registry does not know.
    let bad_value = vec![0, 0, 0, 0x27, 0x0f, 2, 4, 6];
    s.produce(&around(("bad".to_owned(), bad_value.clone())))
        .await;
    let target = FakeTarget::start().await;
    let config = s.config(&format!("    url: {}/ok/{{{{ key }}}}\n", target.url()), "");
    let mut ferry = s.run(&config);
    wait_delivered(&target, 10, &ferry).await;
    wait_committed(&s, 11).await;
    assert_everything_but_the_bad_one(&target);
    assert_one_dead_letter(&s, "bad", &bad_value, "decode", None, "9999");
    let status = s.status();
    assert_eq!(status["state"], "RUNNING", "{status}");
    assert_eq!(status["restarts"], 0, "{status}");
    assert_eq!(ferry.interrupt(Duration::from_secs(60)), Some(0));

    // A restart repeats nothing: the dead letter counted as handled.
    let mut again = s.run(&config);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_everything_but_the_bad_one(&target);
    assert_eq!(s.dead_letters().len(), 1, "not dead-lettered twice");
    assert_eq!(again.interrupt(Duration::from_secs(60)), Some(0));
    target.stop().await;
    s.stop().await;
}

/// Waits until the sink's group has committed `offset` on partition 0.
async fn wait_committed(s: &Setup, offset: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.committed() != Some(offset) {
        assert!(
            Instant::now() < deadline,
            "committed {:?}, expected {offset}",
            s.committed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_target_refuses_for_good_is_dead_lettered_once_and_the_rest_flows() {
    let s = Setup::new("faults.refused").await;
    let poison = json_record("poison");
    s.produce(&around(poison.clone())).await;
    let target = FakeTarget::start().await;
    target.refuse("poison");
    let config = s.config(&format!("    url: {}/ok/{{{{ key }}}}\n", target.url()), "");
    let mut ferry = s.run(&config);
    wait_delivered(&target, 10, &ferry).await;
    wait_committed(&s, 11).await;
    assert_everything_but_the_bad_one(&target);
    assert_one_dead_letter(&s, "poison", &poison.1, "rejected", Some("400"), "HTTP 400");
    let poison_attempts = target
        .seen()
        .iter()
        .filter(|r| r.path == "/ok/poison")
        .count();
    assert_eq!(poison_attempts, 1, "a 400 is not retried");
    let status = s.status();
    assert_eq!(status["state"], "RUNNING", "{status}");
    assert_eq!(status["restarts"], 0, "{status}");
    assert_eq!(ferry.interrupt(Duration::from_secs(60)), Some(0));
    target.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_target_is_a_failure_not_a_delivery() {
    let s = Setup::new("faults.redirect").await;
    let records: Vec<_> = (0..20).map(|i| json_record(&format!("r{i}"))).collect();
    s.produce(&records).await;
    let target = FakeTarget::start().await;
    let config = s.config(
        &format!("    url: {}/redirect/{{{{ key }}}}\n", target.url()),
        "",
    );
    let mut ferry = s.run(&config);
    wait_committed(&s, 20).await;
    let seen = target.seen();
    assert!(
        seen.iter().all(|r| r.path.starts_with("/redirect/")),
        "the redirect was not followed (a bodyless GET would have counted as delivered): {seen:?}"
    );
    assert_eq!(seen.len(), 20, "one attempt each, not retried: {seen:?}");
    assert!(target.delivered().is_empty());
    let letters = s.dead_letters();
    assert_eq!(letters.len(), 20, "every record is a dead letter");
    for (i, l) in letters.iter().enumerate() {
        assert_eq!(l.key.as_deref(), Some(format!("r{i}").as_str()));
        assert_eq!(
            l.headers.get("ferry-dlq-error-status").map(String::as_str),
            Some("302")
        );
        assert!(l.headers["ferry-dlq-error-message"].contains("/elsewhere/"));
    }
    assert_eq!(ferry.interrupt(Duration::from_secs(60)), Some(0));

    // Opted in, a 307 (which keeps the method and body) is followed (a
    // new group, so the records are read again).
    let config = s.config(
        &format!(
            "    url: {}/r307/{{{{ key }}}}\n    follow_redirects: true\n    group_id: again\n",
            target.url()
        ),
        "",
    );
    let mut ferry = s.run(&config);
    let deadline = Instant::now() + Duration::from_secs(60);
    while target.delivered().len() < 20 {
        assert!(
            Instant::now() < deadline,
            "{:?}\n{}",
            target.seen(),
            ferry.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resent: Vec<_> = target
        .seen()
        .into_iter()
        .filter(|r| r.path.starts_with("/ok/"))
        .collect();
    assert!(
        resent
            .iter()
            .all(|r| r.method == "POST" && r.body.contains("\"id\"")),
        "the body was re-sent with the method: {resent:?}"
    );
    assert_eq!(ferry.interrupt(Duration::from_secs(60)), Some(0));
    target.stop().await;
    s.stop().await;
}

/// `kafka.consumer.group_id` names the sinks' groups (`<it>-sink-<name>`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_group_takes_the_configured_prefix() {
    let s = Setup::new("faults.group").await;
    s.produce(&[json_record("g0"), json_record("g1"), json_record("g2")])
        .await;
    let target = FakeTarget::start().await;
    let config = s.config(&format!("    url: {}/ok/{{{{ key }}}}\n", target.url()), "");
    let mut ferry = s.run_with(
        &config,
        &[("FERRY__KAFKA__CONSUMER__GROUP_ID", "team-a".to_owned())],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while target.delivered().len() < 3 {
        assert!(Instant::now() < deadline, "{}", ferry.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ferry.interrupt(Duration::from_secs(60)), Some(0));
    assert_eq!(s.committed_by("team-a-sink-sink"), Some(3));
    assert_eq!(s.committed(), None, "the default group was not used");
    target.stop().await;
    s.stop().await;
}

/// With the target hanging on a request, a stop still ends within
/// `shutdown_timeout`, with the offsets of everything the target
/// acknowledged committed: a restart repeats at most the abandoned batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_under_a_hung_target_exits_within_the_budget_with_offsets_committed() {
    const RECORDS: usize = 200;
    const BUDGET: Duration = Duration::from_secs(6);
    let s = Setup::new("faults.hung").await;
    let records: Vec<_> = (0..RECORDS)
        .map(|i| {
            (
                format!("k{i:03}"),
                serde_json::json!({"id": format!("k{i:03}"), "version": 1})
                    .to_string()
                    .into_bytes(),
            )
        })
        .collect();
    s.produce(&records).await;
    let api = DemoApi::serve(free_addr(), Demo::default())
        .await
        .expect("fake target");
    let sink = format!(
        "    method: PUT\n    url: http://{}/target/contacts/{{{{ key }}}}\n    timeout: 60s\n",
        api.addr()
    );
    let config = s.config(&sink, &format!("shutdown_timeout: {}s", BUDGET.as_secs()));
    let mut ferry = s.run(&config);
    // Let part of the backlog through, then hang every request.
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.demo().received().len() < 50 {
        assert!(Instant::now() < deadline, "{}", ferry.stderr());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    api.demo().set_stalled(true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acknowledged = api.demo().received().len();
    assert!(acknowledged < RECORDS, "the stall came mid-run");

    let asked = Instant::now();
    ferry.signal("TERM");
    let status = ferry.wait(Duration::from_secs(60));
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(0), "{}", ferry.stderr());
    // Within the budget (the target would hang for 60 s), plus the async
    // runtime's own teardown (`cli::main` gives stray blocking tasks 1 s)
    // and this test's 50 ms polling of the process.
    assert!(
        took <= BUDGET + Duration::from_secs(1) + Duration::from_millis(500),
        "stopped after {took:?} with a {BUDGET:?} budget\n{}",
        ferry.stderr()
    );
    // The sink itself gave up on the batch within its share and committed;
    // the process did not have to abort it.
    let log = ferry.stderr();
    assert!(
        log.contains("sink did not finish its batch in time"),
        "{log}"
    );
    assert!(!log.contains("connectors did not stop in time"), "{log}");
    let committed = s.committed().expect("offsets committed at the stop");
    // Everything the target acknowledged is committed, except the batch the
    // stop abandoned (one write: at most RECORDS_PER_WRITE records).
    let per_write = i64::try_from(ferry_connectors::sinks::http::RECORDS_PER_WRITE).unwrap_or(0);
    let acked = i64::try_from(acknowledged).unwrap_or(0);
    assert!(
        committed <= acked && committed >= acked - per_write,
        "committed {committed}, acknowledged {acknowledged}"
    );

    // The target recovers; a restart delivers the rest, repeating at most
    // the abandoned batch.
    api.demo().set_stalled(false);
    let mut ferry = s.run(&config);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let received = api.demo().received();
        let unique: std::collections::BTreeSet<_> = received.iter().collect();
        if unique.len() == RECORDS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {RECORDS}\n{}",
            unique.len(),
            ferry.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = api.demo().received();
    let repeats = received.len() - RECORDS;
    assert!(
        repeats <= ferry_connectors::sinks::http::RECORDS_PER_WRITE,
        "{repeats} repeats"
    );
    eprintln!(
        "hung target: stop took {took:?}; {acknowledged} acknowledged before the stall, {committed} committed, {repeats} repeated after restart"
    );
    assert_eq!(ferry.interrupt(Duration::from_secs(60)), Some(0));
    api.stop().await;
    s.stop().await;
}

/// A relaxed sink whose target answers 503 for one key: short retry timings
/// and retry topics of 2 s and 3 s.
fn relaxed_config(s: &Setup, target: &FakeTarget) -> PathBuf {
    s.config(
        &format!(
            "    url: {}/ok/{{{{ key }}}}\n    ordering: relaxed\n    retry: {{ max_attempts: 2, initial_backoff: 50ms, max_backoff: 100ms, max_elapsed: 1s }}\n    circuit_breaker: {{ min_calls: 1000 }}\n    dead_letter: {{ retry_topics: [2s, 3s] }}\n",
            target.url()
        ),
        "",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_ordering_lets_the_partition_flow_while_a_failing_record_waits_in_a_retry_topic() {
    let s = Setup::new("faults.relaxed").await;
    s.produce(&around(json_record("slow"))).await;
    let target = FakeTarget::start().await;
    target.unavailable("slow");
    let mut ferry = s.run(&relaxed_config(&s, &target));
    // The records behind the failing one are delivered while it fails.
    wait_delivered(&target, 10, &ferry).await;
    assert_everything_but_the_bad_one(&target);
    wait_committed(&s, 11).await;
    // The target recovers: the record comes back from its retry topic.
    target.available("slow");
    wait_delivered(&target, 11, &ferry).await;
    let delivered = target.delivered();
    assert_eq!(delivered.last().map(String::as_str), Some("slow"));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        target.delivered().iter().filter(|k| *k == "slow").count(),
        1,
        "delivered once"
    );
    assert!(s.dead_letters().is_empty(), "nothing dead-lettered");
    assert_eq!(s.status()["restarts"], 0);
    assert_eq!(ferry.interrupt(Duration::from_secs(60)), Some(0));
    target.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_ordering_dead_letters_a_record_that_outlasts_every_retry_topic() {
    let s = Setup::new("faults.outlasts").await;
    let dead = json_record("dead");
    s.produce(&around(dead.clone())).await;
    let target = FakeTarget::start().await;
    target.unavailable("dead");
    let mut ferry = s.run(&relaxed_config(&s, &target));
    wait_delivered(&target, 10, &ferry).await;
    assert_everything_but_the_bad_one(&target);
    // 1 s of retries, then 2 s and 3 s in the retry topics, each followed
    // by one more write: the dead letter comes after at least 6 s.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    loop {
        let c = s.dead_letters_count();
        if c > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never dead-lettered\n{}",
            ferry.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_one_dead_letter(
        &s,
        "dead",
        &dead.1,
        "retries_exhausted",
        Some("503"),
        "HTTP 503",
    );
    let letters = s.dead_letters();
    let attempts: u32 = letters[0].headers["ferry-dlq-attempts"]
        .parse()
        .expect("attempts");
    assert!(
        attempts >= 3,
        "tried in the topic and in both retry topics: {attempts}"
    );
    // Each retry topic's delay was waited out: at least 1 s (max_elapsed)
    // + 2 s + 3 s between the first failure and the last.
    let ms = |k: &str| -> i64 { letters[0].headers[k].parse().expect("epoch ms") };
    let span = ms("ferry-dlq-last-failure-ms") - ms("ferry-dlq-first-failure-ms");
    assert!(span >= 6_000, "first to last failure: {span} ms");
    let tries = target
        .seen()
        .iter()
        .filter(|r| r.path == "/ok/dead")
        .count();
    assert!(tries >= 3, "{tries}");
    assert!(target.delivered().iter().all(|k| k != "dead"));
    assert_eq!(s.status()["restarts"], 0);
    assert_eq!(ferry.interrupt(Duration::from_secs(60)), Some(0));
    target.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_topic_parks_records_while_the_target_is_unreachable() {
    let s = Setup::new("faults.parked").await;
    let records: Vec<_> = (0..5).map(|i| json_record(&format!("p{i}"))).collect();
    s.produce(&records).await;
    // Nothing listens there: every call fails to connect.
    let nowhere = free_addr();
    let config = s.config(
        &format!(
            "    url: http://{nowhere}/ok/{{{{ key }}}}\n    retry: {{ max_attempts: 2, initial_backoff: 10ms, max_backoff: 20ms }}\n    fallback: {{ topic: sink.parked }}\n"
        ),
        "",
    );
    let mut ferry = s.run(&config);
    wait_committed(&s, 5).await;
    let parked = s.records_of("sink.parked");
    assert_eq!(parked.len(), 5, "{parked:?}");
    for (i, p) in parked.iter().enumerate() {
        assert_eq!(p.key.as_deref(), Some(format!("p{i}").as_str()));
        assert_eq!(p.value, records[i].1);
        assert_eq!(p.headers["ferry-dlq-error-class"], "parked");
        assert_eq!(p.headers["ferry-dlq-source-offset"], i.to_string());
        assert!(
            p.headers["ferry-dlq-error-message"].contains("cannot connect"),
            "{p:?}"
        );
    }
    assert!(s.dead_letters().is_empty());
    let status = s.status();
    assert_eq!(status["state"], "RUNNING", "{status}");
    assert_eq!(ferry.interrupt(Duration::from_secs(60)), Some(0));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_url_takes_what_the_target_cannot() {
    let s = Setup::new("faults.fallback").await;
    s.produce(&around(json_record("elsewhere"))).await;
    let primary = FakeTarget::start().await;
    let secondary = FakeTarget::start().await;
    primary.unavailable("elsewhere");
    let config = s.config(
        &format!(
            "    url: {}/ok/{{{{ key }}}}\n    retry: {{ max_attempts: 2, initial_backoff: 10ms, max_backoff: 20ms }}\n    fallback: {{ url: '{}/ok/{{{{ key }}}}' }}\n",
            primary.url(),
            secondary.url()
        ),
        "",
    );
    let mut ferry = s.run(&config);
    wait_delivered(&primary, 10, &ferry).await;
    wait_committed(&s, 11).await;
    assert_everything_but_the_bad_one(&primary);
    assert_eq!(
        secondary.delivered(),
        ["elsewhere"],
        "the fallback got it, once"
    );
    assert_eq!(
        primary
            .seen()
            .iter()
            .filter(|r| r.path == "/ok/elsewhere")
            .count(),
        2,
        "the primary was tried max_attempts times first"
    );
    assert!(s.dead_letters().is_empty());
    assert_eq!(ferry.interrupt(Duration::from_secs(60)), Some(0));
    primary.stop().await;
    secondary.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_stop_the_sink_in_failed_without_dead_letters() {
    let s = Setup::new("faults.unauthorized").await;
    s.produce(&around(json_record("expired"))).await;
    let target = FakeTarget::start().await;
    target.unauthorized("expired");
    let config = s.config(&format!("    url: {}/ok/{{{{ key }}}}\n", target.url()), "");
    let mut ferry = s.run(&config);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let st = s.status();
        if st["state"] == "FAILED" {
            break st;
        }
        assert!(Instant::now() < deadline, "{st}\n{}", ferry.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reason = status["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("HTTP 401") && reason.contains("faults.unauthorized/0@5"),
        "{status}"
    );
    assert_eq!(
        target.delivered(),
        ["a0", "a1", "a2", "a3", "a4"],
        "the records before it, once; none after it"
    );
    assert_eq!(
        s.dead_letters_count(),
        0,
        "credentials are not a record's fault"
    );
    assert_eq!(ferry.interrupt(Duration::from_secs(60)), Some(0));
    assert_eq!(s.committed(), Some(5), "committed up to it");
    target.stop().await;
    s.stop().await;
}
