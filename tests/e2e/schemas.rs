//! Avro through the schema registry `ferry up` serves, with clients nobody
//! here wrote (Python's confluent-kafka SchemaRegistryClient, AvroSerializer
//! and AvroDeserializer), and the `ferry schemas` contract guard.

use crate::{ferry_bin, Sandbox};
use ferry_testkit::{python, repo_root, FerryProcess, Finished};
use std::path::Path;
use std::time::Duration;

const CONTACTS: &str = "ferry.quickstart.contacts";

fn ferry(args: &[&str], sb: &Sandbox, stdin: Option<&str>) -> Finished {
    FerryProcess::run_with_stdin(
        &ferry_bin(),
        args,
        &repo_root(),
        &sb.env(),
        stdin,
        Duration::from_secs(90),
    )
}

fn up(sb: &Sandbox) -> FerryProcess {
    let mut p = FerryProcess::spawn(&ferry_bin(), &["up"], &repo_root(), &sb.env());
    p.wait_for_stdout("Press Ctrl-C to stop.", Duration::from_secs(90));
    p
}

const PY_AVRO: &str = r#"
import datetime, decimal, json, sys, time
from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

bootstrap, registry, topic, schema_path, expect = sys.argv[1:6]
sr = SchemaRegistryClient({"url": registry})
ctx = SerializationContext(topic, MessageField.VALUE)

# Read what Ferry wrote.
deser = AvroDeserializer(sr)
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "py-avro",
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe([topic])
got, deadline = [], time.time() + 60
while len(got) < int(expect) and time.time() < deadline:
    m = c.poll(1.0)
    if m is None or m.error():
        continue
    got.append(deser(m.value(), ctx))
c.close()

# Write two contacts the Confluent way (auto-registering the schema).
ser = AvroSerializer(sr, open(schema_path).read())
p = Producer({"bootstrap.servers": bootstrap})
for i in range(2):
    p.produce(topic, key=f"py-{i}", value=ser({
        "id": f"py-{i}", "name": f"Py {i}", "email": f"py{i}@example.com", "phone": None,
        "source": "python",
        "updated_at": datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.timezone.utc),
        "lifetime_value": decimal.Decimal("10.50"), "raw": b'{"from": "python"}'}, ctx))
left = p.flush(30)

def plain(v):
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, datetime.datetime):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, bytes):
        return v.decode()
    return v

latest = sr.get_latest_version(f"{topic}-value")
print(json.dumps({"got": [plain(x) for x in got], "unflushed": left,
                  "latest_id": latest.schema_id, "latest_version": latest.version}))
"#;

/// Ferry writes Avro that Python decodes; Python writes Avro that
/// `ferry tail` decodes; both use the one schema id Ferry's registry gave.
#[test]
fn python_and_ferry_exchange_avro_through_ferrys_registry() {
    let sb = Sandbox::new();
    let mut ferry_up = up(&sb);
    let banner = ferry_up.stdout();
    assert!(
        banner.contains(&sb.registry_url()),
        "banner names the registry: {banner}"
    );
    assert!(
        banner.contains("ferry.quickstart.contacts-value"),
        "{banner}"
    );

    let lines = [
        r#"{"id": "f-1", "name": "Ada", "email": "ada@example.com", "source": "crm", "updated_at": "2026-11-25T10:00:00Z", "lifetime_value": "1234.50", "raw": "{\"id\": \"f-1\"}"}"#,
        r#"{"id": "f-2", "source": "crm", "raw": "{}"}"#,
        r#"{"id": "f-3", "name": "Grace", "phone": "+15550100", "source": "crm", "raw": "{\"id\": \"f-3\"}"}"#,
    ];
    let produced = ferry(
        &["produce", CONTACTS, "--key-field", "/id"],
        &sb,
        Some(&(lines.join("\n") + "\n")),
    );
    assert_eq!(produced.code, Some(0), "{}", produced.stderr);
    assert!(
        produced.stderr.contains("3 record(s) written"),
        "{}",
        produced.stderr
    );

    let schema = repo_root().join("schemas/contact.avsc");
    let out = python::run_script(
        PY_AVRO,
        &[
            &sb.broker.to_string(),
            &sb.registry_url(),
            CONTACTS,
            &schema.display().to_string(),
            "3",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("python prints JSON");
    assert_eq!(report["unflushed"], 0, "{report}");
    let mut got: Vec<serde_json::Value> = report["got"].as_array().cloned().unwrap_or_default();
    got.sort_by_key(|v| v["id"].as_str().map(str::to_owned));
    assert_eq!(
        got.len(),
        3,
        "Python decoded every record Ferry wrote: {report}"
    );
    assert_eq!(got[0]["email"], "ada@example.com");
    assert_eq!(got[0]["lifetime_value"], "1234.50");
    assert_eq!(got[0]["updated_at"], "2026-11-25T10:00:00+00:00");
    assert_eq!(got[1]["name"], serde_json::Value::Null, "defaults applied");
    assert_eq!(got[2]["phone"], "+15550100");
    // Python's serializer found Ferry's registration: one version, one id.
    assert_eq!(report["latest_version"], 1, "{report}");

    let tail = ferry(
        &[
            "tail",
            CONTACTS,
            "--from-beginning",
            "--max",
            "5",
            "--idle-timeout",
            "30s",
        ],
        &sb,
        None,
    );
    assert_eq!(tail.code, Some(0), "{}", tail.stderr);
    let records: Vec<serde_json::Value> = tail
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("tail prints JSON lines"))
        .collect();
    assert_eq!(records.len(), 5, "{}", tail.stdout);
    for r in &records {
        assert_eq!(r["value_schema_id"], report["latest_id"], "{r}");
    }
    let py: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["value"]["source"] == "python")
        .collect();
    assert_eq!(
        py.len(),
        2,
        "ferry tail decoded Python's records: {}",
        tail.stdout
    );
    assert!(py.iter().any(|r| r["value"]["email"] == "py1@example.com"));
    assert!(py.iter().all(|r| r["value"]["lifetime_value"] == "10.50"));
    assert!(py
        .iter()
        .all(|r| r["value"]["updated_at"] == 1_795_608_000_000_i64));
    assert!(py
        .iter()
        .all(|r| r["value"]["raw"] == r#"{"from": "python"}"#));

    assert_eq!(
        ferry_up.interrupt(Duration::from_secs(60)),
        Some(0),
        "{}",
        ferry_up.stderr()
    );
}

/// A copy of `schemas/` with `contact.avsc` changed by `edit`.
fn edited_schemas(edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("dir");
    for entry in std::fs::read_dir(repo_root().join("schemas")).expect("schemas/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "avsc") {
            let text = std::fs::read_to_string(&path).expect("read");
            let text = if path.ends_with("contact.avsc") {
                edit(&text)
            } else {
                text
            };
            std::fs::write(dir.path().join(path.file_name().expect("name")), text).expect("write");
        }
    }
    dir
}

fn email_becomes_int(text: &str) -> String {
    text.replace(
        r#"{"name": "email", "type": ["null", "string"]"#,
        r#"{"name": "email", "type": ["null", "int"]"#,
    )
}

fn adds_optional_field(text: &str) -> String {
    text.replace(
        r#"{"name": "source""#,
        r#"{"name": "company", "type": ["null", "string"], "default": null, "doc": "Employer."},
    {"name": "source""#,
    )
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn schemas_check_refuses_an_incompatible_change_against_the_registry() {
    let sb = Sandbox::new();
    let mut ferry_up = up(&sb);

    let list = ferry(&["schemas", "list"], &sb, None);
    assert_eq!(list.code, Some(0), "{}", list.stderr);
    assert!(
        list.stdout
            .contains("ferry.quickstart.contacts-value\tversion 1"),
        "{}",
        list.stdout
    );
    assert!(list.stdout.contains("BACKWARD"), "{}", list.stdout);

    let unchanged = ferry(&["schemas", "check"], &sb, None);
    assert_eq!(
        unchanged.code,
        Some(0),
        "{}{}",
        unchanged.stdout,
        unchanged.stderr
    );

    let bad = edited_schemas(email_becomes_int);
    let check = ferry(
        &["schemas", "check", "--dir", &path_str(bad.path())],
        &sb,
        None,
    );
    assert_eq!(check.code, Some(1), "{}{}", check.stdout, check.stderr);
    let fail = check
        .stdout
        .lines()
        .find(|l| l.starts_with("FAIL"))
        .unwrap_or_else(|| panic!("a FAIL line: {}", check.stdout));
    for needle in [
        "ferry.quickstart.contacts-value",
        "contact.avsc",
        "BACKWARD",
        "email",
    ] {
        assert!(fail.contains(needle), "FAIL line names {needle}: {fail}");
    }
    assert!(
        check.stderr.contains("1 schema(s) incompatible"),
        "{}",
        check.stderr
    );
    // Registering it is refused too, with Confluent's 409.
    let register = ferry(
        &["schemas", "register", "--dir", &path_str(bad.path())],
        &sb,
        None,
    );
    assert_eq!(register.code, Some(1), "{}", register.stdout);
    assert!(register.stderr.contains("409"), "{}", register.stderr);

    let good = edited_schemas(adds_optional_field);
    let check = ferry(
        &["schemas", "check", "--dir", &path_str(good.path())],
        &sb,
        None,
    );
    assert_eq!(check.code, Some(0), "{}{}", check.stdout, check.stderr);
    let register = ferry(
        &["schemas", "register", "--dir", &path_str(good.path())],
        &sb,
        None,
    );
    assert_eq!(register.code, Some(0), "{}", register.stderr);
    let list = ferry(&["schemas", "list"], &sb, None);
    assert!(
        list.stdout
            .contains("ferry.quickstart.contacts-value\tversion 2"),
        "{}",
        list.stdout
    );

    assert_eq!(
        ferry_up.interrupt(Duration::from_secs(60)),
        Some(0),
        "{}",
        ferry_up.stderr()
    );
}

/// The git-based guard: no broker, no registry (the URL points nowhere).
#[test]
fn schemas_check_against_a_directory_needs_no_registry() {
    let sb = Sandbox::new();
    let old = path_str(&repo_root().join("schemas"));
    let nowhere = ["--registry", "http://127.0.0.1:9"];

    let bad = edited_schemas(email_becomes_int);
    let mut args = vec!["schemas", "check", "--against-dir", &old];
    let bad_dir = path_str(bad.path());
    args.extend(["--dir", &bad_dir]);
    args.extend(nowhere);
    let check = ferry(&args, &sb, None);
    assert_eq!(check.code, Some(1), "{}{}", check.stdout, check.stderr);
    assert!(
        check
            .stdout
            .contains("FAIL  ferry.quickstart.contacts-value"),
        "{}",
        check.stdout
    );
    assert!(check.stdout.contains("email"), "{}", check.stdout);
    assert!(
        check.stdout.contains("ok    ferry.quickstart.events-value"),
        "{}",
        check.stdout
    );

    let good = edited_schemas(adds_optional_field);
    let good_dir = path_str(good.path());
    let mut args = vec![
        "schemas",
        "check",
        "--against-dir",
        &old,
        "--dir",
        &good_dir,
    ];
    args.extend(nowhere);
    let check = ferry(&args, &sb, None);
    assert_eq!(check.code, Some(0), "{}{}", check.stdout, check.stderr);
}

/// A line that is not JSON or does not fit the schema is refused with its
/// line number and field; the others are written.
#[test]
fn produce_refuses_bad_lines_and_writes_the_rest() {
    let sb = Sandbox::new();
    let mut ferry_up = up(&sb);
    let input = [
        r#"{"id": "ok-1", "source": "crm", "raw": "{}"}"#,
        r#"{"id": "bad-1", "source": "crm", "raw": "{}", "email": 42}"#,
        "not json",
        r#"{"id": "ok-2", "source": "crm", "raw": "{}"}"#,
    ]
    .join("\n");
    let f = ferry(&["produce", CONTACTS], &sb, Some(&input));
    assert_eq!(f.code, Some(1), "{}", f.stderr);
    assert!(
        f.stderr.contains("stdin line 2: refused: field `/email`"),
        "{}",
        f.stderr
    );
    assert!(
        f.stderr.contains("stdin line 3: refused: not JSON"),
        "{}",
        f.stderr
    );
    assert!(f.stderr.contains("2 record(s) written"), "{}", f.stderr);

    let tail = ferry(
        &[
            "tail",
            CONTACTS,
            "--from-beginning",
            "--max",
            "3",
            "--idle-timeout",
            "5s",
        ],
        &sb,
        None,
    );
    let ids: Vec<String> = tail
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["value"]["id"].as_str().map(str::to_owned))
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, vec!["ok-1", "ok-2"], "{}", tail.stdout);
    assert_eq!(
        ferry_up.interrupt(Duration::from_secs(60)),
        Some(0),
        "{}",
        ferry_up.stderr()
    );
}

/// With `schema_registry.url` set, Ferry serves no registry and registers
/// its topics' schemas in the one it is given, through the same client; a
/// schema that registry refuses stops startup, naming subject, file and field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_registry_is_used_and_its_verdict_respected() {
    let broker = ferry_testkit::TestBroker::start().await;
    let external = ferry_testkit::TestRegistry::start(&broker.bootstrap).await;
    let client = external.client();
    let sb = Sandbox::new();
    let mut env = sb.env();
    env.push(("FERRY__KAFKA__BOOTSTRAP_SERVERS", broker.bootstrap.clone()));
    env.push(("FERRY__SCHEMA_REGISTRY__URL", external.url.clone()));
    let args = ["run", "examples/quickstart.yaml"];

    // Another team registered contacts with `email` as an int: Ferry's
    // contact.avsc cannot read that data (BACKWARD), so Ferry does not start.
    let theirs = email_becomes_int(
        &std::fs::read_to_string(repo_root().join("schemas/contact.avsc")).expect("read"),
    );
    client
        .register("ferry.quickstart.contacts-value", &theirs)
        .await
        .expect("their schema");
    let f = FerryProcess::run(
        &ferry_bin(),
        &args,
        &repo_root(),
        &env,
        Duration::from_secs(90),
    );
    assert_eq!(f.code, Some(2), "refused at startup: {}", f.stderr);
    for needle in [
        "ferry.quickstart.contacts-value",
        "contact.avsc",
        "409",
        "BACKWARD",
        "email",
    ] {
        assert!(f.stderr.contains(needle), "names {needle}: {}", f.stderr);
    }

    // Once their subject is (soft-)deleted, Ferry registers its own.
    client
        .delete_subject("ferry.quickstart.contacts-value")
        .await
        .expect("delete");
    let mut ferry = FerryProcess::spawn(&ferry_bin(), &args, &repo_root(), &env);
    ferry.wait_for_stdout("Press Ctrl-C to stop.", Duration::from_secs(90));
    let banner = ferry.stdout();
    assert!(
        banner.contains(&external.url) && !banner.contains("served by Ferry"),
        "{banner}"
    );
    assert!(
        std::net::TcpStream::connect(sb.registry).is_err(),
        "Ferry serves no registry of its own"
    );
    assert_eq!(
        client.subjects().await.expect("subjects"),
        vec![
            "ferry.quickstart.contacts-value",
            "ferry.quickstart.crm-contacts-value",
            "ferry.quickstart.events-value",
            "ferry.quickstart.normalized-contacts-value",
            "ferry.quickstart.orders-value",
            "ferry.quickstart.webhooks-value"
        ]
    );
    let latest = client
        .latest("ferry.quickstart.contacts-value")
        .await
        .expect("latest")
        .expect("registered");
    assert_eq!(latest.version, 2, "versions continue after the deleted one");
    assert_eq!(
        ferry.interrupt(Duration::from_secs(60)),
        Some(0),
        "{}",
        ferry.stderr()
    );
    external.stop().await;
    broker.stop().await;
}
