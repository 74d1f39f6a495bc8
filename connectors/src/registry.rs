//! The one table of connectors: `type:` name to factory (Arroyo's
//! `connectors()` map). Adding a connector is a module and a line here.

use crate::plan::{versioned, Context, Factory, TransformFactory};
use ferry::config::{ConfigError, FerryConfig, TopicSpec};
use ferry::runtime::Planned;

/// Every built-in connector type.
pub const CONNECTORS: &[(&str, Factory)] = &[
    ("http_poll", crate::sources::http_poll::plan),
    ("webhook", crate::sources::webhook::plan),
    ("http", crate::sinks::http::plan),
    ("map", crate::sinks::map::plan),
    ("postgres", crate::sinks::postgres::plan),
];

/// Every transform written in Rust (`mapping: { transform: NAME }`): the
/// escape hatch for mappings config cannot say. Adding one is a function
/// and a line here.
pub const TRANSFORMS: &[(&str, TransformFactory)] =
    &[("salesforce_contact", crate::transforms::salesforce::contact)];

/// Plans every connector in `config` (no I/O), and adds the topics sources
/// write to (with their schemas) to `config.topics` unless declared there.
pub fn plan_all(
    config: &mut FerryConfig,
    origin: &str,
) -> Result<Vec<(String, Planned)>, ConfigError> {
    let mut planned = Vec::new();
    for (i, spec) in config.connectors.iter().enumerate() {
        let spec = &versioned(spec, origin, i)?;
        let ctx = Context {
            spec,
            key: format!("connectors[{i}]"),
            origin,
            group_prefix: &config.kafka.consumer.group_id,
            config,
            transforms: TRANSFORMS,
        };
        let factory = CONNECTORS
            .iter()
            .find(|(name, _)| *name == spec.kind)
            .map(|(_, f)| f)
            .ok_or_else(|| {
                let known: Vec<&str> = CONNECTORS.iter().map(|(n, _)| *n).collect();
                ConfigError::invalid(
                    origin,
                    format!("connectors[{i}].type"),
                    format!(
                        "unknown connector type `{}` (known: {})",
                        spec.kind,
                        known.join(", ")
                    ),
                )
            })?;
        let mut plan = factory(&ctx)?;
        crate::mapping::attach(&ctx, &mut plan)?;
        planned.push((spec.name.clone(), plan));
    }
    let mut paths: Vec<(&str, &str)> = Vec::new();
    for (i, (name, plan)) in planned.iter().enumerate() {
        if let Planned::Push { mount, .. } = plan {
            if let Some((_, other)) = paths.iter().find(|(p, _)| *p == mount.path) {
                return Err(ConfigError::invalid(
                    origin,
                    format!("connectors[{i}].path"),
                    format!(
                        "`{}` is already the path of connector `{other}`",
                        mount.path
                    ),
                ));
            }
            paths.push((&mount.path, name));
        }
    }
    for (_, plan) in &planned {
        match plan {
            Planned::Source { topic, .. } => add_topic(&mut config.topics, topic),
            Planned::Push { topics, .. } => {
                for topic in topics {
                    add_topic(&mut config.topics, topic);
                }
            }
            Planned::Sink { settings, .. } => {
                for topic in &settings.outputs {
                    add_topic(&mut config.topics, topic);
                }
            }
        }
    }
    Ok(planned)
}

/// A declared topic wins; if it has no value schema, the source's is used.
fn add_topic(topics: &mut Vec<TopicSpec>, topic: &TopicSpec) {
    match topics.iter_mut().find(|t| t.name == topic.name) {
        Some(t) => {
            if t.value_schema.is_none() {
                t.value_schema.clone_from(&topic.value_schema);
            }
        }
        None => topics.push(topic.clone()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Plans `connectors` (YAML, indented two spaces) in a config whose
    /// schemas are the repository's.
    fn plan(connectors: &str) -> Result<(FerryConfig, Vec<(String, Planned)>), ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.yaml");
        let schemas = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
        let text = format!(
            "schema_registry:\n  schemas_dir: {}\nconnectors:\n{connectors}",
            schemas.display()
        );
        std::fs::write(&path, text).unwrap();
        let mut config = ferry::config::load(&path).unwrap();
        let planned = plan_all(&mut config, "ferry.yaml")?;
        Ok((config, planned))
    }

    const TWO_VERSIONS: &str = r#"
  - name: crm-v1
    type: http_poll
    api_version: v1
    url: http://crm.example/{api_version}/contacts
    topic: crm.contacts.{api_version}
    mapping:
      schema: contact.avsc
      fields: { id: { from: /id }, source: { const: "crm-{api_version}" }, raw: raw }
  - name: crm-v2
    type: http_poll
    api_version: v2
    url: http://crm.example/{api_version}/contacts
    topic: crm.contacts.{api_version}
    mapping:
      schema: contact.avsc
      fields: { id: { from: /contact/id }, source: { const: "crm-{api_version}" }, raw: raw }
"#;

    #[test]
    fn two_versions_of_one_integration_get_their_own_topics_and_mappings() {
        let (config, planned) = plan(TWO_VERSIONS).unwrap();
        let topics: Vec<&str> = config.topics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(topics, ["crm.contacts.v1", "crm.contacts.v2"]);
        for t in &config.topics {
            assert_eq!(
                t.value_schema.as_deref(),
                Some(std::path::Path::new("contact.avsc"))
            );
        }
        let payload = serde_json::json!({"id": "a", "contact": {"id": "b"}});
        let raw = payload.to_string();
        for ((name, plan), (id, source)) in planned.iter().zip([("a", "crm-v1"), ("b", "crm-v2")]) {
            let Planned::Source {
                mapping: Some(m), ..
            } = plan
            else {
                panic!("{name}: no mapping attached")
            };
            assert_eq!(m.dead_letter_topic, format!("{name}.dlq"));
            let apache_avro::types::Value::Record(fields) =
                m.transform.apply(raw.as_bytes(), &payload).unwrap()
            else {
                panic!("{name}: not a record")
            };
            let get = |f: &str| fields.iter().find(|(n, _)| n == f).map(|(_, v)| v.clone());
            assert_eq!(
                get("id"),
                Some(apache_avro::types::Value::String(id.into())),
                "{name}"
            );
            assert_eq!(
                get("source"),
                Some(apache_avro::types::Value::String(source.into())),
                "{name}"
            );
        }
    }

    #[test]
    fn a_placeholder_without_a_version_names_the_key() {
        let err = plan(
            "  - name: crm\n    type: http_poll\n    url: http://crm.example/{api_version}/c\n    topic: crm\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("connectors[0].url") && err.contains("api_version"),
            "{err}"
        );
        let err = plan("  - name: crm\n    type: http_poll\n    api_version: \"v 1\"\n    url: http://x/c\n    topic: crm\n")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("connectors[0].api_version"), "{err}");
    }

    #[test]
    fn mapping_mistakes_stop_planning_naming_the_key() {
        let cases = [
            ("fields: { nickname: { from: /n }, id: { from: /id }, source: { const: x }, raw: raw }", "mapping.fields.nickname"),
            ("fields: { id: { from: /id }, raw: raw }", "mapping.fields"),
            ("fields: { id: { from: /id }, source: { const: x }, email: { from: /e, normalize: { phone: { region: XX } } }, raw: raw }", "mapping.fields.email"),
            ("transform: nope", "mapping.transform"),
        ];
        for (section, key) in cases {
            let yaml = format!(
                "  - name: crm\n    type: http_poll\n    url: http://x/c\n    topic: crm\n    mapping:\n      schema: contact.avsc\n      {section}\n"
            );
            let err = plan(&yaml).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                err.contains(&format!("connectors[0].{key}")),
                "{section}: {err}"
            );
        }
        let on_a_sink = "  - name: out\n    type: http\n    topic: t\n    url: http://x/\n    mapping: { schema: contact.avsc, transform: salesforce_contact }\n";
        let err = plan(on_a_sink)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("connectors[0].mapping"), "{err}");
    }

    #[test]
    fn a_webhook_writing_one_topic_takes_a_mapping() {
        let one = "  - name: hooks\n    type: webhook\n    path: /hooks\n    verify: { scheme: none }\n    topic: contacts\n    mapping: { schema: contact.avsc, transform: salesforce_contact }\n";
        let (config, planned) = plan(one).unwrap();
        let Planned::Push { mappings, .. } = &planned[0].1 else {
            panic!("not a push connector")
        };
        assert_eq!(mappings["contacts"].dead_letter_topic, "hooks.dlq");
        let topic = config.topics.iter().find(|t| t.name == "contacts").unwrap();
        assert_eq!(
            topic.value_schema.as_deref(),
            Some(std::path::Path::new("contact.avsc"))
        );
        let routed = "  - name: hooks\n    type: webhook\n    path: /hooks\n    verify: { scheme: github, secrets: [s] }\n    routes: [{ type: push, topic: a }, { type: issue, topic: b }]\n    mapping: { schema: contact.avsc, transform: salesforce_contact }\n";
        let err = plan(routed)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("connectors[0].mapping") && err.contains("a, b"),
            "{err}"
        );
    }
}
