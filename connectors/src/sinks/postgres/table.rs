//! The target table as the sink sees it: which columns it writes, from
//! which JSON pointer, cast to which type, and which columns are the key.
//! Read from the database at open (never altered); a missing table is
//! created from the first record when `create_table` is on.

use super::classify::connector_error;
use super::config::{Mode, PostgresSinkConfig};
use super::sql::{self, Column, TableName};
use super::values::{field_pointer, infer_sql_type, Kind};
use ferry::error::ConnectorError;
use serde_json::Value as Json;

/// A column the sink writes.
#[derive(Debug, Clone)]
pub struct Mapped {
    pub column: Column,
    pub kind: Kind,
    /// Where its value is in the record's value.
    pub pointer: String,
}

/// How a batch is written to the table.
#[derive(Debug, Clone)]
pub struct Layout {
    pub columns: Vec<Mapped>,
    /// Indexes into `columns` of the key (upsert mode; empty in insert mode).
    pub keys: Vec<usize>,
    pub insert_sql: String,
    pub delete_sql: String,
}

impl Layout {
    pub fn key_columns(&self) -> Vec<&Mapped> {
        self.keys
            .iter()
            .filter_map(|&k| self.columns.get(k))
            .collect()
    }
}

/// The layout for a table with `existing` columns and `unique` indexes
/// (primary?, columns), or why the table does not fit the config.
pub fn layout(
    table: &TableName,
    cfg: &PostgresSinkConfig,
    existing: &[Column],
    unique: &[(bool, Vec<String>)],
) -> Result<Layout, String> {
    let find = |name: &str| existing.iter().find(|c| c.name == name);
    let names = || {
        existing
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let columns: Vec<Mapped> = match &cfg.columns {
        Some(map) => map
            .iter()
            .map(|(name, pointer)| {
                let column = find(name).ok_or_else(|| {
                    format!("`columns.{name}`: table `{table}` has no column `{name}` (its columns: {})", names())
                })?;
                Ok(Mapped {
                    column: column.clone(),
                    kind: Kind::of(&column.sql_type),
                    pointer: pointer.clone(),
                })
            })
            .collect::<Result<_, String>>()?,
        None => existing
            .iter()
            .map(|c| Mapped {
                column: c.clone(),
                kind: Kind::of(&c.sql_type),
                pointer: field_pointer(&c.name),
            })
            .collect(),
    };
    let keys = match cfg.mode {
        Mode::Insert => Vec::new(),
        Mode::Upsert => {
            let key_names: Vec<String> = match &cfg.key_columns {
                Some(k) => k.clone(),
                None => unique
                    .iter()
                    .find(|(primary, _)| *primary)
                    .map(|(_, cols)| cols.clone())
                    .ok_or_else(|| {
                        format!("table `{table}` has no primary key: set `key_columns` (upsert needs a unique key), or use `mode: insert`")
                    })?,
            };
            let mut sorted = key_names.clone();
            sorted.sort();
            let indexed = unique.iter().any(|(_, cols)| {
                let mut c = cols.clone();
                c.sort();
                c == sorted
            });
            if !indexed {
                return Err(format!(
                    "`key_columns`: table `{table}` has no primary key or unique index on ({}); an upsert needs one",
                    key_names.join(", ")
                ));
            }
            key_names
                .iter()
                .map(|k| {
                    columns.iter().position(|m| &m.column.name == k).ok_or_else(|| {
                        format!("`key_columns`: key column `{k}` of table `{table}` is not among the columns written (add it to `columns`)")
                    })
                })
                .collect::<Result<Vec<_>, String>>()?
        }
    };
    let plain: Vec<Column> = columns.iter().map(|m| m.column.clone()).collect();
    let key_cols: Vec<&Column> = keys.iter().filter_map(|&k| plain.get(k)).collect();
    Ok(Layout {
        insert_sql: sql::insert(table, &plain, &keys),
        delete_sql: sql::delete(table, &key_cols),
        keys,
        columns,
    })
}

/// The columns of a table created for `first` (a record's value): the
/// configured columns, or its top-level fields, typed from their values.
pub fn new_columns(cfg: &PostgresSinkConfig, first: &Json) -> Result<Vec<Column>, String> {
    let column = |name: &str, value: Option<&Json>| Column {
        name: name.to_owned(),
        sql_type: infer_sql_type(value.unwrap_or(&Json::Null)).to_owned(),
    };
    match &cfg.columns {
        Some(map) => Ok(map
            .iter()
            .map(|(name, pointer)| column(name, first.pointer(pointer)))
            .collect()),
        None => match first {
            Json::Object(fields) if !fields.is_empty() => Ok(fields
                .iter()
                .map(|(name, v)| column(name, Some(v)))
                .collect()),
            other => Err(format!(
                "cannot create the table from a record whose value is {} (not an object with fields); set `columns`",
                super::values::json_type(other)
            )),
        },
    }
}

/// The table's layout, or `None` when it does not exist.
pub async fn read(
    client: &deadpool_postgres::Client,
    table: &TableName,
    cfg: &PostgresSinkConfig,
) -> Result<Option<Layout>, ConnectorError> {
    let quoted = table.quoted();
    let shown = table.to_string();
    let rows = client
        .query(sql::TABLE_COLUMNS, &[&quoted])
        .await
        .map_err(|e| connector_error("reading its columns", &shown, &e))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let bad = |e: tokio_postgres::Error| {
        ConnectorError::internal(format!(
            "postgres table `{shown}`: reading the catalog: {e}"
        ))
        .for_connector()
    };
    let existing = rows
        .iter()
        .map(|r| {
            Ok(Column {
                name: r.try_get(0)?,
                sql_type: r.try_get(1)?,
            })
        })
        .collect::<Result<Vec<Column>, tokio_postgres::Error>>()
        .map_err(bad)?;
    let unique = client
        .query(sql::TABLE_UNIQUE_KEYS, &[&quoted])
        .await
        .map_err(|e| connector_error("reading its keys", &shown, &e))?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<Vec<(bool, Vec<String>)>, tokio_postgres::Error>>()
        .map_err(bad)?;
    layout(table, cfg, &existing, &unique)
        .map(Some)
        .map_err(|m| ConnectorError::user(m).for_connector())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: serde_json::Value) -> PostgresSinkConfig {
        let mut base = serde_json::json!({"topic": "t", "url": "postgres://x@h/db", "table": "c"});
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        match serde_json::from_value(base) {
            Ok(c) => c,
            Err(e) => panic!("config: {e}"),
        }
    }

    fn cols() -> Vec<Column> {
        ["id:text", "age:bigint", "tags:jsonb"]
            .iter()
            .filter_map(|s| s.split_once(':'))
            .map(|(n, t)| Column {
                name: n.into(),
                sql_type: t.into(),
            })
            .collect()
    }

    #[test]
    fn the_key_defaults_to_the_primary_key_and_must_be_unique() {
        let t = TableName {
            schema: None,
            name: "c".into(),
        };
        let pk = vec![(true, vec!["id".to_owned()])];
        let l = layout(&t, &cfg(serde_json::json!({})), &cols(), &pk).map_err(|e| e.to_string());
        assert_eq!(l.as_ref().map(|l| l.keys.clone()), Ok(vec![0]));
        assert_eq!(l.map(|l| l.columns[2].pointer.clone()), Ok("/tags".into()));
        let err = layout(
            &t,
            &cfg(serde_json::json!({"key_columns": ["age"]})),
            &cols(),
            &pk,
        )
        .err()
        .unwrap_or_default();
        assert!(err.contains("key_columns") && err.contains("age"), "{err}");
        let err = layout(&t, &cfg(serde_json::json!({})), &cols(), &[])
            .err()
            .unwrap_or_default();
        assert!(err.contains("no primary key"), "{err}");
        let insert = layout(
            &t,
            &cfg(serde_json::json!({"mode": "insert"})),
            &cols(),
            &[],
        );
        assert!(insert.is_ok_and(|l| l.keys.is_empty()));
        let err = layout(
            &t,
            &cfg(serde_json::json!({"columns": {"nope": "/n"}})),
            &cols(),
            &pk,
        )
        .err()
        .unwrap_or_default();
        assert!(
            err.contains("columns.nope") && err.contains("id, age, tags"),
            "{err}"
        );
    }

    #[test]
    fn a_new_table_takes_the_first_record_fields() {
        let c = new_columns(
            &cfg(serde_json::json!({})),
            &serde_json::json!({"id": "a", "n": 1}),
        );
        let c = c.map(|c| c.into_iter().map(|c| c.sql_type).collect::<Vec<_>>());
        assert_eq!(c, Ok(vec!["text".to_owned(), "bigint".to_owned()]));
        assert!(new_columns(&cfg(serde_json::json!({})), &serde_json::json!(3)).is_err());
    }
}
