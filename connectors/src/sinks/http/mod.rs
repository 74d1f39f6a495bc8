//! `type: http`: consumes a topic and calls a target API per record (or per
//! batch), with templated method, URL, headers and body, and an
//! `Idempotency-Key` header so a retried call is not applied twice.

pub mod config;
pub mod sink;
pub mod template;
#[cfg(test)]
mod tests;

use crate::plan::{parse_settings, Context};
use config::{Body, HttpSinkConfig};
use ferry::config::ConfigError;
use ferry::resilience::Outbound;
use ferry::runtime::{Planned, SinkSettings};
use ferry::sink::BoxedSink;
use std::sync::Arc;
use std::time::Duration;
use template::Template;

/// Without `batch`, records handed to the sink at a time (each is still its
/// own request).
pub const RECORDS_PER_WRITE: usize = 50;

pub fn plan(ctx: &Context<'_>) -> Result<Planned, ConfigError> {
    let cfg: HttpSinkConfig = parse_settings(ctx)?;
    let resilience = ctx.resilience()?;
    match &resilience.fallback {
        Some(ferry::resilience::FallbackConfig::Skip) => {
            return Err(ctx.invalid(
                "fallback",
                "`skip` is for poll sources; a sink's fallback is `{ topic: NAME }` (park the records) or `{ url: URL }` (send them there)",
            ))
        }
        Some(ferry::resilience::FallbackConfig::Url(u)) => {
            Template::parse(u).map_err(|m| ctx.invalid("fallback.url", m))?;
        }
        _ => {}
    }
    ferry::config::validate_topic_name(&cfg.topic).map_err(|m| ctx.invalid("topic", m))?;
    // Every topic the sink reads or writes, by the key that names it: two
    // the same would loop records back or deliver them twice.
    let name = &ctx.spec.name;
    let dlq = resilience.dead_letter_topic(name);
    let mut topics = vec![
        ("topic", cfg.topic.clone()),
        ("dead_letter.topic", dlq.clone()),
        (
            "dead_letter.topic",
            ferry::runtime::dead_letter::replay_topic(&dlq),
        ),
    ];
    if let Some(park) = resilience.parking_topic() {
        topics.push(("fallback.topic", park.clone()));
        topics.push((
            "fallback.topic",
            ferry::runtime::dead_letter::replay_topic(&park),
        ));
    }
    for (retry, _) in resilience.retry_topics(name) {
        topics.push(("dead_letter.retry_topics", retry));
    }
    for (i, (key, topic)) in topics.iter().enumerate() {
        ferry::config::validate_topic_name(topic).map_err(|m| ctx.invalid(key, m))?;
        if let Some((other, _)) = topics[..i].iter().find(|(_, t)| t == topic) {
            return Err(ctx.invalid(
                key,
                format!("`{topic}` is also the sink's `{other}` topic: records would loop back or arrive twice"),
            ));
        }
    }
    let url = Template::parse(&cfg.url).map_err(|m| ctx.invalid("url", m))?;
    let probe = url.render(
        &ferry::sink::SinkRecord {
            topic: cfg.topic.clone(),
            partition: 0,
            offset: 0,
            timestamp: None,
            key: Some("k".into()),
            raw_key: None,
            value: serde_json::Value::Null,
            raw: None,
            headers: Vec::new(),
            correlation_id: String::new(),
        },
        true,
    );
    if url::Url::parse(&probe).is_err() {
        return Err(ctx.invalid("url", format!("`{}` does not make a URL", cfg.url)));
    }
    if cfg.batch.is_some() && url.is_per_record() {
        return Err(ctx.invalid(
            "url",
            "with `batch`, one request carries many records: the URL may use only `{{ topic }}`",
        ));
    }
    if cfg
        .method
        .to_uppercase()
        .parse::<reqwest::Method>()
        .is_err()
        || !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&cfg.method.to_uppercase().as_str())
    {
        return Err(ctx.invalid(
            "method",
            format!("`{}`: use GET, POST, PUT, PATCH or DELETE", cfg.method),
        ));
    }
    for (k, v) in &cfg.headers {
        Template::parse(v).map_err(|m| ctx.invalid(&format!("headers.{k}"), m))?;
    }
    if let Body::Template(t) = &cfg.body {
        template::check_body(t).map_err(|m| ctx.invalid("body.template", m))?;
    }
    if cfg.max_in_flight_records == 0 {
        return Err(ctx.invalid("max_in_flight_records", "must be at least 1"));
    }
    let (batch_max_records, batch_max_bytes, batch_max_wait) = match &cfg.batch {
        Some(b) => (b.max_records.max(1), b.max_bytes.max(1), b.max_wait),
        // One request per record: the runtime still hands the sink a few
        // records at a time. Offsets are committed after each hand-over, so
        // this also bounds what a crash repeats (two hand-overs at most).
        None => (
            cfg.max_in_flight_records.clamp(1, RECORDS_PER_WRITE),
            1 << 20,
            Duration::ZERO,
        ),
    };
    let settings = SinkSettings {
        topics: vec![cfg.topic.clone()],
        group_id: ctx.sink_group(cfg.group_id.as_deref()),
        batch_max_records,
        batch_max_bytes,
        batch_max_wait,
        max_in_flight_records: cfg.max_in_flight_records.max(batch_max_records),
        max_in_flight_bytes: cfg.max_in_flight_bytes,
        drain_within: resilience.timeout + Duration::from_secs(5),
        resilience: resilience.clone(),
        concurrency: crate::plan::concurrency(ctx, cfg.concurrency)?,
        outputs: Vec::new(),
    };
    let name = ctx.spec.name.clone();
    let outbound = Outbound::new(&name, &resilience);
    Ok(Planned::Sink {
        settings: Box::new(settings),
        make: Arc::new(move || {
            Ok(BoxedSink::new(sink::HttpSink::new(
                &name,
                cfg.clone(),
                outbound.clone(),
            )?))
        }),
    })
}
