//! `ferry test FILES...`: runs mapping cases with no broker (a folder
//! stands for the `*.test.yaml` files in it) (like `vector
//! test` and `rpk connect test`). Exit 0 when every case passes, 1 when one
//! fails (each failure names the case and the field), 2 when a file or the
//! config it names cannot be used.
//!
//! A test file names a config and one of its connectors, then cases:
//!
//! ```yaml
//! config: ../ferry.yaml          # relative to this file
//! connector: salesforce-contacts
//! cases:
//!   - name: a complete contact
//!     input: { contactId: "003A", email_address: " Ann@Example.COM " }
//!     # or input_file: fixtures/salesforce/v1/contact.json (raw bytes, relative to this file),
//!     # with input_pointer: /records/0 for one item of a recorded page
//!     expect: { id: "003A", email: ann@example.com }
//!   - name: a broken email goes to the dead-letter topic
//!     input: { id: "9", email_address: "ann(at)example.com" }
//!     expect_error: { field: email, rule: email }
//! ```
//!
//! `expect` lists fields of the mapped record as `ferry tail` prints them
//! (plain JSON; `null` for an empty optional field); fields it does not
//! list are not compared, a field the schema does not have is an error.
//! `expect_error` matches the mapping failure's `field`, `rule` and, if
//! given, a part of its `reason`.

use super::Failure;
use crate::plan::Context;
use serde::Deserialize;
use serde_json::Value as Json;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// The Ferry config, relative to the test file.
    config: PathBuf,
    /// The connector whose `mapping:` the cases run.
    connector: String,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// The payload, as JSON (serialized compactly as the raw bytes).
    #[serde(default)]
    input: Option<Json>,
    /// A file holding the payload exactly as an API sent it.
    #[serde(default)]
    input_file: Option<PathBuf>,
    /// With `input_file`: a JSON pointer to one item of a recorded page
    /// (`/records/0`); the case's input is that item.
    #[serde(default)]
    input_pointer: Option<String>,
    #[serde(default)]
    expect: Option<serde_json::Map<String, Json>>,
    #[serde(default)]
    expect_error: Option<ExpectError>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectError {
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    rule: Option<String>,
    /// A part of the reason.
    #[serde(default)]
    reason: Option<String>,
}

/// Runs every file (a folder stands for its `*.test.yaml` files, so the
/// configs beside them are not taken for tests).
pub(crate) fn run(files: &[PathBuf]) -> Result<(), Failure> {
    let paths = super::expand(files, ".test.yaml")?;
    let (mut passed, mut failed) = (0usize, 0usize);
    for path in &paths {
        println!("{}", path.display());
        for (name, outcome) in run_file(path)? {
            match outcome {
                Ok(()) => {
                    passed += 1;
                    println!("  ok    {name}");
                }
                Err(diff) => {
                    failed += 1;
                    println!("  FAIL  {name}");
                    for line in diff.lines() {
                        println!("        {line}");
                    }
                }
            }
        }
    }
    println!(
        "{} case(s): {passed} passed, {failed} failed",
        passed + failed
    );
    if failed > 0 {
        return Err(Failure::Runtime(format!("{failed} mapping case(s) failed")));
    }
    Ok(())
}

type Outcome = Result<(), String>;

/// Each case of one file and its outcome; `Err` when the file, its config
/// or its connector cannot be used.
fn run_file(path: &Path) -> Result<Vec<(String, Outcome)>, Failure> {
    let at = |m: String| Failure::Config(format!("{}: {m}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
    let file: TestFile = serde_yaml::from_str(&text).map_err(|e| at(e.to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let loaded = load_mapping(&base.join(&file.config), &file.connector)?;
    let mut out = Vec::with_capacity(file.cases.len());
    for case in &file.cases {
        let outcome = run_case(base, case, &loaded.compiled);
        out.push((case.name.clone(), outcome));
    }
    Ok(out)
}

/// One connector's compiled mapping, loaded from its config file.
pub(crate) struct LoadedMapping {
    pub connector: String,
    pub compiled: crate::mapping::Compiled,
}

impl LoadedMapping {
    /// Maps one payload and checks the record fits the topic's schema;
    /// `Err` says why not (the field, the rule).
    pub fn check(&self, raw: &[u8], payload: &Json) -> Result<(), String> {
        let value = self
            .compiled
            .transform
            .apply(raw, payload)
            .map_err(|e| e.to_string())?;
        let schema = &self.compiled.schema_file.schema;
        if value.validate(schema) {
            Ok(())
        } else {
            Err(format!(
                "the mapped record does not fit `{}`: {}",
                self.compiled.schema.display(),
                ferry::schema::json::to_json(schema, &value)
            ))
        }
    }
}

/// Loads `config_path` (no I/O beyond local files) and compiles the
/// `mapping:` of connector `name`.
pub(crate) fn load_mapping(config_path: &Path, name: &str) -> Result<LoadedMapping, Failure> {
    let config = ferry::config::load(config_path)?;
    let origin = config_path.display().to_string();
    let (i, spec) = config
        .connectors
        .iter()
        .enumerate()
        .find(|(_, c)| c.name == name)
        .ok_or_else(|| Failure::Config(format!("{origin}: no connector `{name}`")))?;
    let spec = &crate::plan::versioned(spec, &origin, i)?;
    let ctx = Context {
        spec,
        key: format!("connectors[{i}]"),
        origin: &origin,
        group_prefix: &config.kafka.consumer.group_id,
        config: &config,
        transforms: crate::registry::TRANSFORMS,
    };
    let topic = spec
        .settings
        .get("topic")
        .and_then(Json::as_str)
        .unwrap_or_default();
    let compiled = crate::mapping::compile(&ctx, topic)?.ok_or_else(|| {
        Failure::Config(format!(
            "{origin}: connector `{name}` has no `mapping:` section"
        ))
    })?;
    Ok(LoadedMapping {
        connector: name.to_owned(),
        compiled,
    })
}

fn run_case(base: &Path, case: &Case, compiled: &crate::mapping::Compiled) -> Outcome {
    let raw = match (&case.input, &case.input_file) {
        (Some(json), None) => serde_json::to_vec(json).map_err(|e| e.to_string())?,
        (None, Some(file)) => {
            let p = base.join(file);
            let bytes =
                std::fs::read(&p).map_err(|e| format!("input_file {}: {e}", p.display()))?;
            match &case.input_pointer {
                None => bytes,
                Some(ptr) => {
                    let page: Json = serde_json::from_slice(&bytes)
                        .map_err(|e| format!("input_file {}: not JSON: {e}", p.display()))?;
                    let item = page
                        .pointer(ptr)
                        .ok_or_else(|| format!("input_file {}: nothing at `{ptr}`", p.display()))?;
                    serde_json::to_vec(item).map_err(|e| e.to_string())?
                }
            }
        }
        _ => return Err("give exactly one of `input` and `input_file`".into()),
    };
    let payload: Json =
        serde_json::from_slice(&raw).map_err(|e| format!("the input is not JSON: {e}"))?;
    let result = compiled.transform.apply(&raw, &payload);
    match (result, &case.expect, &case.expect_error) {
        (Ok(value), Some(expect), None) => {
            let schema = &compiled.schema_file.schema;
            let got = ferry::schema::json::to_json(schema, &value);
            let mut diff = String::new();
            for (field, want) in expect {
                match got.get(field) {
                    None => {
                        let _ = writeln!(diff, "field `{field}`: the schema has no such field");
                    }
                    Some(have) if have != want => {
                        let _ = writeln!(diff, "field `{field}`: expected {want}, got {have}");
                    }
                    Some(_) => {}
                }
            }
            if diff.is_empty() {
                Ok(())
            } else {
                Err(diff)
            }
        }
        (Err(e), None, Some(want)) => {
            let mut diff = String::new();
            if let Some(f) = want.field.as_deref().filter(|f| *f != e.field) {
                let _ = writeln!(diff, "error field: expected `{f}`, got `{}` ({e})", e.field);
            }
            if let Some(r) = want.rule.as_deref().filter(|r| *r != e.rule.as_str()) {
                let _ = writeln!(diff, "error rule: expected `{r}`, got `{}` ({e})", e.rule);
            }
            if let Some(r) = want.reason.as_deref().filter(|r| !e.reason.contains(r)) {
                let _ = writeln!(
                    diff,
                    "error reason: expected it to contain {r:?}, got {:?}",
                    e.reason
                );
            }
            if diff.is_empty() {
                Ok(())
            } else {
                Err(diff)
            }
        }
        (Ok(value), None, Some(_)) => Err(format!(
            "expected a mapping error, got a record: {}",
            ferry::schema::json::to_json(&compiled.schema_file.schema, &value)
        )),
        (Err(e), Some(_), None) => Err(format!("expected a record, the mapping failed: {e}")),
        _ => Err("give exactly one of `expect` and `expect_error`".into()),
    }
}
