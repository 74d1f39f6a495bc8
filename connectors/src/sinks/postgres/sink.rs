//! Writes batches to a PostgreSQL table, exactly once.
//!
//! One transaction per `write`: the batch's deletes (one statement), its
//! rows (one statement: `INSERT ... SELECT ... FROM unnest(...)`, with
//! `ON CONFLICT (key) DO UPDATE` in upsert mode), and the next offset of
//! each of its partitions in `ferry_sink_offsets`, compare-and-set against
//! this writer's cursor ([`super::offsets`]). In upsert mode the records of
//! one key collapse to their final effect (a delete first if the batch
//! deleted the key, then its last row), which equals applying them in
//! offset order. A crash at any point leaves the rows and the offsets
//! consistent; the runtime resumes where the offsets say.
//!
//! A record the table refuses (SQLSTATE class 21, 22 or 23: a constraint,
//! bad data) is found by writing the batch again row by row under
//! savepoints: the records before it are committed with their offsets, it
//! is reported failed for good (the runtime dead-letters it), and the rest
//! are not attempted. Connection trouble, serialization failures and
//! deadlocks are retried by the runtime with backoff.

use super::classify::{self, describe, fault, Fault};
use super::config::{Mode, PostgresSinkConfig, TlsMode};
use super::offsets::Offsets;
use super::sql::{self, TableName};
use super::table::{self, Layout, Mapped};
use super::values::{json_type, to_text};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use ferry::error::ConnectorError;
use ferry::kafka::TopicPartition;
use ferry::sink::{RecordOutcome, Sink, SinkContext, SinkFailure, SinkRecord, TargetOffsets};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::ToSql;

/// One text per column (or per key column); `None` is SQL NULL.
type Texts = Vec<Option<String>>;

/// What one record does to the table.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// Insert (or upsert) a row: one text per layout column.
    Row(Texts),
    /// Delete the row of a key: one text per key column.
    Delete(Texts),
    /// Nothing (a tombstone in insert mode): only its offset moves.
    Skip,
}

/// Why a transaction did not commit.
enum Failed {
    /// The database refused some record of it (class 21, 22, 23).
    Record,
    /// Anything else, classified.
    Other(ConnectorError),
}

/// The offsets the sinks of one connector alive at once share (see
/// [`PostgresSink::sharing`]).
pub type SharedOffsets = Arc<std::sync::Mutex<std::sync::Weak<Offsets>>>;

pub struct PostgresSink {
    cfg: PostgresSinkConfig,
    table: TableName,
    pool: Pool,
    offsets: Arc<Offsets>,
    /// `None` until open reads it (or, with `create_table`, until the
    /// first record creates the table).
    layout: Option<Layout>,
}

impl PostgresSink {
    /// Builds the pool (no connection yet).
    pub fn new(name: &str, cfg: PostgresSinkConfig) -> Result<Self, ConnectorError> {
        Self::sharing(name, cfg, &SharedOffsets::default())
    }

    /// Builds the pool (no connection yet); the offsets' cursors are
    /// shared with the other sinks of `shared` alive at the time (the
    /// first one sets them up). The runtime writes a partition with one
    /// sink at a time, so the sinks one attempt of a connector writes with
    /// at once (`concurrency`) can share what each partition's cursor is;
    /// a new attempt, once the last one's sinks are gone, starts afresh.
    pub fn sharing(
        name: &str,
        cfg: PostgresSinkConfig,
        shared: &SharedOffsets,
    ) -> Result<Self, ConnectorError> {
        let table =
            TableName::parse(&cfg.table).map_err(|m| ConnectorError::user(m).for_connector())?;
        let pool = pool(&cfg)?;
        let offsets = {
            let mut alive = shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match alive.upgrade() {
                Some(offsets) => offsets,
                None => {
                    let offsets = Offsets::new(pool.clone(), name, &table.to_string());
                    *alive = Arc::downgrade(&offsets);
                    offsets
                }
            }
        };
        Ok(Self {
            cfg,
            table,
            pool,
            offsets,
            layout: None,
        })
    }

    fn shown(&self) -> String {
        self.table.to_string()
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, ConnectorError> {
        self.pool
            .get()
            .await
            .map_err(|e| pool_error(&self.shown(), &e))
    }

    /// What `r` does to the table, or why it cannot go there.
    fn op(&self, r: &SinkRecord) -> Result<Op, String> {
        let tombstone = r.raw.is_none() || r.value.is_null();
        let Some(layout) = &self.layout else {
            // Before `create_table` made the table, a tombstone has nothing
            // to delete.
            return if tombstone {
                Ok(Op::Skip)
            } else {
                Err("the table does not exist".to_owned())
            };
        };
        if tombstone {
            if self.cfg.mode == Mode::Insert || !self.cfg.delete_on_tombstone {
                return Ok(Op::Skip);
            }
            return tombstone_key(r, layout).map(Op::Delete);
        }
        let mut row = Vec::with_capacity(layout.columns.len());
        for (i, m) in layout.columns.iter().enumerate() {
            let value = r
                .value
                .pointer(&m.pointer)
                .unwrap_or(&serde_json::Value::Null);
            let text = to_text(value, m.kind).map_err(|why| {
                format!(
                    "column `{}` ({}) cannot take {} from `{}`: {why}",
                    m.column.name,
                    m.column.sql_type,
                    json_type(value),
                    m.pointer
                )
            })?;
            if text.is_none() && layout.keys.contains(&i) {
                return Err(format!(
                    "key column `{}` has no value (`{}` is missing or null)",
                    m.column.name, m.pointer
                ));
            }
            row.push(text);
        }
        Ok(Op::Row(row))
    }

    /// With `create_table`, creates the missing table with `columns`.
    async fn create_table(
        &mut self,
        client: &deadpool_postgres::Client,
        columns: &[sql::Column],
    ) -> Result<(), ConnectorError> {
        let shown = self.shown();
        let keys = match self.cfg.mode {
            Mode::Upsert => self.cfg.key_columns.clone().unwrap_or_default(),
            Mode::Insert => Vec::new(),
        };
        let ddl = sql::create_table(&self.table, columns, &keys);
        if let Err(e) = client.batch_execute(&ddl).await {
            // Another of the connector's sinks created it at the same time.
            let raced = matches!(
                e.code().map(tokio_postgres::error::SqlState::code),
                Some("23505" | "42P07")
            );
            if !raced {
                return Err(classify::connector_error("creating it", &shown, &e));
            }
        }
        tracing::info!(table = %shown, columns = columns.len(), "created the sink's table from the first record");
        self.layout = table::read(client, &self.table, &self.cfg).await?;
        if self.layout.is_none() {
            return Err(ConnectorError::internal(format!(
                "postgres table `{shown}`: created, but not found after"
            ))
            .for_connector());
        }
        Ok(())
    }

    /// Runs `ops` (records of `batch`, by index) on `tx`: deletes, then rows.
    async fn apply(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        ops: &[(usize, Op)],
    ) -> Result<(), tokio_postgres::Error> {
        let Some(layout) = &self.layout else {
            return Ok(());
        };
        let (deletes, rows) = plan_statements(self.cfg.mode, layout, ops);
        if let Some(first) = deletes.first() {
            let params = columns_of(&deletes, first.len());
            let stmt = tx.prepare_cached(&layout.delete_sql).await?;
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            tx.execute(&stmt, &refs).await?;
        }
        if !rows.is_empty() {
            let params = columns_of(&rows, layout.columns.len());
            let stmt = tx.prepare_cached(&layout.insert_sql).await?;
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            tx.execute(&stmt, &refs).await?;
        }
        Ok(())
    }

    /// In `tx`: moves the offset of each partition of `ops` past its last
    /// record. Returns the new cursors, or `Failed` when another writer
    /// moved one meanwhile (the transaction must not commit).
    async fn advance(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        batch: &[SinkRecord],
        ops: &[(usize, Op)],
    ) -> Result<Vec<(TopicPartition, i64)>, Failed> {
        let mut next: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        for (i, _) in ops {
            if let Some(r) = batch.get(*i) {
                let n = next.entry((r.topic.clone(), r.partition)).or_insert(0);
                *n = (*n).max(r.offset + 1);
            }
        }
        for (tp, n) in &next {
            let expected = self.offsets.cursor(tp).unwrap_or(None);
            let moved = self
                .offsets
                .advance(tx, tp, expected, *n)
                .await
                .map_err(|e| Failed::Other(self.db_error("recording offsets", &e)))?;
            if !moved {
                return Err(Failed::Other(
                    ConnectorError::external(format!(
                        "postgres table `{}`: another writer moved the offset of {}/{} in ferry_sink_offsets (expected {}); rolled back, reading it again",
                        self.shown(),
                        tp.0,
                        tp.1,
                        expected.map_or("no row".to_owned(), |e| e.to_string())
                    ))
                    .for_connector(),
                ));
            }
        }
        Ok(next.into_iter().collect())
    }

    fn db_error(&self, what: &str, e: &tokio_postgres::Error) -> ConnectorError {
        classify::connector_error(what, &self.shown(), e)
    }

    /// One transaction: `ops` and their offsets.
    async fn commit(
        &self,
        client: &mut deadpool_postgres::Client,
        batch: &[SinkRecord],
        ops: &[(usize, Op)],
    ) -> Result<(), Failed> {
        let tx = client
            .transaction()
            .await
            .map_err(|e| Failed::Other(self.db_error("starting a transaction", &e)))?;
        immediate(&tx)
            .await
            .map_err(|e| Failed::Other(self.db_error("starting a transaction", &e)))?;
        if let Err(e) = self.apply(&tx, ops).await {
            return Err(match fault(&e) {
                Fault::Record => Failed::Record,
                _ => Failed::Other(self.db_error("writing rows", &e)),
            });
        }
        let moved = self.advance(&tx, batch, ops).await?;
        tx.commit()
            .await
            .map_err(|e| Failed::Other(self.db_error("committing", &e)))?;
        for (tp, n) in moved {
            self.offsets.set(tp, Some(n));
        }
        Ok(())
    }

    /// After the database refused a record of `ops`: writes them one by
    /// one under savepoints, up to the first refused, and commits those
    /// before it with their offsets. Returns how many of `ops` are written
    /// and the refused record (index into `batch`) with its error.
    async fn row_by_row(
        &self,
        client: &mut deadpool_postgres::Client,
        batch: &[SinkRecord],
        ops: &[(usize, Op)],
    ) -> Result<(usize, Option<(usize, ConnectorError)>), Failed> {
        let other = |what: &str, e: &tokio_postgres::Error| Failed::Other(self.db_error(what, e));
        let mut tx = client
            .transaction()
            .await
            .map_err(|e| other("starting a transaction", &e))?;
        immediate(&tx)
            .await
            .map_err(|e| other("starting a transaction", &e))?;
        let mut written = 0;
        let mut refused = None;
        for (k, (i, _)) in ops.iter().enumerate() {
            let one = &ops[k..=k];
            let sp = tx
                .savepoint("ferry_record")
                .await
                .map_err(|e| other("setting a savepoint", &e))?;
            match self.apply(&sp, one).await {
                Ok(()) => {
                    sp.commit()
                        .await
                        .map_err(|e| other("releasing a savepoint", &e))?;
                    written += 1;
                }
                Err(e) if fault(&e) == Fault::Record => {
                    sp.rollback()
                        .await
                        .map_err(|e| other("rolling back to a savepoint", &e))?;
                    // A data exception does not say which column: find it.
                    let column = match (&ops[k].1, e.code()) {
                        (Op::Row(row), Some(code)) if code.code().starts_with("22") => {
                            self.misfit_column(&mut tx, row).await
                        }
                        _ => None,
                    };
                    refused = batch.get(*i).map(|r| (*i, self.refused(r, &e, column)));
                    break;
                }
                Err(e) => return Err(other("writing rows", &e)),
            }
        }
        let moved = self.advance(&tx, batch, &ops[..written]).await?;
        tx.commit().await.map_err(|e| other("committing", &e))?;
        for (tp, n) in moved {
            self.offsets.set(tp, Some(n));
        }
        Ok((written, refused))
    }

    /// The first column of `row` whose text does not cast to the column's
    /// type (each cast tried under a savepoint of `tx`).
    async fn misfit_column(
        &self,
        tx: &mut deadpool_postgres::Transaction<'_>,
        row: &Texts,
    ) -> Option<&Mapped> {
        let layout = self.layout.as_ref()?;
        for (m, text) in layout.columns.iter().zip(row) {
            let Some(text) = text else { continue };
            let sp = tx.savepoint("ferry_cast").await.ok()?;
            let cast = format!("SELECT $1::text::{}", m.column.sql_type);
            if sp.query_one(&cast, &[text]).await.is_ok() {
                sp.commit().await.ok()?;
            } else {
                sp.rollback().await.ok()?;
                return Some(m);
            }
        }
        None
    }

    /// The error for a record the database refused: the record's fault,
    /// not retried (the runtime dead-letters it).
    fn refused(
        &self,
        r: &SinkRecord,
        e: &tokio_postgres::Error,
        column: Option<&Mapped>,
    ) -> ConnectorError {
        let at_column = column.map_or(String::new(), |m| {
            format!(
                " column `{}` ({}) from `{}`:",
                m.column.name, m.column.sql_type, m.pointer
            )
        });
        let mut err = ConnectorError::user(format!(
            "postgres table `{}`: record {} refused:{at_column} {}",
            self.shown(),
            r.at(),
            describe(e)
        ))
        .with_detail(
            "ferry-dlq-postgres-column",
            column.map_or(String::new(), |m| m.column.name.clone()),
        );
        if let Some(db) = e.as_db_error() {
            err = err
                .with_detail("ferry-dlq-postgres-sqlstate", db.code().code())
                .with_detail("ferry-dlq-postgres-column", db.column().unwrap_or_default())
                .with_detail(
                    "ferry-dlq-postgres-constraint",
                    db.constraint().unwrap_or_default(),
                );
        }
        err
    }

    /// The batch minus what is already in the table, written; see the module doc.
    async fn write_batch(&mut self, batch: &[SinkRecord]) -> Result<(), SinkFailure> {
        let n = batch.len();
        let mut done = vec![false; n];
        let mut client = self.client().await.map_err(|e| fail_all(&done, e))?;
        let partitions: Vec<TopicPartition> = {
            let mut seen: Vec<TopicPartition> = Vec::new();
            for r in batch {
                let tp = (r.topic.clone(), r.partition);
                if !seen.contains(&tp) {
                    seen.push(tp);
                }
            }
            seen
        };
        let unknown: Vec<TopicPartition> = partitions
            .iter()
            .filter(|tp| self.offsets.cursor(tp).is_none())
            .cloned()
            .collect();
        if !unknown.is_empty() {
            self.offsets
                .refresh(&client, &unknown)
                .await
                .map_err(|e| fail_all(&done, e))?;
        }
        let mut todo = Vec::new();
        for (i, r) in batch.iter().enumerate() {
            match self.offsets.cursor(&(r.topic.clone(), r.partition)) {
                Some(Some(next)) if r.offset < next => done[i] = true,
                _ => todo.push(i),
            }
        }
        if todo.is_empty() {
            return Ok(());
        }
        let mut refused: Option<(usize, ConnectorError)> = None;
        if self.layout.is_none() {
            // `create_table`: the table comes from the first record with a value.
            let first = todo.iter().copied().find(|&i| {
                batch
                    .get(i)
                    .is_some_and(|r| r.raw.is_some() && !r.value.is_null())
            });
            if let Some((i, r)) = first.and_then(|i| batch.get(i).map(|r| (i, r))) {
                match table::new_columns(&self.cfg, &r.value) {
                    Ok(columns) => {
                        if let Err(e) = self.create_table(&client, &columns).await {
                            return Err(fail_all(&done, e));
                        }
                    }
                    Err(m) => {
                        let message =
                            format!("postgres table `{}`: record {}: {m}", self.shown(), r.at());
                        refused = Some((i, ConnectorError::user(message)));
                    }
                }
            }
        }
        let mut ops = Vec::with_capacity(todo.len());
        for &i in &todo {
            if refused.as_ref().is_some_and(|(at, _)| i >= *at) {
                break;
            }
            let Some(r) = batch.get(i) else { continue };
            match self.op(r) {
                Ok(op) => ops.push((i, op)),
                Err(m) => {
                    refused = Some((
                        i,
                        ConnectorError::user(format!(
                            "postgres table `{}`: record {}: {m}",
                            self.shown(),
                            r.at()
                        )),
                    ));
                    break;
                }
            }
        }
        if !ops.is_empty() {
            match self.commit(&mut client, batch, &ops).await {
                Ok(()) => ops.iter().for_each(|(i, _)| done[*i] = true),
                Err(Failed::Record) => match self.row_by_row(&mut client, batch, &ops).await {
                    Ok((written, first_refused)) => {
                        ops.iter().take(written).for_each(|(i, _)| done[*i] = true);
                        if first_refused.is_some() {
                            refused = first_refused;
                        }
                    }
                    Err(failed) => return Err(self.failed(&done, &partitions, failed)),
                },
                Err(failed) => return Err(self.failed(&done, &partitions, failed)),
            }
        }
        match refused {
            None => Ok(()),
            Some((at, error)) => {
                tracing::warn!(table = %self.shown(), error = %error, "a record does not fit the table; it goes to the dead-letter topic");
                let mut error = Some(error);
                Err(SinkFailure::per_record(
                    (0..n)
                        .map(|i| {
                            if done.get(i).copied().unwrap_or(false) {
                                RecordOutcome::Written
                            } else if i == at {
                                error
                                    .take()
                                    .map_or(RecordOutcome::NotAttempted, RecordOutcome::Failed)
                            } else {
                                RecordOutcome::NotAttempted
                            }
                        })
                        .collect(),
                ))
            }
        }
    }

    /// A transaction that did not commit: the cursors of `partitions` are
    /// read again before the next write (a lost answer to COMMIT may hide a
    /// commit; another writer may have moved them); every record not
    /// already written fails with the error.
    fn failed(&self, done: &[bool], partitions: &[TopicPartition], failed: Failed) -> SinkFailure {
        for tp in partitions {
            self.offsets.forget(tp);
        }
        let error = match failed {
            Failed::Other(e) => e,
            Failed::Record => ConnectorError::internal(format!(
                "postgres table `{}`: a record was refused but not found",
                self.shown()
            )),
        };
        tracing::warn!(table = %self.shown(), error = %error, "batch not written");
        fail_all(done, error)
    }
}

/// Every record not `done` fails with `e`.
fn fail_all(done: &[bool], e: ConnectorError) -> SinkFailure {
    SinkFailure::per_record(
        done.iter()
            .map(|d| {
                if *d {
                    RecordOutcome::Written
                } else {
                    RecordOutcome::Failed(e.clone())
                }
            })
            .collect(),
    )
}

impl Sink for PostgresSink {
    async fn open(&mut self, _ctx: &SinkContext) -> Result<(), ConnectorError> {
        let shown = self.shown();
        let client = self.client().await?;
        if let Err(e) = client.batch_execute(sql::CREATE_OFFSETS).await {
            // Two writers creating it at once: one loses with a duplicate.
            let raced = matches!(
                e.code().map(tokio_postgres::error::SqlState::code),
                Some("23505" | "42P07")
            );
            if !raced {
                return Err(classify::connector_error(
                    "creating ferry_sink_offsets",
                    &shown,
                    &e,
                ));
            }
        }
        self.layout = table::read(&client, &self.table, &self.cfg).await?;
        if self.layout.is_none() && !self.cfg.create_table {
            return Err(ConnectorError::user(format!(
                "postgres table `{shown}` does not exist: create it, or set `create_table: true`"
            ))
            .for_connector());
        }
        Ok(())
    }

    async fn write(&mut self, batch: &[SinkRecord]) -> Result<(), SinkFailure> {
        self.write_batch(batch).await
    }

    fn target_offsets(&self) -> Option<Arc<dyn TargetOffsets>> {
        let offsets: Arc<dyn TargetOffsets> = self.offsets.clone();
        Some(offsets)
    }
}

/// The deletes and rows to run for `ops`, in that order. Upsert: per key,
/// a delete if the batch deletes it anywhere, then its last row if the
/// last record is not a delete (the same final state as applying each
/// record in order). Insert: every row.
fn plan_statements(mode: Mode, layout: &Layout, ops: &[(usize, Op)]) -> (Vec<Texts>, Vec<Texts>) {
    if mode == Mode::Insert || layout.keys.is_empty() {
        let rows = ops
            .iter()
            .filter_map(|(_, op)| match op {
                Op::Row(r) => Some(r.clone()),
                _ => None,
            })
            .collect();
        return (Vec::new(), rows);
    }
    // Per key, in first-seen order: deleted in the batch?, last row.
    let mut order: Vec<Vec<Option<String>>> = Vec::new();
    let mut state: HashMap<Texts, (bool, Option<&Texts>)> = HashMap::new();
    for (_, op) in ops {
        let (key, row) = match op {
            Op::Row(r) => (
                layout
                    .keys
                    .iter()
                    .map(|&k| r.get(k).cloned().flatten())
                    .collect::<Vec<_>>(),
                Some(r),
            ),
            Op::Delete(k) => (k.clone(), None),
            Op::Skip => continue,
        };
        let entry = state.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            (false, None)
        });
        match row {
            Some(r) => entry.1 = Some(r),
            None => *entry = (true, None),
        }
    }
    let mut deletes = Vec::new();
    let mut rows = Vec::new();
    for key in order {
        if let Some((deleted, last)) = state.remove(&key) {
            if deleted {
                deletes.push(key);
            }
            if let Some(r) = last {
                rows.push(r.clone());
            }
        }
    }
    (deletes, rows)
}

/// Rows of `width` texts, as one array per column (the statements' parameters).
fn columns_of(rows: &[Vec<Option<String>>], width: usize) -> Vec<Vec<Option<String>>> {
    (0..width)
        .map(|c| rows.iter().map(|r| r.get(c).cloned().flatten()).collect())
        .collect()
}

/// The key column values of a tombstone, from its Kafka key: a JSON object
/// gives each key column by name; any other key is the one key column's value.
fn tombstone_key(r: &SinkRecord, layout: &Layout) -> Result<Vec<Option<String>>, String> {
    let keys = layout.key_columns();
    let key = r
        .key
        .as_deref()
        .ok_or("a tombstone without a key: no row to delete")?;
    let parsed: Option<serde_json::Value> = serde_json::from_str(key).ok();
    let values = match (parsed, keys.as_slice()) {
        (Some(serde_json::Value::Object(fields)), _) => keys
            .iter()
            .map(|m| {
                let v = fields.get(&m.column.name).ok_or_else(|| {
                    format!("the tombstone's key has no field `{}`", m.column.name)
                })?;
                to_text(v, m.kind).map_err(|why| format!("key field `{}`: {why}", m.column.name))
            })
            .collect::<Result<Vec<_>, String>>()?,
        (Some(serde_json::Value::String(s)), [_]) => vec![Some(s)],
        (_, [_]) => vec![Some(key.to_owned())],
        _ => {
            return Err(format!(
                "the tombstone's key `{key}` is not a JSON object naming the key columns ({})",
                keys.iter()
                    .map(|m| m.column.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    };
    if values.iter().any(Option::is_none) {
        return Err("the tombstone's key has a null key column".into());
    }
    Ok(values)
}

/// The connection pool (connects lazily, on first use).
fn pool(cfg: &PostgresSinkConfig) -> Result<Pool, ConnectorError> {
    let user = |m: String| ConnectorError::user(m).for_connector();
    let mut pg: tokio_postgres::Config = cfg
        .url
        .parse()
        .map_err(|e| user(format!("postgres `url`: {e}")))?;
    if let Some(p) = &cfg.password {
        pg.password(p.expose());
    }
    pg.application_name("ferry");
    pg.connect_timeout(Duration::from_secs(10));
    // A dead peer (a failover, a half-open socket) is found by TCP
    // keepalives rather than waited on for good.
    pg.keepalives(true);
    pg.keepalives_idle(Duration::from_secs(30));
    if let Some(t) = cfg.statement_timeout {
        let ms = t.as_millis().max(1);
        pg.options(format!("-c statement_timeout={ms} -c lock_timeout={ms}"));
    }
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match cfg.tls {
        TlsMode::Disable => {
            pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
            Manager::from_config(pg, tokio_postgres::NoTls, manager_config)
        }
        TlsMode::Require => {
            pg.ssl_mode(tokio_postgres::config::SslMode::Require);
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(cfg)?);
            Manager::from_config(pg, tls, manager_config)
        }
    };
    Pool::builder(manager)
        .max_size(cfg.pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(15)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| {
            ConnectorError::internal(format!("postgres connection pool: {e}")).for_connector()
        })
}

/// rustls with ring, verifying the server against the public roots and
/// `tls_ca_file`.
fn tls_config(cfg: &PostgresSinkConfig) -> Result<rustls::ClientConfig, ConnectorError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let user = |m: String| ConnectorError::user(m).for_connector();
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &cfg.tls_ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| user(format!("postgres `tls_ca_file` {}: {e}", path.display())))?;
        for cert in certs {
            let cert =
                cert.map_err(|e| user(format!("postgres `tls_ca_file` {}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| user(format!("postgres `tls_ca_file` {}: {e}", path.display())))?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ConnectorError::internal(format!("TLS: {e}")).for_connector())?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

fn pool_error(table: &str, e: &deadpool_postgres::PoolError) -> ConnectorError {
    match e {
        deadpool_postgres::PoolError::Backend(pg) => {
            classify::connector_error("connecting", table, pg)
        }
        other => {
            ConnectorError::external(format!("postgres table `{table}`: no connection: {other}"))
                .for_connector()
        }
    }
}

/// Deferred constraints checked at each statement, not at COMMIT: a
/// violation then names its record (and is dead-lettered alone) instead of
/// failing the whole transaction at the end.
async fn immediate(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), tokio_postgres::Error> {
    tx.batch_execute("SET CONSTRAINTS ALL IMMEDIATE").await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::postgres::sql::Column;
    use crate::sinks::postgres::values::Kind;

    fn layout() -> Layout {
        let col = |n: &str| Mapped {
            column: Column {
                name: n.into(),
                sql_type: "text".into(),
            },
            kind: Kind::Text,
            pointer: format!("/{n}"),
        };
        Layout {
            columns: vec![col("id"), col("v")],
            keys: vec![0],
            insert_sql: String::new(),
            delete_sql: String::new(),
        }
    }

    fn row(id: &str, v: &str) -> Op {
        Op::Row(vec![Some(id.into()), Some(v.into())])
    }
    fn del(id: &str) -> Op {
        Op::Delete(vec![Some(id.into())])
    }
    fn s(x: &str) -> Vec<Option<String>> {
        vec![Some(x.into())]
    }

    #[test]
    fn records_of_one_key_collapse_to_their_final_effect() {
        let ops: Vec<(usize, Op)> = [
            row("a", "1"),
            row("b", "1"),
            row("a", "2"),
            del("b"),
            del("c"),
            row("c", "1"),
            Op::Skip,
            row("d", "1"),
            del("d"),
        ]
        .into_iter()
        .enumerate()
        .collect();
        let (deletes, rows) = plan_statements(Mode::Upsert, &layout(), &ops);
        assert_eq!(deletes, vec![s("b"), s("c"), s("d")]);
        assert_eq!(
            rows,
            vec![
                vec![Some("a".into()), Some("2".into())],
                vec![Some("c".into()), Some("1".into())]
            ]
        );
        let (deletes, rows) = plan_statements(Mode::Insert, &layout(), &ops);
        assert!(deletes.is_empty());
        assert_eq!(rows.len(), 5);
        assert_eq!(
            columns_of(&rows[..2], 2),
            vec![
                vec![Some("a".to_owned()), Some("b".to_owned())],
                vec![Some("1".to_owned()), Some("1".to_owned())]
            ]
        );
    }

    fn tombstone(key: Option<&str>) -> SinkRecord {
        SinkRecord {
            topic: "t".into(),
            partition: 0,
            offset: 3,
            timestamp: None,
            key: key.map(str::to_owned),
            raw_key: None,
            value: serde_json::Value::Null,
            raw: None,
            headers: Vec::new(),
            correlation_id: String::new(),
        }
    }

    #[test]
    fn a_tombstone_names_its_row_by_the_kafka_key() {
        let l = layout();
        assert_eq!(tombstone_key(&tombstone(Some("k1")), &l), Ok(s("k1")));
        assert_eq!(tombstone_key(&tombstone(Some("\"k1\"")), &l), Ok(s("k1")));
        assert_eq!(
            tombstone_key(&tombstone(Some("{\"id\": 7}")), &l),
            Ok(s("7"))
        );
        assert!(tombstone_key(&tombstone(None), &l).is_err());
        assert!(tombstone_key(&tombstone(Some("{\"x\": 7}")), &l).is_err());
    }
}
