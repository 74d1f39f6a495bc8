//! A source's `mapping:` section: the raw payload of each event becomes a
//! record of a normalized schema (see [`ferry::transform`]).
//!
//! ```yaml
//! mapping:
//!   schema: contact.avsc          # the topic's value schema (in schemas_dir)
//!   dead_letter_topic: crm.dlq    # default <connector>.dlq
//!   fields: { id: { from: [/contactId, /id] }, raw: raw, ... }
//!   # or, for what config cannot say, a transform written in Rust
//!   # (registered in `registry::TRANSFORMS`, handed over in the planning `Context`):
//!   # transform: salesforce_contact
//! ```
//!
//! Checked when the config is planned (`ferry validate` too): the schema
//! file is read and the mapping compiled against it, so a field the schema
//! lacks, an unmapped required field or a normalizer that cannot fill its
//! field stops Ferry before it connects, naming the key.

use crate::plan::{Context, MAPPING_KEY};
use ferry::config::ConfigError;
use ferry::runtime::{Planned, SourceMapping};
use ferry::schema::files::SchemaFile;
use ferry::transform::{Mapping, MappingConfig, Transform};
use serde_json::Value as Json;
use std::path::PathBuf;
use std::sync::Arc;

/// A compiled `mapping:` section.
pub struct Compiled {
    pub transform: Arc<dyn Transform>,
    /// The schema file as written (relative to `schemas_dir` unless absolute).
    pub schema: PathBuf,
    /// The schema it was compiled against.
    pub schema_file: SchemaFile,
    pub dead_letter_topic: String,
}

/// Compiles the connector's `mapping:` section, if it has one, and attaches
/// it to its plan: the topic's value schema becomes the mapping's schema.
pub fn attach(ctx: &Context<'_>, plan: &mut Planned) -> Result<(), ConfigError> {
    if !ctx.spec.settings.contains_key(MAPPING_KEY) {
        return Ok(());
    }
    // A processor (a sink writing topics of its own, such as `map`) reads
    // its mapping itself.
    if let Planned::Sink { settings, .. } = plan {
        if !settings.outputs.is_empty() {
            return Ok(());
        }
    }
    match plan {
        Planned::Source { topic, mapping, .. } => {
            let compiled = compile(ctx, &topic.name)?
                .ok_or_else(|| ctx.invalid(MAPPING_KEY, "expected a mapping section"))?;
            topic.value_schema = Some(compiled.schema.clone());
            *mapping = Some(SourceMapping {
                transform: compiled.transform,
                dead_letter_topic: compiled.dead_letter_topic,
            });
            Ok(())
        }
        // A webhook: its events are mapped like a poll source's records.
        // One mapping reads one vendor's payload, so it takes a connector
        // that writes one topic; a connector routing event types to
        // several topics maps each with a `type: map` processor.
        Planned::Push {
            topics, mappings, ..
        } => {
            let [topic] = topics.as_mut_slice() else {
                let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
                return Err(ctx.invalid(
                    MAPPING_KEY,
                    format!(
                        "a mapping applies to a webhook that writes one topic; this one routes to {} ({}): map each with a `type: map` processor",
                        names.len(),
                        names.join(", ")
                    ),
                ));
            };
            let compiled = compile(ctx, &topic.name)?
                .ok_or_else(|| ctx.invalid(MAPPING_KEY, "expected a mapping section"))?;
            topic.value_schema = Some(compiled.schema.clone());
            mappings.insert(
                topic.name.clone(),
                SourceMapping {
                    transform: compiled.transform,
                    dead_letter_topic: compiled.dead_letter_topic,
                },
            );
            Ok(())
        }
        Planned::Sink { .. } => Err(ctx.invalid(
            MAPPING_KEY,
            format!(
                "connector type `{}` takes no `mapping:` (sources and webhooks do; to map a topic into another, use a `type: map` processor)",
                ctx.spec.kind
            ),
        )),
    }
}

/// Parses and compiles the connector's `mapping:` section (`None` when it
/// has none). `topic` is the topic the source writes: a value schema
/// declared for it in `topics:` must be the mapping's.
pub fn compile(ctx: &Context<'_>, topic: &str) -> Result<Option<Compiled>, ConfigError> {
    let config = ctx.config;
    let Some(section) = ctx.spec.settings.get(MAPPING_KEY) else {
        return Ok(None);
    };
    let Json::Object(section) = section else {
        return Err(ctx.invalid(MAPPING_KEY, "expected a section (`schema:` and `fields:`)"));
    };
    let mut rest = section.clone();
    let declared = config
        .topics
        .iter()
        .find(|t| t.name == topic)
        .and_then(|t| t.value_schema.clone());
    let schema = match (rest.remove("schema"), declared) {
        (Some(Json::String(s)), Some(d)) if std::path::Path::new(&s) != d => {
            return Err(ctx.invalid(
                "mapping.schema",
                format!(
                    "`{s}` is not the value schema `topics:` declares for `{topic}` (`{}`): the mapped records must fit the topic's schema",
                    d.display()
                ),
            ))
        }
        (Some(Json::String(s)), _) => PathBuf::from(s),
        (Some(other), _) => {
            return Err(ctx.invalid(
                "mapping.schema",
                format!("expected a schema file name, found {}", ferry::schema::json::kind(&other)),
            ))
        }
        (None, Some(d)) => d,
        (None, None) => {
            return Err(ctx.invalid(
                "mapping.schema",
                format!("missing: name the `.avsc` file of the normalized records (or declare `value_schema` for `{topic}` in `topics:`)"),
            ))
        }
    };
    let dead_letter_topic = match rest.remove("dead_letter_topic") {
        None => format!("{}.dlq", ctx.spec.name),
        Some(Json::String(t)) if !t.trim().is_empty() && t != topic => t,
        Some(other) => {
            return Err(ctx.invalid(
                "mapping.dead_letter_topic",
                format!("expected a topic name other than `{topic}`, found {other}"),
            ))
        }
    };
    let path = ferry::schema::bindings::schema_path(config, &schema);
    let schema_file =
        SchemaFile::load(&path).map_err(|e| ctx.invalid("mapping.schema", e.to_string()))?;
    let transform = match rest.remove("transform") {
        Some(Json::String(name)) => {
            if !rest.is_empty() {
                let keys: Vec<&String> = rest.keys().collect();
                return Err(ctx.invalid(
                    "mapping.transform",
                    format!("a Rust transform takes no other mapping keys (found {keys:?})"),
                ));
            }
            let known: Vec<&str> = ctx.transforms.iter().map(|(n, _)| *n).collect();
            let factory = ctx
                .transforms
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, f)| f)
                .ok_or_else(|| {
                    ctx.invalid(
                        "mapping.transform",
                        format!("unknown transform `{name}` (known: {})", known.join(", ")),
                    )
                })?;
            factory(&schema_file.schema)
                .map_err(|e| ctx.invalid("mapping.transform", format!("`{name}`: {e}")))?
        }
        Some(other) => {
            return Err(ctx.invalid(
                "mapping.transform",
                format!(
                    "expected a transform's name, found {}",
                    ferry::schema::json::kind(&other)
                ),
            ))
        }
        None => {
            let parsed: MappingConfig = serde_path_to_error::deserialize(Json::Object(rest))
                .map_err(|e| {
                    let path = e.path().to_string();
                    let key = if path == "." {
                        "mapping".to_owned()
                    } else {
                        format!("mapping.{path}")
                    };
                    ctx.invalid(&key, e.into_inner().to_string())
                })?;
            let mapping = Mapping::compile(&parsed, &schema_file.schema).map_err(|e| {
                let key = if e.field.is_empty() {
                    "mapping.fields".to_owned()
                } else {
                    format!("mapping.fields.{}", e.field)
                };
                ctx.invalid(&key, e.to_string())
            })?;
            Arc::new(mapping)
        }
    };
    Ok(Some(Compiled {
        transform,
        schema,
        schema_file,
        dead_letter_topic,
    }))
}
