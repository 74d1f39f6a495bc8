//! Runs one sink: consume, decode, hand batches to the sink, store offsets
//! only for what the sink acknowledged.
//!
//! One batch is in the sink at a time, so order per Kafka partition (and so
//! per key) is kept. What the task holds in memory is bounded by
//! `max_in_flight_records` / `max_in_flight_bytes` plus librdkafka's
//! prefetch queue (`kafka.consumer.prefetch_kbytes`). At the bound the task
//! stops taking records, and librdkafka stops fetching once its queue is
//! full. If the bound holds for `PAUSE_AFTER` (the target is down, not just
//! slow), every assigned partition is paused, which also frees the prefetch
//! queue, and the task reports PAUSED. The consumer keeps polling while
//! paused (a tick re-polls every second), so it stays in its group however
//! long the target is down; the backlog waits in Kafka, not in Ferry.
//! Pausing only after a while matters: each pause throws away what
//! librdkafka prefetched, so pausing at every brief stall would refetch it
//! again and again.

use super::headers;
use super::source_task::Exit;
use super::supervisor::TaskHandle;
use super::Shutdown;
use crate::error::ConnectorError;
use crate::kafka::{KafkaConfig, KafkaConsumer};
use crate::resilience::Backoff;
use crate::schema::json::to_json;
use crate::schema::registry::Codecs;
use crate::schema::MAGIC_BYTE;
use crate::sink::{BoxedSink, SinkContext, SinkRecord};
use crate::telemetry::metrics as m;
use base64::Engine;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::Message;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How a sink task consumes and batches.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    pub topics: Vec<String>,
    pub group_id: String,
    /// Most records per `write`.
    pub batch_max_records: usize,
    /// Most bytes (of values) per `write`.
    pub batch_max_bytes: usize,
    /// How long a partial batch waits for more records.
    pub batch_max_wait: Duration,
    /// Records held in memory (buffered and in the sink) before consumption pauses.
    pub max_in_flight_records: usize,
    /// Bytes held in memory before consumption pauses.
    pub max_in_flight_bytes: usize,
    /// How long shutdown waits for the batch in the sink.
    pub drain_within: Duration,
}

/// How long the in-flight bound must hold before partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_secs(5);

/// Offsets a written batch covers: the last offset per topic-partition.
type Written = BTreeMap<(String, i32), i64>;

/// What a sink task runs against.
pub(crate) struct SinkEnv<'a> {
    pub kafka: &'a KafkaConfig,
    pub bootstrap: &'a str,
    pub codecs: &'a Codecs,
    pub shutdown: &'a Shutdown,
    pub handle: &'a TaskHandle,
}

pub(crate) async fn run(
    name: &str,
    sink: BoxedSink,
    settings: &SinkSettings,
    env: SinkEnv<'_>,
) -> Result<Exit, ConnectorError> {
    let SinkEnv {
        kafka,
        bootstrap,
        codecs,
        shutdown,
        handle,
    } = env;
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    let consumer = KafkaConsumer::subscribe(kafka, bootstrap, &settings.group_id, &topics)
        .map_err(|e| ConnectorError::external(e.to_string()))?;
    let mut sink = sink;
    sink.0
        .open(&SinkContext {
            name: name.to_owned(),
        })
        .await?;

    // The writer owns the sink; one batch at a time.
    let (batch_tx, mut batch_rx) = mpsc::channel::<Vec<SinkRecord>>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<Result<Written, ConnectorError>>(1);
    let abandon = Shutdown::new();
    let writer_abandon = abandon.clone();
    let writer_name = name.to_owned();
    let writer = tokio::spawn(async move {
        while let Some(batch) = batch_rx.recv().await {
            let outcome = write_with_retry(&writer_name, &mut sink, &batch, &writer_abandon).await;
            if done_tx.send(outcome).await.is_err() {
                return;
            }
        }
    });

    let in_flight_gauge =
        metrics::gauge!(m::SINK_IN_FLIGHT_RECORDS, "connector" => name.to_owned());
    let mut buffer: VecDeque<SinkRecord> = VecDeque::new();
    let mut buffered_bytes = 0usize;
    let mut in_sink: Option<(usize, usize)> = None; // (records, bytes)
    let mut oldest: Option<Instant> = None;
    let mut paused = false;
    let mut full_since: Option<Instant> = None;
    // Per topic-partition, the offset after the last record taken.
    let mut next_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut stopping = false;
    let mut drain_deadline = None;
    let outcome: Result<(), ConnectorError> = loop {
        let (sink_records, sink_bytes) = in_sink.unwrap_or((0, 0));
        let held = buffer.len() + sink_records;
        let held_bytes = buffered_bytes + sink_bytes;
        in_flight_gauge.set(held as f64);

        // Hand the writer a batch when it is free and a batch is due.
        let due = !buffer.is_empty()
            && (buffer.len() >= settings.batch_max_records
                || buffered_bytes >= settings.batch_max_bytes
                || oldest.is_some_and(|t| t.elapsed() >= settings.batch_max_wait));
        if in_sink.is_none() && due && !stopping {
            let mut batch = Vec::new();
            let mut bytes = 0;
            while let Some(r) = buffer.front() {
                if batch.len() >= settings.batch_max_records
                    || (!batch.is_empty() && bytes + r.size() > settings.batch_max_bytes)
                {
                    break;
                }
                bytes += r.size();
                batch.extend(buffer.pop_front());
            }
            buffered_bytes -= bytes;
            oldest = if buffer.is_empty() {
                None
            } else {
                Some(Instant::now())
            };
            in_sink = Some((batch.len(), bytes));
            if batch_tx.send(batch).await.is_err() {
                break Err(ConnectorError::internal("sink writer stopped"));
            }
            continue;
        }
        if stopping && in_sink.is_none() {
            break Ok(());
        }

        // Backpressure: stop taking records at the bound; pause the
        // partitions if it holds for a while; resume below half of it.
        let full =
            held >= settings.max_in_flight_records || held_bytes >= settings.max_in_flight_bytes;
        let low = held <= settings.max_in_flight_records / 2
            && held_bytes <= settings.max_in_flight_bytes / 2;
        if full {
            let since = *full_since.get_or_insert_with(Instant::now);
            if !paused && since.elapsed() >= PAUSE_AFTER {
                set_paused(&consumer, true)?;
                paused = true;
                handle.paused(format!(
                    "target not keeping up: {held} record(s) in flight for {:?}; partitions paused",
                    since.elapsed()
                ));
            }
        } else {
            full_since = None;
        }
        if paused && low {
            // Pausing dropped librdkafka's prefetched records; fetch again
            // from the record after the last one taken, whatever position
            // librdkafka (or the broker) would resume from.
            seek_to(&consumer, &next_offsets)?;
            set_paused(&consumer, false)?;
            paused = false;
            handle.running();
        }
        // Take records unless at the bound; while paused, keep polling so
        // the group does not evict this member (paused partitions yield none).
        let take = !stopping && (!full || paused);

        let wake = match oldest {
            Some(t) if in_sink.is_none() => t + settings.batch_max_wait,
            _ => Instant::now() + Duration::from_secs(1),
        };
        tokio::select! {
            _ = shutdown.cancelled(), if !stopping => {
                stopping = true;
                drain_deadline = Some(Instant::now() + settings.drain_within);
            }
            _ = tokio::time::sleep_until(drain_deadline.unwrap_or(wake)), if stopping => {
                tracing::warn!(connector = name, "sink did not finish its batch in time; it will be delivered again after restart");
                abandon.cancel();
                break Ok(());
            }
            msg = consumer.recv(), if take => {
                let owned = msg.map_err(|e| ConnectorError::external(e.to_string()))?.detach();
                next_offsets.insert((owned.topic().to_owned(), owned.partition()), owned.offset() + 1);
                let record = decode(codecs, owned).await?;
                buffered_bytes += record.size();
                oldest.get_or_insert_with(Instant::now);
                buffer.push_back(record);
                if paused {
                    // Partitions assigned by a rebalance since the pause start unpaused.
                    set_paused(&consumer, true)?;
                }
            }
            done = done_rx.recv() => {
                in_sink = None;
                match done {
                    Some(Ok(written)) => {
                        for ((topic, partition), offset) in &written {
                            consumer
                                .mark_position(topic, *partition, *offset)
                                .map_err(|e| ConnectorError::internal(e.to_string()))?;
                        }
                    }
                    Some(Err(e)) => break Err(e),
                    None => break Err(ConnectorError::internal("sink writer stopped")),
                }
            }
            _ = tokio::time::sleep_until(wake), if !stopping => {}
        }
    };
    drop(batch_tx);
    abandon.cancel();
    let _ = writer.await;
    // Whatever was acknowledged is committed now, even when stopping on an error.
    if let Err(e) = consumer.commit() {
        tracing::warn!(connector = name, error = %e, "committing sink offsets at stop failed; they will be redelivered");
    }
    in_flight_gauge.set(0.0);
    outcome.map(|()| Exit::Stopped)
}

fn set_paused(consumer: &KafkaConsumer, pause: bool) -> Result<(), ConnectorError> {
    let c = consumer.client();
    let assignment = c
        .assignment()
        .map_err(|e| ConnectorError::internal(format!("reading the assignment: {e}")))?;
    if assignment.count() == 0 {
        return Ok(());
    }
    let r = if pause {
        c.pause(&assignment)
    } else {
        c.resume(&assignment)
    };
    r.map_err(|e| ConnectorError::internal(format!("pausing/resuming partitions: {e}")))
}

/// Points each assigned partition we have taken records from at the
/// record after the last one taken.
fn seek_to(
    consumer: &KafkaConsumer,
    next_offsets: &BTreeMap<(String, i32), i64>,
) -> Result<(), ConnectorError> {
    let c = consumer.client();
    let assignment = c
        .assignment()
        .map_err(|e| ConnectorError::internal(format!("reading the assignment: {e}")))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for e in assignment.elements() {
        if let Some(next) = next_offsets.get(&(e.topic().to_owned(), e.partition())) {
            tpl.add_partition_offset(e.topic(), e.partition(), rdkafka::Offset::Offset(*next))
                .map_err(|e| ConnectorError::internal(format!("seek list: {e}")))?;
        }
    }
    if tpl.count() == 0 {
        return Ok(());
    }
    tokio::task::block_in_place(|| c.seek_partitions(tpl, Duration::from_secs(10)))
        .map_err(|e| ConnectorError::external(format!("seeking before resume: {e}")))?;
    Ok(())
}

async fn write_with_retry(
    name: &str,
    sink: &mut BoxedSink,
    batch: &[SinkRecord],
    abandon: &Shutdown,
) -> Result<Written, ConnectorError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let mut done = 0;
    while done < batch.len() {
        match sink.0.write(&batch[done..]).await {
            Ok(()) => done = batch.len(),
            Err(f) => {
                done += f.written.min(batch.len() - done);
                metrics::counter!(m::SINK_ERRORS_TOTAL, "connector" => name.to_owned(), "stage" => "sending").increment(1);
                let at = batch.get(done).map_or_else(String::new, |r| {
                    format!(" at {}/{}@{}", r.topic, r.partition, r.offset)
                });
                if !f.error.is_retryable() {
                    return Err(ConnectorError {
                        message: format!("connector `{name}`: write failed{at}: {}", f.error),
                        ..f.error
                    });
                }
                let wait = backoff.next_delay();
                tracing::warn!(connector = name, error = %f.error, retry_in = ?wait, "sink write failed{at}; retrying");
                tokio::select! {
                    _ = abandon.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    metrics::counter!(m::SINK_RECORDS_TOTAL, "connector" => name.to_owned()).increment(done as u64);
    let mut written = Written::new();
    for r in &batch[..done] {
        written.insert((r.topic.clone(), r.partition), r.offset);
    }
    Ok(written)
}

/// A consumed message as the sink sees it.
async fn decode(codecs: &Codecs, msg: OwnedMessage) -> Result<SinkRecord, ConnectorError> {
    let at = format!("{}/{}@{}", msg.topic(), msg.partition(), msg.offset());
    let headers: Vec<(String, Vec<u8>)> = msg
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    let correlation_id = headers
        .iter()
        .find(|(k, _)| k == headers::CORRELATION_ID)
        .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let value = match msg.payload() {
        None => serde_json::Value::Null,
        Some(b) if b.len() >= 5 && b[0] == MAGIC_BYTE => match codecs.decode(b).await {
            Ok((codec, v)) => to_json(codec.schema(), &v),
            Err(e) if e.is_retryable() => {
                return Err(ConnectorError::external(format!("decoding {at}: {e}")))
            }
            Err(e) => return Err(ConnectorError::user(format!("decoding {at}: {e}"))),
        },
        Some(b) => match std::str::from_utf8(b) {
            Ok(text) => serde_json::from_str(text)
                .unwrap_or_else(|_| serde_json::Value::String(text.to_owned())),
            Err(_) => {
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(b))
            }
        },
    };
    let key = msg.key().map(|k| match std::str::from_utf8(k) {
        Ok(s) => s.to_owned(),
        Err(_) => base64::engine::general_purpose::STANDARD.encode(k),
    });
    Ok(SinkRecord {
        topic: msg.topic().to_owned(),
        partition: msg.partition(),
        offset: msg.offset(),
        timestamp: msg.timestamp().to_millis(),
        key,
        value,
        raw: msg.payload().map(<[u8]>::to_vec),
        headers,
        correlation_id,
    })
}
