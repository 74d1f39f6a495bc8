//! `Contact`-shaped rows (`schemas/contact.avsc`, the table of
//! `examples/postgres/contacts.sql`) and `COPY`, the database's ceiling,
//! for the benchmarks of the `postgres` sink (each bench binary includes
//! this file with `#[path]`).

use futures::SinkExt;

/// The columns of `examples/postgres/contacts.sql`.
pub const DDL: &str =
    "(id text PRIMARY KEY, name text, email text, phone text, source text NOT NULL, \
    updated_at timestamptz, lifetime_value numeric(18, 2), raw text NOT NULL)";

/// Connects to the PostgreSQL at `url` (the connection runs on its own task).
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (db, conn) = match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        Ok(c) => c,
        Err(e) => panic!("no PostgreSQL at {url}: {e} (`apt-get install postgresql`, or set FERRY_TEST_POSTGRES_URL)"),
    };
    tokio::spawn(conn);
    db
}

/// Contact `i` (id `c0000000`...) as JSON, its text fields marked with `pass`.
pub fn contact(i: usize, pass: usize) -> serde_json::Value {
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

/// A contact as a CSV line in the table's column order.
pub fn csv(value: &serde_json::Value) -> String {
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

/// `COPY table FROM STDIN (FORMAT csv)` of `text` in one stream; the rows copied.
pub async fn copy(
    db: &tokio_postgres::Client,
    table: &str,
    text: String,
) -> Result<u64, tokio_postgres::Error> {
    let sink = db
        .copy_in::<_, std::io::Cursor<Vec<u8>>>(&format!("COPY {table} FROM STDIN (FORMAT csv)"))
        .await?;
    futures::pin_mut!(sink);
    sink.send(std::io::Cursor::new(text.into_bytes())).await?;
    sink.finish().await
}
