//! Which schema file goes under which subject: topics name their key and
//! value schema files in config, and the subject name strategy turns topic
//! and record name into a subject. A file no topic names is registered under
//! its record's full name (RecordNameStrategy), so every file in `schemas/`
//! has a subject and `ferry schemas check` can guard all of them.

use super::files::{load_dir, SchemaFile};
use super::subject::Part;
use crate::config::{ConfigError, FerryConfig};
use std::path::{Path, PathBuf};

/// A topic's key or value schema and the subject it is registered under.
#[derive(Debug, Clone)]
pub struct Binding {
    pub topic: String,
    pub part: Part,
    pub subject: String,
    pub file: SchemaFile,
}

/// The schema file `name` in the schemas folder (absolute paths are kept).
pub fn schema_path(config: &FerryConfig, name: &Path) -> PathBuf {
    if name.is_absolute() {
        name.to_owned()
    } else {
        config.schema_registry.schemas_dir.join(name)
    }
}

/// Reads and parses every schema file a topic names. Reads local files only;
/// errors name the config key and the file.
pub fn topic_bindings(config: &FerryConfig, origin: &str) -> Result<Vec<Binding>, ConfigError> {
    let strategy = config.schema_registry.subject_name_strategy;
    let mut out = Vec::new();
    for (i, topic) in config.topics.iter().enumerate() {
        let parts = [
            ("key_schema", Part::Key, &topic.key_schema),
            ("value_schema", Part::Value, &topic.value_schema),
        ];
        for (field, part, file) in parts {
            let Some(file) = file else { continue };
            let key = format!("topics[{i}].{field}");
            let path = schema_path(config, file);
            let file = SchemaFile::load(&path)
                .map_err(|e| ConfigError::invalid(origin, &key, e.to_string()))?;
            let subject = strategy
                .subject(&topic.name, part, file.full_name().as_deref())
                .map_err(|m| ConfigError::invalid(origin, &key, m))?;
            out.push(Binding {
                topic: topic.name.clone(),
                part,
                subject,
                file,
            });
        }
    }
    Ok(out)
}

/// Every `.avsc` file in `dir` with the subjects it is registered under.
pub fn file_subjects(
    config: &FerryConfig,
    origin: &str,
    dir: &Path,
) -> Result<Vec<(SchemaFile, Vec<String>)>, ConfigError> {
    let bindings = topic_bindings(config, origin)?;
    let files = load_dir(dir)
        .map_err(|e| ConfigError::invalid(origin, "schema_registry.schemas_dir", e.to_string()))?;
    Ok(files
        .into_iter()
        .map(|f| {
            let name = f.path.file_name();
            let mut subjects: Vec<String> = bindings
                .iter()
                .filter(|b| b.file.path.file_name() == name)
                .map(|b| b.subject.clone())
                .collect();
            if subjects.is_empty() {
                subjects.extend(f.full_name());
            }
            subjects.dedup();
            (f, subjects)
        })
        .collect())
}
