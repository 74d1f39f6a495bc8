//! A source's batch keeps its order per key while librdkafka's local queue
//! is full. The runtime hands the batch's records to the producer one after
//! another (`KafkaProducer::enqueue`, waiting while the queue is full) and
//! only then awaits the deliveries. Before, it called `send` for every
//! record at once and joined them: each send that found the queue full
//! retried on its own timer, so a later record could enter the queue before
//! an earlier one of the same key, and Kafka stored them in that order.

use ferry::config::{FerryConfig, TopicSpec};
use ferry::error::ConnectorError;
use ferry::kafka::{
    BrokerStorage, DevBroker, FerryClientContext, KafkaAdmin, KafkaConfig, KafkaProducer,
    OutgoingRecord,
};
use ferry::runtime::{BrokerMode, Planned, Running, TaskState};
use ferry::schema::envelope::{now_millis, EventEnvelope};
use ferry::schema::{AvroCodec, Part};
use ferry::source::{BoxedSource, Poll, Positions, Source, SourceContext, SourceRecord};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOPIC: &str = "order.events";
const KEYS: usize = 5;
const PER_KEY: u64 = 600;
/// `kafka.producer.queue_records`: far below the batch, so the queue is
/// full nearly all the time the batch is being handed over.
const QUEUE_RECORDS: u32 = 4;

/// Returns one batch, then says it is done.
struct OneBatch(Option<Vec<SourceRecord>>);

impl Source for OneBatch {
    async fn open(
        &mut self,
        _ctx: &SourceContext,
        _resume: Positions,
    ) -> Result<(), ConnectorError> {
        Ok(())
    }

    async fn poll(&mut self, _ctx: &SourceContext) -> Result<Poll, ConnectorError> {
        Ok(self.0.take().map_or(Poll::Done, Poll::Records))
    }
}

fn key(k: usize) -> String {
    format!("key-{k}")
}

/// The i-th record of the batch: keys take turns, each with its own
/// sequence number, carried in the envelope's payload.
fn nth(i: u64) -> (String, u64) {
    let k = usize::try_from(i).expect("small") % KEYS;
    (key(k), i / KEYS as u64)
}

fn payload(key: &str, seq: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "key": key, "seq": seq })).expect("json")
}

fn envelope(key: &str, seq: u64) -> apache_avro::types::Value {
    EventEnvelope {
        id: uuid::Uuid::new_v4(),
        source: "ordered".into(),
        event_type: "test".into(),
        occurred_at: None,
        received_at: now_millis(),
        correlation_id: format!("{key}/{seq}"),
        content_type: "application/json".into(),
        payload: payload(key, seq),
        attributes: Default::default(),
    }
    .into_value()
}

fn batch() -> Vec<SourceRecord> {
    (0..KEYS as u64 * PER_KEY)
        .map(|i| {
            let (k, seq) = nth(i);
            SourceRecord::new("all", serde_json::json!(i), envelope(&k, seq)).with_key(Some(k))
        })
        .collect()
}

/// `(key, seq)` of every record of `topic`, in offset order per partition
/// (so in Kafka's order per key). Blocking.
fn read_back(
    kafka: &KafkaConfig,
    bootstrap: &str,
    topic: &str,
    seq_of: impl Fn(&[u8]) -> u64,
) -> Vec<(String, u64)> {
    let mut client = kafka.client_config(bootstrap);
    client
        .set("group.id", format!("order-reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer<FerryClientContext> = client
        .create_with_context(FerryClientContext::default())
        .expect("consumer");
    let timeout = Duration::from_secs(20);
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .expect("metadata");
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .expect("watermarks");
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("assign");
        }
    }
    consumer.assign(&tpl).expect("assign");
    let mut read = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ends.is_empty() {
        assert!(
            Instant::now() < deadline,
            "`{topic}` not read to its end: {} records read",
            read.len()
        );
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("record");
        let k = String::from_utf8(m.key().expect("keyed").to_vec()).expect("utf-8 key");
        read.push((k, seq_of(m.payload().expect("value"))));
        if ends
            .get(&m.partition())
            .is_some_and(|e| m.offset() + 1 >= *e)
        {
            ends.remove(&m.partition());
        }
    }
    read
}

/// Per key, the sequence numbers as Kafka stores them.
fn per_key(read: &[(String, u64)]) -> BTreeMap<String, Vec<u64>> {
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (k, seq) in read {
        by_key.entry(k.clone()).or_default().push(*seq);
    }
    by_key
}

/// Places where a key's next sequence number is not the previous one + 1.
fn out_of_order(by_key: &BTreeMap<String, Vec<u64>>) -> Vec<(String, u64, u64)> {
    by_key
        .iter()
        .flat_map(|(k, seqs)| {
            seqs.windows(2)
                .filter(|w| w[1] != w[0] + 1)
                .map(|w| (k.clone(), w[0], w[1]))
        })
        .collect()
}

fn seq_in_envelope(codec: &AvroCodec, value: &[u8]) -> u64 {
    use apache_avro::types::Value;
    let Value::Record(fields) = codec.decode(value).expect("an envelope") else {
        panic!("not a record");
    };
    let Some((_, Value::Bytes(payload))) = fields.into_iter().find(|(n, _)| n == "payload") else {
        panic!("no payload bytes");
    };
    let v: serde_json::Value = serde_json::from_slice(&payload).expect("json payload");
    v["seq"].as_u64().expect("seq")
}

fn topic(name: &str, partitions: u32, schema: Option<&str>) -> TopicSpec {
    TopicSpec {
        name: name.into(),
        partitions: NonZeroU32::new(partitions).expect("non-zero"),
        replication_factor: None,
        config: Default::default(),
        value_schema: schema.map(Into::into),
        key_schema: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_producer_queue_keeps_each_batch_in_order() {
    let dir = tempfile::tempdir().expect("dir");
    let broker = DevBroker::start(
        ferry_testkit::free_addr(),
        BrokerStorage::Sqlite(dir.path().join("broker.db")),
    )
    .await
    .expect("broker");
    let bootstrap = broker.bootstrap_servers();
    let mut config = FerryConfig {
        data_dir: dir.path().to_owned(),
        ..FerryConfig::default()
    };
    config.kafka.bootstrap_servers = Some(bootstrap.clone());
    config.kafka.producer.queue_records = NonZeroU32::new(QUEUE_RECORDS).expect("non-zero");
    config.kafka.producer.linger = Duration::from_millis(1);
    config.admin.listen = ferry_testkit::free_addr();
    config.schema_registry.listen = ferry_testkit::free_addr();
    config.schema_registry.schemas_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas").into();
    let spec = topic(TOPIC, 3, Some("event_envelope.avsc"));
    config.topics.push(spec.clone());
    let mut running = Running::start(&config, "test", BrokerMode::External)
        .await
        .expect("starts");
    let codec = running
        .schema_of(TOPIC, Part::Value)
        .expect("registered")
        .codec
        .clone();

    let make = Arc::new(|| Ok(BoxedSource::new(OneBatch(Some(batch())))));
    let started = Instant::now();
    running
        .start_connectors(vec![(
            "ordered".into(),
            Planned::Source {
                topic: spec,
                make,
                mapping: None,
            },
        )])
        .await
        .expect("connector starts");
    let deadline = started + Duration::from_secs(180);
    loop {
        let status = running.statuses.snapshot();
        if let Some(s) = status.first().filter(|s| s.state == TaskState::Completed) {
            assert_eq!(
                s.restarts, 0,
                "one attempt, so no record is repeated: {s:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "batch not delivered: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();

    let (k, b) = (config.kafka.clone(), bootstrap.clone());
    let read = tokio::task::spawn_blocking(move || {
        read_back(&k, &b, TOPIC, |v| seq_in_envelope(&codec, v))
    })
    .await
    .expect("read");
    let by_key = per_key(&read);
    let wrong = out_of_order(&by_key);
    eprintln!(
        "runtime: {} records through a {QUEUE_RECORDS}-record queue in {took:?}; {} out of order",
        read.len(),
        wrong.len()
    );
    assert_eq!(by_key.len(), KEYS, "every key arrived");
    assert!(
        wrong.is_empty(),
        "{} places where a key's sequence jumps (key, before, after), first ones: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    for (k, seqs) in &by_key {
        assert_eq!(
            (seqs.first(), seqs.len()),
            (Some(&0), usize::try_from(PER_KEY).expect("small")),
            "{k}: starts at 0 with one record per sequence number"
        );
    }
    running.shutdown().await.expect("stops");

    // The control: the same settings, the same records, handed over the old
    // way (one `send` per record, all at once, joined). The queue really is
    // full under these settings, and then the order is lost.
    let control = "order.control";
    let admin = KafkaAdmin::new(&config.kafka, &bootstrap).expect("admin");
    admin
        .ensure_topic(&topic(control, 3, None))
        .await
        .expect("control topic");
    let producer = KafkaProducer::new(&config.kafka, &bootstrap).expect("producer");
    let sends = (0..KEYS as u64 * PER_KEY).map(|i| {
        let (k, seq) = nth(i);
        producer.send(OutgoingRecord {
            topic: control.to_owned(),
            key: Some(k.clone().into_bytes()),
            payload: Some(payload(&k, seq)),
            ..OutgoingRecord::default()
        })
    });
    for d in futures::future::join_all(sends).await {
        d.expect("acknowledged");
    }
    let (k, b) = (config.kafka.clone(), bootstrap.clone());
    let read = tokio::task::spawn_blocking(move || {
        read_back(&k, &b, control, |v| {
            serde_json::from_slice::<serde_json::Value>(v).expect("json")["seq"]
                .as_u64()
                .expect("seq")
        })
    })
    .await
    .expect("read");
    let reordered = out_of_order(&per_key(&read));
    eprintln!(
        "control (concurrent sends): {} records, {} out of order, first ones: {:?}",
        read.len(),
        reordered.len(),
        &reordered[..reordered.len().min(5)]
    );
    assert!(
        !reordered.is_empty(),
        "concurrent sends through a {QUEUE_RECORDS}-record queue kept their order: the queue was never full, so the test above proved nothing"
    );
    drop(producer);
    drop(admin);
    broker.stop().await;
}
