//! `{{ placeholder }}` templates over a sink record: the URL, headers and
//! JSON bodies of the `http` sink.

use ferry::sink::SinkRecord;
use serde_json::Value as Json;

/// A parsed template: text and placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Key,
    Topic,
    Partition,
    Offset,
    CorrelationId,
    /// `value.a.b` as a JSON pointer `/a/b` (`value` alone: "").
    Value(String),
}

impl Template {
    /// Parses `text`; an unknown placeholder or an unclosed `{{` is an error.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("`{text}`: `{{{{` without `}}}}`"))?;
            let name = after[..close].trim();
            parts.push(match name {
                "key" => Part::Key,
                "topic" => Part::Topic,
                "partition" => Part::Partition,
                "offset" => Part::Offset,
                "correlation_id" => Part::CorrelationId,
                "value" => Part::Value(String::new()),
                v if v.starts_with("value.") => Part::Value(
                    v["value.".len()..]
                        .split('.')
                        .map(|s| format!("/{s}"))
                        .collect(),
                ),
                other => {
                    return Err(format!(
                        "`{text}`: unknown placeholder `{other}` (use key, topic, partition, offset, correlation_id, value.<field>)"
                    ))
                }
            });
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self(parts))
    }

    /// Whether it uses anything of the record (not just the topic).
    pub fn is_per_record(&self) -> bool {
        self.0
            .iter()
            .any(|p| !matches!(p, Part::Text(_) | Part::Topic))
    }

    /// The template filled in; `encode` percent-encodes substituted values.
    pub fn render(&self, r: &SinkRecord, encode: bool) -> String {
        let mut out = String::new();
        for p in &self.0 {
            let v = match p {
                Part::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                other => lookup(other, r),
            };
            let text = match v {
                Json::String(s) => s,
                Json::Null => String::new(),
                other => other.to_string(),
            };
            if encode {
                // Form encoding writes a space as `+`, which a path keeps literally.
                for chunk in url::form_urlencoded::byte_serialize(text.as_bytes()) {
                    out.push_str(&chunk.replace('+', "%20"));
                }
            } else {
                out.push_str(&text);
            }
        }
        out
    }

    /// For JSON body leaves: a template that is exactly one placeholder
    /// yields that value with its JSON type.
    pub fn render_json(&self, r: &SinkRecord) -> Json {
        match self.0.as_slice() {
            [single] if !matches!(single, Part::Text(_)) => lookup(single, r),
            _ => Json::String(self.render(r, false)),
        }
    }
}

fn lookup(p: &Part, r: &SinkRecord) -> Json {
    match p {
        Part::Text(t) => Json::String(t.clone()),
        Part::Key => r.key.clone().map_or(Json::Null, Json::String),
        Part::Topic => Json::String(r.topic.clone()),
        Part::Partition => Json::from(r.partition),
        Part::Offset => Json::from(r.offset),
        Part::CorrelationId => Json::String(r.correlation_id.clone()),
        Part::Value(ptr) => r.value.pointer(ptr).cloned().unwrap_or(Json::Null),
    }
}

/// Fills every string leaf of a JSON template.
pub fn render_body(template: &Json, r: &SinkRecord) -> Json {
    match template {
        Json::String(s) => match Template::parse(s) {
            Ok(t) => t.render_json(r),
            Err(_) => Json::String(s.clone()),
        },
        Json::Array(items) => Json::Array(items.iter().map(|i| render_body(i, r)).collect()),
        Json::Object(map) => Json::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render_body(v, r)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Checks every string leaf of a JSON template parses.
pub fn check_body(template: &Json) -> Result<(), String> {
    match template {
        Json::String(s) => Template::parse(s).map(|_| ()),
        Json::Array(items) => items.iter().try_for_each(check_body),
        Json::Object(map) => map.values().try_for_each(check_body),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record() -> SinkRecord {
        SinkRecord {
            topic: "contacts".into(),
            partition: 2,
            offset: 41,
            timestamp: None,
            key: Some("c/1 x".into()),
            raw_key: None,
            value: json!({"id": "c-1", "n": 3, "address": {"city": "Zürich"}}),
            raw: None,
            headers: Vec::new(),
            correlation_id: "corr".into(),
        }
    }

    #[test]
    fn urls_are_filled_and_encoded() {
        let t = Template::parse("https://api/x/{{ key }}?city={{value.address.city}}&o={{offset}}")
            .expect("parses");
        assert_eq!(
            t.render(&record(), true),
            "https://api/x/c%2F1%20x?city=Z%C3%BCrich&o=41"
        );
        assert!(t.is_per_record());
        assert!(!Template::parse("https://api/{{ topic }}")
            .expect("parses")
            .is_per_record());
    }

    #[test]
    fn unknown_placeholders_and_unclosed_braces_are_refused() {
        assert!(Template::parse("{{ nope }}").is_err());
        assert!(Template::parse("x {{ key").is_err());
    }

    #[test]
    fn json_bodies_keep_types_for_whole_placeholders() {
        let body = render_body(
            &json!({"id": "{{ value.id }}", "n": "{{ value.n }}", "label": "n={{ value.n }}"}),
            &record(),
        );
        assert_eq!(body, json!({"id": "c-1", "n": 3, "label": "n=3"}));
    }
}
