//! `type: postgres`: keeps a PostgreSQL table in sync with a topic,
//! exactly once. Upserts by key (`ON CONFLICT ... DO UPDATE`) and deletes
//! on tombstones, or appends (`mode: insert`); one transaction per batch
//! holding the rows and the consumed offsets (`ferry_sink_offsets`), which
//! the runtime resumes from on start and after every rebalance
//! ([`ferry::sink::TargetOffsets`]). A crash at any point neither loses
//! nor repeats a record's effect.
//!
//! Files: `config.rs` (settings), `sql.rs` (statements), `values.rs` (JSON
//! to column text), `table.rs` (the table's layout), `offsets.rs` (the
//! offsets table and the fencing cursors), `classify.rs` (SQLSTATE to
//! retry/dead-letter/stop), `sink.rs` (the writes).

pub mod classify;
pub mod config;
pub mod offsets;
pub mod sink;
pub mod sql;
pub mod table;
#[cfg(test)]
mod tests;
pub mod values;

use crate::plan::{parse_settings, Context};
use config::{Mode, PostgresSinkConfig};
use ferry::config::ConfigError;
use ferry::runtime::{Planned, SinkSettings};
use ferry::sink::BoxedSink;
use std::sync::Arc;
use std::time::Duration;

/// Plans the connector from its config (no I/O).
pub fn plan(ctx: &Context<'_>) -> Result<Planned, ConfigError> {
    let mut cfg: PostgresSinkConfig = parse_settings(ctx)?;
    let resilience = ctx.resilience()?;
    cfg.statement_timeout = Some(resilience.timeout);
    validate(ctx, &cfg)?;
    match &resilience.fallback {
        None | Some(ferry::resilience::FallbackConfig::Topic(_)) => {}
        Some(_) => {
            return Err(ctx.invalid(
                "fallback",
                "a postgres sink's fallback is `{ topic: NAME }` (park the records)",
            ))
        }
    }
    let dlq = resilience.dead_letter_topic(&ctx.spec.name);
    ferry::config::validate_topic_name(&dlq).map_err(|m| ctx.invalid("dead_letter.topic", m))?;
    if dlq == cfg.topic {
        return Err(ctx.invalid(
            "dead_letter.topic",
            format!("`{dlq}` is also the sink's `topic`: records would loop back"),
        ));
    }
    let concurrency = crate::plan::concurrency(ctx, cfg.concurrency)?;
    if concurrency > 1 {
        // Several batches at once (one per partition) ran slower than one
        // at a time in the `sinks` bench, and once stalled in a kill test:
        // refused until that is understood.
        return Err(ctx.invalid(
            "concurrency",
            format!("{concurrency}: the postgres sink writes one batch at a time for now (concurrency: 1)"),
        ));
    }
    let settings = SinkSettings {
        topics: vec![cfg.topic.clone()],
        group_id: ctx.sink_group(cfg.group_id.as_deref()),
        batch_max_records: cfg.batch_max_records,
        batch_max_bytes: 16 << 20,
        batch_max_wait: cfg.batch_max_wait,
        // A batch for each concurrent write and one filling.
        max_in_flight_records: cfg
            .batch_max_records
            .saturating_mul(concurrency + 1)
            .max(1000),
        max_in_flight_bytes: 64 << 20,
        drain_within: resilience.timeout + Duration::from_secs(5),
        resilience,
        concurrency,
        outputs: Vec::new(),
    };
    let name = ctx.spec.name.clone();
    let shared = sink::SharedOffsets::default();
    Ok(Planned::Sink {
        settings: Box::new(settings),
        make: Arc::new(move || {
            Ok(BoxedSink::new(sink::PostgresSink::sharing(
                &name,
                cfg.clone(),
                &shared,
            )?))
        }),
    })
}

/// Checks what can be checked without a database, naming the key at fault.
fn validate(ctx: &Context<'_>, cfg: &PostgresSinkConfig) -> Result<(), ConfigError> {
    ferry::config::validate_topic_name(&cfg.topic).map_err(|m| ctx.invalid("topic", m))?;
    let pg: tokio_postgres::Config = cfg.url.parse().map_err(|e| {
        ctx.invalid(
            "url",
            format!("not a PostgreSQL URL (`postgres://user@host:5432/db`): {e}"),
        )
    })?;
    if pg.get_dbname().is_none() {
        return Err(ctx.invalid("url", "name the database (`postgres://user@host:5432/db`)"));
    }
    if cfg.url.contains("sslmode=") {
        return Err(ctx.invalid(
            "url",
            "set TLS with the sink's `tls:` key, not `sslmode` in the URL",
        ));
    }
    sql::TableName::parse(&cfg.table).map_err(|m| ctx.invalid("table", m))?;
    if let Some(columns) = &cfg.columns {
        if columns.is_empty() {
            return Err(ctx.invalid(
                "columns",
                "name at least one column (or leave `columns` out)",
            ));
        }
        for (name, pointer) in columns {
            if name.is_empty() {
                return Err(ctx.invalid("columns", "a column name is empty"));
            }
            if !pointer.is_empty() && !pointer.starts_with('/') {
                return Err(ctx.invalid(
                    &format!("columns.{name}"),
                    format!("`{pointer}` is not a JSON pointer: start it with `/` (`/{pointer}`), or `\"\"` for the whole value"),
                ));
            }
        }
    }
    if let Some(keys) = &cfg.key_columns {
        if cfg.mode == Mode::Insert {
            return Err(ctx.invalid("key_columns", "`mode: insert` appends rows and has no key; drop `key_columns` or use `mode: upsert`"));
        }
        if keys.is_empty() || keys.iter().any(String::is_empty) {
            return Err(ctx.invalid("key_columns", "name at least one column, none empty"));
        }
        if let Some(columns) = &cfg.columns {
            if let Some(k) = keys.iter().find(|k| !columns.contains_key(*k)) {
                return Err(ctx.invalid("key_columns", format!("`{k}` is not among `columns`")));
            }
        }
    }
    if cfg.create_table && cfg.mode == Mode::Upsert && cfg.key_columns.is_none() {
        return Err(ctx.invalid(
            "key_columns",
            "with `create_table` in upsert mode, name the new table's primary key",
        ));
    }
    if cfg.batch_max_records == 0 {
        return Err(ctx.invalid("batch_max_records", "must be at least 1"));
    }
    if cfg.pool_size < 2 {
        // The runtime reads `ferry_sink_offsets` on a rebalance while a
        // write may hold a connection: one alone would deadlock them.
        return Err(ctx.invalid(
            "pool_size",
            "must be at least 2 (a write and the offsets read on a rebalance)",
        ));
    }
    Ok(())
}
