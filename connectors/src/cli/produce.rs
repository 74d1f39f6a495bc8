//! `ferry produce TOPIC`: write JSON lines from stdin to a topic. When the
//! topic has a value schema (`--schema FILE`, or `value_schema` in config),
//! each line is converted to Avro, registered and framed for Confluent
//! deserializers; otherwise the line is written as it is. A line that is
//! not JSON or does not fit the schema is refused, reported with its line
//! number and field, and never written; the rest are.

use super::{Failure, Target};
use ferry::kafka::{KafkaProducer, OutgoingRecord};
use ferry::schema::bindings::schema_path;
use ferry::schema::json::from_json;
use ferry::schema::registry::Codecs;
use ferry::schema::{AvroCodec, Part, SchemaFile};
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Topic to write to (it must exist).
    topic: String,
    #[command(flatten)]
    target: Target,
    /// Avro schema file for values (default: the topic's `value_schema`).
    #[arg(long)]
    schema: Option<PathBuf>,
    /// JSON pointer of the field whose value becomes the record key (e.g. `/id`).
    #[arg(long)]
    key_field: Option<String>,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let (config, bootstrap) = args.target.resolve()?;
    let file = match &args.schema {
        Some(path) => Some(path.clone()),
        None => config
            .topics
            .iter()
            .find(|t| t.name == args.topic)
            .and_then(|t| t.value_schema.as_ref())
            .map(|f| schema_path(&config, f)),
    };
    let codec: Option<AvroCodec> = match file {
        None => None,
        Some(path) => {
            let file = SchemaFile::load(&path).map_err(|e| Failure::Config(e.to_string()))?;
            let subject = config
                .schema_registry
                .subject_name_strategy
                .subject(&args.topic, Part::Value, file.full_name().as_deref())
                .map_err(Failure::Config)?;
            let codecs = Codecs::new(args.target.registry(&config)?);
            Some(
                codecs
                    .register(&subject, &file.text)
                    .await
                    .map_err(|e| Failure::Runtime(format!("{}: {e}", path.display())))?,
            )
        }
    };
    let producer = KafkaProducer::new(&config.kafka, &bootstrap).map_err(Failure::runtime)?;

    let (mut written, mut refused) = (0u64, 0u64);
    let mut pending = Vec::new();
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|e| Failure::Runtime(format!("reading stdin: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        match encode(&line, codec.as_ref(), args.key_field.as_deref()) {
            // Into the queue one at a time, so the lines keep their order
            // per key even while the queue is full; acknowledged together.
            Ok((key, payload)) => pending.push(
                producer
                    .enqueue(OutgoingRecord {
                        topic: args.topic.clone(),
                        key,
                        payload: Some(payload),
                        ..OutgoingRecord::default()
                    })
                    .await
                    .map_err(Failure::runtime)?
                    .delivered(),
            ),
            Err(why) => {
                refused += 1;
                eprintln!("stdin line {}: refused: {why}", n + 1);
            }
        }
        // Bound what waits in memory; the producer batches underneath.
        if pending.len() >= 10_000 {
            written += settle(&mut pending).await?;
        }
    }
    written += settle(&mut pending).await?;
    producer
        .flush(Duration::from_secs(30))
        .await
        .map_err(Failure::runtime)?;
    let schema = codec.map_or_else(
        || "no schema: lines written as they are".to_owned(),
        |c| format!("Avro, schema id {}", c.id()),
    );
    eprintln!(
        "{written} record(s) written to `{}` ({schema}); {refused} refused",
        args.topic
    );
    if refused > 0 {
        return Err(Failure::Runtime(format!("{refused} line(s) refused")));
    }
    Ok(())
}

async fn settle<F>(pending: &mut Vec<F>) -> Result<u64, Failure>
where
    F: std::future::Future<Output = Result<ferry::kafka::Delivered, ferry::kafka::ProduceError>>,
{
    let results = futures::future::join_all(pending.drain(..)).await;
    let mut ok = 0;
    for r in results {
        r.map_err(Failure::runtime)?;
        ok += 1;
    }
    Ok(ok)
}

/// One line to (key, payload).
fn encode(
    line: &str,
    codec: Option<&AvroCodec>,
    key_field: Option<&str>,
) -> Result<(Option<Vec<u8>>, Vec<u8>), String> {
    let json: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let key = match key_field {
        None => None,
        Some(ptr) => Some(match json.pointer(ptr) {
            Some(serde_json::Value::String(s)) => s.clone().into_bytes(),
            Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                v.to_string().into_bytes()
            }
            Some(other) => {
                return Err(format!(
                    "key field `{ptr}` is {other}, not a string or number"
                ))
            }
            None => return Err(format!("key field `{ptr}` is missing")),
        }),
    };
    let payload = match codec {
        None => line.as_bytes().to_vec(),
        Some(c) => {
            let value = from_json(c.schema(), &json).map_err(|e| e.to_string())?;
            c.encode(&value).map_err(|e| e.to_string())?
        }
    };
    Ok((key, payload))
}
