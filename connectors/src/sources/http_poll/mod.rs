//! `type: http_poll`: polls a REST API on an interval and writes each item
//! as an event envelope (`schemas/event_envelope.avsc`), keyed by a field of
//! the item. Auth (bearer, basic, API key, OAuth2 client credentials),
//! pagination (cursor, next URL, `Link` header, page number, offset/limit),
//! incremental sync with the cursor kept as the source position, and
//! ETag / `If-None-Match`.

pub mod config;
pub mod source;
#[cfg(test)]
mod tests;

use crate::plan::{parse_settings, Context};
use config::HttpPollConfig;
use ferry::config::{ConfigError, TopicSpec};
use ferry::resilience::{FallbackConfig, Outbound};
use ferry::runtime::Planned;
use ferry::source::BoxedSource;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The value schema every `http_poll` topic gets.
pub const SCHEMA_FILE: &str = "event_envelope.avsc";

pub fn plan(ctx: &Context<'_>) -> Result<Planned, ConfigError> {
    let cfg: HttpPollConfig = parse_settings(ctx)?;
    let resilience = ctx.resilience()?;
    match &resilience.fallback {
        None | Some(FallbackConfig::Skip) => {}
        Some(_) => {
            return Err(ctx.invalid(
                "fallback",
                "a poll source's fallback is `skip` (skip the cycle, keep the position)",
            ))
        }
    }
    if url::Url::parse(&cfg.url).is_err() {
        return Err(ctx.invalid("url", format!("`{}` is not a URL", cfg.url)));
    }
    ferry::config::validate_topic_name(&cfg.topic).map_err(|m| ctx.invalid("topic", m))?;
    for (field, ptr) in [("items", Some(&cfg.items)), ("key", cfg.key.as_ref())] {
        if let Some(p) = ptr.filter(|p| !p.is_empty() && !p.starts_with('/')) {
            return Err(ctx.invalid(
                field,
                format!("`{p}` is not a JSON pointer (they start with `/`)"),
            ));
        }
    }
    if let Some(expr) = &cfg.schedule {
        source::parse_schedule(expr).map_err(|m| ctx.invalid("schedule", m))?;
    }
    if cfg.interval.is_zero() {
        return Err(ctx.invalid("interval", "must be more than 0s"));
    }
    if cfg.max_pages == 0 {
        return Err(ctx.invalid("max_pages", "must be at least 1"));
    }
    if let Some(inc) = &cfg.incremental {
        if !inc.field.starts_with('/') {
            return Err(ctx.invalid(
                "incremental.field",
                format!(
                    "`{}` is not a JSON pointer (they start with `/`)",
                    inc.field
                ),
            ));
        }
        if matches!(
            cfg.pagination,
            Some(config::Pagination::Page { .. } | config::Pagination::Offset { .. })
        ) {
            return Err(ctx.invalid(
                "pagination.type",
                "`incremental` needs keyset pagination (`cursor`, `next_url` or `link_header`): with page numbers or offsets, an item that changes during a cycle shifts the items after it, one of them is skipped at a page boundary, and the cursor then moves past it for good",
            ));
        }
    }
    let mut topic_config = BTreeMap::new();
    if let Some(r) = cfg.retention {
        topic_config.insert("retention.ms".to_owned(), r.as_millis().to_string());
    }
    let topic = TopicSpec {
        name: cfg.topic.clone(),
        partitions: cfg.partitions,
        replication_factor: cfg.replication_factor,
        config: topic_config,
        value_schema: Some(PathBuf::from(SCHEMA_FILE)),
        key_schema: None,
    };
    let name = ctx.spec.name.clone();
    let outbound = Outbound::new(&name, &resilience);
    Ok(Planned::Source {
        topic,
        mapping: None,
        make: Arc::new(move || {
            Ok(BoxedSource::new(source::HttpPollSource::new(
                &name,
                cfg.clone(),
                outbound.clone(),
            )?))
        }),
    })
}
