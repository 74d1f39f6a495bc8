//! `salesforce_contact`: the integration guide's `transformContact`
//! written in Rust, building a `Contact` (`schemas/contact.avsc`). It does
//! what `examples/salesforce/ferry.yaml`'s `mapping:` declares, so the two
//! can be compared (the mapping benchmark does).

use apache_avro::types::Value;
use apache_avro::Schema;
use ferry::transform::{functions as f, MappingError, Rule, Transform};
use serde_json::Value as Json;
use std::sync::Arc;

/// The fields of `io.ferry.normalized.Contact`, in order.
const FIELDS: [&str; 8] = [
    "id",
    "name",
    "email",
    "phone",
    "source",
    "updated_at",
    "lifetime_value",
    "raw",
];

/// The transform, if `schema` is the `Contact` record it builds.
pub fn contact(schema: &Schema) -> Result<Arc<dyn Transform>, String> {
    let Schema::Record(record) = schema else {
        return Err(
            "builds `io.ferry.normalized.Contact` records; the topic's schema is not a record"
                .into(),
        );
    };
    let names: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
    if record.name.fullname(None) != "io.ferry.normalized.Contact" || names != FIELDS {
        return Err(format!(
            "builds `io.ferry.normalized.Contact` with fields {FIELDS:?}; the topic's schema is `{}` with {names:?}",
            record.name.fullname(None)
        ));
    }
    Ok(Arc::new(transform_contact))
}

fn text<'a>(payload: &'a Json, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .filter_map(|k| payload.get(*k).and_then(Json::as_str))
        .map(str::trim)
        .find(|s| !s.is_empty())
}

fn optional(v: Option<String>) -> Value {
    match v {
        Some(s) => Value::Union(1, Box::new(Value::String(s))),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

fn failed(field: &str, rule: Rule, reason: String) -> MappingError {
    let mut e = MappingError::new(rule, reason);
    e.field = field.to_owned();
    e
}

/// `transformContact(externalContact)`.
pub fn transform_contact(raw: &[u8], payload: &Json) -> Result<Value, MappingError> {
    let id = text(payload, &["contactId", "Id", "id"]).ok_or_else(|| {
        failed(
            "id",
            Rule::Required,
            "no value at /contactId, /Id or /id".into(),
        )
    })?;
    let name = f::person_name(
        text(payload, &["Name"]),
        &[text(payload, &["FirstName"]), text(payload, &["LastName"])],
    );
    let email = text(payload, &["email_address", "Email"])
        .map(f::email)
        .transpose()
        .map_err(|e| failed("email", Rule::Email, e))?;
    let phone = text(payload, &["phone", "Phone"])
        .map(|p| f::phone_e164(p, Some("US")))
        .transpose()
        .map_err(|e| failed("phone", Rule::Phone, e))?;
    let updated_at = text(payload, &["LastModifiedDate"])
        .map(f::iso8601_millis)
        .transpose()
        .map_err(|e| failed("updated_at", Rule::Timestamp, e))?;
    Ok(Value::Record(vec![
        ("id".into(), Value::String(id.to_owned())),
        ("name".into(), optional(name)),
        ("email".into(), optional(email)),
        ("phone".into(), optional(phone)),
        ("source".into(), Value::String("salesforce".into())),
        (
            "updated_at".into(),
            match updated_at {
                Some(ms) => Value::Union(1, Box::new(Value::TimestampMillis(ms))),
                None => Value::Union(0, Box::new(Value::Null)),
            },
        ),
        (
            "lifetime_value".into(),
            Value::Union(0, Box::new(Value::Null)),
        ),
        ("raw".into(), Value::Bytes(raw.to_vec())),
    ]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ferry::transform::{Mapping, MappingConfig};

    fn contact_schema() -> Schema {
        let text = include_str!("../../../schemas/contact.avsc");
        Schema::parse_str(text).unwrap()
    }

    /// The example's declared mapping, from its config file.
    fn declared() -> Mapping {
        let config: serde_yaml::Value =
            serde_yaml::from_str(include_str!("../../../examples/salesforce/ferry.yaml")).unwrap();
        let mut section = config["connectors"][0]["mapping"].clone();
        let map = section.as_mapping_mut().unwrap();
        map.remove("schema");
        map.remove("dead_letter_topic");
        let parsed: MappingConfig = serde_yaml::from_value(section).unwrap();
        Mapping::compile(&parsed, &contact_schema()).unwrap()
    }

    /// The hand-written transform and the example's `mapping:` agree on
    /// the recorded contact and on records each refuses.
    #[test]
    fn agrees_with_the_declared_mapping() {
        let schema = contact_schema();
        let rust = contact(&schema).unwrap();
        let mapping = declared();
        let inputs = [
            include_str!("../../../tests/fixtures/salesforce/v1/contact.json")
                .trim()
                .to_owned(),
            r#"{"contactId":"c-1","id":"x","Name":" Grace  Hopper "}"#.to_owned(),
            r#"{"Id":"c-2","phone":"+44 20 7031 3000","Email":"G@X.ORG"}"#.to_owned(),
            r#"{"Id":"c-3","email_address":"no(at)x.org"}"#.to_owned(),
            r#"{"Name":"no id"}"#.to_owned(),
        ];
        for input in inputs {
            let json: Json = serde_json::from_str(&input).unwrap();
            let a = rust.apply(input.as_bytes(), &json);
            let b = mapping.apply(input.as_bytes(), &json);
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a, b, "{input}");
                    assert!(a.validate(&schema), "{input}");
                }
                (Err(a), Err(b)) => assert_eq!((a.field, a.rule), (b.field, b.rule), "{input}"),
                (a, b) => panic!("{input}: rust {a:?}, mapping {b:?}"),
            }
        }
    }

    #[test]
    fn refuses_a_schema_it_does_not_build() {
        let other = Schema::parse_str(r#"{"type":"record","name":"X","fields":[]}"#).unwrap();
        let Err(why) = contact(&other) else {
            panic!("a schema it does not build was taken")
        };
        assert!(why.contains("io.ferry.normalized.Contact"), "{why}");
    }
}
