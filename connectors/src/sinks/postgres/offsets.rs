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
}

impl Offsets {
    pub fn new(pool: Pool, connector: &str, table: &str) -> Arc<Self> {
        Arc::new(Self {
            pool,
            connector: connector.to_owned(),
            table: table.to_owned(),
            cursors: Mutex::new(HashMap::new()),
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
