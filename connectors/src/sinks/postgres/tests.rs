//! Config validation: every mistake is caught before any I/O, naming the key.

#![allow(clippy::unwrap_used)]

use ferry::config::ConfigError;

/// Plans one postgres connector with `settings` (YAML, indented four spaces).
fn plan(settings: &str) -> Result<(), ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.yaml");
    let text = format!("connectors:\n  - name: pg\n    type: postgres\n{settings}");
    std::fs::write(&path, text).unwrap();
    let mut config = ferry::config::load(&path).unwrap();
    crate::registry::plan_all(&mut config, "ferry.yaml").map(|_| ())
}

const GOOD: &str = "    topic: contacts\n    url: postgres://postgres@127.0.0.1:5432/test\n    table: crm.contacts\n";

#[test]
fn a_good_config_plans_without_a_database() {
    plan(GOOD).unwrap();
    plan(&format!(
        "{GOOD}    mode: insert\n    columns: {{ id: /id, city: /address/city, doc: \"\" }}\n    password: secret\n    tls: require\n"
    ))
    .unwrap();
}

#[test]
fn mistakes_name_the_key() {
    let cases = [
        (format!("{GOOD}    mode: merge\n"), "connectors[0].mode"),
        (GOOD.replace("crm.contacts", "\"\""), "connectors[0].table"),
        (GOOD.replace("crm.contacts", "a.b.c"), "connectors[0].table"),
        (
            format!("{GOOD}    columns: {{ id: id }}\n"),
            "connectors[0].columns.id",
        ),
        (
            format!("{GOOD}    key_columns: [id]\n    columns: {{ name: /name }}\n"),
            "connectors[0].key_columns",
        ),
        (
            format!("{GOOD}    mode: insert\n    key_columns: [id]\n"),
            "connectors[0].key_columns",
        ),
        (
            format!("{GOOD}    create_table: true\n"),
            "connectors[0].key_columns",
        ),
        (
            format!("{GOOD}    batch_max_records: 0\n"),
            "connectors[0].batch_max_records",
        ),
        (
            format!("{GOOD}    pool_size: 1\n"),
            "connectors[0].pool_size",
        ),
        (format!("{GOOD}    tls: maybe\n"), "connectors[0].tls"),
        (format!("{GOOD}    colums: {{}}\n"), "connectors[0]"),
        (
            GOOD.replace("postgres://postgres@127.0.0.1:5432/test", "http://x y"),
            "connectors[0].url",
        ),
        (
            GOOD.replace("/test", "/test?sslmode=require"),
            "connectors[0].url",
        ),
        (
            GOOD.replace("    table: crm.contacts\n", ""),
            "connectors[0]",
        ),
    ];
    for (yaml, key) in cases {
        let err = plan(&yaml).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(key), "{yaml}\n=> {err}");
    }
}
