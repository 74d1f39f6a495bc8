//! The Kafka layer against a real broker (the embedded tansu, in memory, on a
//! free port): topics are created, records round-trip with their headers, and
//! a consumer's committed position never passes a record not marked processed.

use ferry::config::TopicSpec;
use ferry::kafka::{
    BrokerStorage, DevBroker, KafkaAdmin, KafkaConfig, KafkaConsumer, KafkaProducer, OutgoingRecord,
};
use rdkafka::message::Headers;
use rdkafka::Message;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

async fn broker() -> DevBroker {
    DevBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)), BrokerStorage::Memory)
        .await
        .expect("broker starts")
}

fn topic(name: &str, partitions: u32) -> TopicSpec {
    TopicSpec {
        name: name.to_owned(),
        partitions: NonZeroU32::new(partitions).expect("non-zero"),
        replication_factor: NonZeroU32::new(1),
        config: BTreeMap::new(),
        value_schema: None,
        key_schema: None,
    }
}

fn record(topic: &str, i: usize) -> OutgoingRecord {
    OutgoingRecord {
        topic: topic.to_owned(),
        key: Some(format!("key-{}", i % 3).into_bytes()),
        payload: Some(format!("value-{i}").into_bytes()),
        headers: vec![(
            "ferry-correlation-id".to_owned(),
            format!("c-{i}").into_bytes(),
        )],
        partition: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_once_and_described() {
    let b = broker().await;
    let kafka = KafkaConfig::default();
    let admin = KafkaAdmin::new(&kafka, &b.bootstrap_servers()).expect("admin");
    let mut spec = topic("layer.compacted", 2);
    spec.config
        .insert("cleanup.policy".into(), "compact".into());
    let first = admin.ensure_topic(&spec).await.expect("create");
    let second = admin.ensure_topic(&spec).await.expect("exists");
    assert_eq!(format!("{first:?}/{second:?}"), "Created/AlreadyExisted");
    let d = admin.describe("layer.compacted").await.expect("describe");
    assert_eq!(d.partitions.len(), 2);
    assert!(admin.describe("layer.missing").await.is_err());
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producing_to_a_missing_topic_hands_the_record_back() {
    let b = broker().await;
    let mut kafka = KafkaConfig::default();
    kafka.producer.delivery_timeout = Duration::from_secs(3);
    let producer = KafkaProducer::new(&kafka, &b.bootstrap_servers()).expect("producer");
    let err = producer
        .send(record("layer.nowhere", 1))
        .await
        .expect_err("no such topic");
    assert_eq!(err.topic, "layer.nowhere");
    assert_eq!(
        err.payload.as_deref(),
        Some(&b"value-1"[..]),
        "the record is returned, not lost"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_position_never_passes_an_unprocessed_record() {
    const T: &str = "layer.commits";
    let b = broker().await;
    let bootstrap = b.bootstrap_servers();
    let mut kafka = KafkaConfig::default();
    kafka.consumer.commit_interval = Duration::from_millis(100);
    KafkaAdmin::new(&kafka, &bootstrap)
        .expect("admin")
        .ensure_topic(&topic(T, 1))
        .await
        .expect("topic");

    let producer = KafkaProducer::new(&kafka, &bootstrap).expect("producer");
    for i in 0..10 {
        let d = producer.send(record(T, i)).await.expect("acknowledged");
        assert_eq!(d.offset, i as i64, "offsets are dense on one partition");
    }

    // First consumer reads all ten but finishes only the first four.
    {
        let c =
            KafkaConsumer::subscribe(&kafka, &bootstrap, "layer-group", &[T]).expect("consumer");
        for i in 0..10 {
            let m = tokio::time::timeout(Duration::from_secs(30), c.recv())
                .await
                .expect("record arrives")
                .expect("record")
                .message()
                .expect("a message, not a transient error");
            assert_eq!(m.payload(), Some(format!("value-{i}").as_bytes()));
            let cid = m
                .headers()
                .and_then(|h| h.iter().next().and_then(|h| h.value.map(<[u8]>::to_vec)));
            assert_eq!(
                cid,
                Some(format!("c-{i}").into_bytes()),
                "headers travel with the record"
            );
            if i < 4 {
                c.mark_position(m.topic(), m.partition(), m.offset())
                    .expect("store");
            }
        }
        // Let the background auto-commit run, then commit synchronously too.
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.commit(Duration::from_secs(10)).await.expect("commit");
        c.close().await;
    }

    // A new member of the group resumes at the first unprocessed record.
    let c = KafkaConsumer::subscribe(&kafka, &bootstrap, "layer-group", &[T]).expect("consumer");
    let m = tokio::time::timeout(Duration::from_secs(30), c.recv())
        .await
        .expect("record arrives")
        .expect("record")
        .message()
        .expect("a message");
    assert_eq!(
        m.offset(),
        4,
        "resumes after the last processed record, not after the last read one"
    );
    drop(m);
    c.close().await;
    b.stop().await;
}
