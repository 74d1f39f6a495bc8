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
