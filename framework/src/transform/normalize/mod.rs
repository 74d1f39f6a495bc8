//! Normalizers: small pure functions, one file per family, each tested with
//! valid and invalid input. [`Step`] is one compiled `normalize:` entry; it
//! knows the kind of value it yields, so a chain whose output cannot fit
//! its field is refused when the mapping compiles.

pub(crate) mod country;
pub(crate) mod email;
pub(crate) mod name;
pub(crate) mod number;
pub(crate) mod phone;
pub(crate) mod text;
pub(crate) mod time;
pub(crate) mod value_map;

use super::config::{CountryFormat, NormalizeConfig};
use super::error::Rule;
use super::value::{Kind, Val};
use std::borrow::Cow;
use time::TimeFormat;
use value_map::ValueMap;

/// One compiled normalizer.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    Trim,
    Lowercase,
    Uppercase,
    Email,
    Phone(Option<phonenumber::country::Id>),
    Timestamp(TimeFormat),
    Country(CountryFormat),
    Map(ValueMap),
    Number,
    Integer,
    Boolean,
}

impl Step {
    /// Checks the options (regions, patterns, tables) once.
    pub(crate) fn compile(config: &NormalizeConfig) -> Result<Self, String> {
        Ok(match config {
            NormalizeConfig::Trim => Step::Trim,
            NormalizeConfig::Lowercase => Step::Lowercase,
            NormalizeConfig::Uppercase => Step::Uppercase,
            NormalizeConfig::Email => Step::Email,
            NormalizeConfig::Phone(p) => {
                Step::Phone(p.region.as_deref().map(phone::region).transpose()?)
            }
            NormalizeConfig::Timestamp(t) => Step::Timestamp(TimeFormat::compile(t)?),
            NormalizeConfig::Country(f) => Step::Country(*f),
            NormalizeConfig::Map(m) => Step::Map(ValueMap::compile(m)?),
            NormalizeConfig::Number => Step::Number,
            NormalizeConfig::Integer => Step::Integer,
            NormalizeConfig::Boolean => Step::Boolean,
        })
    }

    pub(crate) fn rule(&self) -> Rule {
        match self {
            Step::Trim => Rule::Trim,
            Step::Lowercase => Rule::Lowercase,
            Step::Uppercase => Rule::Uppercase,
            Step::Email => Rule::Email,
            Step::Phone(_) => Rule::Phone,
            Step::Timestamp(_) => Rule::Timestamp,
            Step::Country(_) => Rule::Country,
            Step::Map(_) => Rule::Map,
            Step::Number => Rule::Number,
            Step::Integer => Rule::Integer,
            Step::Boolean => Rule::Boolean,
        }
    }

    /// What this step yields when given `input`, or why it cannot read it.
    pub(crate) fn output(&self, input: Kind) -> Result<Kind, String> {
        let refuse = || {
            Err(format!(
                "`{}` cannot read {}, which the step before it yields",
                self.rule(),
                input.describe()
            ))
        };
        Ok(match self {
            Step::Trim | Step::Lowercase | Step::Uppercase => Kind::Text,
            Step::Email | Step::Phone(_) | Step::Country(_) => match input {
                Kind::Bool | Kind::Time => return refuse(),
                _ => Kind::Text,
            },
            Step::Timestamp(_) => match input {
                Kind::Bool => return refuse(),
                _ => Kind::Time,
            },
            Step::Number | Step::Integer => match input {
                Kind::Bool | Kind::Time => return refuse(),
                _ if matches!(self, Step::Integer) => Kind::Int,
                _ => Kind::Number,
            },
            Step::Boolean => match input {
                Kind::Time => return refuse(),
                _ => Kind::Bool,
            },
            Step::Map(m) => m.kind(),
        })
    }

    /// Runs the step on a present value; None when it makes the value
    /// missing (`trim` of blank text, a `map` output of null).
    pub(crate) fn apply<'a>(&'a self, v: Val<'a>) -> Result<Option<Val<'a>>, String> {
        let text = |v: Val<'a>| {
            v.into_text()
                .map_err(|v| format!("expected text, found {}", v.describe()))
        };
        Ok(Some(match self {
            Step::Trim => {
                let t = text::trim(text(v)?);
                if t.is_empty() {
                    return Ok(None);
                }
                Val::Text(t)
            }
            Step::Lowercase => Val::Text(text::lowercase(text(v)?)),
            Step::Uppercase => Val::Text(text::uppercase(text(v)?)),
            Step::Email => Val::Text(email::email(text(v)?)?),
            Step::Phone(region) => Val::Text(Cow::Owned(phone::e164(&text(v)?, *region)?)),
            Step::Timestamp(format) => Val::Time(time::instant(v, format)?),
            Step::Country(format) => {
                Val::Text(Cow::Borrowed(country::country(&text(v)?, *format)?))
            }
            Step::Map(m) => return m.apply(v),
            Step::Number => number::number(v)?,
            Step::Integer => Val::Int(number::integer(v)?),
            Step::Boolean => Val::Bool(number::boolean(v)?),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::config::{PhoneConfig, TimestampConfig};
    use serde_json::json;

    #[test]
    fn chains_are_checked_by_kind() {
        let ts = Step::compile(&NormalizeConfig::Timestamp(TimestampConfig::Auto)).unwrap();
        assert_eq!(ts.output(Kind::Any), Ok(Kind::Time));
        assert!(Step::Email.output(Kind::Time).is_err());
        assert!(Step::Integer.output(Kind::Bool).is_err());
        assert_eq!(Step::Trim.output(Kind::Int), Ok(Kind::Text));
        assert_eq!(Step::Boolean.output(Kind::Text), Ok(Kind::Bool));
    }

    #[test]
    fn bad_options_are_refused_at_compile() {
        let bad = NormalizeConfig::Phone(PhoneConfig {
            region: Some("Narnia".into()),
        });
        assert!(Step::compile(&bad).unwrap_err().contains("Narnia"));
    }

    #[test]
    fn steps_run_on_payload_values() {
        let s = json!("  Mixed Case ");
        let v = Step::Trim.apply(Val::Json(&s)).unwrap().unwrap();
        let v = Step::Uppercase.apply(v).unwrap().unwrap();
        assert_eq!(v, Val::Text(Cow::Owned("MIXED CASE".into())));
        let blank = json!("   ");
        assert_eq!(Step::Trim.apply(Val::Json(&blank)), Ok(None));
        let o = json!({});
        assert!(Step::Lowercase
            .apply(Val::Json(&o))
            .unwrap_err()
            .contains("found an object"));
        let c = json!("germany");
        assert_eq!(
            Step::Country(CountryFormat::Alpha2).apply(Val::Json(&c)),
            Ok(Some(Val::Text(Cow::Borrowed("DE"))))
        );
    }
}
