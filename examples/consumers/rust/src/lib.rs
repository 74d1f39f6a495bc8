//! Another team's Rust service reading Ferry's normalized contacts: each
//! record becomes a [`contact::Contact`], a struct `rsgen-avro` generated
//! from `schemas/contact.avsc` at build time (see `build.rs`), through
//! [`ferry::consumer::TypedConsumer`], which fetches the writer's schema
//! from the registry by the id in each record, resolves it to the schema
//! the struct was generated from, and drops repeats by `ferry-event-id`.
//!
//! Prints one JSON object per contact, as the Python and Node examples do.

use anyhow::Context as _;
use ferry::consumer::{Event, TypedConsumer};
use std::io::Write;
use std::time::Duration;

/// The generated types.
#[allow(deprecated, clippy::all, clippy::pedantic, missing_docs)]
pub mod contact {
    include!(concat!(env!("OUT_DIR"), "/contact.rs"));
}
use contact::Contact;

/// The schema `Contact` was generated from: the reader's schema.
pub const CONTACT_AVSC: &str = include_str!("../../../../schemas/contact.avsc");

#[derive(Debug, Clone, clap::Parser)]
#[command(about = "Reads Ferry's normalized contacts as typed Rust structs")]
pub struct Options {
    /// Kafka bootstrap servers.
    #[arg(long, env = "BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Schema registry URL.
    #[arg(
        long,
        env = "SCHEMA_REGISTRY_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub registry: String,
    /// Topic to read.
    #[arg(
        long,
        env = "TOPIC",
        default_value = "ferry.quickstart.normalized-contacts"
    )]
    pub topic: String,
    /// Consumer group.
    #[arg(long, env = "GROUP_ID", default_value = "contacts-example-rust")]
    pub group: String,
    /// Stop after printing this many records; 0 = never.
    #[arg(long, env = "MAX_RECORDS", default_value_t = 0)]
    pub max_records: usize,
    /// Stop after this many seconds without a record; 0 = never.
    #[arg(long, env = "IDLE_TIMEOUT", default_value_t = 0.0)]
    pub idle_timeout: f64,
    /// How many recent event ids to remember to drop repeats.
    #[arg(long, env = "DEDUPE_WINDOW", default_value_t = 100_000)]
    pub dedupe_window: usize,
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub printed: usize,
    pub duplicates_dropped: u64,
}

/// Reads contacts until `max_records` or `idle_timeout`, printing each to
/// `out`.
pub async fn run(opts: &Options, out: &mut impl Write) -> anyhow::Result<Summary> {
    let mut contacts =
        TypedConsumer::<Contact>::builder(&opts.bootstrap, &opts.group, &opts.registry)
            .reader_schema(CONTACT_AVSC)
            .dedupe_window(opts.dedupe_window)
            .build(&[&opts.topic])
            .context("create the consumer")?;
    let idle = (opts.idle_timeout > 0.0).then(|| Duration::from_secs_f64(opts.idle_timeout));
    let mut printed = 0;
    while opts.max_records == 0 || printed < opts.max_records {
        let next = contacts.next();
        let event = match idle {
            Some(idle) => match tokio::time::timeout(idle, next).await {
                Ok(e) => e,
                Err(_) => break,
            },
            None => next.await,
        };
        let event = match event {
            Ok(e) => e,
            Err(e) if e.is_retryable() => {
                eprintln!("retrying: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e).context("read a contact"),
        };
        writeln!(out, "{}", line(&event)).context("write")?;
        out.flush().context("write")?;
        contacts.done(&event).context("store the offset")?;
        printed += 1;
    }
    Ok(Summary {
        printed,
        duplicates_dropped: contacts.duplicates_dropped(),
    })
}

/// One printed line: where the record was, Ferry's headers, the contact.
fn line(e: &Event<Contact>) -> serde_json::Value {
    let c = &e.value;
    serde_json::json!({
        "topic": e.topic,
        "partition": e.partition,
        "offset": e.offset,
        "key": e.key_str(),
        "schema_id": e.schema_id,
        "event_id": e.event_id,
        "correlation_id": e.correlation_id,
        "value": {
            "id": c.id,
            "name": c.name,
            "email": c.email,
            "phone": c.phone,
            "source": c.source,
            "updated_at": c.updated_at,
            "lifetime_value": c.lifetime_value.as_ref().and_then(|d| money(d, 2)),
            // The source's JSON, as it sent it.
            "raw": String::from_utf8_lossy(&c.raw),
        },
    })
}

/// An Avro decimal (big-endian two's complement, `scale` digits after the
/// point) as text.
fn money(d: &apache_avro::Decimal, scale: u32) -> Option<String> {
    let bytes = Vec::<u8>::try_from(d).ok()?;
    if bytes.is_empty() || bytes.len() > 16 {
        return None;
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut be = [fill; 16];
    be[16 - bytes.len()..].copy_from_slice(&bytes);
    let n = i128::from_be_bytes(be);
    let unit = 10i128.pow(scale);
    let sign = if n < 0 { "-" } else { "" };
    let (whole, frac) = (
        n.unsigned_abs() / unit.unsigned_abs(),
        n.unsigned_abs() % unit.unsigned_abs(),
    );
    Some(format!(
        "{sign}{whole}.{frac:0width$}",
        width = scale as usize
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_print_with_their_scale() {
        let d = |v: &[u8]| apache_avro::Decimal::from(v.to_vec());
        assert_eq!(money(&d(&[0x30, 0x39]), 2).as_deref(), Some("123.45"));
        assert_eq!(money(&d(&[0xcf, 0xc7]), 2).as_deref(), Some("-123.45"));
        assert_eq!(money(&d(&[0x05]), 2).as_deref(), Some("0.05"));
    }
}
