//! The dead-letter topic of a sink (`<connector>.dlq` unless configured): a
//! record the sink cannot deliver — its value cannot be decoded, the target
//! refused it for good, or (`ordering: relaxed`) it kept failing past
//! `retry.max_elapsed` — goes there with its original key, value and
//! headers, plus headers saying why ([`super::headers::dead_letter`]). The
//! sink then goes on with the next record. The dead letter is acknowledged
//! by Kafka before the record's offset is stored, so a crash in between
//! repeats it (a duplicate dead letter), never loses it.
//!
//! **Replay.** Each sink also consumes `<dead-letter topic>.replay`
//! ([`replay_topic`]): `ferry dlq replay` puts dead letters there once their
//! cause is fixed, and the running connector delivers them like any other
//! record. One that fails again returns to the dead-letter topic with its
//! original source coordinates and its replay count (`ferry-dlq-replays`),
//! so it is listed again, never looped: replay reads the dead-letter topic
//! only up to where it ended when the command started.

use super::headers::{self, dead_letter as h};
use crate::error::ConnectorError;
use crate::kafka::{KafkaProducer, OutgoingRecord};
use crate::resilience::Backoff;
use crate::sink::SinkRecord;
use crate::telemetry::{metrics as m, redact};
use std::time::Duration;

/// Why a record is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The value cannot be decoded (bad framing, unknown schema id, bytes
    /// that do not fit the schema).
    Decode,
    /// The target refused the record for good (a 4xx, a 3xx, a mapping it
    /// cannot take).
    Rejected,
    /// `ordering: relaxed`: it kept failing past `retry.max_elapsed`.
    RetriesExhausted,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Rejected => "rejected",
            Self::RetriesExhausted => "retries_exhausted",
        }
    }
}

/// What failed, how often, and when (epoch milliseconds).
#[derive(Debug, Clone)]
pub struct Failure {
    pub class: Class,
    pub error: ConnectorError,
    pub attempts: u32,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// Now, in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The topic `ferry dlq replay` writes a dead-letter topic's records back
/// to, which its sink consumes.
pub fn replay_topic(dead_letter_topic: &str) -> String {
    format!("{dead_letter_topic}.replay")
}

/// Where one sink's dead letters go. Cheap to clone.
#[derive(Clone)]
pub struct DeadLetters {
    producer: KafkaProducer,
    topic: String,
    connector: String,
}

impl DeadLetters {
    pub fn new(producer: KafkaProducer, topic: &str, connector: &str) -> Self {
        Self {
            producer,
            topic: topic.to_owned(),
            connector: connector.to_owned(),
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The dead letter for `record`: its key, value and headers as they were
    /// in Kafka (earlier dead-letter headers replaced), plus why.
    pub fn letter(&self, record: &SinkRecord, failure: &Failure) -> OutgoingRecord {
        // A replayed record keeps the coordinates it first failed at.
        let replayed = record.topic == replay_topic(&self.topic);
        let header = |name: &str| {
            record
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let (source_topic, source_partition, source_offset) = match (
            replayed,
            header(h::SOURCE_TOPIC),
            header(h::SOURCE_PARTITION),
            header(h::SOURCE_OFFSET),
        ) {
            (true, Some(t), Some(p), Some(o)) => (t, p, o),
            _ => (
                record.topic.clone(),
                record.partition.to_string(),
                record.offset.to_string(),
            ),
        };
        let mut out: Vec<(String, Vec<u8>)> = record
            .headers
            .iter()
            .filter(|(k, _)| !h::ALL.contains(&k.as_str()))
            .cloned()
            .collect();
        if !out.iter().any(|(k, _)| k == headers::CORRELATION_ID) {
            out.push((
                headers::CORRELATION_ID.to_owned(),
                record.correlation_id.clone().into_bytes(),
            ));
        }
        let mut add = |k: &str, v: String| out.push((k.to_owned(), v.into_bytes()));
        add(h::ERROR_CLASS, failure.class.as_str().to_owned());
        if let Some(status) = failure.error.status {
            add(h::ERROR_STATUS, status.to_string());
        }
        let message: String = redact::scrub(&failure.error.message)
            .chars()
            .take(1000)
            .collect();
        add(h::ERROR_MESSAGE, message);
        add(h::ATTEMPTS, failure.attempts.to_string());
        add(h::FIRST_FAILURE_MS, failure.first_ms.to_string());
        add(h::LAST_FAILURE_MS, failure.last_ms.to_string());
        add(h::CONNECTOR, self.connector.clone());
        add(h::SOURCE_TOPIC, source_topic);
        add(h::SOURCE_PARTITION, source_partition);
        add(h::SOURCE_OFFSET, source_offset);
        OutgoingRecord {
            topic: self.topic.clone(),
            key: record.raw_key.clone(),
            payload: record.raw.clone(),
            headers: out,
            partition: None,
        }
    }

    /// Sends the dead letter and waits until Kafka has it, trying again
    /// with backoff for as long as it takes (the record's offset is not
    /// stored meanwhile; a stop drops the wait and the record is read again).
    pub async fn send(&self, record: &SinkRecord, failure: &Failure) {
        let letter = self.letter(record, failure);
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            match self.producer.send(letter.clone()).await {
                Ok(_) => break,
                Err(e) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(connector = %self.connector, topic = %self.topic, at = %record.at(), error = %e, retry_in = ?wait, "writing a dead letter failed; trying again (the record's offset waits)");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        metrics::counter!(m::DEAD_LETTERS_TOTAL, "connector" => self.connector.clone(), "class" => failure.class.as_str())
            .increment(1);
        tracing::warn!(
            connector = %self.connector,
            at = %record.at(),
            class = failure.class.as_str(),
            dead_letter_topic = %self.topic,
            correlation_id = %record.correlation_id,
            error = %failure.error,
            "record dead-lettered; the sink goes on with the next one"
        );
    }
}
