//! The dead-letter topic of a sink (`<connector>.dlq` unless configured): a
//! record the sink cannot deliver — its value cannot be decoded, the target
//! refused it for good, or (`ordering: relaxed`) it kept failing past
//! `retry.max_elapsed` — goes there with its original key, value and
//! headers, plus headers saying why ([`super::headers::dead_letter`]). The
//! sink then goes on with the next record. The dead letter is acknowledged
//! by Kafka before the record's offset is stored, so a crash in between
//! repeats it (a duplicate dead letter), never loses it.
//!
//! **Retry topics** (`ordering: relaxed`). A record still failing
//! `retry.max_elapsed` after its first failure first waits in each retry
//! topic in turn (`<connector>.retry.1m`, `.10m`, `.1h` by default), which
//! the sink also consumes: a retry topic's partition pauses until its head
//! record's time has come (`ferry-retry-not-before-ms`), so the rest of
//! the source partition flows meanwhile. Tried again and failing in a way
//! that may pass, it moves to the next retry topic; after the last, to the
//! dead-letter topic. Its source coordinates, first failure time and
//! attempt count travel with it.
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
use crate::schema::envelope::now_millis;
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
    /// A source's mapping (or the topic's schema) refused its payload.
    Mapping,
    /// `fallback: { topic }`: the target was unavailable, the record was
    /// parked instead of waiting.
    Parked,
}

impl Class {
    /// Every class, for commands that filter by it.
    pub const ALL: [Self; 5] = [
        Self::Decode,
        Self::Rejected,
        Self::RetriesExhausted,
        Self::Parked,
        Self::Mapping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Rejected => "rejected",
            Self::RetriesExhausted => "retries_exhausted",
            Self::Parked => "parked",
            Self::Mapping => "mapping",
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
    /// Retry topics and their delays, in order.
    stages: Vec<(String, Duration)>,
    /// The parking topic (`fallback: { topic }`).
    park: Option<String>,
}

/// Where a record that is given up on goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The dead-letter topic.
    Dead,
    /// Retry topic number `n`.
    Retry(usize),
    /// The parking topic.
    Park,
}

impl DeadLetters {
    pub fn new(
        producer: KafkaProducer,
        topic: &str,
        connector: &str,
        stages: Vec<(String, Duration)>,
        park: Option<String>,
    ) -> Self {
        Self {
            producer,
            topic: topic.to_owned(),
            connector: connector.to_owned(),
            stages,
            park,
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topics records come back on: the replay topics (of the
    /// dead-letter topic and of the parking topic) and the retry topics.
    pub fn returning_topics(&self) -> Vec<String> {
        let mut topics = vec![replay_topic(&self.topic)];
        topics.extend(self.park.as_deref().map(replay_topic));
        topics.extend(self.stages.iter().map(|(t, _)| t.clone()));
        topics
    }

    /// The retry topics and their delays, in order.
    pub fn retry_topics(&self) -> impl Iterator<Item = (&str, Duration)> {
        self.stages.iter().map(|(t, d)| (t.as_str(), *d))
    }

    /// The retry topic `topic` is, by its place in the order.
    pub fn stage_of(&self, topic: &str) -> Option<usize> {
        self.stages.iter().position(|(t, _)| t == topic)
    }

    /// Whether `topic` is one this sink's own records come back on (a
    /// retry topic, or the replay topic).
    fn is_ours(&self, topic: &str) -> bool {
        self.stage_of(topic).is_some()
            || topic == replay_topic(&self.topic)
            || self.park.as_ref().is_some_and(|p| topic == replay_topic(p))
    }

    /// Where `record`, given up on for `class`, goes: a record that may yet
    /// pass goes to the next retry topic while there is one.
    pub fn destination(&self, record: &SinkRecord, class: Class) -> Destination {
        if class == Class::Parked && self.park.is_some() {
            return Destination::Park;
        }
        if class != Class::RetriesExhausted {
            return Destination::Dead;
        }
        let next = self.stage_of(&record.topic).map_or(0, |s| s + 1);
        if next < self.stages.len() {
            Destination::Retry(next)
        } else {
            Destination::Dead
        }
    }

    /// The record for `destination`: `record`'s key, value and headers as
    /// they were in Kafka (earlier dead-letter headers replaced), plus why.
    pub fn letter(
        &self,
        record: &SinkRecord,
        failure: &Failure,
        destination: Destination,
    ) -> OutgoingRecord {
        // A record back from a retry topic or a replay keeps the coordinates
        // it first failed at, and its history.
        let replayed = self.is_ours(&record.topic);
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
        for (name, value) in &failure.error.details {
            add(name, value.clone());
        }
        let earlier = |name: &str| {
            if replayed {
                header(name).and_then(|v| v.parse::<i64>().ok())
            } else {
                None
            }
        };
        let attempts = i64::from(failure.attempts) + earlier(h::ATTEMPTS).unwrap_or(0);
        let first_ms =
            earlier(h::FIRST_FAILURE_MS).map_or(failure.first_ms, |f| f.min(failure.first_ms));
        add(h::ATTEMPTS, attempts.to_string());
        add(h::FIRST_FAILURE_MS, first_ms.to_string());
        add(h::LAST_FAILURE_MS, failure.last_ms.to_string());
        add(h::CONNECTOR, self.connector.clone());
        add(h::SOURCE_TOPIC, source_topic);
        add(h::SOURCE_PARTITION, source_partition);
        add(h::SOURCE_OFFSET, source_offset);
        let topic = match destination {
            Destination::Retry(n) if n < self.stages.len() => {
                let (topic, delay) = &self.stages[n];
                add(h::RETRY_STAGE, n.to_string());
                let delay = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                add(
                    h::RETRY_NOT_BEFORE_MS,
                    now_millis().saturating_add(delay).to_string(),
                );
                topic.clone()
            }
            Destination::Park => self.park.clone().unwrap_or_else(|| self.topic.clone()),
            _ => self.topic.clone(),
        };
        OutgoingRecord {
            topic,
            key: record.raw_key.clone(),
            payload: record.raw.clone(),
            headers: out,
            partition: None,
        }
    }

    /// Sends the record where it goes and waits until Kafka has it, trying
    /// again with backoff while the failure may pass (the record's offset
    /// is not stored meanwhile; a stop drops the wait and the record is
    /// read again). A failure that will not pass (the record too large for
    /// the topic, the topic not writable) is the connector's: it stops.
    pub async fn send(&self, record: &SinkRecord, failure: &Failure) -> Result<(), ConnectorError> {
        use rdkafka::types::RDKafkaErrorCode as C;
        let destination = self.destination(record, failure.class);
        let mut letter = self.letter(record, failure, destination);
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            match self.producer.send(letter.clone()).await {
                Ok(_) => break,
                Err(e) if !e.is_retryable() => {
                    let code = e.source.rdkafka_error_code();
                    let too_large =
                        matches!(code, Some(C::MessageSizeTooLarge | C::InvalidMessageSize));
                    if too_large && letter.payload.is_some() {
                        // The headers pushed a record near the size limit
                        // over it: the dead letter goes without the value
                        // (still in the source topic at its offset), saying so.
                        let size = letter.payload.take().map_or(0, |p| p.len());
                        letter
                            .headers
                            .push((h::VALUE_OMITTED.to_owned(), size.to_string().into_bytes()));
                        continue;
                    }
                    let why = format!(
                        "record {} could not be written to `{}` ({e}); the connector stops rather than drop it",
                        record.at(),
                        letter.topic
                    );
                    // Topic not there or not writable yet (an ACL still
                    // propagating): start over with backoff. Anything else
                    // will not pass by retrying.
                    let passing = matches!(
                        code,
                        Some(
                            C::TopicAuthorizationFailed
                                | C::UnknownTopicOrPartition
                                | C::UnknownTopic
                        )
                    );
                    let error = if passing {
                        ConnectorError::external(why)
                    } else {
                        ConnectorError::user(why)
                    };
                    return Err(error.for_connector());
                }
                Err(e) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(connector = %self.connector, topic = %letter.topic, at = %record.at(), error = %e, retry_in = ?wait, "writing a dead letter failed; trying again (the record's offset waits)");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        if let Destination::Retry(n) = destination {
            metrics::counter!(m::RETRY_TOPIC_RECORDS_TOTAL, "connector" => self.connector.clone())
                .increment(1);
            tracing::warn!(
                connector = %self.connector,
                at = %record.at(),
                retry_topic = %letter.topic,
                stage = n,
                correlation_id = %record.correlation_id,
                error = %failure.error,
                "record still failing; it waits in a retry topic and its partition flows on"
            );
            return Ok(());
        }
        if destination == Destination::Park {
            metrics::counter!(m::PARKED_RECORDS_TOTAL, "connector" => self.connector.clone())
                .increment(1);
            tracing::warn!(
                connector = %self.connector,
                at = %record.at(),
                parking_topic = %letter.topic,
                correlation_id = %record.correlation_id,
                error = %failure.error,
                "target unavailable; record parked (fallback), its partition flows on"
            );
            return Ok(());
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::KafkaConfig;

    fn letters() -> DeadLetters {
        // librdkafka connects lazily: nothing is sent in these tests.
        let producer =
            KafkaProducer::new(&KafkaConfig::default(), "127.0.0.1:1").expect("producer");
        DeadLetters::new(
            producer,
            "crm.dlq",
            "crm",
            vec![
                ("crm.retry.1m".into(), Duration::from_secs(60)),
                ("crm.retry.10m".into(), Duration::from_secs(600)),
            ],
            None,
        )
    }

    fn record(topic: &str, headers: Vec<(String, Vec<u8>)>) -> SinkRecord {
        SinkRecord {
            topic: topic.into(),
            partition: 2,
            offset: 41,
            timestamp: None,
            key: Some("k".into()),
            raw_key: Some(b"k".to_vec()),
            value: serde_json::Value::Null,
            raw: Some(vec![0, 1, 2]),
            headers,
            correlation_id: "corr".into(),
        }
    }

    fn failure(class: Class, attempts: u32, first_ms: i64) -> Failure {
        Failure {
            class,
            error: ConnectorError::http_status(503, "HTTP 503"),
            attempts,
            first_ms,
            last_ms: first_ms + 5,
        }
    }

    fn get<'a>(r: &'a OutgoingRecord, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    #[test]
    fn a_record_given_up_on_walks_the_retry_topics_then_the_dead_letter_topic() {
        let l = letters();
        let rejected = record("crm.contacts", vec![]);
        assert_eq!(l.destination(&rejected, Class::Rejected), Destination::Dead);
        assert_eq!(l.destination(&rejected, Class::Decode), Destination::Dead);
        let mut r = record("crm.contacts", vec![("app".into(), b"x".to_vec())]);
        let mut attempts = 0;
        for (stage, expected) in [
            (0, Destination::Retry(0)),
            (1, Destination::Retry(1)),
            (2, Destination::Dead),
        ] {
            let d = l.destination(&r, Class::RetriesExhausted);
            assert_eq!(d, expected, "stage {stage}");
            let out = l.letter(&r, &failure(Class::RetriesExhausted, 3, 1_000 + stage), d);
            attempts += 3;
            // Coordinates, first failure and attempts travel with it.
            assert_eq!(get(&out, h::SOURCE_TOPIC), Some("crm.contacts"));
            assert_eq!(get(&out, h::SOURCE_PARTITION), Some("2"));
            assert_eq!(get(&out, h::SOURCE_OFFSET), Some("41"));
            assert_eq!(get(&out, h::FIRST_FAILURE_MS), Some("1000"));
            assert_eq!(get(&out, h::ATTEMPTS), Some(attempts.to_string().as_str()));
            assert_eq!(get(&out, "app"), Some("x"), "the record's own headers");
            assert_eq!(out.payload.as_deref(), Some(&[0u8, 1, 2][..]));
            assert_eq!(out.key.as_deref(), Some(&b"k"[..]));
            match d {
                Destination::Retry(n) => {
                    assert_eq!(out.topic, l.stages[n].0);
                    assert_eq!(get(&out, h::RETRY_STAGE), Some(n.to_string().as_str()));
                    let not_before: i64 = get(&out, h::RETRY_NOT_BEFORE_MS)
                        .and_then(|v| v.parse().ok())
                        .expect("not before");
                    assert!(not_before >= now_millis() + 59_000);
                }
                Destination::Park => panic!("nothing is parked without a parking topic"),
                Destination::Dead => {
                    assert_eq!(out.topic, "crm.dlq");
                    assert_eq!(get(&out, h::RETRY_STAGE), None);
                    assert_eq!(get(&out, h::ERROR_CLASS), Some("retries_exhausted"));
                    assert_eq!(get(&out, h::ERROR_STATUS), Some("503"));
                }
            }
            // As the sink reads it back from where it went.
            r = record(&out.topic, out.headers.clone());
        }
    }

    #[test]
    fn with_a_parking_topic_an_unavailable_target_parks_the_record() {
        let producer =
            KafkaProducer::new(&KafkaConfig::default(), "127.0.0.1:1").expect("producer");
        let l = DeadLetters::new(
            producer,
            "crm.dlq",
            "crm",
            Vec::new(),
            Some("crm.parked".into()),
        );
        let r = record("crm.contacts", vec![]);
        assert_eq!(l.destination(&r, Class::Parked), Destination::Park);
        assert_eq!(l.destination(&r, Class::Rejected), Destination::Dead);
        let out = l.letter(&r, &failure(Class::Parked, 8, 10), Destination::Park);
        assert_eq!(out.topic, "crm.parked");
        assert_eq!(get(&out, h::ERROR_CLASS), Some("parked"));
        // Replayed from the parking topic (`ferry dlq replay` drops the
        // failure history but keeps the source coordinates) and refused
        // for good: the dead letter names where it first came from.
        let replayed: Vec<(String, Vec<u8>)> = out
            .headers
            .iter()
            .filter(|(k, _)| {
                ![h::ATTEMPTS, h::FIRST_FAILURE_MS, h::LAST_FAILURE_MS].contains(&k.as_str())
            })
            .cloned()
            .collect();
        let back = record("crm.parked.replay", replayed);
        let dead = l.letter(&back, &failure(Class::Rejected, 1, 20), Destination::Dead);
        assert_eq!(dead.topic, "crm.dlq");
        assert_eq!(get(&dead, h::SOURCE_TOPIC), Some("crm.contacts"));
        assert_eq!(get(&dead, h::SOURCE_OFFSET), Some("41"));
        assert_eq!(get(&dead, h::ATTEMPTS), Some("1"));
        assert_eq!(get(&dead, h::ERROR_CLASS), Some("rejected"));
    }

    #[test]
    fn a_new_failure_does_not_borrow_another_records_history() {
        let l = letters();
        // Headers that look like ours on a record of the source topic (a
        // dead letter copied there by hand) are not trusted.
        let r = record(
            "crm.contacts",
            vec![
                (h::SOURCE_OFFSET.into(), b"7".to_vec()),
                (h::ATTEMPTS.into(), b"99".to_vec()),
            ],
        );
        let out = l.letter(&r, &failure(Class::Rejected, 1, 5), Destination::Dead);
        assert_eq!(get(&out, h::SOURCE_OFFSET), Some("41"));
        assert_eq!(get(&out, h::ATTEMPTS), Some("1"));
        assert_eq!(
            out.headers
                .iter()
                .filter(|(k, _)| k == h::SOURCE_OFFSET)
                .count(),
            1,
            "earlier dead-letter headers are replaced, not repeated"
        );
    }
}
