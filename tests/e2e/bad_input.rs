//! Bad input gets one clear message naming the file and key (or the address),
//! exit code 2 for config and 1 for runtime, and never a panic or backtrace.

use crate::{ferry_bin, Sandbox};
use ferry_testkit::process::Finished;
use ferry_testkit::{free_addr, repo_root, FerryProcess};
use std::path::Path;
use std::time::Duration;

fn ferry(args: &[&str], env: &[(&str, String)]) -> Finished {
    FerryProcess::run(
        &ferry_bin(),
        args,
        &repo_root(),
        env,
        Duration::from_secs(90),
    )
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("ferry.yaml");
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

/// One `error:` line, no panic, no backtrace.
pub(crate) fn assert_clean_failure(f: &Finished, code: i32, needles: &[&str]) {
    assert_eq!(f.code, Some(code), "exit code; stderr:\n{}", f.stderr);
    assert!(!f.stderr.contains("panicked"), "{}", f.stderr);
    assert!(
        !f.stderr.to_lowercase().contains("backtrace"),
        "{}",
        f.stderr
    );
    let errors: Vec<&str> = f
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "exactly one error line:\n{}", f.stderr);
    for n in needles {
        assert!(
            errors[0].contains(n),
            "{:?} should mention {n:?}",
            errors[0]
        );
    }
}

#[test]
fn malformed_yaml() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write_config(dir.path(), "kafka:\n  client_id: [unclosed\n");
    let f = ferry(&["validate", &path], &[]);
    assert_clean_failure(&f, 2, &[&path, "not valid YAML"]);
}

#[test]
fn unknown_key() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write_config(dir.path(), "kafka:\n  bootstrap_server: x:9092\n");
    let f = ferry(&["validate", &path], &[]);
    assert_clean_failure(&f, 2, &[&path, "kafka.bootstrap_server", "unknown field"]);
}

#[test]
fn wrong_type() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write_config(dir.path(), "topics:\n  - name: t\n    partitions: lots\n");
    let f = ferry(&["validate", &path], &[]);
    assert_clean_failure(&f, 2, &[&path, "topics[0].partitions"]);
    let f = ferry(&["up", &path], &[]);
    assert_clean_failure(&f, 2, &["topics[0].partitions"]);
}

#[test]
fn unknown_key_from_the_environment_names_the_variable() {
    let f = ferry(
        &["validate", "examples/quickstart.yaml"],
        &[("FERRY__ADMIN__LISTEN", "localhost".to_owned())],
    );
    assert_clean_failure(&f, 2, &["FERRY__ADMIN__LISTEN", "admin.listen"]);
}

#[test]
fn missing_env_secret_is_named_and_never_printed() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write_config(
        dir.path(),
        "kafka:\n  bootstrap_servers: 127.0.0.1:9092\n  security:\n    protocol: sasl_ssl\n    sasl_mechanism: PLAIN\n    sasl_username: ferry\n    sasl_password: ${env:FERRY_E2E_SASL_PASSWORD}\n",
    );
    let f = ferry(&["validate", &path], &[]);
    assert_clean_failure(
        &f,
        2,
        &[
            &path,
            "kafka.security.sasl_password",
            "FERRY_E2E_SASL_PASSWORD",
        ],
    );
    // With the variable set, the config is valid and the value is not printed.
    let f = ferry(
        &["validate", &path],
        &[("FERRY_E2E_SASL_PASSWORD", "hunter2-do-not-print".to_owned())],
    );
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert!(!f.stdout.contains("hunter2") && !f.stderr.contains("hunter2"));
}

#[test]
fn raw_librdkafka_option_fighting_a_typed_field() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write_config(
        dir.path(),
        "kafka:\n  librdkafka:\n    enable.idempotence: \"false\"\n",
    );
    let f = ferry(&["validate", &path], &[]);
    assert_clean_failure(
        &f,
        2,
        &["kafka.librdkafka.enable.idempotence", "idempotent"],
    );
}

#[test]
fn run_without_bootstrap_servers_is_a_config_error() {
    let f = ferry(&["run", "examples/quickstart.yaml"], &[]);
    assert_clean_failure(&f, 2, &["kafka.bootstrap_servers", "ferry up"]);
}

#[test]
fn unreachable_broker_in_run() {
    let addr = free_addr();
    let sb = Sandbox::new();
    let mut env = sb.env();
    env.push(("FERRY__KAFKA__BOOTSTRAP_SERVERS", addr.to_string()));
    env.push(("FERRY__KAFKA__REQUEST_TIMEOUT", "3s".to_owned()));
    let f = ferry(&["run", "examples/quickstart.yaml"], &env);
    assert_clean_failure(&f, 1, &["cannot reach Kafka", &addr.to_string()]);
}

#[test]
fn admin_port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let sb = Sandbox::new();
    let mut env = sb.env();
    env.retain(|(k, _)| *k != "FERRY__ADMIN__LISTEN");
    env.push(("FERRY__ADMIN__LISTEN", addr.to_string()));
    let f = ferry(&["up"], &env);
    assert_clean_failure(&f, 1, &["admin API", &addr.to_string(), "in use"]);
}

#[test]
fn broker_port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let sb = Sandbox::new();
    let mut env = sb.env();
    env.retain(|(k, _)| *k != "FERRY__EMBEDDED_BROKER__LISTEN");
    env.push(("FERRY__EMBEDDED_BROKER__LISTEN", addr.to_string()));
    let f = ferry(&["up"], &env);
    assert_clean_failure(&f, 1, &["embedded broker", &addr.to_string(), "in use"]);
}

#[test]
fn registry_port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let sb = Sandbox::new();
    let mut env = sb.env();
    env.retain(|(k, _)| *k != "FERRY__SCHEMA_REGISTRY__LISTEN");
    env.push(("FERRY__SCHEMA_REGISTRY__LISTEN", addr.to_string()));
    let f = ferry(&["up"], &env);
    assert_clean_failure(&f, 1, &["schema registry", &addr.to_string(), "in use"]);
}

#[test]
fn a_topic_naming_a_missing_or_invalid_schema_file_is_a_config_error() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("ferry.yaml");
    std::fs::write(
        &cfg,
        "topics:\n  - name: a\n    value_schema: missing.avsc\n",
    )
    .expect("write");
    let f = ferry(&["validate", &cfg.display().to_string()], &[]);
    assert_clean_failure(
        &f,
        2,
        &["ferry.yaml", "topics[0].value_schema", "missing.avsc"],
    );

    std::fs::write(
        dir.path().join("bad.avsc"),
        r#"{"type": "record", "name": "X"}"#,
    )
    .expect("write");
    std::fs::write(
        &cfg,
        format!(
            "schema_registry:\n  schemas_dir: {}\ntopics:\n  - name: a\n    value_schema: bad.avsc\n",
            dir.path().display()
        ),
    )
    .expect("write");
    let f = ferry(&["validate", &cfg.display().to_string()], &[]);
    assert_clean_failure(
        &f,
        2,
        &[
            "topics[0].value_schema",
            "bad.avsc",
            "not a valid Avro schema",
        ],
    );
}

#[test]
fn missing_config_file() {
    let f = ferry(&["validate", "does/not/exist.yaml"], &[]);
    assert_clean_failure(&f, 2, &["does/not/exist.yaml", "cannot read"]);
}

#[test]
fn bad_usage_exits_2_and_help_and_version_exit_0() {
    assert_eq!(ferry(&["frobnicate"], &[]).code, Some(2));
    let help = ferry(&["--help"], &[]);
    assert_eq!(help.code, Some(0));
    for cmd in [
        "up", "run", "validate", "topics", "tail", "produce", "schemas",
    ] {
        assert!(help.stdout.contains(cmd), "--help lists {cmd}");
    }
    let version = ferry(&["--version"], &[]);
    assert_eq!(version.code, Some(0));
    assert!(version.stdout.contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn quickstart_validates() {
    let f = ferry(&["validate", "examples/quickstart.yaml"], &[]);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
}

#[test]
fn connector_config_mistakes_name_the_connector_and_key() {
    let dir = tempfile::tempdir().expect("dir");
    let cases = [
        ("  - name: a\n    type: nope\n", vec!["connectors[0].type", "nope", "http_poll"]),
        (
            "  - name: a\n    type: http_poll\n    url: http://x/y\n    topic: t\n    shoe: 1\n",
            vec!["connectors[0].shoe", "unknown field"],
        ),
        (
            "  - name: a\n    type: http_poll\n    url: not a url\n    topic: t\n",
            vec!["connectors[0].url", "not a URL"],
        ),
        (
            "  - name: a\n    type: http\n    topic: t\n    url: http://x/{{ nope }}\n",
            vec!["connectors[0].url", "unknown placeholder `nope`"],
        ),
        (
            "  - name: a\n    type: http_poll\n    url: http://x/y\n    topic: t\n    interval: soon\n",
            vec!["connectors[0].interval"],
        ),
        (
            "  - name: a\n    type: http\n    topic: t\n    url: http://x/y\n    retry: { max_attempts: 0 }\n",
            vec!["connectors[0].retry.max_attempts"],
        ),
        (
            "  - name: a\n    type: http\n    topic: t\n    url: http://x/y\n    circuit_breaker: { failure_rate: 2 }\n",
            vec!["connectors[0].circuit_breaker.failure_rate", "not in (0, 1]"],
        ),
        (
            "  - name: a\n    type: http\n    topic: t\n    url: http://x/y\n    retry: { retry_on: [302] }\n",
            vec!["connectors[0].retry.retry_on", "302"],
        ),
        (
            "  - name: a\n    type: http_poll\n    url: http://x/y\n    topic: t\n    fallback: { topic: parked }\n",
            vec!["connectors[0].fallback", "skip"],
        ),
        (
            "  - name: a\n    type: http\n    topic: t\n    url: http://x/y\n    fallback: skip\n",
            vec!["connectors[0].fallback", "poll sources"],
        ),
        (
            "  - name: a\n    type: http\n    topic: t\n    url: http://x/y\n    ordering: loose\n",
            vec!["connectors[0].ordering", "loose"],
        ),
        (
            "  - name: a\n    type: http\n    topic: t\n    url: http://x/y\n    concurrency: 0\n",
            vec!["connectors[0].concurrency", "1 (in series, the default) to 256"],
        ),
        (
            "  - name: a\n    type: postgres\n    topic: t\n    url: postgres://u@h/db\n    table: t\n    concurrency: 1000\n",
            vec!["connectors[0].concurrency", "1000"],
        ),
        (
            "  - name: a\n    type: http_poll\n    url: http://x/y\n    topic: t\n  - name: a\n    type: http_poll\n    url: http://x/z\n    topic: u\n",
            vec!["connectors[1].name", "declared twice"],
        ),
    ];
    for (connectors, needles) in cases {
        let path = write_config(dir.path(), &format!("connectors:\n{connectors}"));
        let f = ferry(&["validate", &path], &[]);
        assert_clean_failure(&f, 2, &needles);
    }
}

#[test]
fn incremental_sync_with_page_numbers_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write_config(
        dir.path(),
        "connectors:\n  - name: crm\n    type: http_poll\n    url: http://127.0.0.1:9/c\n    topic: crm.events\n    pagination:\n      type: page\n    incremental:\n      field: /updated_at\n      param: since\n",
    );
    let f = ferry(&["validate", &path], &[]);
    assert_clean_failure(
        &f,
        2,
        &[&path, "connectors[0].pagination.type", "keyset pagination"],
    );
}
