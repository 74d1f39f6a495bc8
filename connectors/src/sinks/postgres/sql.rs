//! The SQL the sink runs, built from the table's layout: pure functions,
//! unit-tested. Every value travels as text (one `text[]` parameter per
//! column, `unnest`ed) and is cast to the column's type in the statement, so
//! a batch is one statement whatever its size, and the column types come
//! from the table (`format_type`), never from guessing on the client.

/// `"name"`, with embedded quotes doubled: names are used exactly as written.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A table name from config: `name` or `schema.name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split('.').collect();
        let bad = |p: &&str| p.trim().is_empty() || p.trim() != *p;
        match parts.as_slice() {
            [name] if !bad(name) => Ok(Self {
                schema: None,
                name: (*name).to_owned(),
            }),
            [schema, name] if !bad(schema) && !bad(name) => Ok(Self {
                schema: Some((*schema).to_owned()),
                name: (*name).to_owned(),
            }),
            _ => Err(format!(
                "`{text}`: expected a table name, `name` or `schema.name`"
            )),
        }
    }

    /// The name quoted for SQL.
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", quote_ident(s), quote_ident(&self.name)),
            None => quote_ident(&self.name),
        }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A column the sink writes, with its type as the database names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub sql_type: String,
}

/// `SELECT u.v0::t0, ... FROM unnest($1::text[], ...) AS u(v0, ...)`.
fn unnest_select(columns: &[&Column]) -> String {
    let casts: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("u.v{i}::{}", c.sql_type))
        .collect();
    let params: Vec<String> = (1..=columns.len())
        .map(|i| format!("${i}::text[]"))
        .collect();
    let aliases: Vec<String> = (0..columns.len()).map(|i| format!("v{i}")).collect();
    format!(
        "SELECT {} FROM unnest({}) AS u({})",
        casts.join(", "),
        params.join(", "),
        aliases.join(", ")
    )
}

/// One statement inserting a batch of rows (one `text[]` per column). With
/// `keys` (indexes into `columns`), a row whose key exists updates it.
pub fn insert(table: &TableName, columns: &[Column], keys: &[usize]) -> String {
    let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    let all: Vec<&Column> = columns.iter().collect();
    let mut sql = format!(
        "INSERT INTO {} ({}) {}",
        table.quoted(),
        names.join(", "),
        unnest_select(&all)
    );
    if !keys.is_empty() {
        let conflict: Vec<&str> = keys
            .iter()
            .filter_map(|&k| names.get(k))
            .map(String::as_str)
            .collect();
        let updates: Vec<String> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| !keys.contains(i))
            .map(|(_, n)| format!("{n} = EXCLUDED.{n}"))
            .collect();
        if updates.is_empty() {
            sql.push_str(&format!(
                " ON CONFLICT ({}) DO NOTHING",
                conflict.join(", ")
            ));
        } else {
            sql.push_str(&format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                conflict.join(", "),
                updates.join(", ")
            ));
        }
    }
    sql
}

/// One statement deleting the rows of a batch of keys (one `text[]` per key
/// column).
pub fn delete(table: &TableName, keys: &[&Column]) -> String {
    let names: Vec<String> = keys.iter().map(|c| quote_ident(&c.name)).collect();
    format!(
        "DELETE FROM {} WHERE ({}) IN ({})",
        table.quoted(),
        names.join(", "),
        unnest_select(keys)
    )
}

/// Creates a missing table (`keys`: its primary key, may be empty).
pub fn create_table(table: &TableName, columns: &[Column], keys: &[String]) -> String {
    let mut defs: Vec<String> = columns
        .iter()
        .map(|c| format!("{} {}", quote_ident(&c.name), c.sql_type))
        .collect();
    if !keys.is_empty() {
        let k: Vec<String> = keys.iter().map(|k| quote_ident(k)).collect();
        defs.push(format!("PRIMARY KEY ({})", k.join(", ")));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({})",
        table.quoted(),
        defs.join(", ")
    )
}

/// The table of consumed offsets, written in the same transaction as rows.
pub const CREATE_OFFSETS: &str = "CREATE TABLE IF NOT EXISTS ferry_sink_offsets (\
    connector text NOT NULL, topic text NOT NULL, partition int NOT NULL, \
    next_offset bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(), \
    PRIMARY KEY (connector, topic, partition))";

/// Moves a partition's offset if it is still what this writer last saw.
pub const ADVANCE_OFFSET: &str =
    "UPDATE ferry_sink_offsets SET next_offset = $4, updated_at = now() \
    WHERE connector = $1 AND topic = $2 AND partition = $3 AND next_offset = $5";

/// A partition's first offset; nothing if another writer got there first.
pub const FIRST_OFFSET: &str =
    "INSERT INTO ferry_sink_offsets (connector, topic, partition, next_offset) \
    VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";

/// Every offset the connector has recorded.
pub const LOAD_OFFSETS: &str =
    "SELECT topic, partition, next_offset FROM ferry_sink_offsets WHERE connector = $1";

/// A table's columns and the types values are cast to, in order (`$1`:
/// the quoted name). The type without its length or precision: an explicit
/// cast to `varchar(n)`, `char(n)` or `bit(n)` silently truncates (a key
/// `ORD-12345` would become `ORD-1234` and hit another row), where the
/// insert's own assignment refuses a value too long (SQLSTATE 22001: the
/// record is dead-lettered). `character` and `bit` without a length mean
/// length 1, so they are cast as `bpchar` and `varbit`.
pub const TABLE_COLUMNS: &str = "SELECT a.attname::text, CASE a.atttypid \
    WHEN 'bpchar'::regtype THEN 'bpchar' WHEN '_bpchar'::regtype THEN 'bpchar[]' \
    WHEN 'bit'::regtype THEN 'varbit' WHEN '_bit'::regtype THEN 'varbit[]' \
    ELSE format_type(a.atttypid, NULL) END \
    FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 \
    AND NOT a.attisdropped ORDER BY a.attnum";

/// A table's unique indexes without a predicate: primary or not, columns.
pub const TABLE_UNIQUE_KEYS: &str = "SELECT i.indisprimary, ARRAY(SELECT a.attname::text \
    FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(n, o) \
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o) \
    FROM pg_index i WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL";

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str) -> Column {
        Column {
            name: name.into(),
            sql_type: ty.into(),
        }
    }

    #[test]
    fn table_names_are_quoted_exactly_and_bad_ones_refused() {
        let t = TableName::parse("crm.Contacts").map_err(|e| e.to_string());
        assert_eq!(t.map(|t| t.quoted()), Ok("\"crm\".\"Contacts\"".to_owned()));
        assert_eq!(
            TableName::parse("we\"ird").map(|t| t.quoted()),
            Ok("\"we\"\"ird\"".to_owned())
        );
        for bad in ["", "a.b.c", ".a", "a.", " a"] {
            assert!(TableName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_upsert_is_one_statement_casting_each_column() {
        let t = TableName::parse("contacts").map_err(|e| e.to_string());
        let Ok(t) = t else { panic!("table") };
        let cols = [
            col("id", "text"),
            col("age", "bigint"),
            col("seen", "timestamp with time zone"),
        ];
        assert_eq!(
            insert(&t, &cols, &[0]),
            "INSERT INTO \"contacts\" (\"id\", \"age\", \"seen\") SELECT u.v0::text, u.v1::bigint, \
             u.v2::timestamp with time zone FROM unnest($1::text[], $2::text[], $3::text[]) AS u(v0, v1, v2) \
             ON CONFLICT (\"id\") DO UPDATE SET \"age\" = EXCLUDED.\"age\", \"seen\" = EXCLUDED.\"seen\""
        );
        assert!(insert(&t, &cols[..1], &[0]).ends_with("ON CONFLICT (\"id\") DO NOTHING"));
        assert!(!insert(&t, &cols, &[]).contains("ON CONFLICT"));
        assert_eq!(
            delete(&t, &[&cols[0], &cols[1]]),
            "DELETE FROM \"contacts\" WHERE (\"id\", \"age\") IN (SELECT u.v0::text, u.v1::bigint \
             FROM unnest($1::text[], $2::text[]) AS u(v0, v1))"
        );
        assert_eq!(
            create_table(&t, &cols[..2], &["id".into()]),
            "CREATE TABLE IF NOT EXISTS \"contacts\" (\"id\" text, \"age\" bigint, PRIMARY KEY (\"id\"))"
        );
    }
}
