//! The `.avsc` files in `schemas/`: each parsed, errors naming the file.

use apache_avro::Schema;
use std::path::{Path, PathBuf};

/// A schema file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaFileError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a valid Avro schema: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// One parsed schema file.
#[derive(Debug, Clone)]
pub struct SchemaFile {
    pub path: PathBuf,
    /// The file's text, as written (what a registry is sent).
    pub text: String,
    pub schema: Schema,
}

impl SchemaFile {
    /// Reads and parses one `.avsc` file.
    pub fn load(path: &Path) -> Result<Self, SchemaFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| SchemaFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let schema = Schema::parse_str(&text).map_err(|e| SchemaFileError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_owned(),
            text,
            schema,
        })
    }

    /// The record's full name, e.g. `io.ferry.normalized.Contact`.
    pub fn full_name(&self) -> Option<String> {
        self.schema.name().map(|n| n.fullname(None))
    }
}

/// Every `*.avsc` file directly in `dir`, sorted by file name. Stops at the
/// first file that fails, naming it.
pub fn load_dir(dir: &Path) -> Result<Vec<SchemaFile>, SchemaFileError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SchemaFileError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "avsc"))
        .collect();
    paths.sort();
    paths.iter().map(|p| SchemaFile::load(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::schema::RecordSchema;

    fn schemas_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas")
    }

    #[test]
    fn every_schema_file_in_the_repository_parses() {
        let files = load_dir(&schemas_dir()).expect("every .avsc in schemas/ parses");
        let names: Vec<String> = files.iter().filter_map(SchemaFile::full_name).collect();
        assert!(
            names.contains(&"io.ferry.events.EventEnvelope".to_owned()),
            "{names:?}"
        );
        assert!(
            names.contains(&"io.ferry.normalized.Contact".to_owned()),
            "{names:?}"
        );
    }

    #[test]
    fn optional_fields_have_defaults_so_schemas_can_evolve() {
        for f in load_dir(&schemas_dir()).expect("parses") {
            let Schema::Record(RecordSchema { fields, .. }) = &f.schema else {
                panic!("{}: top level is a record", f.path.display());
            };
            for field in fields {
                if matches!(field.schema, Schema::Union(_)) {
                    assert!(
                        field.default.is_some(),
                        "{}: optional field `{}` has a default",
                        f.path.display(),
                        field.name
                    );
                }
            }
        }
    }

    #[test]
    fn invalid_schema_names_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("bad.avsc");
        std::fs::write(
            &path,
            r#"{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}"#,
        )
        .expect("write");
        let err = load_dir(dir.path()).expect_err("invalid").to_string();
        assert!(
            err.contains("bad.avsc") && err.contains("not a valid Avro schema"),
            "{err}"
        );
    }
}
