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

use ferry::sink::{Sink, SinkContext, SinkRecord};
use ferry_connectors::sinks::postgres::config::PostgresSinkConfig;
use ferry_connectors::sinks::postgres::sink::PostgresSink;
use futures::SinkExt;
use std::time::Instant;

const DDL: &str = "(id text PRIMARY KEY, name text, email text, phone text, source text NOT NULL, \
    updated_at timestamptz, lifetime_value numeric(18, 2), raw text NOT NULL)";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn contact(i: usize, pass: usize) -> serde_json::Value {
    let id = format!("c{i:07}");
    let raw = serde_json::json!({"id": id, "name": format!("Contact {i} v{pass}")}).to_string();
    serde_json::json!({
        "id": id,
        "name": format!("Contact {i} v{pass}"),
        "email": format!("contact{i}.v{pass}@example.com"),
        "phone": "+4930123456",
        "source": "bench",
        "updated_at": 1_700_000_000_000_i64 + i64::try_from(i).unwrap_or(0),
        "lifetime_value": format!("{}.{:02}", i % 10_000, i % 100),
        "raw": raw,
    })
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

fn csv(value: &serde_json::Value) -> String {
    let field = |k: &str| match &value[k] {
        serde_json::Value::String(s) => format!("\"{}\"", s.replace('"', "\"\"")),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let millis = value["updated_at"].as_i64().unwrap_or(0);
    let ts = chrono::DateTime::from_timestamp_millis(millis)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    format!(
        "{},{},{},{},{},{ts},{},{}\n",
        field("id"),
        field("name"),
        field("email"),
        field("phone"),
        field("source"),
        field("lifetime_value"),
        field("raw"),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows = env("ROWS", 100_000);
    let batch = env("BATCH", 500);
    let url = std::env::var("FERRY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let (db, conn) = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok(c) => c,
        Err(e) => panic!("no PostgreSQL at {url}: {e} (`apt-get install postgresql`, or set FERRY_TEST_POSTGRES_URL)"),
    };
    tokio::spawn(conn);
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
    let copy = async {
        let sink = db
            .copy_in::<_, std::io::Cursor<Vec<u8>>>(&format!(
                "COPY {copy_table} FROM STDIN (FORMAT csv)"
            ))
            .await?;
        futures::pin_mut!(sink);
        sink.send(std::io::Cursor::new(text.into_bytes())).await?;
        sink.finish().await
    };
    let copied = match copy.await {
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
