//! The embedded broker's sqlite data survives a restart: every record
//! acknowledged before it is there after it.

use crate::{ferry_bin, Sandbox};
use ferry_testkit::{repo_root, FerryProcess};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use std::collections::BTreeSet;
use std::time::Duration;

const TOPIC: &str = "ferry.quickstart.events";
const N: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_a_restart() {
    let sb = Sandbox::new();
    let bootstrap = sb.broker.to_string();

    let mut ferry = FerryProcess::spawn(&ferry_bin(), &["up"], &repo_root(), &sb.env());
    ferry.wait_for_stdout("Press Ctrl-C to stop.", Duration::from_secs(90));
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .expect("producer");
    let sends = (0..N).map(|i| {
        let producer = &producer;
        async move {
            let key = format!("k{i}");
            let value = format!("record-{i}");
            producer
                .send(
                    FutureRecord::to(TOPIC).key(&key).payload(&value),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
        }
    });
    for r in futures::future::join_all(sends).await {
        r.expect("acknowledged");
    }
    drop(producer);
    assert_eq!(
        ferry.interrupt(Duration::from_secs(60)),
        Some(0),
        "{}",
        ferry.stderr()
    );
    assert!(
        sb.data_dir().join("broker.db").exists(),
        "sqlite file in the data dir"
    );

    let mut ferry = FerryProcess::spawn(&ferry_bin(), &["up"], &repo_root(), &sb.env());
    ferry.wait_for_stdout("Press Ctrl-C to stop.", Duration::from_secs(90));
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "restart-check")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while seen.len() < N && tokio::time::Instant::now() < deadline {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await {
            seen.insert(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    drop(consumer);
    let expected: BTreeSet<String> = (0..N).map(|i| format!("record-{i}")).collect();
    assert_eq!(
        seen, expected,
        "every record produced before the restart is there after it"
    );
    assert_eq!(
        ferry.interrupt(Duration::from_secs(60)),
        Some(0),
        "{}",
        ferry.stderr()
    );
}

/// The registry lives in the broker's `_ferry_schemas` topic: after a restart every
/// subject, version and id is what it was, and new ids follow the old ones.
#[test]
fn schemas_survive_a_restart() {
    let sb = Sandbox::new();
    let run = |args: &[&str]| {
        let f = FerryProcess::run(
            &ferry_bin(),
            args,
            &repo_root(),
            &sb.env(),
            Duration::from_secs(60),
        );
        assert_eq!(f.code, Some(0), "{args:?}: {}", f.stderr);
        f.stdout
    };
    let extra = tempfile::tempdir().expect("dir");
    std::fs::write(
        extra.path().join("order.avsc"),
        r#"{"type": "record", "name": "Order", "namespace": "t", "fields": [{"name": "id", "type": "string"}]}"#,
    )
    .expect("write");
    let extra_dir = extra.path().display().to_string();

    let mut ferry = FerryProcess::spawn(&ferry_bin(), &["up"], &repo_root(), &sb.env());
    ferry.wait_for_stdout("Press Ctrl-C to stop.", Duration::from_secs(90));
    run(&["schemas", "register", "--dir", &extra_dir]);
    let before = run(&["schemas", "list"]);
    assert_eq!(
        before.lines().count(),
        7,
        "six topic schemas and t.Order: {before}"
    );
    assert_eq!(
        ferry.interrupt(Duration::from_secs(60)),
        Some(0),
        "{}",
        ferry.stderr()
    );

    let mut ferry = FerryProcess::spawn(&ferry_bin(), &["up"], &repo_root(), &sb.env());
    ferry.wait_for_stdout("Press Ctrl-C to stop.", Duration::from_secs(90));
    assert_eq!(
        run(&["schemas", "list"]),
        before,
        "same subjects, versions and ids"
    );
    std::fs::write(
        extra.path().join("order.avsc"),
        r#"{"type": "record", "name": "Order", "namespace": "t", "fields": [{"name": "id", "type": "string"}, {"name": "n", "type": "long", "default": 0}]}"#,
    )
    .expect("write");
    let registered = run(&["schemas", "register", "--dir", &extra_dir]);
    assert!(
        registered.contains("t.Order\tid 4"),
        "ids continue after 1-3: {registered}"
    );
    assert_eq!(
        ferry.interrupt(Duration::from_secs(60)),
        Some(0),
        "{}",
        ferry.stderr()
    );
}
