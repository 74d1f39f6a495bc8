//! `type: postgres` settings.

use ferry::config::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Keeps a PostgreSQL table in sync with a topic, exactly once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// Topic to consume.
    pub topic: String,
    /// `postgres://user@host:5432/database`. May hold secret references
    /// (`postgres://app:${env:PGPASSWORD}@db/crm`); a password written in
    /// the URL is redacted from logs.
    #[serde(deserialize_with = "ferry::config::secret::embedded")]
    pub url: String,
    /// The password, when not in the URL (`${env:NAME}` or `${file:/path}`).
    #[serde(default)]
    pub password: Option<Secret>,
    /// TLS to the server: `disable` (default) or `require` (encrypted, and
    /// the server's certificate verified against the public CA roots, or
    /// `tls_ca_file`'s).
    #[serde(default)]
    pub tls: TlsMode,
    /// PEM file of the CA(s) that signed the server's certificate.
    #[serde(default)]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Target table, `name` or `schema.name`, spelled exactly as in the
    /// database (names are quoted, so case matters).
    pub table: String,
    /// `upsert` (default): insert or update by `key_columns`, delete on a
    /// tombstone. `insert`: append every record as a new row.
    #[serde(default)]
    pub mode: Mode,
    /// The upsert's conflict target (default: the table's primary key).
    #[serde(default)]
    pub key_columns: Option<Vec<String>>,
    /// Column name to JSON pointer into the record's value (`/address/city`);
    /// the empty pointer `""` is the whole value. Default: every column of
    /// the table from the value's top-level field of that name.
    #[serde(default)]
    pub columns: Option<BTreeMap<String, String>>,
    /// In `upsert` mode, a record with a null value deletes the row of its
    /// key (default true); else tombstones are skipped.
    #[serde(default = "yes")]
    pub delete_on_tombstone: bool,
    /// Create the table when it is missing, from the first record's fields,
    /// with `key_columns` as primary key. An existing table is never altered.
    #[serde(default)]
    pub create_table: bool,
    /// Records per transaction.
    #[serde(default = "five_hundred")]
    pub batch_max_records: usize,
    /// How long a partial batch waits for more records.
    #[serde(default = "hundred_ms", with = "humantime_serde")]
    pub batch_max_wait: Duration,
    /// Consumer group (default `<kafka.consumer.group_id>-sink-<name>`).
    #[serde(default)]
    pub group_id: Option<String>,
    /// Connections kept open to the database, per concurrent batch.
    #[serde(default = "two")]
    pub pool_size: usize,
    /// Batches written at once, each of one partition (a partition is
    /// written in order, one batch at a time: its offset in
    /// `ferry_sink_offsets` says everything before it is in the table).
    #[serde(default = "one")]
    pub concurrency: usize,
    /// Set from the connector's `timeout` when planned: the longest a
    /// statement may run or wait for a lock (`statement_timeout`,
    /// `lock_timeout`), so a write blocked by another session fails, is
    /// retried and shows as `last_error`, instead of hanging.
    #[serde(skip)]
    pub statement_timeout: Option<Duration>,
}

/// How rows are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Upsert,
    Insert,
}

/// TLS to the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    #[default]
    Disable,
    Require,
}

fn yes() -> bool {
    true
}
fn five_hundred() -> usize {
    500
}
fn two() -> usize {
    2
}
fn one() -> usize {
    1
}
fn hundred_ms() -> Duration {
    Duration::from_millis(100)
}
