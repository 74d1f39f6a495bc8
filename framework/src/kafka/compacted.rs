//! Reading a compacted topic to its end: the latest value per key, as of the
//! moment of the call. Used for state kept in Kafka (source positions).

use super::{FerryClientContext, KafkaConfig, KafkaLayerError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The latest value of every key in `topic` (tombstoned keys are absent).
/// Blocking: call from `spawn_blocking`.
pub fn read_to_end(
    config: &KafkaConfig,
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, KafkaLayerError> {
    let client_err = |context: &str| {
        let context = format!("{context} `{topic}`");
        move |source| KafkaLayerError::Client { context, source }
    };
    let mut client = config.client_config(bootstrap);
    client
        .set("group.id", format!("ferry-reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer<FerryClientContext> = client
        .create_with_context(FerryClientContext::default())
        .map_err(KafkaLayerError::ClientConfig)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(client_err("reading metadata of"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, timeout)
            .map_err(client_err("reading the end offsets of"))?;
        if high > low {
            ends.insert(*p, high);
            tpl.add_partition_offset(topic, *p, Offset::Beginning)
                .map_err(client_err("assigning"))?;
        }
    }
    let mut latest = BTreeMap::new();
    if ends.is_empty() {
        return Ok(latest);
    }
    consumer.assign(&tpl).map_err(client_err("assigning"))?;
    let deadline = Instant::now() + timeout;
    while !ends.is_empty() {
        if Instant::now() > deadline {
            return Err(KafkaLayerError::Topic {
                topic: topic.to_owned(),
                message: format!("not read to its end within {timeout:?}"),
            });
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg.map_err(client_err("reading"))?;
        if let Some(key) = msg.key() {
            match msg.payload() {
                Some(v) => latest.insert(key.to_vec(), v.to_vec()),
                None => latest.remove(key),
            };
        }
        if ends
            .get(&msg.partition())
            .is_some_and(|end| msg.offset() + 1 >= *end)
        {
            ends.remove(&msg.partition());
        }
    }
    Ok(latest)
}
