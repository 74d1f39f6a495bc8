//! `ferry tail TOPIC`: print records as JSON lines. Reads without a consumer
//! group commit, so tailing never moves anyone's offsets. A key or value in
//! the Confluent wire format is decoded through the schema registry (any
//! writer's, Python's AvroSerializer included) and printed as JSON with its
//! schema id; one that cannot be decoded is printed raw beside the reason.

use super::output::{bytes_to_json, header_to_json};
use super::{Failure, Target};
use ferry::kafka::{FerryClientContext, KafkaAdmin};
use ferry::runtime::Signals;
use ferry::schema::json::to_json;
use ferry::schema::registry::Codecs;
use ferry::schema::MAGIC_BYTE;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::io::Write;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Topic to read.
    topic: String,
    #[command(flatten)]
    target: Target,
    /// Start at the oldest record instead of the next new one.
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<u64>,
    /// Stop when no record arrives for this long (e.g. `5s`).
    #[arg(long, value_parser = humantime::parse_duration)]
    idle_timeout: Option<Duration>,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let mut signals = Signals::install().map_err(Failure::runtime)?;
    let (config, bootstrap) = args.target.resolve()?;
    let codecs = Codecs::new(args.target.registry(&config)?);
    let admin = KafkaAdmin::new(&config.kafka, &bootstrap).map_err(Failure::runtime)?;
    let topic = admin
        .describe(&args.topic)
        .await
        .map_err(Failure::runtime)?;

    let group = format!("ferry-tail-{}", uuid::Uuid::new_v4());
    let mut client = config.kafka.client_config(&bootstrap);
    client
        .set("group.id", &group)
        .set("enable.auto.commit", "false");
    let consumer: StreamConsumer<FerryClientContext> = client
        .create_with_context(FerryClientContext::default())
        .map_err(Failure::runtime)?;
    let start = if args.from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    let mut tpl = TopicPartitionList::new();
    for p in &topic.partitions {
        tpl.add_partition_offset(&args.topic, p.id, start)
            .map_err(Failure::runtime)?;
    }
    consumer.assign(&tpl).map_err(Failure::runtime)?;

    let mut printed = 0u64;
    let mut out = std::io::stdout().lock();
    while args.max.is_none_or(|max| printed < max) {
        let idle = args.idle_timeout.unwrap_or(Duration::MAX);
        let msg = tokio::select! {
            m = tokio::time::timeout(idle, consumer.recv()) => match m {
                Ok(m) => m.map_err(|e| Failure::runtime(format!("reading `{}`: {e}", args.topic)))?,
                Err(_) => break,
            },
            _ = signals.recv() => break,
        };
        let headers: serde_json::Map<String, serde_json::Value> = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), header_to_json(h.value)))
                    .collect()
            })
            .unwrap_or_default();
        let mut line = serde_json::json!({
            "topic": msg.topic(),
            "partition": msg.partition(),
            "offset": msg.offset(),
            "timestamp": msg.timestamp().to_millis(),
            "headers": headers,
        });
        show(&codecs, &mut line, "key", msg.key()).await;
        show(&codecs, &mut line, "value", msg.payload()).await;
        writeln!(out, "{line}").map_err(Failure::runtime)?;
        out.flush().map_err(Failure::runtime)?;
        printed += 1;
    }
    Ok(())
}

/// Sets `line[field]`: decoded Avro (plus `<field>_schema_id`) when the bytes
/// are Confluent-framed, else the bytes as JSON or text. A framed payload
/// that cannot be decoded is shown raw with `<field>_error`.
async fn show(codecs: &Codecs, line: &mut serde_json::Value, field: &str, bytes: Option<&[u8]>) {
    let framed = bytes.filter(|b| b.len() >= 5 && b[0] == MAGIC_BYTE);
    let (value, extra) = match framed {
        None => (bytes_to_json(bytes), None),
        Some(b) => match codecs.decode(b).await {
            Ok((codec, v)) => (
                to_json(codec.schema(), &v),
                Some((format!("{field}_schema_id"), serde_json::json!(codec.id()))),
            ),
            Err(e) => (
                bytes_to_json(bytes),
                Some((format!("{field}_error"), serde_json::json!(e.to_string()))),
            ),
        },
    };
    if let Some(obj) = line.as_object_mut() {
        obj.insert(field.to_owned(), value);
        if let Some((k, v)) = extra {
            obj.insert(k, v);
        }
    }
}
