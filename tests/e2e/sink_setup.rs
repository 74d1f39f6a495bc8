//! The harness the sink suites share (`sink_faults`, `chaos`, `dlq`): a
//! broker of their own, a one-partition topic, and a Ferry config running
//! one `http` sink named `sink` on it, with readers for what the sink left
//! in Kafka (committed offsets, its dead-letter and parking topics).

use crate::ferry_bin;
use ferry_testkit::{free_addr, http_get, repo_root, FerryProcess, TestBroker};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The `admin` and `schema_registry` sections of a Ferry config (YAML, each
/// line ending in a newline): the admin API on `admin`, Ferry's own registry
/// on a free port with the repository's schemas.
pub(crate) fn services_yaml(admin: SocketAddr) -> String {
    format!(
        "admin:\n  listen: \"{admin}\"\nschema_registry:\n  listen: \"{registry}\"\n  schemas_dir: {schemas}\n",
        registry = free_addr(),
        schemas = repo_root().join("schemas").display(),
    )
}

/// A broker, a topic with one partition, and a Ferry config running one
/// `http` sink on it.
pub struct SinkSetup {
    pub broker: TestBroker,
    pub dir: tempfile::TempDir,
    pub admin: SocketAddr,
    pub topic: String,
}

impl SinkSetup {
    pub async fn new(topic: &str) -> Self {
        Self::with_partitions(topic, 1).await
    }

    /// The same, the topic with `partitions` partitions.
    pub async fn with_partitions(topic: &str, partitions: i32) -> Self {
        let broker = TestBroker::start().await;
        create_topics_with(&broker.bootstrap, &[topic], partitions).await;
        Self {
            broker,
            dir: tempfile::tempdir().expect("dir"),
            admin: free_addr(),
            topic: topic.to_owned(),
        }
    }

    /// Writes `records` (key, raw value) in order, each acknowledged.
    pub async fn produce<K: AsRef<str>>(&self, records: &[(K, Vec<u8>)]) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.broker.bootstrap)
            .set("enable.idempotence", "true")
            .create()
            .expect("producer");
        for (key, value) in records {
            producer
                .send(
                    FutureRecord::to(&self.topic)
                        .key(key.as_ref())
                        .payload(value),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("acknowledged");
        }
    }

    /// A config with one `http` sink; `sink` holds its settings after
    /// `type: http` and `topic` (YAML, indented four spaces).
    pub fn config(&self, sink: &str, extra: &str) -> PathBuf {
        let path = self.dir.path().join("ferry.yaml");
        let text = format!(
            r#"
data_dir: {data}
kafka:
  bootstrap_servers: "{bootstrap}"
{services}{extra}
connectors:
  - name: sink
    type: http
    topic: {topic}
{sink}
"#,
            data = self.dir.path().display(),
            bootstrap = self.broker.bootstrap,
            services = services_yaml(self.admin),
            topic = self.topic,
        );
        std::fs::write(&path, text).expect("write config");
        path
    }

    pub fn run(&self, config: &std::path::Path) -> FerryProcess {
        self.run_with(config, &[])
    }

    pub fn run_with(&self, config: &std::path::Path, env: &[(&str, String)]) -> FerryProcess {
        let cfg = config.display().to_string();
        let mut p = FerryProcess::spawn(&ferry_bin(), &["run", &cfg], &repo_root(), env);
        p.wait_for_stdout("Press Ctrl-C to stop.", Duration::from_secs(90));
        p
    }

    /// The sink connector's entry on `/connectors`.
    pub fn status(&self) -> serde_json::Value {
        let (_, body) = http_get(self.admin, "/connectors").unwrap_or_default();
        let all: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        all.as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == "sink").cloned())
            .unwrap_or_default()
    }

    /// The offset the sink's group (the default one) committed on
    /// partition 0 (None: nothing).
    pub fn committed(&self) -> Option<i64> {
        self.committed_by("ferry-sink-sink")
    }

    pub fn committed_by(&self, group: &str) -> Option<i64> {
        committed_offset(&self.broker.bootstrap, group, &self.topic)
    }

    /// How many records the sink's dead-letter topic holds.
    pub fn dead_letters_count(&self) -> i64 {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.broker.bootstrap)
            .create()
            .expect("consumer");
        c.fetch_watermarks("sink.dlq", 0, Duration::from_secs(10))
            .map_or(0, |(low, high)| high - low)
    }

    /// Every record in the sink's dead-letter topic (`sink.dlq`), in order.
    pub fn dead_letters(&self) -> Vec<Letter> {
        self.records_of("sink.dlq")
    }

    /// Every record of partition 0 of `topic`, in order.
    pub fn records_of(&self, topic: &str) -> Vec<Letter> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.broker.bootstrap)
            .set("group.id", "dlq-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let (_, high) = c
            .fetch_watermarks(topic, 0, Duration::from_secs(10))
            .expect("the dead-letter topic exists");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .expect("partition");
        c.assign(&tpl).expect("assign");
        let mut letters = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while (letters.len() as i64) < high {
            assert!(
                Instant::now() < deadline,
                "read {} of {high}",
                letters.len()
            );
            if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
                use rdkafka::message::Headers;
                use rdkafka::Message;
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                letters.push(Letter {
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
        }
        letters
    }

    pub async fn stop(self) {
        self.broker.stop().await;
    }
}

/// A record of a dead-letter topic.
#[derive(Debug)]
pub struct Letter {
    pub key: Option<String>,
    pub value: Vec<u8>,
    pub headers: std::collections::BTreeMap<String, String>,
}

/// The offset `group` committed on partition 0 of `topic` (None: nothing).
/// Blocking: async callers run it on a blocking thread.
pub fn committed_offset(bootstrap: &str, group: &str, topic: &str) -> Option<i64> {
    committed_offsets(bootstrap, group, topic, 1)
        .into_iter()
        .next()
        .flatten()
}

/// The offsets `group` committed on partitions `0..partitions` of `topic`
/// (None: nothing). Blocking.
pub fn committed_offsets(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Vec<Option<i64>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|p| p.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            },
        )
        .collect()
}

/// Creates `topics`, one partition each (tansu does not create topics on use).
pub async fn create_topics(bootstrap: &str, topics: &[&str]) {
    create_topics_with(bootstrap, topics, 1).await;
}

/// Creates `topics`, `partitions` each.
pub async fn create_topics_with(bootstrap: &str, topics: &[&str], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let created = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
}
