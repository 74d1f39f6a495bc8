//! A sink's write never outlives the attempt that started it. Here an
//! attempt fails while its write is retrying against a target that answers
//! 503 (a record behind the one in the sink cannot be decoded because the
//! schema registry went away: a failure that may pass, so the supervisor
//! starts a new attempt). If the old write went on retrying, two writers
//! would send the same partition's records at once, and the old one, landing
//! late, could overwrite newer versions at the target.

use ferry::config::FerryConfig;
use ferry::error::ConnectorError;
use ferry::kafka::{BrokerStorage, DevBroker, KafkaProducer, OutgoingRecord};
use ferry::runtime::{BrokerMode, Planned, Running, SinkSettings};
use ferry::sink::{BoxedSink, Sink, SinkFailure, SinkRecord};
use ferry_testkit::{free_addr, TestRegistry};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every write call: which sink instance made it, and when.
type Calls = Arc<Mutex<Vec<(usize, Instant)>>>;

/// A target that is down: every write fails with a retryable error.
struct Down {
    instance: usize,
    calls: Calls,
}

impl Sink for Down {
    async fn write(&mut self, batch: &[SinkRecord]) -> Result<(), SinkFailure> {
        self.calls
            .lock()
            .expect("lock")
            .push((self.instance, Instant::now()));
        Err(SinkFailure::batch(
            batch.len(),
            ConnectorError::external("503 from the target"),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_stops_its_write_before_the_next_attempt_starts() {
    let dir = tempfile::tempdir().expect("dir");
    let broker = DevBroker::start(free_addr(), BrokerStorage::Sqlite(dir.path().join("b.db")))
        .await
        .expect("broker");
    let bootstrap = broker.bootstrap_servers();
    let registry = TestRegistry::start(&bootstrap).await;
    let mut config = FerryConfig {
        data_dir: dir.path().to_owned(),
        ..FerryConfig::default()
    };
    config.kafka.bootstrap_servers = Some(bootstrap.clone());
    config.admin.listen = free_addr();
    config.schema_registry.url = Some(registry.url.clone());
    config.topics.push(ferry::config::TopicSpec {
        name: "attempts".into(),
        partitions: std::num::NonZeroU32::MIN,
        replication_factor: None,
        config: Default::default(),
        value_schema: None,
        key_schema: None,
    });
    let mut running = Running::start(&config, "test", BrokerMode::External)
        .await
        .expect("starts");

    let producer = KafkaProducer::new(&config.kafka, &bootstrap).expect("producer");
    producer
        .send(OutgoingRecord {
            topic: "attempts".into(),
            key: Some(b"k".to_vec()),
            payload: Some(br#"{"v":1}"#.to_vec()),
            ..OutgoingRecord::default()
        })
        .await
        .expect("produced");

    let calls: Calls = Arc::default();
    let instances = Arc::new(AtomicUsize::new(0));
    let make = {
        let (calls, instances) = (Arc::clone(&calls), Arc::clone(&instances));
        Arc::new(move || {
            Ok(BoxedSink::new(Down {
                instance: instances.fetch_add(1, Ordering::SeqCst),
                calls: Arc::clone(&calls),
            }))
        })
    };
    let settings = SinkSettings {
        topics: vec!["attempts".into()],
        group_id: "attempts-sink".into(),
        batch_max_records: 1,
        batch_max_bytes: 1 << 20,
        batch_max_wait: Duration::ZERO,
        max_in_flight_records: 100,
        max_in_flight_bytes: 1 << 20,
        drain_within: Duration::from_secs(5),
        resilience: ferry::resilience::ResilienceConfig::default(),
        concurrency: 1,
        outputs: Vec::new(),
    };
    running
        .start_connectors(vec![(
            "sink".into(),
            Planned::Sink {
                settings: Box::new(settings),
                make,
            },
        )])
        .await
        .expect("connector starts");

    // The first attempt is retrying its write.
    let deadline = Instant::now() + Duration::from_secs(60);
    while calls.lock().expect("lock").is_empty() {
        assert!(Instant::now() < deadline, "the sink never wrote");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The registry goes away, and a record that needs it arrives: the
    // attempt fails (retryably) with its write still in flight.
    registry.stop().await;
    producer
        .send(OutgoingRecord {
            topic: "attempts".into(),
            key: Some(b"k".to_vec()),
            payload: Some(vec![0, 0, 0, 0, 1, 2, 4]),
            ..OutgoingRecord::default()
        })
        .await
        .expect("produced");
    // The sink's second task (for returning records) builds a sink too,
    // so the first attempt's instance is the one that wrote first.
    let first = calls.lock().expect("lock")[0].0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let second_started = loop {
        if let Some((_, at)) = calls
            .lock()
            .expect("lock")
            .iter()
            .find(|(i, _)| *i != first)
        {
            break *at;
        }
        assert!(
            Instant::now() < deadline,
            "no second attempt: {:?}",
            running.statuses.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        running
            .statuses
            .snapshot()
            .iter()
            .any(|s| s.name == "sink" && s.restarts >= 1),
        "the first attempt failed"
    );
    // Give a leftover writer time to show itself: its backoff's cap starts
    // at 200 ms and doubles (each wait at most the cap), so within 7 s of
    // its first call it would have called again at least four times.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let calls = calls.lock().expect("lock").clone();
    let stale: Vec<_> = calls
        .iter()
        .filter(|(i, at)| *i == first && *at > second_started)
        .collect();
    assert!(
        stale.is_empty(),
        "the first attempt's write went on after the second attempt started: {} call(s)",
        stale.len()
    );
    running.shutdown().await.expect("stops");
    broker.stop().await;
}
