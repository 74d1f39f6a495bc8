//! The `postgres` sink's rows/s upserting `Contact`-shaped records, beside
//! `COPY` of the same rows (the database's ceiling on this machine).
//!
//! `cargo bench -p ferry-connectors --bench postgres` (env: `ROWS`, default
//! 100000; `BATCH`, default 500; `FERRY_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`). No Kafka: a `PostgresSink`
//! is handed batches as the runtime hands them over, each one transaction
//! with its offsets. Two passes: every id new (inserts), then every id again
//! (updates). Then the same rows by `COPY ... FROM STDIN (FORMAT csv)` into
//! a twin table. Tables are dropped at the end.

#[path = "support/contacts.rs"]
mod contacts;
use contacts::{connect, contact, copy, csv, DDL};
use ferry::sink::{Sink, SinkContext, SinkRecord};
use ferry_connectors::sinks::postgres::config::PostgresSinkConfig;
use ferry_connectors::sinks::postgres::sink::PostgresSink;
use std::time::Instant;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn records(rows: usize, pass: usize, first_offset: usize) -> Vec<SinkRecord> {
    (0..rows)
        .map(|i| {
            SinkRecord::from_json(
                "bench.contacts",
                0,
                i64::try_from(first_offset + i).unwrap_or(i64::MAX),
                Some(format!("c{i:07}")),
                contact(i, pass),
            )
        })
        .collect()
}

async fn pass(sink: &mut PostgresSink, records: &[SinkRecord], batch: usize) -> f64 {
    let started = Instant::now();
    for chunk in records.chunks(batch) {
        if let Err(f) = sink.write(chunk).await {
            panic!("write failed: {:?}", f.first_error());
        }
    }
    records.len() as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows = env("ROWS", 100_000);
    let batch = env("BATCH", 500);
    let url = std::env::var("FERRY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let db = connect(&url).await;
    let table = format!("bench_contacts_{}", std::process::id());
    let copy_table = format!("{table}_copy");
    for t in [&table, &copy_table] {
        if let Err(e) = db.batch_execute(&format!("CREATE TABLE {t} {DDL}")).await {
            panic!("create {t}: {e}");
        }
    }
    let cfg: PostgresSinkConfig = match serde_json::from_value(serde_json::json!({
        "topic": "bench.contacts", "url": url, "table": table, "batch_max_records": batch
    })) {
        Ok(c) => c,
        Err(e) => panic!("config: {e}"),
    };
    let mut sink = match PostgresSink::new(&table, cfg) {
        Ok(s) => s,
        Err(e) => panic!("sink: {e}"),
    };
    let ctx = SinkContext {
        name: table.clone(),
        output: None,
    };
    if let Err(e) = sink.open(&ctx).await {
        panic!("open: {e}");
    }
    let inserts = pass(&mut sink, &records(rows, 1, 0), batch).await;
    let updates = pass(&mut sink, &records(rows, 2, rows), batch).await;

    let text: String = (0..rows).map(|i| csv(&contact(i, 1))).collect();
    let started = Instant::now();
    let copied = match copy(&db, &copy_table, text).await {
        Ok(n) => n,
        Err(e) => panic!("COPY: {e}"),
    };
    let copy_rate = copied as f64 / started.elapsed().as_secs_f64();

    println!("postgres sink, {rows} Contact rows, batch {batch}:");
    println!("  upsert, every id new:   {inserts:>9.0} rows/s");
    println!("  upsert, every id again: {updates:>9.0} rows/s");
    println!("  COPY (csv, one stream): {copy_rate:>9.0} rows/s");
    println!(
        "  sink / COPY:            {:.2} (new ids), {:.2} (updates)",
        inserts / copy_rate,
        updates / copy_rate
    );
    let _ = db
        .batch_execute(&format!(
            "DROP TABLE {table}; DROP TABLE {copy_table}; DELETE FROM ferry_sink_offsets WHERE connector = '{table}'"
        ))
        .await;
}
