//! `map`: replace a value by a table (`A` -> `active`), as enum codes from
//! one system become another's. The input is compared as text, so `1`,
//! `true` and `"1"` find the same key; chain `trim` or `lowercase` before it
//! to match loosely. A value not in the table takes `default`, or fails the
//! record when there is none. An output of null makes the value missing.

use crate::transform::config::MapConfig;
use crate::transform::value::{Kind, Val};
use serde_json::Value as Json;
use std::borrow::Cow;
use std::collections::HashMap;

/// A compiled `map` table.
#[derive(Debug, Clone)]
pub(crate) struct ValueMap {
    values: HashMap<String, Out>,
    default: Option<Out>,
}

/// A table output, ready to lend out per record without allocating.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Missing,
    Text(String),
    Int(i64),
    Number(String),
    Bool(bool),
}

impl Out {
    fn new(j: &Json) -> Result<Self, String> {
        Ok(match j {
            Json::Null => Out::Missing,
            Json::String(s) => Out::Text(s.clone()),
            Json::Bool(b) => Out::Bool(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Out::Int(i),
                None => Out::Number(n.to_string()),
            },
            other => {
                return Err(format!(
                    "outputs must be text, numbers, booleans or null, not {}",
                    crate::schema::json::kind(other)
                ))
            }
        })
    }

    fn val(&self) -> Option<Val<'_>> {
        Some(match self {
            Out::Missing => return None,
            Out::Text(s) => Val::Text(Cow::Borrowed(s)),
            Out::Int(i) => Val::Int(*i),
            Out::Number(n) => Val::Number(Cow::Borrowed(n)),
            Out::Bool(b) => Val::Bool(*b),
        })
    }

    fn kind(&self) -> Option<Kind> {
        match self {
            Out::Missing => None,
            Out::Text(_) => Some(Kind::Text),
            Out::Int(_) => Some(Kind::Int),
            Out::Number(_) => Some(Kind::Number),
            Out::Bool(_) => Some(Kind::Bool),
        }
    }
}

impl ValueMap {
    pub(crate) fn compile(config: &MapConfig) -> Result<Self, String> {
        if config.values.is_empty() {
            return Err("`values` is empty".into());
        }
        let values = config
            .values
            .iter()
            .map(|(k, v)| {
                Out::new(v)
                    .map(|o| (k.0.clone(), o))
                    .map_err(|e| format!("`{}`: {e}", k.0))
            })
            .collect::<Result<_, _>>()?;
        let default = config
            .default
            .as_ref()
            .map(Out::new)
            .transpose()
            .map_err(|e| format!("`default`: {e}"))?;
        Ok(Self { values, default })
    }

    /// The table's output for `v`: None when the output is null.
    pub(crate) fn apply<'a>(&'a self, v: Val<'a>) -> Result<Option<Val<'a>>, String> {
        let key = v
            .into_text()
            .map_err(|v| format!("expected a value to look up, found {}", v.describe()))?;
        match self.values.get(key.as_ref()).or(self.default.as_ref()) {
            Some(out) => Ok(out.val()),
            None => {
                let mut known: Vec<&str> = self.values.keys().map(String::as_str).collect();
                known.sort_unstable();
                known.truncate(10);
                Err(format!(
                    "{} is not in the table (known: {}) and there is no default",
                    crate::transform::value::quote(&key),
                    known.join(", ")
                ))
            }
        }
    }

    /// What the table yields: one kind when every output shares it.
    pub(crate) fn kind(&self) -> Kind {
        let mut kinds = self
            .values
            .values()
            .chain(self.default.as_ref())
            .filter_map(Out::kind);
        let first = kinds.next().unwrap_or(Kind::Any);
        if kinds.all(|k| k == first) {
            first
        } else {
            Kind::Any
        }
    }

    /// Every output with its key (`default` for the default), so each can
    /// be checked against the field when the mapping compiles.
    pub(crate) fn outputs(&self) -> impl Iterator<Item = (&str, Val<'_>)> {
        self.values
            .iter()
            .map(|(k, o)| (k.as_str(), o))
            .chain(self.default.iter().map(|o| ("default", o)))
            .filter_map(|(k, o)| o.val().map(|v| (k, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::config::MapKey;
    use serde_json::json;

    fn table(values: Json, default: Option<Json>) -> ValueMap {
        let values = values
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (MapKey(k.clone()), v.clone()))
            .collect();
        ValueMap::compile(&MapConfig { values, default }).unwrap()
    }

    #[test]
    fn known_values_are_replaced() {
        let m = table(
            json!({"A": "active", "I": "inactive", "1": true, "true": 7}),
            None,
        );
        let a = json!("A");
        assert_eq!(
            m.apply(Val::Json(&a)),
            Ok(Some(Val::Text(Cow::Borrowed("active"))))
        );
        let one = json!(1);
        assert_eq!(
            m.apply(Val::Json(&one)),
            Ok(Some(Val::Bool(true))),
            "numbers match as text"
        );
        assert_eq!(m.apply(Val::Bool(true)), Ok(Some(Val::Int(7))));
        assert_eq!(m.kind(), Kind::Any, "mixed outputs");
        assert_eq!(m.outputs().count(), 4);
    }

    #[test]
    fn unknown_values_take_the_default_or_fail() {
        let with = table(json!({"A": "active"}), Some(json!("unknown")));
        let x = json!("X");
        assert_eq!(
            with.apply(Val::Json(&x)),
            Ok(Some(Val::Text(Cow::Borrowed("unknown"))))
        );
        assert_eq!(with.kind(), Kind::Text);
        let without = table(json!({"A": "active"}), None);
        let e = without.apply(Val::Json(&x)).unwrap_err();
        assert!(e.contains("\"X\" is not in the table (known: A)"), "{e}");
        let a = json!("a");
        assert!(
            without.apply(Val::Json(&a)).is_err(),
            "case matters unless lower-cased first"
        );
        let to_missing = table(json!({"N/A": null}), Some(Json::Null));
        let na = json!("N/A");
        assert_eq!(to_missing.apply(Val::Json(&na)), Ok(None));
        assert_eq!(to_missing.apply(Val::Json(&x)), Ok(None));
    }

    #[test]
    fn tables_that_cannot_work_are_refused() {
        let empty = MapConfig::default();
        assert!(ValueMap::compile(&empty).is_err());
        let values = [(MapKey("A".into()), json!({"nested": 1}))]
            .into_iter()
            .collect();
        let e = ValueMap::compile(&MapConfig {
            values,
            default: None,
        })
        .unwrap_err();
        assert!(e.contains("`A`"), "{e}");
        let o = json!({"a": 1});
        let m = table(json!({"A": "x"}), None);
        assert!(m.apply(Val::Json(&o)).is_err());
    }
}
