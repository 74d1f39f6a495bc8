//! Ferry's state topics, with the real `ferry` binary on a real broker:
//! source positions in `ferry-offsets` and the registry's schemas in
//! `_ferry_schemas`, both compacted. An existing offsets topic that is not
//! compacted stops startup (its positions would be deleted with old
//! records), and Ferry's registry never writes to Confluent Schema
//! Registry's `_schemas`, which may share the cluster.

use crate::ferry_bin;
use crate::sink_setup::services_yaml;
use ferry_testkit::{free_addr, repo_root, FerryProcess, TestBroker};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(20);

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client")
}

fn options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(TIMEOUT))
        .operation_timeout(Some(TIMEOUT))
}

/// Creates `topic` with `cleanup.policy=policy`, as another tool would.
async fn create(bootstrap: &str, topic: &str, partitions: i32, policy: &str) {
    let created = admin(bootstrap)
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))
                .set("cleanup.policy", policy)],
            &options(),
        )
        .await
        .expect("create topic");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
}

/// `cleanup.policy` as the broker answers DescribeConfigs (`None`: not set,
/// which in Kafka means `delete`).
async fn cleanup_policy(bootstrap: &str, topic: &str) -> Option<String> {
    let described = admin(bootstrap)
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options())
        .await
        .expect("DescribeConfigs answered");
    let resource = described
        .into_iter()
        .next()
        .expect("one resource")
        .unwrap_or_else(|e| panic!("DescribeConfigs of `{topic}` failed: {e}"));
    resource
        .entries
        .into_iter()
        .find(|e| e.name == "cleanup.policy")
        .and_then(|e| e.value)
}

/// Every topic the broker lists.
fn topics(bootstrap: &str) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("client");
    let md = c.fetch_metadata(None, TIMEOUT).expect("metadata");
    md.topics().iter().map(|t| t.name().to_owned()).collect()
}

/// Every record of a one-partition `topic` as (key, value) text, with the
/// partition's watermarks. Blocking.
fn read_all(bootstrap: &str, topic: &str) -> ((i64, i64), Vec<(String, String)>) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("state-topics-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let (low, high) = c.fetch_watermarks(topic, 0, TIMEOUT).expect("watermarks");
    let mut records = Vec::new();
    if high > low {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .expect("assign");
        c.assign(&tpl).expect("assign");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "`{topic}` not read to {high}");
            let Some(m) = c.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m.expect("record");
            let text =
                |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
            records.push((text(m.key()), text(m.payload())));
            if m.offset() + 1 >= high {
                break;
            }
        }
    }
    ((low, high), records)
}

/// A `ferry run` config on `bootstrap` with Ferry's own registry, one
/// topic with a value schema, and `connectors` (YAML list items, indented
/// two spaces).
fn config(dir: &Path, bootstrap: &str, connectors: &str) -> PathBuf {
    let path = dir.join("ferry.yaml");
    let text = format!(
        r#"
data_dir: {data}
kafka:
  bootstrap_servers: "{bootstrap}"
{services}topics:
  - name: state.events
    partitions: 1
    value_schema: event_envelope.avsc
connectors:
{connectors}"#,
        data = dir.display(),
        services = services_yaml(free_addr()),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// An `http_poll` source whose API never answers: it gets no further than
/// its first poll, and needs the offsets topic to start.
const POLLER: &str = "  - name: poller\n    type: http_poll\n    url: http://127.0.0.1:9/nothing\n    topic: state.events\n    interval: 1s\n";

/// Pre-creates `topic` with `policy`, starts `ferry run`, and checks that it
/// stops at once with one error naming the topic, its policy and `key`,
/// leaving the topic as it was.
async fn assert_state_topic_refused(topic: &str, partitions: i32, policy: &str, key: &str) {
    let broker = TestBroker::start().await;
    create(&broker.bootstrap, topic, partitions, policy).await;
    // tansu 0.6.0 (sqlite) answers DescribeConfigs with the topic's configs,
    // so Ferry can see the policy (with no answer it would trust the topic).
    assert_eq!(
        cleanup_policy(&broker.bootstrap, topic).await.as_deref(),
        Some(policy)
    );

    let dir = tempfile::tempdir().expect("dir");
    let cfg = config(dir.path(), &broker.bootstrap, POLLER);
    let f = FerryProcess::run(
        &ferry_bin(),
        &["run", &cfg.display().to_string()],
        &repo_root(),
        &[],
        Duration::from_secs(90),
    );
    assert!(
        !f.stdout.contains("Press Ctrl-C"),
        "it never reports itself up:\n{}",
        f.stdout
    );
    let policy_named = format!("cleanup.policy={policy}");
    crate::bad_input::assert_clean_failure(&f, 1, &[topic, &policy_named, key]);
    // Ferry reports the topic; it does not change it or write to it.
    assert_eq!(
        cleanup_policy(&broker.bootstrap, topic).await.as_deref(),
        Some(policy)
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offsets_topic_that_is_not_compacted_stops_startup() {
    assert_state_topic_refused("ferry-offsets", 3, "delete", "offsets.topic").await;
}

/// `compact,delete` still deletes old records after the retention time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_topic_that_also_deletes_stops_startup() {
    assert_state_topic_refused(
        "_ferry_schemas",
        1,
        "compact,delete",
        "schema_registry.topic",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferrys_registry_keeps_schemas_in_its_own_topic_and_leaves_schemas_alone() {
    let broker = TestBroker::start().await;
    // Confluent Schema Registry's topic, with one of its records in it.
    create(&broker.bootstrap, "_schemas", 1, "compact").await;
    let confluent_key = r#"{"keytype":"SCHEMA","subject":"billing-value","version":1,"magic":1}"#;
    let confluent_value =
        r#"{"subject":"billing-value","version":1,"id":1,"schema":"\"string\"","deleted":false}"#;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to("_schemas")
                .key(confluent_key)
                .payload(confluent_value),
            TIMEOUT,
        )
        .await
        .map_err(|(e, _)| e)
        .expect("acknowledged");
    drop(producer);
    let b = broker.bootstrap.clone();
    let before = tokio::task::spawn_blocking(move || read_all(&b, "_schemas"))
        .await
        .expect("read");

    let dir = tempfile::tempdir().expect("dir");
    let cfg = config(dir.path(), &broker.bootstrap, POLLER);
    let mut ferry = FerryProcess::spawn(
        &ferry_bin(),
        &["run", &cfg.display().to_string()],
        &repo_root(),
        &[],
    );
    ferry.wait_for_stdout("Press Ctrl-C to stop.", Duration::from_secs(90));
    assert!(
        ferry.stdout().contains("stored in `_ferry_schemas`"),
        "{}",
        ferry.stdout()
    );

    let listed = topics(&broker.bootstrap);
    for t in [
        "_ferry_schemas",
        "ferry-offsets",
        "_schemas",
        "state.events",
    ] {
        assert!(listed.iter().any(|l| l == t), "{t} missing from {listed:?}");
    }
    // Ferry's state topics are created compacted.
    for t in ["_ferry_schemas", "ferry-offsets"] {
        assert_eq!(
            cleanup_policy(&broker.bootstrap, t).await.as_deref(),
            Some("compact"),
            "{t}"
        );
    }
    // The topic's schema is in Ferry's log...
    let b = broker.bootstrap.clone();
    let (_, ferrys) = tokio::task::spawn_blocking(move || read_all(&b, "_ferry_schemas"))
        .await
        .expect("read");
    assert!(
        ferrys
            .iter()
            .any(|(k, v)| k.contains(r#""subject":"state.events-value""#)
                && v.contains("EventEnvelope")),
        "no schema record for state.events-value in _ferry_schemas: {ferrys:?}"
    );
    // ...and Confluent's topic is as it was: same offsets, same record.
    let b = broker.bootstrap.clone();
    let after = tokio::task::spawn_blocking(move || read_all(&b, "_schemas"))
        .await
        .expect("read");
    assert_eq!(after, before, "_schemas was written to");
    assert_eq!(
        after.1,
        vec![(confluent_key.to_owned(), confluent_value.to_owned())]
    );
    assert_eq!(
        cleanup_policy(&broker.bootstrap, "_schemas")
            .await
            .as_deref(),
        Some("compact")
    );

    assert_eq!(
        ferry.interrupt(Duration::from_secs(60)),
        Some(0),
        "{}",
        ferry.stderr()
    );
    broker.stop().await;
}
