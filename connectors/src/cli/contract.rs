//! `ferry contract check FILES...`: recorded API responses against the
//! JSON Schema the vendor documents (so a silent change of the API shows up
//! as a failing check), and optionally each item's mapped record against the
//! topic's Avro schema. No broker. Exit 0 when every response and record
//! passes, 1 when one does not (each failure names the file, the item and
//! the JSON path), 2 when a contract file cannot be used. A folder stands
//! for its `*.contract.yaml` files.
//!
//! ```yaml
//! json_schema: v1/contact.schema.json   # relative to this file
//! responses: [v1/contact.json]          # recorded responses
//! items: /records                       # where the items are in a response (unset: it is one item)
//! # optional: map each item with this connector's `mapping:` as well
//! config: ../../../examples/salesforce/ferry.yaml
//! connector: salesforce-contacts
//! ```

use super::Failure;
use serde::Deserialize;
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Contract {
    /// The API's JSON Schema for one item.
    json_schema: PathBuf,
    /// Recorded responses.
    responses: Vec<PathBuf>,
    /// A JSON pointer to the array of items in a response.
    #[serde(default)]
    items: Option<String>,
    /// With `connector`: the Ferry config whose mapping to apply.
    #[serde(default)]
    config: Option<PathBuf>,
    #[serde(default)]
    connector: Option<String>,
}

/// Checks every contract file; prints one line per response.
pub(crate) fn check(files: &[PathBuf]) -> Result<(), Failure> {
    let paths = super::expand(files, ".contract.yaml")?;
    let mut failed = 0usize;
    let mut checked = 0usize;
    for path in &paths {
        println!("{}", path.display());
        for (response, problems) in check_file(path)? {
            checked += 1;
            if problems.is_empty() {
                println!("  ok    {}", response.display());
            } else {
                failed += 1;
                println!("  FAIL  {}", response.display());
                for p in problems {
                    println!("        {p}");
                }
            }
        }
    }
    println!(
        "{checked} response(s): {} passed, {failed} failed",
        checked - failed
    );
    if failed > 0 {
        return Err(Failure::Runtime(format!(
            "{failed} response(s) broke their contract"
        )));
    }
    Ok(())
}

/// Each response of one contract and what is wrong with it.
fn check_file(path: &Path) -> Result<Vec<(PathBuf, Vec<String>)>, Failure> {
    let at = |m: String| Failure::Config(format!("{}: {m}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
    let contract: Contract = serde_yaml::from_str(&text).map_err(|e| at(e.to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let schema_path = base.join(&contract.json_schema);
    let schema: Json = read_json(&schema_path).map_err(at)?;
    let validator = jsonschema::validator_for(&schema).map_err(|e| {
        at(format!(
            "{}: not a usable JSON Schema: {e}",
            schema_path.display()
        ))
    })?;
    let mapping = match (&contract.config, &contract.connector) {
        (Some(config), Some(connector)) => Some(super::mapping_test::load_mapping(
            &base.join(config),
            connector,
        )?),
        (None, None) => None,
        _ => return Err(at("`config` and `connector` go together".into())),
    };
    if contract.responses.is_empty() {
        return Err(at("`responses` lists no recorded response".into()));
    }
    let mut out = Vec::new();
    for response in &contract.responses {
        let file = base.join(response);
        let raw = std::fs::read(&file).map_err(|e| at(format!("{}: {e}", file.display())))?;
        let body: Json = serde_json::from_slice(&raw)
            .map_err(|e| at(format!("{}: not JSON: {e}", file.display())))?;
        let items: Vec<(String, &Json)> = match &contract.items {
            None => vec![(String::new(), &body)],
            Some(ptr) => match body.pointer(ptr) {
                Some(Json::Array(items)) => items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| (format!("{ptr}/{i}"), item))
                    .collect(),
                _ => {
                    out.push((file, vec![format!("no array of items at `{ptr}`")]));
                    continue;
                }
            },
        };
        let mut problems = Vec::new();
        for (at_item, item) in items {
            for e in validator.iter_errors(item) {
                let path = format!("{at_item}{}", e.instance_path());
                let path = if path.is_empty() {
                    "/".to_owned()
                } else {
                    path
                };
                problems.push(format!("{path}: {e}"));
            }
            if let Some(m) = &mapping {
                let raw_item = if at_item.is_empty() {
                    raw.clone()
                } else {
                    serde_json::to_vec(item).unwrap_or_default()
                };
                problems.extend(m.check(&raw_item, item).err().map(|e| {
                    let item = if at_item.is_empty() {
                        "/".to_owned()
                    } else {
                        at_item.clone()
                    };
                    format!("{item}: mapped with `{}`: {e}", m.connector)
                }));
            }
        }
        out.push((file, problems));
    }
    Ok(out)
}

fn read_json(path: &Path) -> Result<Json, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: not JSON: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// The example's config, with its schemas folder made absolute (it is
    /// relative to the working directory, the repository's root).
    fn example_config(dir: &Path) -> PathBuf {
        let text = std::fs::read_to_string(repo().join("examples/salesforce/ferry.yaml")).unwrap();
        let schemas = format!("schemas_dir: {}", repo().join("schemas").display());
        let path = dir.join("ferry.yaml");
        std::fs::write(&path, text.replace("schemas_dir: schemas", &schemas)).unwrap();
        path
    }

    #[test]
    fn the_salesforce_example_keeps_its_contract() {
        let dir = tempfile::tempdir().unwrap();
        example_config(dir.path());
        let text =
            std::fs::read_to_string(repo().join("examples/salesforce/salesforce.contract.yaml"))
                .unwrap()
                .replace("../../tests/", &format!("{}/tests/", repo().display()));
        let file = dir.path().join("salesforce.contract.yaml");
        std::fs::write(&file, text).unwrap();
        let results = check_file(&file).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(!results.is_empty());
        for (response, problems) in results {
            assert!(problems.is_empty(), "{}: {problems:?}", response.display());
        }
    }

    /// A vendor that silently renames a field and changes a type: the
    /// check names the item and the path.
    #[test]
    fn a_silent_api_change_is_caught_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = repo().join("tests/fixtures/salesforce/v1");
        std::fs::copy(
            fixtures.join("contact.schema.json"),
            dir.path().join("schema.json"),
        )
        .unwrap();
        let changed = r#"{"records":[{"Id":"1","LastName":"A","LastModifiedDate":"2024-05-01T10:00:00Z"},
            {"ContactId":"2","LastName":"B","LastModifiedDate":1714557600}]}"#;
        std::fs::write(dir.path().join("page.json"), changed).unwrap();
        let contract = dir.path().join("x.contract.yaml");
        std::fs::write(
            &contract,
            "json_schema: schema.json\nresponses: [page.json]\nitems: /records\n",
        )
        .unwrap();
        let results = check_file(&contract).unwrap_or_else(|e| panic!("{e:?}"));
        let problems = &results[0].1;
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("/records/1: ") && p.contains("Id")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("/records/1/LastModifiedDate")),
            "{problems:?}"
        );
        assert!(
            !problems.iter().any(|p| p.starts_with("/records/0")),
            "{problems:?}"
        );
    }

    /// An item that passes the API's schema but not the mapping (an email
    /// the normalizer refuses) fails the check too, naming the field.
    #[test]
    fn an_item_the_mapping_refuses_fails_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = repo().join("tests/fixtures/salesforce/v1");
        std::fs::copy(
            fixtures.join("contact.schema.json"),
            dir.path().join("schema.json"),
        )
        .unwrap();
        let page = r#"{"Id":"1","LastName":"A","email_address":"a(at)b.c","LastModifiedDate":"2024-05-01T10:00:00Z"}"#;
        std::fs::write(dir.path().join("one.json"), page).unwrap();
        let contract = dir.path().join("x.contract.yaml");
        let config = example_config(dir.path());
        std::fs::write(
            &contract,
            format!(
                "json_schema: schema.json\nresponses: [one.json]\nconfig: {}\nconnector: salesforce-contacts\n",
                config.display()
            ),
        )
        .unwrap();
        let results = check_file(&contract).unwrap_or_else(|e| panic!("{e:?}"));
        let problems = &results[0].1;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("field `email`"), "{problems:?}");
    }
}
