//! `ferry dlq list|replay TOPIC`: look into a sink's dead-letter topic, and
//! put dead letters back once their cause is fixed.
//!
//! **Reading.** Both commands read the topic from its beginning up to the
//! end offsets it had when the command started (partitions assigned
//! directly, no consumer group, nothing committed), so what a running sink
//! dead-letters meanwhile — replayed records that fail again included — is
//! never read in the same run: a replay cannot loop.
//!
//! **Replay.** Each selected dead letter goes to `<topic>.replay`, which its
//! sink consumes ([`ferry::runtime::dead_letter`]), with its original key,
//! value and headers, except that the failure headers are dropped (the
//! source coordinates and the connector stay) and `ferry-dlq-replays` goes
//! up by one. It is skipped when:
//! - its source partition holds a newer record with the same key (unless
//!   `--force`): delivering the old value would overwrite newer data at the
//!   target;
//! - a later dead letter of the same source record exists (one that was
//!   replayed and failed again): only the latest is sent, so each run sends
//!   a record at most once and dead letters do not multiply.
//!
//! Replay keeps no memory between runs: a second run sends again what the
//! first sent (narrow it with `--filter`).

use super::output::{bytes_to_json, header_to_json};
use super::{Failure, Target};
use ferry::kafka::OutgoingRecord;
use ferry::kafka::{FerryClientContext, KafkaAdmin, KafkaConfig, KafkaLayerError, KafkaProducer};
use ferry::runtime::dead_letter::replay_topic;
use ferry::runtime::headers::dead_letter as h;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Action {
    /// Count dead letters by class and status, then list them.
    List {
        /// Dead-letter topic (a sink's default is `<connector>.dlq`).
        topic: String,
        /// One JSON object per line: a summary, then one per dead letter.
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters back to their sink (through `<topic>.replay`).
    Replay {
        /// Dead-letter topic (a sink's default is `<connector>.dlq`).
        topic: String,
        /// Only dead letters where KEY is VALUE; repeatable, all must match.
        /// Keys: class, status, key, source_topic, connector.
        #[arg(long = "filter", value_name = "KEY=VALUE", value_parser = Filter::parse)]
        filters: Vec<Filter>,
        /// Replay even when the source partition has a newer record with the same key.
        #[arg(long)]
        force: bool,
        /// Print what would be replayed and skipped; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub(crate) async fn run(target: &Target, action: Action) -> Result<(), Failure> {
    match action {
        Action::List { topic, json } => list(target, &topic, json).await,
        Action::Replay {
            topic,
            filters,
            force,
            dry_run,
        } => replay(target, &topic, &filters, force, dry_run).await,
    }
}

async fn list(target: &Target, topic: &str, as_json: bool) -> Result<(), Failure> {
    let (config, bootstrap) = target.resolve()?;
    let admin = KafkaAdmin::new(&config.kafka, &bootstrap).map_err(Failure::runtime)?;
    let partitions = dead_letter_partitions(&admin, topic).await?;
    let reader = Reader::new(&config.kafka, &bootstrap)?;
    let letters = tokio::task::block_in_place(|| reader.dead_letters(topic, &partitions))?;
    let summary = Summary::of(&letters);
    if as_json {
        println!("{}", summary.to_json(topic));
        for l in &letters {
            println!("{}", l.to_json(topic));
        }
        return Ok(());
    }
    print!("{}", summary.text(topic));
    if !letters.is_empty() {
        println!();
    }
    for l in &letters {
        println!("{}", l.line(topic));
    }
    Ok(())
}

async fn replay(
    target: &Target,
    topic: &str,
    filters: &[Filter],
    force: bool,
    dry_run: bool,
) -> Result<(), Failure> {
    let (config, bootstrap) = target.resolve()?;
    let admin = KafkaAdmin::new(&config.kafka, &bootstrap).map_err(Failure::runtime)?;
    let partitions = dead_letter_partitions(&admin, topic).await?;
    let replay_to = replay_topic(topic);
    match admin.describe(&replay_to).await {
        Ok(_) => {}
        Err(KafkaLayerError::Topic { .. }) => {
            return Err(Failure::Runtime(format!(
                "`{replay_to}` does not exist: start the connector once (ferry up/run) so it creates {replay_to}"
            )))
        }
        Err(e) => return Err(Failure::runtime(e)),
    }
    let reader = Reader::new(&config.kafka, &bootstrap)?;
    let letters = tokio::task::block_in_place(|| reader.dead_letters(topic, &partitions))?;
    let total = letters.len();

    let (latest, superseded) = latest_per_source(letters);
    let selected: Vec<DeadLetter> = latest
        .into_iter()
        .filter(|l| filters.iter().all(|f| f.matches(l)))
        .collect();
    let superseded: Vec<(DeadLetter, At)> = superseded
        .into_iter()
        .filter(|(l, _)| filters.iter().all(|f| f.matches(l)))
        .collect();
    println!(
        "{total} dead letter(s) in `{topic}` (read to its end at start); {} selected",
        selected.len() + superseded.len()
    );

    let newest = if force {
        Latest::new()
    } else {
        tokio::task::block_in_place(|| reader.newest_offsets(&selected))?
    };
    let mut skipped = 0usize;
    for (l, by) in &superseded {
        skipped += 1;
        println!(
            "skipped: {} has a later dead letter at {topic}/{}@{} ({topic}/{}@{})",
            l.origin(topic),
            by.partition,
            by.offset,
            l.partition,
            l.offset
        );
    }
    let mut to_send = Vec::new();
    for l in selected {
        match newer_record(&l, &newest) {
            Some(newer) => {
                skipped += 1;
                println!(
                    "skipped: key {} has a newer record at {newer} ({topic}/{}@{}, from {}); --force replays it",
                    show_key(l.key.as_deref()),
                    l.partition,
                    l.offset,
                    l.origin(topic)
                );
            }
            None => to_send.push(l),
        }
    }

    if dry_run {
        for l in &to_send {
            println!(
                "would replay: {} key={} ({topic}/{}@{}, replay {})",
                l.origin(topic),
                show_key(l.key.as_deref()),
                l.partition,
                l.offset,
                l.replays() + 1
            );
        }
        println!(
            "dry run: would replay {}, skip {skipped}; nothing written",
            to_send.len()
        );
        return Ok(());
    }

    let producer = KafkaProducer::new(&config.kafka, &bootstrap).map_err(Failure::runtime)?;
    let mut pending = Vec::with_capacity(to_send.len());
    for l in &to_send {
        // One at a time into the queue: replays of a key keep their order.
        let delivery = producer
            .enqueue(OutgoingRecord {
                topic: replay_to.clone(),
                key: l.key.clone(),
                payload: l.value.clone(),
                headers: replay_headers(&l.headers),
                partition: None,
            })
            .await;
        pending.push(delivery);
    }
    let mut outcomes = Vec::with_capacity(pending.len());
    for p in pending {
        outcomes.push(match p {
            Ok(p) => p.delivered().await.map(|_| ()),
            Err(e) => Err(e),
        });
    }
    let (mut replayed, mut failed) = (0usize, 0usize);
    for (l, outcome) in to_send.iter().zip(outcomes) {
        match outcome {
            Ok(()) => {
                replayed += 1;
                println!(
                    "replayed: {} key={} ({topic}/{}@{}, replay {})",
                    l.origin(topic),
                    show_key(l.key.as_deref()),
                    l.partition,
                    l.offset,
                    l.replays() + 1
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!(
                    "error: {topic}/{}@{} (key {}) not replayed: {e}",
                    l.partition,
                    l.offset,
                    show_key(l.key.as_deref())
                );
            }
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .await
        .map_err(Failure::runtime)?;
    if failed > 0 {
        println!("replayed {replayed}, skipped {skipped}, failed {failed}");
        return Err(Failure::Runtime(format!(
            "{failed} dead letter(s) not written to `{replay_to}`; they stay in `{topic}`, run the replay again"
        )));
    }
    println!("replayed {replayed}, skipped {skipped}");
    Ok(())
}

/// The partitions of `topic`, which must exist.
async fn dead_letter_partitions(admin: &KafkaAdmin, topic: &str) -> Result<Vec<i32>, Failure> {
    match admin.describe(topic).await {
        Ok(d) => Ok(d.partitions.iter().map(|p| p.id).collect()),
        Err(KafkaLayerError::Topic { .. }) => Err(Failure::Runtime(format!(
            "dead-letter topic `{topic}` does not exist (a sink creates `<connector>.dlq`, or its `dead_letter.topic`, when it starts)"
        ))),
        Err(e) => Err(Failure::runtime(e)),
    }
}

/// A record of a dead-letter topic.
#[derive(Debug, Clone, PartialEq)]
struct DeadLetter {
    /// Where it is in the dead-letter topic.
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
}

/// Where a record is in a topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Coordinates {
    topic: String,
    partition: i32,
    offset: i64,
}

impl fmt::Display for Coordinates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// A position in the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct At {
    partition: i32,
    offset: i64,
}

impl DeadLetter {
    fn from_message(m: &BorrowedMessage<'_>) -> Self {
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|x| (x.key.to_owned(), x.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    /// The last header named `name`, as text.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.header(name).and_then(|v| v.trim().parse().ok())
    }

    fn class(&self) -> &str {
        self.header(h::ERROR_CLASS).unwrap_or("unknown")
    }

    fn status(&self) -> Option<&str> {
        self.header(h::ERROR_STATUS)
    }

    fn replays(&self) -> u32 {
        self.number(h::REPLAYS).unwrap_or(0)
    }

    fn last_failure_ms(&self) -> Option<i64> {
        self.number(h::LAST_FAILURE_MS)
    }

    /// Where the record was when its sink gave up on it.
    fn source(&self) -> Option<Coordinates> {
        Some(Coordinates {
            topic: self.header(h::SOURCE_TOPIC)?.to_owned(),
            partition: self.number(h::SOURCE_PARTITION)?,
            offset: self.number(h::SOURCE_OFFSET)?,
        })
    }

    /// The source coordinates, or where it is in `dlq` when they are missing.
    fn origin(&self, dlq: &str) -> String {
        self.source().map_or_else(
            || {
                format!(
                    "{dlq}/{}@{} (no source headers)",
                    self.partition, self.offset
                )
            },
            |s| s.to_string(),
        )
    }

    /// One line of `dlq list`.
    fn line(&self, dlq: &str) -> String {
        let message: String = self
            .header(h::ERROR_MESSAGE)
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        format!(
            "{} key={} class={} status={} attempts={} replays={} message={:?}",
            self.origin(dlq),
            show_key(self.key.as_deref()),
            self.class(),
            self.status().unwrap_or("-"),
            self.header(h::ATTEMPTS).unwrap_or("-"),
            self.replays(),
            truncate(&message, MESSAGE_CHARS),
        )
    }

    /// One object of `dlq list --json`.
    fn to_json(&self, dlq: &str) -> Value {
        let others: serde_json::Map<String, Value> = self
            .headers
            .iter()
            .filter(|(k, _)| !h::ALL.contains(&k.as_str()) && k != h::REPLAYS)
            .map(|(k, v)| (k.clone(), header_to_json(Some(v))))
            .collect();
        let source = self.source();
        json!({
            "kind": "dead_letter",
            "topic": dlq,
            "partition": self.partition,
            "offset": self.offset,
            "source_topic": source.as_ref().map(|s| s.topic.clone()),
            "source_partition": source.as_ref().map(|s| s.partition),
            "source_offset": source.as_ref().map(|s| s.offset),
            "key": header_to_json(self.key.as_deref()),
            "class": self.class(),
            "status": self.status().map(|s| s.parse::<u16>().map_or_else(|_| json!(s), |n| json!(n))),
            "attempts": self.number::<u32>(h::ATTEMPTS),
            "replays": self.replays(),
            "connector": self.header(h::CONNECTOR),
            "first_failure": self.number::<i64>(h::FIRST_FAILURE_MS).and_then(rfc3339),
            "last_failure": self.last_failure_ms().and_then(rfc3339),
            "message": self.header(h::ERROR_MESSAGE),
            "value": bytes_to_json(self.value.as_deref()),
            "headers": others,
        })
    }
}

const MESSAGE_CHARS: usize = 120;

fn truncate(s: &str, chars: usize) -> String {
    if s.chars().count() <= chars {
        return s.to_owned();
    }
    let mut cut: String = s.chars().take(chars - 1).collect();
    cut.push('…');
    cut
}

/// A key as text when it is printable UTF-8 (quoted when it has spaces),
/// else base64; `(none)` for no key.
fn show_key(key: Option<&[u8]>) -> String {
    use base64::Engine;
    match key.map(std::str::from_utf8) {
        None => "(none)".to_owned(),
        Some(Ok(k))
            if !k.is_empty()
                && !k
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '"') =>
        {
            k.to_owned()
        }
        Some(Ok(k)) if !k.chars().any(char::is_control) => format!("{k:?}"),
        _ => format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(key.unwrap_or_default())
        ),
    }
}

/// Epoch milliseconds as RFC 3339 UTC.
fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// Counts of a set of dead letters.
#[derive(Debug, Default, PartialEq, Eq)]
struct Summary {
    total: usize,
    by_class: BTreeMap<String, usize>,
    /// Within `rejected`, by HTTP status (`none` when it had none).
    rejected_by_status: BTreeMap<String, usize>,
    /// By `ferry-dlq-last-failure-ms`.
    oldest_ms: Option<i64>,
    newest_ms: Option<i64>,
}

impl Summary {
    fn of(letters: &[DeadLetter]) -> Self {
        let mut s = Self {
            total: letters.len(),
            ..Self::default()
        };
        for l in letters {
            *s.by_class.entry(l.class().to_owned()).or_default() += 1;
            if l.class() == "rejected" {
                *s.rejected_by_status
                    .entry(l.status().unwrap_or("none").to_owned())
                    .or_default() += 1;
            }
            if let Some(t) = l.last_failure_ms() {
                s.oldest_ms = Some(s.oldest_ms.map_or(t, |o| o.min(t)));
                s.newest_ms = Some(s.newest_ms.map_or(t, |n| n.max(t)));
            }
        }
        s
    }

    fn text(&self, dlq: &str) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let noun = if self.total == 1 {
            "dead letter"
        } else {
            "dead letters"
        };
        let _ = writeln!(out, "{} {noun} in `{dlq}`", self.total);
        for (class, n) in &self.by_class {
            let _ = write!(out, "  {class}: {n}");
            if class == "rejected" && !self.rejected_by_status.is_empty() {
                let statuses: Vec<String> = self
                    .rejected_by_status
                    .iter()
                    .map(|(s, n)| format!("{s}: {n}"))
                    .collect();
                let _ = write!(out, " (status {})", statuses.join(", "));
            }
            out.push('\n');
        }
        for (name, ms) in [("oldest", self.oldest_ms), ("newest", self.newest_ms)] {
            if let Some(t) = ms.and_then(rfc3339) {
                let _ = writeln!(out, "{name}: {t}");
            }
        }
        out
    }

    fn to_json(&self, dlq: &str) -> Value {
        json!({
            "kind": "summary",
            "topic": dlq,
            "total": self.total,
            "by_class": self.by_class,
            "rejected_by_status": self.rejected_by_status,
            "oldest": self.oldest_ms.and_then(rfc3339),
            "newest": self.newest_ms.and_then(rfc3339),
        })
    }
}

/// One `--filter KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Filter {
    Class(String),
    Status(String),
    Key(Vec<u8>),
    SourceTopic(String),
    Connector(String),
}

const FILTER_KEYS: &str = "class, status, key, source_topic, connector";
// As `ferry::runtime::dead_letter::Class::as_str` spells them.
fn classes() -> Vec<&'static str> {
    ferry::runtime::dead_letter::Class::ALL
        .iter()
        .map(|c| c.as_str())
        .collect()
}

impl Filter {
    fn parse(s: &str) -> Result<Self, String> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not KEY=VALUE (keys: {FILTER_KEYS})"))?;
        if v.is_empty() {
            return Err(format!("`{s}` has no value"));
        }
        match k {
            "class" if classes().contains(&v) => Ok(Self::Class(v.to_owned())),
            "class" => Err(format!(
                "unknown class `{v}` (classes: {})",
                classes().join(", ")
            )),
            "status" => v
                .parse::<u16>()
                .map(|_| Self::Status(v.to_owned()))
                .map_err(|_| format!("status `{v}` is not an HTTP status code")),
            "key" => Ok(Self::Key(v.as_bytes().to_vec())),
            "source_topic" => Ok(Self::SourceTopic(v.to_owned())),
            "connector" => Ok(Self::Connector(v.to_owned())),
            _ => Err(format!("unknown filter key `{k}` (keys: {FILTER_KEYS})")),
        }
    }

    fn matches(&self, l: &DeadLetter) -> bool {
        match self {
            Self::Class(c) => l.class() == c,
            Self::Status(s) => l.status().map(str::trim) == Some(s.as_str()),
            Self::Key(k) => l.key.as_deref() == Some(k.as_slice()),
            Self::SourceTopic(t) => l.header(h::SOURCE_TOPIC) == Some(t.as_str()),
            Self::Connector(c) => l.header(h::CONNECTOR) == Some(c.as_str()),
        }
    }
}

/// The headers a replayed dead letter carries: its own, minus the failure
/// headers (the source coordinates and the connector stay, so a second
/// failure is traced to the same record), with the replay count one higher.
fn replay_headers(headers: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    const KEEP: [&str; 4] = [
        h::SOURCE_TOPIC,
        h::SOURCE_PARTITION,
        h::SOURCE_OFFSET,
        h::CONNECTOR,
    ];
    let previous: u32 = headers
        .iter()
        .rev()
        .find(|(k, _)| k == h::REPLAYS)
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse().ok())
        .unwrap_or(0);
    let mut out: Vec<(String, Vec<u8>)> = headers
        .iter()
        .filter(|(k, _)| {
            k != h::REPLAYS && (KEEP.contains(&k.as_str()) || !h::ALL.contains(&k.as_str()))
        })
        .cloned()
        .collect();
    out.push((
        h::REPLAYS.to_owned(),
        previous.saturating_add(1).to_string().into_bytes(),
    ));
    out
}

/// Of the dead letters of one source record (replayed, then dead-lettered
/// again), the latest; the others come back with where that latest is.
/// Dead letters without source headers are all kept.
fn latest_per_source(letters: Vec<DeadLetter>) -> (Vec<DeadLetter>, Vec<(DeadLetter, At)>) {
    let rank = |l: &DeadLetter| {
        (
            l.replays(),
            l.last_failure_ms().unwrap_or(i64::MIN),
            l.offset,
        )
    };
    let mut best: BTreeMap<Coordinates, (u32, i64, i64, At)> = BTreeMap::new();
    for l in &letters {
        if let Some(src) = l.source() {
            let (r, t, o) = rank(l);
            let at = At {
                partition: l.partition,
                offset: l.offset,
            };
            let entry = best.entry(src).or_insert((r, t, o, at));
            if (r, t, o) > (entry.0, entry.1, entry.2) {
                *entry = (r, t, o, at);
            }
        }
    }
    let mut kept = Vec::new();
    let mut superseded = Vec::new();
    for l in letters {
        let winner = l.source().and_then(|s| best.get(&s)).map(|b| b.3);
        match winner {
            Some(at)
                if at
                    != (At {
                        partition: l.partition,
                        offset: l.offset,
                    }) =>
            {
                superseded.push((l, at));
            }
            _ => kept.push(l),
        }
    }
    (kept, superseded)
}

/// A topic and one of its partitions.
type TopicPartition = (String, i32);

/// Per source partition, the last offset of each key looked for.
type Latest = BTreeMap<TopicPartition, BTreeMap<Vec<u8>, i64>>;

/// Per source partition, where to start scanning and the keys to look for.
type ScanPlan = BTreeMap<TopicPartition, (i64, BTreeSet<Vec<u8>>)>;

/// Per source partition: where to start scanning (just past the oldest
/// dead letter's offset) and the keys to look for. Keyless dead letters
/// and ones without source headers have nothing to compare with.
fn scan_plan(letters: &[DeadLetter]) -> ScanPlan {
    let mut plan = ScanPlan::new();
    for l in letters {
        let (Some(key), Some(src)) = (&l.key, l.source()) else {
            continue;
        };
        let entry = plan
            .entry((src.topic, src.partition))
            .or_insert((src.offset + 1, BTreeSet::new()));
        entry.0 = entry.0.min(src.offset + 1);
        entry.1.insert(key.clone());
    }
    plan
}

/// Where the source partition has a record with the dead letter's key that
/// is newer than the dead letter's own, if it does.
fn newer_record(l: &DeadLetter, latest: &Latest) -> Option<Coordinates> {
    let key = l.key.as_ref()?;
    let src = l.source()?;
    let offset = *latest.get(&(src.topic.clone(), src.partition))?.get(key)?;
    (offset > src.offset).then_some(Coordinates {
        topic: src.topic,
        partition: src.partition,
        offset,
    })
}

/// A consumer that reads partitions between given offsets, outside any
/// group. Blocking: call from `block_in_place`.
struct Reader {
    consumer: BaseConsumer<FerryClientContext>,
    timeout: Duration,
}

impl Reader {
    fn new(kafka: &KafkaConfig, bootstrap: &str) -> Result<Self, Failure> {
        let mut client = kafka.client_config(bootstrap);
        client
            .set("group.id", format!("ferry-dlq-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest");
        let consumer = client
            .create_with_context(FerryClientContext::default())
            .map_err(Failure::runtime)?;
        Ok(Self {
            consumer,
            timeout: kafka.request_timeout,
        })
    }

    /// `(low, high)` watermarks of one partition.
    fn watermarks(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<(i64, i64), rdkafka::error::KafkaError> {
        self.consumer
            .fetch_watermarks(topic, partition, self.timeout)
    }

    /// Every dead letter in `topic` up to its end offsets as they are now,
    /// in partition then offset order.
    fn dead_letters(&self, topic: &str, partitions: &[i32]) -> Result<Vec<DeadLetter>, Failure> {
        let mut ranges = BTreeMap::new();
        for p in partitions {
            let offsets = self.watermarks(topic, *p).map_err(|e| {
                Failure::Runtime(format!("reading the end offset of {topic}/{p}: {e}"))
            })?;
            ranges.insert(*p, offsets);
        }
        let mut letters = Vec::new();
        self.read(topic, &ranges, |m| {
            letters.push(DeadLetter::from_message(m))
        })?;
        letters.sort_by_key(|l| (l.partition, l.offset));
        Ok(letters)
    }

    /// For each source partition of `letters`, the last offset of each of
    /// their keys past the oldest one's offset: one scan per partition, up
    /// to its end offset as it is now.
    fn newest_offsets(&self, letters: &[DeadLetter]) -> Result<Latest, Failure> {
        let mut latest = Latest::new();
        for ((topic, partition), (from, keys)) in scan_plan(letters) {
            let (low, high) = self.watermarks(&topic, partition).map_err(|e| {
                Failure::Runtime(format!(
                    "cannot look for newer records in {topic}/{partition}: {e} (--force replays without looking)"
                ))
            })?;
            let mut found = BTreeMap::new();
            let ranges = BTreeMap::from([(partition, (from.max(low), high))]);
            self.read(&topic, &ranges, |m| {
                if let Some(k) = m.key().filter(|k| keys.contains(*k)) {
                    found.insert(k.to_vec(), m.offset());
                }
            })?;
            latest.insert((topic, partition), found);
        }
        Ok(latest)
    }

    /// Calls `each` with every record of `topic` in `ranges` (partition to
    /// `[from, to)`); records past `to` (written since) are not handed over.
    fn read(
        &self,
        topic: &str,
        ranges: &BTreeMap<i32, (i64, i64)>,
        mut each: impl FnMut(&BorrowedMessage<'_>),
    ) -> Result<(), Failure> {
        // Partition to (next offset to see, end).
        let mut open: BTreeMap<i32, (i64, i64)> = ranges
            .iter()
            .filter(|(_, (from, to))| from < to)
            .map(|(p, r)| (*p, *r))
            .collect();
        if open.is_empty() {
            return Ok(());
        }
        let failed =
            |e: rdkafka::error::KafkaError| Failure::Runtime(format!("reading `{topic}`: {e}"));
        let mut tpl = TopicPartitionList::new();
        for (p, (from, _)) in &open {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*from))
                .map_err(failed)?;
        }
        self.consumer.assign(&tpl).map_err(failed)?;
        // Generous: a broker answers a fetch within its request timeout.
        let stall = self.timeout.max(Duration::from_secs(10)) * 3;
        let mut progress = Instant::now();
        while !open.is_empty() {
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    if let Some((next, end)) = open.get_mut(&m.partition()) {
                        if m.offset() >= *next && m.offset() < *end {
                            each(&m);
                        }
                        *next = (*next).max(m.offset() + 1);
                        progress = Instant::now();
                    }
                }
                Some(Err(e)) => return Err(failed(e)),
                None => {
                    // Offsets without a record (compacted away, transaction
                    // markers) move the position, not the messages.
                    if let Ok(positions) = self.consumer.position() {
                        for e in positions.elements_for_topic(topic) {
                            if let (Offset::Offset(o), Some((next, _))) =
                                (e.offset(), open.get_mut(&e.partition()))
                            {
                                if o > *next {
                                    *next = o;
                                    progress = Instant::now();
                                }
                            }
                        }
                    }
                }
            }
            open.retain(|_, (next, end)| next < end);
            if let Some((p, (next, end))) = open.iter().next() {
                if progress.elapsed() > stall {
                    return Err(Failure::Runtime(format!(
                        "reading `{topic}`: partition {p} stopped at offset {next} of {end} (nothing arrived for {stall:?})"
                    )));
                }
            }
        }
        self.consumer.unassign().map_err(failed)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(offset: i64, key: &str, headers: &[(&str, &str)]) -> DeadLetter {
        DeadLetter {
            partition: 0,
            offset,
            key: Some(key.as_bytes().to_vec()),
            value: Some(format!("{{\"id\":\"{key}\"}}").into_bytes()),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    /// A `rejected` dead letter of `src`/0@`source_offset`.
    fn rejected(offset: i64, key: &str, status: &str, source_offset: i64) -> DeadLetter {
        let so = source_offset.to_string();
        letter(
            offset,
            key,
            &[
                ("ferry-correlation-id", "c-1"),
                (h::ERROR_CLASS, "rejected"),
                (h::ERROR_STATUS, status),
                (h::ERROR_MESSAGE, "HTTP 400 from http://x/ok"),
                (h::ATTEMPTS, "1"),
                (h::FIRST_FAILURE_MS, "1700000000000"),
                (
                    h::LAST_FAILURE_MS,
                    &(1_700_000_000_000 + offset).to_string(),
                ),
                (h::CONNECTOR, "sink"),
                (h::SOURCE_TOPIC, "src"),
                (h::SOURCE_PARTITION, "0"),
                (h::SOURCE_OFFSET, &so),
            ],
        )
    }

    fn with(mut l: DeadLetter, name: &str, value: &str) -> DeadLetter {
        l.headers.retain(|(k, _)| k != name);
        l.headers.push((name.to_owned(), value.as_bytes().to_vec()));
        l
    }

    #[test]
    fn filters_parse_and_refuse_clearly() {
        assert_eq!(
            Filter::parse("class=rejected"),
            Ok(Filter::Class("rejected".into()))
        );
        assert_eq!(
            Filter::parse("status=400"),
            Ok(Filter::Status("400".into()))
        );
        assert_eq!(Filter::parse("key=a=b"), Ok(Filter::Key(b"a=b".to_vec())));
        assert_eq!(
            Filter::parse("source_topic=x"),
            Ok(Filter::SourceTopic("x".into()))
        );
        assert_eq!(
            Filter::parse("connector=sink"),
            Ok(Filter::Connector("sink".into()))
        );
        for (bad, says) in [
            ("foo", "`foo` is not KEY=VALUE"),
            ("colour=red", "unknown filter key `colour`"),
            ("class=oops", "unknown class `oops`"),
            ("status=teapot", "not an HTTP status code"),
            ("key=", "has no value"),
        ] {
            let e = Filter::parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(Filter::parse("foo")
            .expect_err("foo")
            .contains("class, status, key"));
    }

    #[test]
    fn filters_all_have_to_match() {
        let l = rejected(0, "bad1", "400", 3);
        let all = |fs: &[&str]| {
            fs.iter()
                .map(|f| Filter::parse(f).expect("filter"))
                .all(|f| f.matches(&l))
        };
        assert!(all(&[
            "class=rejected",
            "status=400",
            "key=bad1",
            "source_topic=src",
            "connector=sink"
        ]));
        assert!(!all(&["class=rejected", "status=404"]));
        assert!(!all(&["key=bad2"]));
        assert!(!all(&["class=decode"]));
        let decode = letter(1, "k", &[(h::ERROR_CLASS, "decode")]);
        assert!(
            !Filter::Status("400".into()).matches(&decode),
            "no status, no match"
        );
    }

    #[test]
    fn the_summary_groups_by_class_and_rejected_by_status() {
        let letters = vec![
            rejected(0, "a", "400", 1),
            rejected(5, "b", "404", 2),
            rejected(2, "c", "400", 3),
            with(
                letter(3, "d", &[(h::LAST_FAILURE_MS, "1600000000000")]),
                h::ERROR_CLASS,
                "decode",
            ),
            letter(4, "e", &[]),
        ];
        let s = Summary::of(&letters);
        assert_eq!(s.total, 5);
        assert_eq!(
            s.by_class,
            BTreeMap::from([
                ("decode".into(), 1),
                ("rejected".into(), 3),
                ("unknown".into(), 1)
            ])
        );
        assert_eq!(
            s.rejected_by_status,
            BTreeMap::from([("400".into(), 2), ("404".into(), 1)])
        );
        assert_eq!(s.oldest_ms, Some(1_600_000_000_000));
        assert_eq!(s.newest_ms, Some(1_700_000_000_005));
        let text = s.text("sink.dlq");
        assert!(text.starts_with("5 dead letters in `sink.dlq`\n"), "{text}");
        assert!(
            text.contains("  rejected: 3 (status 400: 2, 404: 1)\n"),
            "{text}"
        );
        assert!(
            text.contains("oldest: 2020-09-13T12:26:40.000Z\n"),
            "{text}"
        );
        assert!(
            text.contains("newest: 2023-11-14T22:13:20.005Z\n"),
            "{text}"
        );
        let j = s.to_json("sink.dlq");
        assert_eq!(j["kind"], "summary");
        assert_eq!(j["by_class"]["rejected"], 3);
        assert_eq!(j["rejected_by_status"]["404"], 1);

        let empty = Summary::of(&[]);
        assert_eq!(empty.text("t"), "0 dead letters in `t`\n");
    }

    #[test]
    fn a_line_names_the_source_key_class_and_a_short_message() {
        let long = "x".repeat(500);
        let l = with(
            rejected(0, "bad 1", "400", 3),
            h::ERROR_MESSAGE,
            &format!("line\none {long}"),
        );
        let line = l.line("sink.dlq");
        assert!(
            line.starts_with("src/0@3 key=\"bad 1\" class=rejected status=400 attempts=1 replays=0 message=\"line one xxx"),
            "{line}"
        );
        assert!(line.chars().count() < 220, "{line}");
        assert!(line.ends_with("x…\""), "{line}");
        let j = l.to_json("sink.dlq");
        assert_eq!(j["source_offset"], 3);
        assert_eq!(j["status"], 400);
        assert_eq!(j["value"]["id"], "bad 1");
        assert_eq!(j["headers"]["ferry-correlation-id"], "c-1");
        assert!(j["headers"].get(h::ERROR_CLASS).is_none());
        assert_eq!(show_key(None), "(none)");
        assert_eq!(show_key(Some(&[0xff, 0])), "base64:/wA=");
    }

    #[test]
    fn replay_headers_drop_the_failure_keep_the_source_and_count_the_replay() {
        let l = rejected(0, "k", "400", 7);
        let out = replay_headers(&l.headers);
        let names: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "ferry-correlation-id",
                h::CONNECTOR,
                h::SOURCE_TOPIC,
                h::SOURCE_PARTITION,
                h::SOURCE_OFFSET,
                h::REPLAYS
            ]
        );
        let get = |hs: &[(String, Vec<u8>)], k: &str| {
            hs.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(get(&out, h::REPLAYS).as_deref(), Some("1"));
        assert_eq!(get(&out, h::SOURCE_OFFSET).as_deref(), Some("7"));
        let again = replay_headers(&with(l, h::REPLAYS, "2").headers);
        assert_eq!(get(&again, h::REPLAYS).as_deref(), Some("3"));
        assert_eq!(again.iter().filter(|(k, _)| k == h::REPLAYS).count(), 1);
    }

    #[test]
    fn a_newer_record_with_the_same_key_skips_the_dead_letter() {
        let letters = vec![rejected(0, "bad1", "400", 3), rejected(1, "bad2", "400", 4)];
        let plan = scan_plan(&letters);
        assert_eq!(
            plan,
            BTreeMap::from([(
                ("src".to_owned(), 0),
                (4, BTreeSet::from([b"bad1".to_vec(), b"bad2".to_vec()]))
            )])
        );
        // The scan saw bad2 again at 6, and bad1 only at its own offset
        // (a scan starting below it).
        let latest = Latest::from([(
            ("src".to_owned(), 0),
            BTreeMap::from([(b"bad2".to_vec(), 6), (b"bad1".to_vec(), 3)]),
        )]);
        assert_eq!(newer_record(&letters[0], &latest), None);
        assert_eq!(
            newer_record(&letters[1], &latest)
                .map(|c| c.to_string())
                .as_deref(),
            Some("src/0@6")
        );
        assert_eq!(newer_record(&letters[1], &Latest::new()), None);
        let mut keyless = letters[1].clone();
        keyless.key = None;
        assert_eq!(newer_record(&keyless, &latest), None);
    }

    #[test]
    fn only_the_latest_dead_letter_of_a_source_record_is_replayed() {
        let first = rejected(0, "bad1", "400", 3);
        let other = rejected(1, "bad2", "400", 4);
        let again = with(rejected(2, "bad1", "400", 3), h::REPLAYS, "1");
        let bare = letter(3, "x", &[]);
        let (kept, superseded) = latest_per_source(vec![
            first.clone(),
            other.clone(),
            again.clone(),
            bare.clone(),
        ]);
        assert_eq!(kept, [other, again, bare]);
        assert_eq!(
            superseded,
            [(
                first,
                At {
                    partition: 0,
                    offset: 2
                }
            )]
        );
    }
}
