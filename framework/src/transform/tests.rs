//! The engine end to end: YAML config, compiled against a schema, applied to
//! payloads; what users rely on (the issue's example in config alone,
//! errors that name the field, the rule and the source, refusals at
//! compile time, output that always matches the schema).

#![allow(clippy::unwrap_used)]

use super::*;
use crate::schema::AvroCodec;
use apache_avro::Schema;
use proptest::prelude::*;
use serde_json::{json, Value as Json};
use std::sync::Arc;

fn contact_schema() -> Schema {
    Schema::parse_str(include_str!("../../../schemas/contact.avsc")).unwrap()
}

fn config(yaml: &str) -> MappingConfig {
    serde_yaml::from_str(yaml).unwrap()
}

fn compile(yaml: &str, schema: &Schema) -> Result<Mapping, MappingConfigError> {
    Mapping::compile(&config(yaml), schema)
}

fn run(m: &Mapping, payload: &Json) -> Result<Json, MappingError> {
    let raw = serde_json::to_vec(payload).unwrap();
    let v = m.apply(&raw, payload)?;
    assert!(
        v.validate(m.schema()),
        "output does not match the schema: {v:?}"
    );
    Ok(m.to_json(&v))
}

/// The integration guide's `transformContact`, in config alone.
const CONTACT: &str = r"
fields:
  id:     { from: [/contactId, /id] }
  name:   { name: { first: /firstName, last: /lastName, full: /fullName } }
  email:  { from: /email_address, normalize: email }
  phone:  { from: /phone, normalize: { phone: { region: US } } }
  source: { const: salesforce }
  raw:    raw
";

#[test]
fn the_guides_transform_contact_is_expressible_in_config() {
    let m = compile(CONTACT, &contact_schema()).unwrap();
    let payload = json!({
        "contactId": "003xx000004TmiQ", "id": "ignored",
        "firstName": " Ada ", "lastName": "Lovelace",
        "email_address": "  Ada.Lovelace@Example.COM ", "phone": "(415) 555-2671",
        "Title": "Countess"
    });
    let raw = serde_json::to_vec(&payload).unwrap();
    let v = m.apply(&raw, &payload).unwrap();
    let out = m.to_json(&v);
    assert_eq!(
        out,
        json!({
            "id": "003xx000004TmiQ", "name": "Ada Lovelace", "email": "ada.lovelace@example.com",
            "phone": "+14155552671", "source": "salesforce", "updated_at": null,
            "lifetime_value": null, "raw": String::from_utf8(raw.clone()).unwrap()
        })
    );
    // The record encodes with the registry codec, and the raw payload is
    // kept byte for byte.
    let codec = AvroCodec::new(contact_schema(), 1).unwrap();
    let decoded = codec.decode(&codec.encode(&v).unwrap()).unwrap();
    let apache_avro::types::Value::Record(fields) = decoded else {
        panic!("a record")
    };
    assert_eq!(fields[7].1, apache_avro::types::Value::Bytes(raw));
}

#[test]
fn or_falls_back_like_javascript_and_absent_parts_become_null() {
    let m = compile(CONTACT, &contact_schema()).unwrap();
    for first in [json!(null), json!(""), json!("   ")] {
        let out = run(&m, &json!({"contactId": first, "id": 42})).unwrap();
        assert_eq!(out["id"], "42", "the second path, a number as text");
        assert_eq!(out["name"], Json::Null);
        assert_eq!(out["email"], Json::Null);
        assert_eq!(out["source"], "salesforce");
    }
    let out = run(
        &m,
        &json!({"id": "x", "fullName": " Dr.  Ada  Lovelace", "firstName": "A"}),
    )
    .unwrap();
    assert_eq!(out["name"], "Dr. Ada Lovelace", "a full name wins");
}

#[test]
fn a_bad_record_fails_naming_field_rule_source_and_value() {
    let m = compile(CONTACT, &contact_schema()).unwrap();
    let e = run(&m, &json!({"id": "c", "email_address": "bob(at)x"})).unwrap_err();
    assert_eq!(e.field, "email");
    assert_eq!(e.rule, Rule::Email);
    assert_eq!(e.source().as_deref(), Some("/email_address"));
    assert!(!e.is_retryable());
    assert!(
        e.to_string().starts_with(
            "field `email` from /email_address, rule email: not an email address: \"bob(at)x\""
        ),
        "{e}"
    );
    let e = run(&m, &json!({"id": "c", "phone": "555"})).unwrap_err();
    assert_eq!((e.field.as_str(), e.rule), ("phone", Rule::Phone));
    let e = run(&m, &json!({"contactId": "", "name": "x"})).unwrap_err();
    assert_eq!((e.field.as_str(), e.rule), ("id", Rule::Required));
    assert_eq!(
        e.source().as_deref(),
        Some("/contactId, /id"),
        "every path tried"
    );
    let e = run(&m, &json!({"id": {"nested": true}})).unwrap_err();
    assert_eq!((e.field.as_str(), e.rule), ("id", Rule::Type));
    assert_eq!(e.reason, "expected string, found an object");
    let e = run(&m, &json!(["not", "an", "object"])).unwrap_err();
    assert_eq!((e.field.as_str(), e.rule), ("", Rule::Type));
    assert!(e.to_string().starts_with("record, rule type:"), "{e}");
}

#[test]
fn timestamps_and_decimals_reach_their_logical_types() {
    let m = compile(
        r"
fields:
  id: /id
  source: { const: hubspot }
  updated_at: { from: [/updatedAt, /updated], normalize: timestamp }
  lifetime_value: { from: /ltv, normalize: number }
  raw: raw
",
        &contact_schema(),
    )
    .unwrap();
    let out = run(
        &m,
        &json!({"id": "1", "updatedAt": "2024-05-01T12:00:00+02:00", "ltv": "1234.56"}),
    )
    .unwrap();
    assert_eq!(out["updated_at"], 1_714_557_600_000_i64);
    assert_eq!(out["lifetime_value"], "1234.56");
    let out = run(
        &m,
        &json!({"id": "1", "updated": 1_714_557_600, "ltv": 0.1}),
    )
    .unwrap();
    assert_eq!(out["updated_at"], 1_714_557_600_000_i64, "epoch seconds");
    assert_eq!(out["lifetime_value"], "0.10", "no float rounding");
    let out = run(
        &m,
        &json!({"id": "1", "updated": 1_714_557_600_123_i64, "ltv": 12}),
    )
    .unwrap();
    assert_eq!(out["updated_at"], 1_714_557_600_123_i64, "epoch millis");
    assert_eq!(out["lifetime_value"], "12.00");
    let e = run(&m, &json!({"id": "1", "updated": "yesterday"})).unwrap_err();
    assert_eq!((e.field.as_str(), e.rule), ("updated_at", Rule::Timestamp));
    assert_eq!(
        e.source().as_deref(),
        Some("/updated"),
        "the path that had the value"
    );
    let e = run(&m, &json!({"id": "1", "ltv": "12.345"})).unwrap_err();
    assert_eq!((e.field.as_str(), e.rule), ("lifetime_value", Rule::Type));
    assert!(e.reason.contains("decimal places"), "{e}");
    let e = run(&m, &json!({"id": "1", "ltv": "12,50"})).unwrap_err();
    assert_eq!(e.rule, Rule::Number);
}

const ACCOUNT_SCHEMA: &str = r#"{"type": "record", "name": "Account", "namespace": "t", "fields": [
  {"name": "id", "type": "string"},
  {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["active", "inactive", "unknown"]}},
  {"name": "score", "type": ["null", "double"], "default": null},
  {"name": "seats", "type": "long", "default": 1},
  {"name": "vip", "type": "boolean", "default": false},
  {"name": "tier", "type": "string"},
  {"name": "country", "type": ["null", "string"], "default": null},
  {"name": "created", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "created_text", "type": ["null", "string"], "default": null},
  {"name": "balance", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}], "default": null},
  {"name": "address", "type": ["null", {"type": "record", "name": "Address", "fields": [
    {"name": "city", "type": "string"},
    {"name": "zip", "type": ["null", "string"], "default": null}]}], "default": null},
  {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
  {"name": "contacts", "type": {"type": "array", "items": {"type": "record", "name": "Person", "fields": [
    {"name": "name", "type": "string"},
    {"name": "email", "type": ["null", "string"], "default": null}]}}, "default": []},
  {"name": "attrs", "type": {"type": "map", "values": "string"}, "default": {}},
  {"name": "raw", "type": "string"}
]}"#;

const ACCOUNT: &str = r"
fields:
  id:       { from: [/accountId, /id], normalize: trim }
  status:   { from: /Status, normalize: [trim, uppercase, { map: { values: { A: active, I: inactive }, default: unknown } }] }
  score:    { from: /score, normalize: number }
  seats:    { from: /seats, normalize: integer }
  vip:      { from: /flags/vip, normalize: boolean }
  tier:     { from: /tier, default: free }
  country:  { from: address.country, normalize: country }
  created:  { from: /created, normalize: timestamp, required: true }
  created_text: { from: /created, normalize: timestamp }
  balance:  { from: /balance, normalize: number }
  address:  { from: /address, fields: { city: { from: city, normalize: trim }, zip: /zip } }
  tags:     { from: /tags, each: { normalize: [trim, lowercase] } }
  contacts: { from: /people, each: { fields: { name: { name: { first: first, last: last } }, email: { from: email, normalize: email } } } }
  attrs:    { from: /attrs, each: { normalize: uppercase } }
  raw:      raw
";

fn account() -> Mapping {
    compile(ACCOUNT, &Schema::parse_str(ACCOUNT_SCHEMA).unwrap()).unwrap()
}

fn account_payload() -> Json {
    json!({
        "accountId": "", "id": " A-1 ", "Status": " a ", "score": "4.5", "seats": "12",
        "flags": {"vip": "yes"},
        "address": {"city": " Paris ", "zip": "75001", "country": "France"},
        "created": 1_714_557_600, "balance": "1234.56",
        "tags": [" VIP ", "Beta"],
        "people": [{"first": "Ada", "last": "Lovelace", "email": " ADA@Example.com "}],
        "attrs": {"plan": "gold"}
    })
}

#[test]
fn nested_records_arrays_maps_and_every_normalizer_in_one_mapping() {
    let m = account();
    let payload = account_payload();
    let out = run(&m, &payload).unwrap();
    let mut want = json!({
        "id": "A-1", "status": "active", "score": 4.5, "seats": 12, "vip": true, "tier": "free",
        "country": "FR", "created": 1_714_557_600_000_i64, "created_text": "2024-05-01T10:00:00Z",
        "balance": "1234.56", "address": {"city": "Paris", "zip": "75001"},
        "tags": ["vip", "beta"],
        "contacts": [{"name": "Ada Lovelace", "email": "ada@example.com"}],
        "attrs": {"plan": "GOLD"}
    });
    want["raw"] = json!(serde_json::to_string(&payload).unwrap());
    assert_eq!(out, want);

    // Schema defaults and nulls fill what the payload lacks.
    let out = run(
        &m,
        &json!({"id": "A-2", "Status": "x", "created": "2024-05-01"}),
    )
    .unwrap();
    assert_eq!(out["status"], "unknown", "the map's default");
    assert_eq!(out["seats"], 1, "the schema's default");
    assert_eq!(out["vip"], false);
    assert_eq!(out["address"], Json::Null);
    assert_eq!(out["tags"], json!([]));
    assert_eq!(out["created"], 1_714_521_600_000_i64);
}

#[test]
fn errors_inside_nested_values_name_the_path_both_ways() {
    let m = account();
    let with = |patch: Json| {
        let mut p = account_payload();
        for (k, v) in patch.as_object().unwrap() {
            p[k] = v.clone();
        }
        run(&m, &p).unwrap_err()
    };
    let e = with(
        json!({"people": [{"first": "A", "email": "a@b.co"}, {"first": "B", "email": "nope"}]}),
    );
    assert_eq!(
        (e.field.as_str(), e.rule),
        ("contacts[1].email", Rule::Email)
    );
    assert_eq!(e.source().as_deref(), Some("/people/1/email"));
    let e = with(json!({"people": [{"email": "a@b.co"}]}));
    assert_eq!(
        (e.field.as_str(), e.rule),
        ("contacts[0].name", Rule::Required)
    );
    assert_eq!(
        e.source().as_deref(),
        Some("/people/0/first, /people/0/last")
    );
    let e = with(json!({"tags": ["ok", null]}));
    assert_eq!((e.field.as_str(), e.rule), ("tags[1]", Rule::Required));
    assert_eq!(e.source().as_deref(), Some("/tags/1"));
    let e = with(json!({"tags": "not-a-list"}));
    assert_eq!((e.field.as_str(), e.rule), ("tags", Rule::Type));
    let e = with(json!({"address": {"zip": "1"}}));
    assert_eq!((e.field.as_str(), e.rule), ("address.city", Rule::Required));
    assert_eq!(e.source().as_deref(), Some("/address/city"));
    let e = with(json!({"attrs": {"plan": {"deep": 1}}}));
    assert_eq!((e.field.as_str(), e.rule), ("attrs[plan]", Rule::Uppercase));
    assert_eq!(e.source().as_deref(), Some("/attrs/plan"));
    let e = with(json!({"seats": "12.5"}));
    assert_eq!((e.field.as_str(), e.rule), ("seats", Rule::Integer));
    let e = with(json!({"flags": {"vip": "maybe"}}));
    assert_eq!((e.field.as_str(), e.rule), ("vip", Rule::Boolean));
    let e = with(json!({"address": {"city": "X", "country": "Atlantis"}}));
    assert_eq!((e.field.as_str(), e.rule), ("country", Rule::Country));
    assert_eq!(e.source().as_deref(), Some("/address/country"));
    let e = with(json!({"created": null}));
    assert_eq!((e.field.as_str(), e.rule), ("created", Rule::Required));
}

#[test]
fn unknown_enum_values_without_a_default_fail_the_record() {
    let m = compile(
        &ACCOUNT.replace(", default: unknown", ""),
        &Schema::parse_str(ACCOUNT_SCHEMA).unwrap(),
    )
    .unwrap();
    let mut p = account_payload();
    p["Status"] = json!("Z");
    let e = run(&m, &p).unwrap_err();
    assert_eq!((e.field.as_str(), e.rule), ("status", Rule::Map));
    assert!(e.reason.contains("\"Z\" is not in the table"), "{e}");
}

#[test]
fn configs_that_cannot_work_are_refused_at_compile_naming_field_and_rule() {
    let account = Schema::parse_str(ACCOUNT_SCHEMA).unwrap();
    let base = |extra: &str| format!("{ACCOUNT}{extra}");
    let refused = |yaml: &str, schema: &Schema| compile(yaml, schema).unwrap_err();
    let replace = |field: &str, rule: &str| {
        let start = ACCOUNT.find(&format!("  {field}:")).unwrap();
        let end = start + ACCOUNT[start..].find('\n').unwrap();
        format!("{}  {field}: {rule}{}", &ACCOUNT[..start], &ACCOUNT[end..])
    };
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            base("  emial: /x\n"),
            "emial",
            "fields",
            "has no such field",
        ),
        (
            replace("tier", "{ normalize: trim }"),
            "tier",
            "from",
            "says nowhere",
        ),
        (
            ACCOUNT.replace("  tier:     { from: /tier, default: free }\n", ""),
            "tier",
            "required",
            "requires this string field",
        ),
        (
            replace("seats", "{ from: /s, normalize: email }"),
            "seats",
            "normalize email",
            "yields text, which a field of type long cannot hold",
        ),
        (
            replace("vip", "{ from: /v, normalize: timestamp }"),
            "vip",
            "normalize timestamp",
            "type boolean",
        ),
        (
            replace("tier", "{ from: /t, normalize: { phone: { region: XX } } }"),
            "tier",
            "normalize",
            "`XX`",
        ),
        (
            replace(
                "status",
                "{ from: /s, normalize: { map: { values: { A: archived } } } }",
            ),
            "status",
            "normalize map",
            "`A`",
        ),
        (
            replace("seats", "{ from: /s, normalize: integer, default: many }"),
            "seats",
            "default",
            "does not fit",
        ),
        (
            replace("vip", "{ const: maybe }"),
            "vip",
            "const",
            "does not fit",
        ),
        (
            replace("tier", "{ from: /t, fields: { a: /b } }"),
            "tier",
            "fields",
            "builds a record",
        ),
        (
            replace("tier", "{ from: /t, each: { normalize: trim } }"),
            "tier",
            "each",
            "builds an array or map",
        ),
        (replace("seats", "raw"), "seats", "raw", "bytes or string"),
        (
            replace("tier", "{ from: 'a..b' }"),
            "tier",
            "from",
            "empty segment",
        ),
        (
            replace("tier", "{ from: /a, const: x }"),
            "tier",
            "from",
            "not several",
        ),
        (
            replace("created", "{ from: /c, normalize: [timestamp, email] }"),
            "created",
            "normalize email",
            "cannot read a timestamp",
        ),
        (
            replace("created", "{ from: /c, required: true, default: 0 }"),
            "created",
            "required",
            "never missing",
        ),
        (
            replace("address", "{ fields: { town: /x } }"),
            "address.town",
            "fields",
            "record `t.Address`",
        ),
        (
            replace("contacts", "{ from: /p, each: { fields: { nme: /n } } }"),
            "contacts[].nme",
            "fields",
            "record `t.Person`",
        ),
        (
            replace("tags", "{ from: /t, each: { fields: { a: /b } } }"),
            "tags[]",
            "fields",
            "builds a record",
        ),
        (
            replace("tags", "{ from: /t, normalize: trim }"),
            "tags",
            "normalize trim",
            "type array of string",
        ),
        (
            replace("contacts", "{ from: /p, each: { name: { } } }"),
            "contacts[]",
            "name",
            "at least one",
        ),
    ];
    for (yaml, field, rule, needle) in cases {
        let e = refused(&yaml, &account);
        assert_eq!((e.field.as_str(), e.rule.as_str()), (field, rule), "{e}");
        assert!(e.to_string().contains(needle), "{field}: {e}");
    }
    let e = refused("fields: {}", &Schema::parse_str(r#""string""#).unwrap());
    assert_eq!(e.rule, "schema");
}

#[test]
fn timestamps_may_go_into_text_and_long_fields() {
    let schema = Schema::parse_str(
        r#"{"type": "record", "name": "T", "fields": [
            {"name": "at", "type": "string"}, {"name": "ms", "type": "long"}, {"name": "day", "type": {"type": "int", "logicalType": "date"}}]}"#,
    )
    .unwrap();
    let m = compile(
        r"
fields:
  at:  { from: /t, normalize: { timestamp: epoch_millis } }
  ms:  { from: /t, normalize: { timestamp: epoch_millis } }
  day: { from: /t, normalize: { timestamp: epoch_millis } }
",
        &schema,
    )
    .unwrap();
    let out = run(&m, &json!({"t": "1714557600250"})).unwrap();
    assert_eq!(
        out,
        json!({"at": "2024-05-01T10:00:00.250Z", "ms": 1_714_557_600_250_i64, "day": 19_844})
    );
}

#[test]
fn a_mapping_and_a_closure_are_both_transforms() {
    let m: Arc<dyn Transform> = Arc::new(compile(CONTACT, &contact_schema()).unwrap());
    let payload = json!({"id": "c-1"});
    assert!(m.apply(b"{}", &payload).is_ok());
    let hand_written: Arc<dyn Transform> = Arc::new(|_raw: &[u8], p: &Json| {
        p.get("id")
            .and_then(Json::as_str)
            .map(|s| apache_avro::types::Value::String(s.to_owned()))
            .ok_or_else(|| MappingError::new(Rule::Custom("id"), "no id"))
    });
    assert_eq!(
        hand_written.apply(b"", &payload),
        Ok(apache_avro::types::Value::String("c-1".into()))
    );
    let e = hand_written.apply(b"", &json!({})).unwrap_err();
    assert_eq!(e.to_string(), "record, rule id: no id");
}

#[test]
fn the_config_loader_route_through_json_compiles_too() {
    let c: MappingConfig =
        serde_json::from_value(serde_yaml::from_str::<Json>(CONTACT).unwrap()).unwrap();
    assert!(Mapping::compile(&c, &contact_schema()).is_ok());
}

fn arb_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Json::from),
        "[ -~]{0,12}".prop_map(Json::from),
        prop::sample::select(vec![
            "a@b.co",
            "+1 415 555 2671",
            "2024-05-01",
            "1714557600",
            "A",
            " yes ",
            "12.5",
            "France",
            "",
        ])
        .prop_map(Json::from),
    ];
    let keys = prop::sample::select(vec![
        "id",
        "accountId",
        "contactId",
        "Status",
        "score",
        "seats",
        "flags",
        "vip",
        "tier",
        "address",
        "city",
        "zip",
        "country",
        "created",
        "balance",
        "tags",
        "people",
        "first",
        "last",
        "email",
        "attrs",
        "plan",
        "email_address",
        "phone",
        "firstName",
        "fullName",
    ]);
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..8).prop_map(|m| Json::Object(
                m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any payload: no panic, and whatever comes out matches the schema.
    #[test]
    fn any_payload_maps_or_fails_cleanly(payload in arb_json()) {
        for m in [account(), compile(CONTACT, &contact_schema()).unwrap()] {
            match m.apply(b"{}", &payload) {
                Ok(v) => prop_assert!(v.validate(m.schema()), "{v:?}"),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }
}
