//! The connector's consumed offsets in the target (`ferry_sink_offsets`),
//! and this writer's view of them.
//!
//! Each transaction that writes rows also moves the offset of every
//! partition it covers, compare-and-set against the cursor this writer
//! holds: if another writer (a zombie, or the partition's new owner) moved
//! it meanwhile, the transaction rolls back, the cursor is forgotten and
//! read again. Records below a cursor are in the table already; the sink
//! reports them written without writing them again.

use super::classify::connector_error;
use super::sql;
use deadpool_postgres::Pool;
use ferry::error::ConnectorError;
use ferry::kafka::TopicPartition;
use ferry::sink::TargetOffsets;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Next offset per partition as last seen in the table: `None` inside
/// means the table has no row for it.
type Cursors = HashMap<TopicPartition, Option<i64>>;

/// The offsets table, shared by the sink and the runtime (which asks where
/// to resume after each assignment).
pub struct Offsets {
    pool: Pool,
    connector: String,
    table: String,
    cursors: Mutex<Cursors>,
    /// Per partition, the highest offset this writer committed: the table
    /// can move past it (another writer), never back below it unless the
    /// database lost committed transactions (a crash with
    /// `synchronous_commit = off`, an asynchronous replica promoted).
    floors: Mutex<HashMap<TopicPartition, i64>>,
}

impl Offsets {
    pub fn new(pool: Pool, connector: &str, table: &str) -> Arc<Self> {
        Arc::new(Self {
            pool,
            connector: connector.to_owned(),
            table: table.to_owned(),
            cursors: Mutex::new(HashMap::new()),
            floors: Mutex::new(HashMap::new()),
        })
    }

    pub fn connector(&self) -> &str {
        &self.connector
    }

    fn cursors(&self) -> std::sync::MutexGuard<'_, Cursors> {
        self.cursors.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cursor of `tp`, if known (`Some(None)`: no row yet).
    pub fn cursor(&self, tp: &TopicPartition) -> Option<Option<i64>> {
        self.cursors().get(tp).copied()
    }

    pub fn set(&self, tp: TopicPartition, next: Option<i64>) {
        if let Some(n) = next {
            let mut floors = self.floors.lock().unwrap_or_else(PoisonError::into_inner);
            let floor = floors.entry(tp.clone()).or_insert(n);
            *floor = (*floor).max(n);
        }
        self.cursors().insert(tp, next);
    }

    /// Forgets `tp`'s cursor: it is read from the table before the next write.
    pub fn forget(&self, tp: &TopicPartition) {
        self.cursors().remove(tp);
    }

    /// Reads every offset the connector has in the table (through `client`),
    /// and sets the cursors of `partitions` from it.
    pub async fn refresh(
        &self,
        client: &deadpool_postgres::Client,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, i64)>, ConnectorError> {
        let rows = client
            .query(sql::LOAD_OFFSETS, &[&self.connector])
            .await
            .map_err(|e| connector_error("reading ferry_sink_offsets", &self.table, &e))?;
        let mut stored: HashMap<TopicPartition, i64> = HashMap::new();
        for row in rows {
            let (topic, partition, next): (String, i32, i64) = (
                row.try_get(0).map_err(|e| read_error(&self.table, &e))?,
                row.try_get(1).map_err(|e| read_error(&self.table, &e))?,
                row.try_get(2).map_err(|e| read_error(&self.table, &e))?,
            );
            stored.insert((topic, partition), next);
        }
        {
            let floors = self.floors.lock().unwrap_or_else(PoisonError::into_inner);
            for tp in partitions {
                let (Some(&floor), stored) = (floors.get(tp), stored.get(tp).copied()) else {
                    continue;
                };
                if stored.is_none_or(|n| n < floor) {
                    // Writing on would skip the records between: stop, and
                    // let a restart resume from what the table says.
                    let mut e = ConnectorError::external(format!(
                        "postgres table `{}`: ferry_sink_offsets went back for {}/{}: this writer committed up to {floor}, the table now says {}. The database lost committed transactions; restart the connector to read again from the table's offset",
                        self.table,
                        tp.0,
                        tp.1,
                        stored.map_or("no row".to_owned(), |n| n.to_string())
                    ))
                    .for_connector();
                    e.retry = ferry::error::Retry::No;
                    return Err(e);
                }
            }
        }
        let mut cursors = self.cursors();
        let mut found = Vec::new();
        for tp in partitions {
            let next = stored.get(tp).copied();
            cursors.insert(tp.clone(), next);
            if let Some(n) = next {
                found.push((tp.clone(), n));
            }
        }
        Ok(found)
    }

    /// In `tx`: moves `tp` to `next` if it is still at `expected` (the
    /// cursor). False: another writer moved it.
    pub async fn advance(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        tp: &TopicPartition,
        expected: Option<i64>,
        next: i64,
    ) -> Result<bool, tokio_postgres::Error> {
        let changed = match expected {
            Some(expected) => {
                let stmt = tx.prepare_cached(sql::ADVANCE_OFFSET).await?;
                tx.execute(&stmt, &[&self.connector, &tp.0, &tp.1, &next, &expected])
                    .await?
            }
            None => {
                let stmt = tx.prepare_cached(sql::FIRST_OFFSET).await?;
                tx.execute(&stmt, &[&self.connector, &tp.0, &tp.1, &next])
                    .await?
            }
        };
        Ok(changed == 1)
    }
}

fn read_error(table: &str, e: &tokio_postgres::Error) -> ConnectorError {
    ConnectorError::internal(format!(
        "postgres table `{table}`: ferry_sink_offsets holds an unexpected row: {e}"
    ))
    .for_connector()
}

impl TargetOffsets for Offsets {
    fn load<'a>(
        &'a self,
        partitions: &'a [TopicPartition],
    ) -> futures::future::BoxFuture<'a, Result<Vec<(TopicPartition, i64)>, ConnectorError>> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(|e| {
                ConnectorError::external(format!(
                    "postgres table `{}`: no connection to read ferry_sink_offsets: {e}",
                    self.table
                ))
                .for_connector()
            })?;
            self.refresh(&client, partitions).await
        })
    }
}
