//! The `postgres` sink end to end: the real `ferry` binary, a real broker,
//! a real PostgreSQL (`FERRY_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`; missing, the tests fail with
//! how to get one). Each test has its own table, connector name and broker.
//!
//! - upserts and tombstones leave the table equal to the records folded in
//!   offset order;
//! - exactly once: append-only rows while Ferry is killed with SIGKILL
//!   several times mid-stream: every record is in the table exactly once;
//! - a record the table refuses (a CHECK constraint) goes to the dead-letter
//!   topic alone, the rest land;
//! - `ferry validate` refuses a bad config naming the key, with no I/O.

use crate::ferry_bin;
use crate::rebalance::{start_ferry, stop_ferry};
use crate::sink_setup::{services_yaml, SinkSetup};
use ferry_testkit::{free_addr, repo_root, FerryProcess};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn pg_url() -> String {
    std::env::var("FERRY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A client of the test database; no database fails the test, saying how
/// to get one.
async fn pg() -> tokio_postgres::Client {
    let url = pg_url();
    let (client, conn) = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok(c) => c,
        Err(e) => panic!(
            "no PostgreSQL at {url}: {e}\nthe postgres suite needs one: `apt-get install postgresql` \
             (then a database `test` with trust auth on 127.0.0.1:5432), or set FERRY_TEST_POSTGRES_URL"
        ),
    };
    tokio::spawn(conn);
    client
}

/// A name no other test (or earlier run) uses: table, connector, topic.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// One record to produce: key and value (`None`: a tombstone).
type Rec = (String, Option<serde_json::Value>);

async fn produce(bootstrap: &str, topic: &str, records: &[Rec]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let payloads: Vec<(String, Option<String>)> = records
        .iter()
        .map(|(k, v)| (k.clone(), v.as_ref().map(ToString::to_string)))
        .collect();
    let sends: Vec<_> = payloads
        .iter()
        .map(|(k, v)| {
            let mut r = FutureRecord::to(topic).key(k.as_str());
            if let Some(v) = v {
                r = r.payload(v.as_str());
            }
            producer.send(r, Duration::from_secs(60))
        })
        .collect();
    for s in futures::future::join_all(sends).await {
        s.map_err(|(e, _)| e).expect("acknowledged");
    }
}

/// A config running one postgres sink `name` on `topic` into `table`;
/// `extra`: more of its settings (YAML, indented four spaces). Static
/// membership: a Ferry restarted after a kill takes its partitions back at
/// once instead of after the session timeout.
fn config(setup: &SinkSetup, name: &str, table: &str, extra: &str) -> PathBuf {
    let path = setup.dir.path().join("ferry.yaml");
    let text = format!(
        "data_dir: {data}\nkafka:\n  bootstrap_servers: \"{bootstrap}\"\n  consumer:\n    instance_id: {name}\n{services}connectors:\n  - name: {name}\n    type: postgres\n    topic: {topic}\n    url: {url}\n    table: {table}\n{extra}",
        data = setup.dir.path().display(),
        bootstrap = setup.broker.bootstrap,
        services = services_yaml(setup.admin),
        topic = setup.topic,
        url = pg_url(),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// The sink's next offset of partition 0 in `ferry_sink_offsets`.
async fn stored_offset(db: &tokio_postgres::Client, name: &str, topic: &str) -> Option<i64> {
    db.query_opt(
        "SELECT next_offset FROM ferry_sink_offsets WHERE connector = $1 AND topic = $2 AND partition = 0",
        &[&name, &topic],
    )
    .await
    .ok()
    .flatten()
    .map(|r| r.get(0))
}

/// Waits until the sink's stored offset reaches `end`.
async fn wait_for_offset(db: &tokio_postgres::Client, name: &str, topic: &str, end: i64) {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let now = stored_offset(db, name, topic).await;
        if now == Some(end) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ferry_sink_offsets for {name} at {now:?}, expected {end}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Drops a test's table and its connector's offsets (on success; a failed
/// test leaves them to look at).
async fn drop_table(db: &tokio_postgres::Client, table: &str, connector: &str) {
    let _ = db
        .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
        .await;
    let _ = db
        .execute(
            "DELETE FROM ferry_sink_offsets WHERE connector = $1",
            &[&connector],
        )
        .await;
}

async fn stop(p: FerryProcess) {
    let _ = stop_ferry(p, "INT", Duration::from_secs(60)).await;
}

/// The end of a passing test: Ferry stopped, the table and its offsets
/// dropped (named like the connector), the broker stopped.
async fn finish(ferry: FerryProcess, db: &tokio_postgres::Client, name: &str, setup: SinkSetup) {
    stop(ferry).await;
    drop_table(db, name, name).await;
    setup.stop().await;
}

/// The records of connector `name`'s dead-letter topic, once it holds one.
async fn dead_letters(setup: &SinkSetup, name: &str) -> Vec<crate::sink_setup::Letter> {
    let dlq = format!("{name}.dlq");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let letters = setup.records_of(&dlq);
        if !letters.is_empty() {
            return letters;
        }
        assert!(Instant::now() < deadline, "nothing in {dlq}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upserts_and_tombstones_leave_the_fold_of_the_records() {
    let db = pg().await;
    let name = unique("pg_upsert");
    let setup = SinkSetup::new(&name).await;
    db.batch_execute(&format!(
        "CREATE TABLE {name} (id text PRIMARY KEY, name text, version bigint, tags jsonb)"
    ))
    .await
    .expect("create table");
    // 30 keys, each written many times; every ninth record a tombstone.
    let records: Vec<Rec> = (0..400)
        .map(|n| {
            let key = format!("k{}", (n * 7) % 30);
            let value = (n % 9 != 4).then(|| {
                serde_json::json!({"id": key, "name": format!("name-{n}"), "version": n, "tags": [n % 3, "x"]})
            });
            (key, value)
        })
        .collect();
    let mut fold: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for (k, v) in &records {
        match v {
            Some(v) => fold.insert(k.clone(), v.clone()),
            None => fold.remove(k),
        };
    }
    assert!(fold.len() < 30, "some keys end deleted");
    produce(&setup.broker.bootstrap, &setup.topic, &records).await;
    let cfg = config(&setup, &name, &name, "    batch_max_records: 50\n");
    let ferry = start_ferry("run", &cfg, Vec::new()).await;
    wait_for_offset(&db, &name, &setup.topic, 400).await;
    let rows = db
        .query(
            &format!("SELECT id, name, version, tags::text FROM {name} ORDER BY id"),
            &[],
        )
        .await
        .expect("read table");
    let table: BTreeMap<String, serde_json::Value> = rows
        .iter()
        .map(|r| {
            let id: String = r.get(0);
            let tags: String = r.get(3);
            let tags: serde_json::Value = serde_json::from_str(&tags).expect("jsonb");
            let v = serde_json::json!({"id": id, "name": r.get::<_, String>(1), "version": r.get::<_, i64>(2), "tags": tags});
            (id, v)
        })
        .collect();
    assert_eq!(table, fold);
    finish(ferry, &db, &name, setup).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_stream_neither_loses_nor_repeats_a_row() {
    kill_9_mid_stream(1, 1, &[500, 1200, 2000, 2800]).await;
}

/// The next offsets the sink stored for `topic`, summed over its partitions
/// (each starts at 0, so this counts the records consumed).
async fn stored_total(db: &tokio_postgres::Client, name: &str, topic: &str) -> i64 {
    db.query_one(
        "SELECT COALESCE(sum(next_offset), 0)::bigint FROM ferry_sink_offsets WHERE connector = $1 AND topic = $2",
        &[&name, &topic],
    )
    .await
    .map_or(0, |r| r.get(0))
}

/// 5000 records into a table without a key (a record written twice would
/// be a second row), Ferry killed with SIGKILL once the table's offsets
/// pass each of `kills`, then run to the end: every record exactly once.
async fn kill_9_mid_stream(partitions: i32, concurrency: usize, kills: &[i64]) {
    const N: i64 = 5000;
    let db = pg().await;
    let name = unique("pg_once");
    let setup = SinkSetup::with_partitions(&name, partitions).await;
    db.batch_execute(&format!(
        "CREATE TABLE {name} (id bigint NOT NULL, payload text)"
    ))
    .await
    .expect("create table");
    let records: Vec<Rec> = (0..N)
        .map(|n| {
            let v =
                serde_json::json!({"id": n, "payload": format!("record {n} {}", "x".repeat(200))});
            (format!("k{}", n % 97), Some(v))
        })
        .collect();
    produce(&setup.broker.bootstrap, &setup.topic, &records).await;
    let cfg = config(
        &setup,
        &name,
        &name,
        &format!("    mode: insert\n    batch_max_records: 100\n    concurrency: {concurrency}\n"),
    );
    for threshold in kills {
        let ferry = start_ferry("run", &cfg, Vec::new()).await;
        let deadline = Instant::now() + Duration::from_secs(240);
        while stored_total(&db, &name, &setup.topic).await < *threshold {
            assert!(Instant::now() < deadline, "no progress to {threshold}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (_, status) = stop_ferry(ferry, "KILL", Duration::from_secs(30)).await;
        assert_eq!(status.code(), None, "killed");
    }
    let at_last_kill = stored_total(&db, &name, &setup.topic).await;
    let ferry = start_ferry("run", &cfg, Vec::new()).await;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let now = stored_total(&db, &name, &setup.topic).await;
        if now == N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ferry_sink_offsets for {name} sum to {now}, expected {N}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let row = db
        .query_one(
            &format!("SELECT count(*), count(DISTINCT id), min(id), max(id) FROM {name}"),
            &[],
        )
        .await
        .expect("count");
    let (count, distinct, min, max): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        (count, distinct, min, max),
        (N, N, 0, N - 1),
        "after {} kills (the last at {at_last_kill} records): every record exactly once",
        kills.len()
    );
    assert!(at_last_kill < N, "the last kill came mid-stream");
    finish(ferry, &db, &name, setup).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_record_is_dead_lettered_alone() {
    let db = pg().await;
    let name = unique("pg_refused");
    let setup = SinkSetup::new(&name).await;
    db.batch_execute(&format!(
        "CREATE TABLE {name} (id text PRIMARY KEY, version bigint CONSTRAINT {name}_version_check CHECK (version >= 0))"
    ))
    .await
    .expect("create table");
    let records: Vec<Rec> = (0..60)
        .map(|n| {
            let version = if n == 25 { -1 } else { n };
            let key = format!("k{n}");
            (
                key.clone(),
                Some(serde_json::json!({"id": key, "version": version})),
            )
        })
        .collect();
    produce(&setup.broker.bootstrap, &setup.topic, &records).await;
    let cfg = config(&setup, &name, &name, "    batch_max_records: 20\n");
    let ferry = start_ferry("run", &cfg, Vec::new()).await;
    wait_for_offset(&db, &name, &setup.topic, 60).await;
    let ids: Vec<String> = db
        .query(&format!("SELECT id FROM {name} ORDER BY version"), &[])
        .await
        .expect("read table")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<String> = (0..60)
        .filter(|n| *n != 25)
        .map(|n| format!("k{n}"))
        .collect();
    assert_eq!(ids, expected);
    let letters = dead_letters(&setup, &name).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].key.as_deref(), Some("k25"));
    let value: serde_json::Value = serde_json::from_slice(&letters[0].value).expect("json");
    assert_eq!(value["version"], -1);
    assert!(
        letters[0]
            .headers
            .values()
            .any(|h| h.contains(&format!("{name}_version_check"))),
        "the dead letter names the constraint: {:?}",
        letters[0].headers
    );
    finish(ferry, &db, &name, setup).await;
}

#[test]
fn validate_refuses_a_bad_config_naming_the_key_without_connecting() {
    let dir = tempfile::tempdir().expect("dir");
    let cases = [
        ("    columns: { id: id }\n", "connectors[0].columns.id"),
        ("    mode: merge\n", "connectors[0].mode"),
        ("    create_table: true\n", "connectors[0].key_columns"),
    ];
    for (extra, key) in cases {
        let path = dir.path().join("ferry.yaml");
        // Port 1: nothing listens; validation must not try.
        let text = format!(
            "admin:\n  listen: \"{admin}\"\nconnectors:\n  - name: pg\n    type: postgres\n    topic: contacts\n    url: postgres://postgres@127.0.0.1:1/test\n    table: contacts\n{extra}",
            admin = free_addr()
        );
        std::fs::write(&path, text).expect("write config");
        let path = path.display().to_string();
        let f = FerryProcess::run(
            &ferry_bin(),
            &["validate", &path],
            &repo_root(),
            &[],
            Duration::from_secs(90),
        );
        crate::bad_input::assert_clean_failure(&f, 2, &[key]);
    }
}

/// Records `offsets` of partition 0 of `topic`, values `{"id": offset}`.
fn sink_records(topic: &str, offsets: std::ops::Range<i64>) -> Vec<ferry::sink::SinkRecord> {
    offsets
        .map(|o| {
            let value = serde_json::json!({"id": o, "payload": format!("p{o}")});
            ferry::sink::SinkRecord::from_json(topic, 0, o, Some(format!("k{o}")), value)
        })
        .collect()
}

/// The sink itself (no broker): a writer that lost its partitions (a
/// zombie) cannot write after the new owner; it learns the new position
/// and writes nothing twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_zombie_writer_is_fenced_off() {
    use ferry::sink::{RecordOutcome, Sink, SinkContext};
    use ferry_connectors::sinks::postgres::sink::PostgresSink;
    let db = pg().await;
    let name = unique("pg_fence");
    db.batch_execute(&format!(
        "CREATE TABLE {name} (id bigint NOT NULL, payload text)"
    ))
    .await
    .expect("create table");
    let cfg: ferry_connectors::sinks::postgres::config::PostgresSinkConfig =
        serde_json::from_value(serde_json::json!({
            "topic": "t", "url": pg_url(), "table": name, "mode": "insert"
        }))
        .expect("config");
    let ctx = SinkContext {
        name: name.clone(),
        output: None,
    };
    let mut zombie = PostgresSink::new(&name, cfg.clone()).expect("sink");
    let mut owner = PostgresSink::new(&name, cfg).expect("sink");
    zombie.open(&ctx).await.expect("open");
    owner.open(&ctx).await.expect("open");
    zombie
        .write(&sink_records("t", 0..10))
        .await
        .expect("first write");
    // The partition moves: the new owner resumes where the table says.
    let kept = owner
        .target_offsets()
        .expect("keeps offsets in the table")
        .load(&[("t".to_owned(), 0)])
        .await
        .expect("load");
    assert_eq!(kept, vec![(("t".to_owned(), 0), 10)]);
    owner
        .write(&sink_records("t", 10..20))
        .await
        .expect("owner writes");
    // The zombie still holds 10..20: fenced, retryable, about the connector.
    let failure = zombie
        .write(&sink_records("t", 10..20))
        .await
        .expect_err("fenced");
    assert!(
        failure.outcomes().iter().all(|o| matches!(o,
        RecordOutcome::Failed(e) if e.is_retryable() && e.scope == ferry::error::Scope::Connector))
    );
    // Tried again, it reads the table: 10..20 are there; only 20..25 are new.
    zombie
        .write(&sink_records("t", 10..25))
        .await
        .expect("write after the fence");
    let row = db
        .query_one(
            &format!("SELECT count(*), count(DISTINCT id) FROM {name}"),
            &[],
        )
        .await
        .expect("count");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (25, 25));
    let stored = db
        .query_one(
            "SELECT next_offset FROM ferry_sink_offsets WHERE connector = $1 AND topic = 't' AND partition = 0",
            &[&name],
        )
        .await
        .expect("offset");
    assert_eq!(stored.get::<_, i64>(0), 25);
    drop(zombie);
    drop(owner);
    drop_table(&db, &name, &name).await;
}

/// `examples/postgres/ferry.yaml` as a user runs it: the demo CRM's contacts,
/// normalized to Avro through the registry, land in a `contacts` table with
/// their types (timestamp-millis as timestamptz).
#[tokio::test(flavor = "multi_thread")]
async fn the_example_fills_the_contacts_table_from_the_demo_crm() {
    let db = pg().await;
    let table = unique("pg_example_contacts");
    let ddl = std::fs::read_to_string(repo_root().join("examples/postgres/contacts.sql"))
        .expect("contacts.sql");
    db.batch_execute(&ddl.replace("EXISTS contacts", &format!("EXISTS {table}")))
        .await
        .expect("create table");
    // Offsets of an earlier run of the example (another broker) would not apply.
    db.execute(
        "DELETE FROM ferry_sink_offsets WHERE connector = 'contacts-to-postgres'",
        &[],
    )
    .await
    .ok();
    let sb = crate::Sandbox::new();
    let mut env = sb.env();
    env.push(("FERRY_POSTGRES_URL", pg_url()));
    env.push(("FERRY_POSTGRES_TABLE", table.clone()));
    let ferry = start_ferry(
        "up",
        std::path::Path::new("examples/postgres/ferry.yaml"),
        env,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(180);
    let query = format!(
        "SELECT count(*), count(updated_at), count(*) FILTER (WHERE source = 'demo-crm' AND email LIKE '%@%') FROM {table}"
    );
    loop {
        let row = db.query_one(&query, &[]).await.expect("count");
        let counts: (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        if counts.0 >= 20 {
            assert_eq!(
                counts,
                (counts.0, counts.0, counts.0),
                "every contact complete"
            );
            break;
        }
        assert!(Instant::now() < deadline, "contacts in {table}: {counts:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let recent = db
        .query_one(
            &format!("SELECT count(*) FROM {table} WHERE updated_at > now() - interval '30 days'"),
            &[],
        )
        .await
        .expect("timestamps");
    assert!(
        recent.get::<_, i64>(0) > 0,
        "epoch milliseconds became timestamptz"
    );
    stop(ferry).await;
    drop_table(&db, &table, "contacts-to-postgres").await;
}

/// A record with a value, `{"id": .., ...fields}` at `offset` of partition 0.
fn record_at(
    topic: &str,
    offset: i64,
    value: Option<serde_json::Value>,
) -> ferry::sink::SinkRecord {
    ferry::sink::SinkRecord {
        topic: topic.to_owned(),
        partition: 0,
        offset,
        timestamp: None,
        key: value
            .as_ref()
            .and_then(|v| v["id"].as_str().map(str::to_owned))
            .or(Some("gone".to_owned())),
        raw_key: None,
        raw: value.as_ref().map(|v| v.to_string().into_bytes()),
        value: value.unwrap_or(serde_json::Value::Null),
        headers: Vec::new(),
        correlation_id: String::new(),
    }
}

async fn open_sink(
    name: &str,
    settings: serde_json::Value,
) -> ferry_connectors::sinks::postgres::sink::PostgresSink {
    use ferry::sink::Sink;
    let mut all = serde_json::json!({"topic": "t", "url": pg_url(), "table": name});
    if let (Some(a), Some(s)) = (all.as_object_mut(), settings.as_object()) {
        a.extend(s.clone());
    }
    let cfg = serde_json::from_value(all).expect("config");
    let mut sink =
        ferry_connectors::sinks::postgres::sink::PostgresSink::new(name, cfg).expect("sink");
    let ctx = ferry::sink::SinkContext {
        name: name.to_owned(),
        output: None,
    };
    sink.open(&ctx).await.expect("open");
    sink
}

/// `create_table`: the first record with a value makes the table (typed
/// from its JSON, keyed by `key_columns`); a tombstone before it is skipped.
#[tokio::test(flavor = "multi_thread")]
async fn create_table_makes_the_table_from_the_first_record() {
    use ferry::sink::Sink;
    let db = pg().await;
    let name = unique("pg_create");
    let mut sink = open_sink(
        &name,
        serde_json::json!({"create_table": true, "key_columns": ["id"]}),
    )
    .await;
    let v = |id: &str, n: i64| Some(serde_json::json!({"id": id, "n": n, "tags": {"a": n}}));
    let batch = [
        record_at("t", 0, None),
        record_at("t", 1, v("a", 1)),
        record_at("t", 2, v("b", 2)),
        record_at("t", 3, v("a", 3)),
    ];
    sink.write(&batch).await.expect("write");
    let types: Vec<(String, String)> = db
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
            &[&name],
        )
        .await
        .expect("columns")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(String, String)> = [("id", "text"), ("n", "bigint"), ("tags", "jsonb")]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    assert_eq!(types, expected);
    let rows: Vec<(String, i64)> = db
        .query(&format!("SELECT id, n FROM {name} ORDER BY id"), &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![("a".to_owned(), 3), ("b".to_owned(), 2)]);
    drop(sink);
    drop_table(&db, &name, &name).await;
}

/// A value that does not fit its column: the records before it are
/// committed with their offset, it fails for good naming the column and
/// both types, the rest are not attempted; the next write goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_value_that_does_not_fit_fails_alone_naming_the_column() {
    use ferry::sink::{RecordOutcome, Sink};
    let db = pg().await;
    let name = unique("pg_misfit");
    db.batch_execute(&format!(
        "CREATE TABLE {name} (id text PRIMARY KEY, n bigint)"
    ))
    .await
    .expect("create table");
    let mut sink = open_sink(&name, serde_json::json!({})).await;
    let batch = [
        record_at("t", 0, Some(serde_json::json!({"id": "a", "n": 1}))),
        record_at("t", 1, Some(serde_json::json!({"id": "b", "n": {"x": 1}}))),
        record_at("t", 2, Some(serde_json::json!({"id": "c", "n": 3}))),
    ];
    let failure = sink.write(&batch).await.expect_err("b does not fit");
    let o = failure.outcomes();
    assert!(matches!(o[0], RecordOutcome::Written), "{o:?}");
    assert!(
        matches!(&o[1], RecordOutcome::Failed(e) if !e.is_retryable()
            && e.message.contains("`n`") && e.message.contains("bigint")
            && e.message.contains("object") && e.message.contains("t/0@1")),
        "{o:?}"
    );
    assert!(matches!(o[2], RecordOutcome::NotAttempted), "{o:?}");
    assert_eq!(stored_offset(&db, &name, "t").await, Some(1));
    sink.write(&batch[2..]).await.expect("the rest");
    let ids: Vec<String> = db
        .query(&format!("SELECT id FROM {name} ORDER BY id"), &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, ["a", "c"]);
    assert_eq!(stored_offset(&db, &name, "t").await, Some(3));
    // Text the column's type refuses: PostgreSQL does not say which column;
    // the sink finds it.
    let bad = [record_at(
        "t",
        3,
        Some(serde_json::json!({"id": "d", "n": "many"})),
    )];
    let failure = sink.write(&bad).await.expect_err("`many` is not a bigint");
    assert!(
        matches!(&failure.outcomes()[0], RecordOutcome::Failed(e) if !e.is_retryable()
            && e.message.contains("column `n` (bigint)") && e.message.contains("22P02")),
        "{:?}",
        failure.outcomes()
    );
    assert_eq!(stored_offset(&db, &name, "t").await, Some(3));
    drop(sink);
    drop_table(&db, &name, &name).await;
}

/// The seam in the sink contract: where the table says a partition
/// resumes wins over the group's committed offset. After a full run the
/// table's offset is moved back and the rows after it deleted (what an
/// offset reset of a sink that keeps its offsets in its target does); the
/// group's committed offset still says "done". A restarted Ferry must read
/// from the table's offset and fill the table again.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_resumes_where_the_table_says_not_where_the_group_committed() {
    const N: i64 = 300;
    const BACK_TO: i64 = 120;
    let db = pg().await;
    let name = unique("pg_resume");
    let setup = SinkSetup::new(&name).await;
    db.batch_execute(&format!(
        "CREATE TABLE {name} (id bigint PRIMARY KEY, payload text)"
    ))
    .await
    .expect("create table");
    let records: Vec<Rec> = (0..N)
        .map(|n| {
            (
                format!("{n}"),
                Some(serde_json::json!({"id": n, "payload": format!("p{n}")})),
            )
        })
        .collect();
    produce(&setup.broker.bootstrap, &setup.topic, &records).await;
    let cfg = config(&setup, &name, &name, "    batch_max_records: 50\n");
    let ferry = start_ferry("run", &cfg, Vec::new()).await;
    wait_for_offset(&db, &name, &setup.topic, N).await;
    // A graceful stop commits the group's offsets to the end.
    stop(ferry).await;
    db.batch_execute(&format!(
        "DELETE FROM {name} WHERE id >= {BACK_TO}; \
         UPDATE ferry_sink_offsets SET next_offset = {BACK_TO} WHERE connector = '{name}'"
    ))
    .await
    .expect("move the table back");
    let ferry = start_ferry("run", &cfg, Vec::new()).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rows: i64 = db
            .query_one(&format!("SELECT count(*) FROM {name}"), &[])
            .await
            .expect("count")
            .get(0);
        if rows == N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{rows} rows of {N}: the restarted sink did not resume from the table's offset {BACK_TO}\n{}",
            ferry.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for_offset(&db, &name, &setup.topic, N).await;
    finish(ferry, &db, &name, setup).await;
}

/// A value longer than a `varchar(n)` column is refused and dead-lettered,
/// never cut to fit: an explicit cast would truncate `ORD-12345` to
/// `ORD-1234`, a different key, and overwrite that row.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_too_long_for_its_column_is_dead_lettered_not_truncated() {
    let db = pg().await;
    let name = unique("pg_long");
    let setup = SinkSetup::new(&name).await;
    db.batch_execute(&format!(
        "CREATE TABLE {name} (id varchar(8) PRIMARY KEY, note text); \
         INSERT INTO {name} VALUES ('ORD-1234', 'kept')"
    ))
    .await
    .expect("create table");
    let records: Vec<Rec> = vec![
        (
            "ORD-12345".into(),
            Some(serde_json::json!({"id": "ORD-12345", "note": "too long"})),
        ),
        (
            "ORD-1".into(),
            Some(serde_json::json!({"id": "ORD-1", "note": "fits"})),
        ),
    ];
    produce(&setup.broker.bootstrap, &setup.topic, &records).await;
    let cfg = config(&setup, &name, &name, "");
    let ferry = start_ferry("run", &cfg, Vec::new()).await;
    wait_for_offset(&db, &name, &setup.topic, 2).await;
    let rows: Vec<(String, String)> = db
        .query(&format!("SELECT id, note FROM {name} ORDER BY id"), &[])
        .await
        .expect("read")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        [
            ("ORD-1".to_owned(), "fits".to_owned()),
            ("ORD-1234".to_owned(), "kept".to_owned())
        ],
        "the long key neither truncated onto `ORD-1234` nor written"
    );
    let letters = dead_letters(&setup, &name).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].key.as_deref(), Some("ORD-12345"));
    finish(ferry, &db, &name, setup).await;
}

/// A write blocked by another session's lock does not hang: the sink's
/// `timeout` becomes the statement and lock timeout, the write fails, is
/// retried with backoff and shows as `last_error` on `/connectors`; once
/// the lock is released every record lands, exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_blocked_by_a_lock_times_out_is_reported_and_lands_once_released() {
    const N: i64 = 40;
    let db = pg().await;
    let locker = pg().await;
    let name = unique("pg_locked");
    let setup = SinkSetup::new(&name).await;
    db.batch_execute(&format!(
        "CREATE TABLE {name} (id bigint PRIMARY KEY, payload text)"
    ))
    .await
    .expect("create table");
    // Another session holds the table until told to let go.
    locker
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .expect("lock the table");
    let records: Vec<Rec> = (0..N)
        .map(|n| {
            (
                format!("{n}"),
                Some(serde_json::json!({"id": n, "payload": format!("p{n}")})),
            )
        })
        .collect();
    produce(&setup.broker.bootstrap, &setup.topic, &records).await;
    let cfg = config(
        &setup,
        &name,
        &name,
        "    timeout: 1s\n    retry:\n      initial_backoff: 100ms\n      max_backoff: 500ms\n",
    );
    let ferry = start_ferry("run", &cfg, Vec::new()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let reported = loop {
        let body = crate::rebalance::admin_get(setup.admin, "/connectors").await;
        let states: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let last = states
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == name.as_str()))
            .and_then(|c| c["last_error"].as_str().map(str::to_owned));
        if let Some(last) = last.filter(|l| l.contains("timeout") || l.contains("canceling")) {
            break last;
        }
        assert!(
            Instant::now() < deadline,
            "no timeout reported while the table is locked: {body}\n{}",
            ferry.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        stored_offset(&db, &name, &setup.topic).await,
        None,
        "{reported}"
    );
    locker
        .batch_execute("COMMIT")
        .await
        .expect("release the lock");
    wait_for_offset(&db, &name, &setup.topic, N).await;
    let rows: i64 = db
        .query_one(&format!("SELECT count(*) FROM {name}"), &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, N, "every record once after the lock ({reported})");
    finish(ferry, &db, &name, setup).await;
}
