//! `ferry contract check` as a user runs it, from the repository's root:
//! the examples' recorded API responses keep their vendors' JSON Schemas
//! and map into records that fit their Avro schemas; a response that breaks
//! its contract fails the command, naming the file and the path.

use crate::bad_input::assert_clean_failure;
use crate::ferry_bin;
use ferry_testkit::process::Finished;
use ferry_testkit::{repo_root, FerryProcess};
use std::time::Duration;

fn ferry(args: &[&str]) -> Finished {
    FerryProcess::run(
        &ferry_bin(),
        args,
        &repo_root(),
        &[],
        Duration::from_secs(90),
    )
}

#[test]
fn the_examples_keep_their_contracts() {
    let f = ferry(&["contract", "check", "examples/salesforce"]);
    assert_eq!(
        f.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        f.stdout,
        f.stderr
    );
    assert!(
        f.stdout.contains("  ok    ") && f.stdout.contains("0 failed"),
        "{}",
        f.stdout
    );
}

#[test]
fn a_broken_response_fails_the_check_naming_the_file_and_path() {
    let dir = tempfile::tempdir().expect("dir");
    let schema = repo_root().join("tests/fixtures/salesforce/v1/contact.schema.json");
    std::fs::write(
        dir.path().join("page.json"),
        r#"{"records":[{"Id":"1","LastName":"A","LastModifiedDate":"2024-05-01T10:00:00Z"},{"Id":2,"LastName":"B","LastModifiedDate":"2024-05-01T10:00:00Z"}]}"#,
    )
    .expect("write response");
    let contract = dir.path().join("crm.contract.yaml");
    std::fs::write(
        &contract,
        format!(
            "json_schema: {}\nresponses: [page.json]\nitems: /records\n",
            schema.display()
        ),
    )
    .expect("write contract");
    let f = ferry(&["contract", "check", &contract.display().to_string()]);
    assert_clean_failure(&f, 1, &["broke their contract"]);
    assert!(
        f.stdout.contains("FAIL") && f.stdout.contains("page.json"),
        "{}",
        f.stdout
    );
    assert!(f.stdout.contains("/records/1/Id: "), "{}", f.stdout);
    assert!(!f.stdout.contains("/records/0"), "{}", f.stdout);

    std::fs::write(
        &contract,
        "json_schema: missing.json\nresponses: [page.json]\n",
    )
    .expect("write");
    let f = ferry(&["contract", "check", &contract.display().to_string()]);
    assert_clean_failure(&f, 2, &["missing.json"]);
}
