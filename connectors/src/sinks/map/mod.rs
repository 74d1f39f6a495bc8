//! `type: map`: the standalone topic-to-topic mapping processor. It
//! consumes `topic`, maps each record's payload with its `mapping:` section
//! (or a registered Rust `transform`) into a record of `to`'s schema, and
//! writes it to `to`, keeping key, correlation id and per-key order. The
//! input's offsets are committed only once Kafka acknowledged the outputs
//! (at-least-once: a crash repeats at most the batch in flight). A record
//! the mapping refuses goes to the dead-letter topic with the reason; the
//! rest flow on. Built on the sink runtime, so consumer groups, retries,
//! dead letters and `ferry dlq` work as for any sink.

pub mod config;
pub mod sink;

use crate::plan::{parse_settings, Context, MAPPING_KEY};
use config::MapConfig;
use ferry::config::{ConfigError, TopicSpec};
use ferry::runtime::{Planned, SinkSettings};
use ferry::sink::BoxedSink;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub fn plan(ctx: &Context<'_>) -> Result<Planned, ConfigError> {
    let cfg: MapConfig = parse_settings(ctx)?;
    let resilience = ctx.resilience()?;
    ferry::config::validate_topic_name(&cfg.topic).map_err(|m| ctx.invalid("topic", m))?;
    ferry::config::validate_topic_name(&cfg.to).map_err(|m| ctx.invalid("to", m))?;
    if cfg.to == cfg.topic {
        return Err(ctx.invalid(
            "to",
            "must differ from `topic` (a processor reading its own output would loop)",
        ));
    }
    if ctx
        .spec
        .settings
        .get(MAPPING_KEY)
        .and_then(|m| m.get("dead_letter_topic"))
        .is_some()
    {
        return Err(ctx.invalid(
            "mapping.dead_letter_topic",
            "a `map` processor's refused records go to its dead-letter topic: set `dead_letter: { topic: ... }` instead",
        ));
    }
    let compiled = crate::mapping::compile(ctx, &cfg.to)?.ok_or_else(|| {
        ctx.invalid(
            MAPPING_KEY,
            "missing: a `map` processor needs a `mapping:` section",
        )
    })?;
    if cfg.batch_max_records == 0 {
        return Err(ctx.invalid("batch_max_records", "must be at least 1"));
    }
    let output = TopicSpec {
        name: cfg.to.clone(),
        partitions: cfg.partitions,
        replication_factor: cfg.replication_factor,
        config: BTreeMap::new(),
        value_schema: Some(compiled.schema.clone()),
        key_schema: None,
    };
    let settings = SinkSettings {
        topics: vec![cfg.topic.clone()],
        group_id: ctx.sink_group(cfg.group_id.as_deref()),
        batch_max_records: cfg.batch_max_records,
        batch_max_bytes: 8 << 20,
        batch_max_wait: Duration::from_millis(20),
        max_in_flight_records: cfg.batch_max_records * 2,
        max_in_flight_bytes: 32 << 20,
        drain_within: Duration::from_secs(30),
        resilience,
        // Kafka takes batches as fast as they come; in series keeps the
        // output in the input's order.
        concurrency: 1,
        outputs: vec![output],
    };
    let (name, to, transform) = (ctx.spec.name.clone(), cfg.to.clone(), compiled.transform);
    Ok(Planned::Sink {
        settings: Box::new(settings),
        make: Arc::new(move || {
            Ok(BoxedSink::new(sink::MapSink::new(
                &name,
                &to,
                Arc::clone(&transform),
            )))
        }),
    })
}
