//! The source contract for push and batch sources, through the real runtime
//! and a real broker: a pushed record's `Durable` handle resolves only once
//! Kafka has the record, positions land in `ferry-offsets`, and a source
//! that says it is done ends as COMPLETED.

use ferry::config::{FerryConfig, TopicSpec};
use ferry::error::ConnectorError;
use ferry::kafka::{compacted, BrokerStorage, DevBroker};
use ferry::runtime::{BrokerMode, Planned, Running, TaskState};
use ferry::schema::envelope::{now_millis, EventEnvelope};
use ferry::source::{BoxedSource, Durable, Poll, Positions, Source, SourceContext, SourceRecord};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// A push source: an HTTP handler (here, the test) hands it records.
struct Pushed(
    Arc<Mutex<Option<mpsc::Receiver<SourceRecord>>>>,
    Option<mpsc::Receiver<SourceRecord>>,
);

impl Source for Pushed {
    async fn open(
        &mut self,
        _ctx: &SourceContext,
        _resume: Positions,
    ) -> Result<(), ConnectorError> {
        self.1 = self
            .0
            .lock()
            .map_err(|_| ConnectorError::internal("lock"))?
            .take();
        Ok(())
    }

    async fn poll(&mut self, _ctx: &SourceContext) -> Result<Poll, ConnectorError> {
        let Some(rx) = self.1.as_mut() else {
            return Ok(Poll::Done);
        };
        Ok(match rx.recv().await {
            Some(r) => Poll::Records(vec![r]),
            // The batch is over: nothing more will be pushed.
            None => Poll::Done,
        })
    }
}

fn free() -> SocketAddr {
    ferry_testkit::free_addr()
}

fn envelope(i: usize) -> apache_avro::types::Value {
    EventEnvelope {
        id: uuid::Uuid::new_v4(),
        source: "push".into(),
        event_type: "test".into(),
        occurred_at: None,
        received_at: now_millis(),
        correlation_id: format!("c{i}"),
        content_type: "application/json".into(),
        payload: format!("{{\"n\":{i}}}").into_bytes(),
        attributes: Default::default(),
    }
    .into_value()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_records_are_acknowledged_only_once_durable_and_a_batch_source_completes() {
    let dir = tempfile::tempdir().expect("dir");
    let broker = DevBroker::start(free(), BrokerStorage::Sqlite(dir.path().join("b.db")))
        .await
        .expect("broker");
    let mut config = FerryConfig {
        data_dir: dir.path().to_owned(),
        ..FerryConfig::default()
    };
    config.kafka.bootstrap_servers = Some(broker.bootstrap_servers());
    config.admin.listen = free();
    config.schema_registry.listen = free();
    config.schema_registry.schemas_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas").into();
    let topic = TopicSpec {
        name: "push.events".into(),
        partitions: std::num::NonZeroU32::MIN,
        replication_factor: None,
        config: Default::default(),
        value_schema: Some("event_envelope.avsc".into()),
        key_schema: None,
    };
    config.topics.push(topic.clone());
    let mut running = Running::start(&config, "test", BrokerMode::External)
        .await
        .expect("starts");

    let (tx, rx) = mpsc::channel(16);
    let shared = Arc::new(Mutex::new(Some(rx)));
    let make = {
        let shared = Arc::clone(&shared);
        Arc::new(move || Ok(BoxedSource::new(Pushed(Arc::clone(&shared), None))))
    };
    running
        .start_connectors(vec![(
            "push".into(),
            Planned::Source {
                topic,
                make,
                mapping: None,
            },
        )])
        .await
        .expect("connector starts");

    // The handler's side: push, then wait for durability before answering.
    let mut handles: Vec<Durable> = Vec::new();
    for i in 0..5 {
        let (record, durable) =
            SourceRecord::new("webhook", serde_json::json!({ "n": i }), envelope(i))
                .with_key(Some(format!("k{i}")))
                .acknowledged();
        tx.send(record).await.expect("source takes it");
        handles.push(durable);
    }
    for d in handles {
        tokio::time::timeout(Duration::from_secs(30), d.wait())
            .await
            .expect("acknowledged in time")
            .expect("durable in Kafka");
    }
    drop(tx);
    // Acknowledged means readable: every pushed record is in the topic.
    let (k, b) = (config.kafka.clone(), broker.bootstrap_servers());
    let records = tokio::task::spawn_blocking(move || {
        compacted::read_to_end(&k, &b, "push.events", Duration::from_secs(20))
    })
    .await
    .expect("read")
    .expect("topic");
    assert_eq!(records.len(), 5, "one record per key k0..k4");

    // The source said it is done: COMPLETED, not restarted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = running.statuses.snapshot();
        if status
            .first()
            .is_some_and(|s| s.state == TaskState::Completed)
        {
            assert_eq!(status[0].restarts, 0);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The last position is in ferry-offsets, keyed by connector and partition.
    let bootstrap = broker.bootstrap_servers();
    let kafka = config.kafka.clone();
    let stored = tokio::task::spawn_blocking(move || {
        compacted::read_to_end(&kafka, &bootstrap, "ferry-offsets", Duration::from_secs(20))
    })
    .await
    .expect("read")
    .expect("offsets topic");
    let position = stored
        .get(&serde_json::to_vec(&["push", "webhook"]).expect("key"))
        .map(|v| serde_json::from_slice::<serde_json::Value>(v).expect("json"));
    assert_eq!(position, Some(serde_json::json!({"n": 4})));

    running.shutdown().await.expect("stops");
    broker.stop().await;
}
