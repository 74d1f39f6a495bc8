//! The `mapping:` section as the user writes it. Only shape is checked here;
//! whether it fits the target schema is `Mapping::compile`'s job.
//!
//! ```yaml
//! mapping:
//!   fields:
//!     id:      { from: [/contactId, /id] }
//!     name:    { name: { first: /first_name, last: /last_name, full: /name } }
//!     email:   { from: /email_address, normalize: email }
//!     phone:   { from: /phone, normalize: { phone: { region: US } } }
//!     source:  { const: salesforce }
//!     status:  { from: /Status, normalize: [trim, { map: { values: { A: active }, default: unknown } }] }
//!     address: { from: /addr, fields: { city: { from: city } } }
//!     tags:    { from: /tags, each: { normalize: lowercase } }
//!     raw:     raw
//! ```

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::fmt;

/// How each field of the target record is made from a JSON payload.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// One rule per target field, by the field's name in the Avro schema. A
    /// schema field with no rule takes its schema default, or null when it is
    /// nullable; any other unmapped field is a config error.
    pub fields: BTreeMap<String, FieldRule>,
}

/// How one field is made: the word `raw`, a path (shorthand for
/// `{ from: <path> }`), or a full rule.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldRule {
    /// The original payload, as received: bytes for a `bytes` field, text for
    /// a `string` field. To read a payload key named `raw`, write `/raw`.
    Raw,
    /// A rule with its keys.
    Rule(Box<RuleConfig>),
}

/// A field's rule. The value comes from exactly one of `from`, `const` and
/// `name` (inside `each`, from none of them: the item itself); then
/// `normalize` runs; a missing value takes `default`, then the schema's
/// default, then null when the field is nullable, else fails `required`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Where to read the value: a path (JSON pointer `/a/b/0` or dotted
    /// `a.b.0`), or a list of paths of which the first non-empty one wins
    /// (null, absent and blank text count as empty). Inside `fields` and
    /// `each`, paths are relative to the enclosing record's or item's value.
    #[serde(default)]
    pub from: Option<PathList>,
    /// A constant value, the same for every record.
    #[serde(default, rename = "const", deserialize_with = "present")]
    pub constant: Option<Json>,
    /// A person's name put together from parts.
    #[serde(default)]
    pub name: Option<NameConfig>,
    /// For a record field: a rule per field of the nested record. With
    /// `from`, the nested paths are relative to the value found there;
    /// without, they read the same value as this rule's siblings.
    #[serde(default)]
    pub fields: Option<BTreeMap<String, FieldRule>>,
    /// For an array (or map) field: the rule for each item (or value), with
    /// the item as its input (`from` inside reads relative to the item).
    #[serde(default)]
    pub each: Option<Box<RuleConfig>>,
    /// Normalizers to run, in order, on a value that is present: one, or a
    /// list. See [`NormalizeConfig`].
    #[serde(default)]
    pub normalize: OneOrMany<NormalizeConfig>,
    /// The value to use when the payload has none (after normalizers). It
    /// must fit the field; it is checked when the mapping compiles.
    #[serde(default, deserialize_with = "present")]
    pub default: Option<Json>,
    /// Fail the record (rule `required`) when the value is missing, even if
    /// the field is nullable or has a schema default.
    #[serde(default)]
    pub required: bool,
}

/// A person's name from its parts. Each part is a path or list of paths (as
/// `from`). A non-blank `full` wins; else the non-blank parts are joined
/// `first middle last` with single spaces. Whitespace is trimmed and runs of
/// it collapsed; letter case is left as the source wrote it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameConfig {
    /// The given name.
    #[serde(default)]
    pub first: Option<PathList>,
    /// Middle name(s) or initial.
    #[serde(default)]
    pub middle: Option<PathList>,
    /// The family name.
    #[serde(default)]
    pub last: Option<PathList>,
    /// The whole name as one string; used as is (whitespace tidied) when present.
    #[serde(default)]
    pub full: Option<PathList>,
}

/// One path, or several of which the first non-empty one wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathList(pub Vec<String>);

/// A normalizer. Written as its name (`email`), or as a one-key map of its
/// name to its options (`{ phone: { region: US } }`).
#[derive(Debug, Clone, PartialEq)]
pub enum NormalizeConfig {
    /// Remove leading and trailing whitespace.
    Trim,
    /// Lower-case (Unicode).
    Lowercase,
    /// Upper-case (Unicode).
    Uppercase,
    /// Trim, lower-case, and check the address's syntax.
    Email,
    /// A phone number in E.164 (`+14155550123`).
    Phone(PhoneConfig),
    /// An instant, from ISO-8601 text or epoch numbers.
    Timestamp(TimestampConfig),
    /// An ISO 3166-1 country code, from a code or an English name.
    Country(CountryFormat),
    /// Replace values by a table.
    Map(MapConfig),
    /// A decimal number from a number or numeric text, every digit kept.
    Number,
    /// A whole number from a number or numeric text; a fraction is refused.
    Integer,
    /// `true`/`false` from booleans, 1/0, and words such as `yes`/`no`.
    Boolean,
}

/// Options of the `phone` normalizer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneConfig {
    /// The region (ISO 3166-1 alpha-2, e.g. `US`) of numbers written without
    /// a country code. Unset: such numbers are refused.
    #[serde(default)]
    pub region: Option<String>,
}

/// How the `timestamp` normalizer reads its input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TimestampConfig {
    /// `auto` (the default): text that is a number is read as one; ISO-8601
    /// text as `iso8601`; a number by its size: under 10^11 epoch seconds,
    /// under 10^14 milliseconds, under 10^17 microseconds, else nanoseconds.
    #[default]
    Auto,
    /// `iso8601`: RFC 3339 (`2024-05-01T10:00:00Z`, `...+02:00`, a space for
    /// the `T`), offsets as `+0200` or `+02`, no offset (read as UTC), or a
    /// date alone (midnight UTC).
    Iso8601,
    /// `epoch_seconds`: a number (or numeric text), fractions kept to the microsecond.
    EpochSeconds,
    /// `epoch_millis`.
    EpochMillis,
    /// `epoch_micros`.
    EpochMicros,
    /// `{ format: "%d/%m/%Y %H:%M" }`: a chrono `strftime` pattern; without an
    /// offset (`%z`) the time is read as UTC, without a time as midnight.
    Format(String),
}

/// What the `country` normalizer writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountryFormat {
    /// `US` (the default).
    #[default]
    Alpha2,
    /// `USA`.
    Alpha3,
}

/// Options of the `map` normalizer.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapConfig {
    /// Input value (compared as text: `1`, `true` and `A` all work as keys)
    /// to output value. An output of null makes the value missing.
    pub values: BTreeMap<MapKey, Json>,
    /// The output for a value not in `values`. Unset: such a value fails the
    /// record (rule `map`). `null`: it becomes missing.
    #[serde(default, deserialize_with = "present")]
    pub default: Option<Json>,
}

/// A key of a `map` table: any scalar, kept as its text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MapKey(pub String);

/// One value or a list of them, as the user prefers to write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

/// Keeps an explicit `null` as `Some(Null)`: "null" and "not given" differ
/// for `const` and `default`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Json>, D::Error> {
    Json::deserialize(d).map(Some)
}

impl<'de> Deserialize<'de> for FieldRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FieldRule;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`raw`, a path, or a rule such as `{ from: /email, normalize: email }`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<FieldRule, E> {
                Ok(if s == "raw" {
                    FieldRule::Raw
                } else {
                    FieldRule::Rule(Box::new(RuleConfig {
                        from: Some(PathList(vec![s.to_owned()])),
                        ..RuleConfig::default()
                    }))
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FieldRule, A::Error> {
                RuleConfig::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|r| FieldRule::Rule(Box::new(r)))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for PathList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PathList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path (`/a/b` or `a.b`) or a list of paths")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<PathList, E> {
                Ok(PathList(vec![s.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PathList, A::Error> {
                let mut paths = Vec::new();
                while let Some(p) = seq.next_element::<String>()? {
                    paths.push(p);
                }
                if paths.is_empty() {
                    return Err(de::Error::invalid_length(0, &"at least one path"));
                }
                Ok(PathList(paths))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one item or a list of them")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                T::deserialize(de::value::StrDeserializer::new(s)).map(|t| OneOrMany(vec![t]))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|t| OneOrMany(vec![t]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(t) = seq.next_element()? {
                    items.push(t);
                }
                Ok(OneOrMany(items))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

const NORMALIZERS: &[&str] = &[
    "trim",
    "lowercase",
    "uppercase",
    "email",
    "phone",
    "timestamp",
    "country",
    "map",
    "number",
    "integer",
    "boolean",
];

impl<'de> Deserialize<'de> for NormalizeConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NormalizeConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a normalizer: its name (`email`) or `{ name: options }`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<NormalizeConfig, E> {
                Ok(match s {
                    "trim" => NormalizeConfig::Trim,
                    "lowercase" => NormalizeConfig::Lowercase,
                    "uppercase" => NormalizeConfig::Uppercase,
                    "email" => NormalizeConfig::Email,
                    "phone" => NormalizeConfig::Phone(PhoneConfig::default()),
                    "timestamp" => NormalizeConfig::Timestamp(TimestampConfig::Auto),
                    "country" => NormalizeConfig::Country(CountryFormat::Alpha2),
                    "number" => NormalizeConfig::Number,
                    "integer" => NormalizeConfig::Integer,
                    "boolean" => NormalizeConfig::Boolean,
                    "map" => {
                        return Err(E::custom(
                            "`map` needs its table: `{ map: { values: { A: active } } }`",
                        ))
                    }
                    other => return Err(E::unknown_variant(other, NORMALIZERS)),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NormalizeConfig, A::Error> {
                let Some(name) = map.next_key::<String>()? else {
                    return Err(de::Error::custom("an empty normalizer; write its name"));
                };
                let step = match name.as_str() {
                    "phone" => NormalizeConfig::Phone(map.next_value()?),
                    "timestamp" => NormalizeConfig::Timestamp(map.next_value()?),
                    "country" => NormalizeConfig::Country(map.next_value()?),
                    "map" => NormalizeConfig::Map(map.next_value()?),
                    other if NORMALIZERS.contains(&other) => {
                        return Err(de::Error::custom(format!(
                            "`{other}` takes no options; write it as `{other}`"
                        )))
                    }
                    other => return Err(de::Error::unknown_variant(other, NORMALIZERS)),
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "one normalizer per list item: `{name}` and `{extra}` share one; \
                         write `[{name}, {extra}]`"
                    )));
                }
                Ok(step)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for TimestampConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Pattern {
            /// A chrono `strftime` pattern.
            format: String,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TimestampConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "auto, iso8601, epoch_seconds, epoch_millis, epoch_micros or `{ format: \"%d/%m/%Y\" }`",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<TimestampConfig, E> {
                Ok(match s {
                    "auto" => TimestampConfig::Auto,
                    "iso8601" => TimestampConfig::Iso8601,
                    "epoch_seconds" => TimestampConfig::EpochSeconds,
                    "epoch_millis" => TimestampConfig::EpochMillis,
                    "epoch_micros" => TimestampConfig::EpochMicros,
                    other => {
                        return Err(E::unknown_variant(
                            other,
                            &[
                                "auto",
                                "iso8601",
                                "epoch_seconds",
                                "epoch_millis",
                                "epoch_micros",
                            ],
                        ))
                    }
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TimestampConfig, A::Error> {
                Pattern::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|p| TimestampConfig::Format(p.format))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for MapKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = MapKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a text, number or boolean key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<MapKey, E> {
                Ok(MapKey(s.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<MapKey, E> {
                Ok(MapKey(b.to_string()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<MapKey, E> {
                Ok(MapKey(n.to_string()))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<MapKey, E> {
                Ok(MapKey(n.to_string()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<MapKey, E> {
                Ok(MapKey(Json::from(n).to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Result<MappingConfig, String> {
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn every_form_of_the_reference_parses() {
        let c = yaml(
            r"
fields:
  id:      { from: [/contactId, /id] }
  name:    { name: { first: /first_name, last: /last_name, full: /name } }
  email:   { from: /email_address, normalize: email }
  phone:   { from: /phone, normalize: { phone: { region: US } } }
  source:  { const: salesforce }
  updated: { from: /updated, normalize: { timestamp: epoch_seconds } }
  seen:    { from: /seen, normalize: { timestamp: { format: '%d/%m/%Y' } } }
  country: { from: address.country, normalize: { country: alpha3 } }
  status:  { from: /Status, normalize: [trim, { map: { values: { A: active, 1: one, true: yes }, default: null } }] }
  tier:    { from: /tier, default: free, required: false }
  address: { fields: { city: /addr/city } }
  tags:    { from: /tags, each: { normalize: lowercase } }
  nothing: { const: null }
  raw:     raw
",
        )
        .unwrap();
        let rule = |name: &str| match &c.fields[name] {
            FieldRule::Rule(r) => r.as_ref().clone(),
            FieldRule::Raw => panic!("{name} is raw"),
        };
        assert_eq!(c.fields["raw"], FieldRule::Raw);
        assert_eq!(rule("id").from.unwrap().0, ["/contactId", "/id"]);
        assert_eq!(rule("email").normalize.0, [NormalizeConfig::Email]);
        assert_eq!(
            rule("phone").normalize.0,
            [NormalizeConfig::Phone(PhoneConfig {
                region: Some("US".into())
            })]
        );
        assert_eq!(
            rule("seen").normalize.0,
            [NormalizeConfig::Timestamp(TimestampConfig::Format(
                "%d/%m/%Y".into()
            ))]
        );
        let NormalizeConfig::Map(m) = &rule("status").normalize.0[1] else {
            panic!("map")
        };
        assert_eq!(m.values.len(), 3);
        assert!(m.values.contains_key(&MapKey("1".into())));
        assert!(m.values.contains_key(&MapKey("true".into())));
        assert_eq!(m.default, Some(Json::Null), "null is kept, not dropped");
        assert_eq!(rule("nothing").constant, Some(Json::Null));
        assert_eq!(rule("tier").constant, None);
        let FieldRule::Rule(city) = &rule("address").fields.unwrap()["city"] else {
            panic!("shorthand")
        };
        assert_eq!(city.from.as_ref().unwrap().0, ["/addr/city"]);
        assert_eq!(
            rule("tags").each.unwrap().normalize.0,
            [NormalizeConfig::Lowercase]
        );
    }

    #[test]
    fn the_same_config_parses_from_json_as_the_config_loader_hands_it() {
        let c: MappingConfig = serde_json::from_value(serde_json::json!({
            "fields": {
                "email": {"from": "/e", "normalize": ["trim", {"map": {"values": {"A": "a"}}}]},
                "raw": "raw"
            }
        }))
        .unwrap();
        assert_eq!(c.fields["raw"], FieldRule::Raw);
    }

    #[test]
    fn mistakes_are_refused_with_a_reason() {
        for (text, needle) in [
            ("fields: { a: { form: /x } }", "unknown field `form`"),
            (
                "fields: { a: { from: /x, normalize: emial } }",
                "unknown variant `emial`",
            ),
            (
                "fields: { a: { from: /x, normalize: map } }",
                "needs its table",
            ),
            (
                "fields: { a: { from: /x, normalize: { trim: {} } } }",
                "takes no options",
            ),
            (
                "fields: { a: { from: /x, normalize: { phone: { region: US }, trim: x } } }",
                "one normalizer per list item",
            ),
            (
                "fields: { a: { from: /x, normalize: { phone: { regin: US } } } }",
                "unknown field `regin`",
            ),
            (
                "fields: { a: { from: /x, normalize: { timestamp: epoch } } }",
                "unknown variant `epoch`",
            ),
            ("fields: { a: { from: [] } }", "at least one path"),
            ("fieldz: {}", "unknown field `fieldz`"),
        ] {
            let e = yaml(text).expect_err(text);
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
