//! `type: webhook`: receives HTTP deliveries on the shared webhook listener
//! (`webhooks.listen`), verifies each signature over the raw body, routes it
//! by event type to a topic, and writes it as an event envelope
//! (`schemas/event_envelope.avsc`) with the body exactly as received.
//!
//! The framework (`ferry::ingress`) owns what every push source shares:
//! admission, deduplication by delivery id, and answering 2xx only once the
//! event is in Kafka or in the local spool.

pub mod config;
pub mod endpoint;
pub mod example;
#[cfg(test)]
mod tests;
pub mod verify;

use crate::plan::{parse_settings, Context, RESILIENCE_KEYS};
use config::{Locator, WebhookConfig};
use endpoint::WebhookEndpoint;
use ferry::config::{ConfigError, TopicSpec};
use ferry::ingress::Mount;
use ferry::runtime::Planned;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use verify::{Verifier, VerifyConfig};

/// The value schema every webhook topic gets.
pub const SCHEMA_FILE: &str = "event_envelope.avsc";

pub fn plan(ctx: &Context<'_>) -> Result<Planned, ConfigError> {
    if let Some(k) = ctx
        .spec
        .settings
        .keys()
        .find(|k| RESILIENCE_KEYS.contains(&k.as_str()))
    {
        return Err(ctx.invalid(
            k,
            "a webhook source calls no one: resilience settings do not apply (limit senders with `accept_rate`)",
        ));
    }
    let cfg: WebhookConfig = parse_settings(ctx)?;
    let endpoint = endpoint(ctx, &cfg)?;
    let mut names: Vec<&str> = cfg.routes.iter().map(|r| r.topic.as_str()).collect();
    names.extend(cfg.topic.as_deref());
    names.sort_unstable();
    names.dedup();
    let topics = names
        .into_iter()
        .map(|name| TopicSpec {
            name: name.to_owned(),
            partitions: cfg.partitions,
            replication_factor: cfg.replication_factor,
            config: BTreeMap::new(),
            value_schema: Some(PathBuf::from(SCHEMA_FILE)),
            key_schema: None,
        })
        .collect();
    if matches!(cfg.verify, VerifyConfig::None) {
        tracing::warn!(connector = %ctx.spec.name, path = %cfg.path, "webhook connector with `verify.scheme: none`: anyone who can reach the listener can write to its topics");
    }
    Ok(Planned::Push {
        topics,
        mount: Mount {
            path: cfg.path.clone(),
            content_types: cfg.content_types.clone(),
            accept_rate: cfg.accept_rate.clone(),
            dedup_window: cfg.dedup.window,
            dedup_max: cfg.dedup.max_ids,
            endpoint: Arc::new(endpoint),
        },
        // Set by `mapping::attach` when the connector has a `mapping:`.
        mappings: BTreeMap::new(),
    })
}

/// The typed settings of a `type: webhook` entry, if they parse (the
/// banner's example; `plan` reports what does not).
pub fn settings(spec: &ferry::runtime::ConnectorSpec) -> Option<WebhookConfig> {
    let own = crate::plan::own_settings(spec);
    serde_json::from_value(serde_json::Value::Object(own)).ok()
}

/// Validates `cfg` (no I/O) and builds the endpoint.
fn endpoint(ctx: &Context<'_>, cfg: &WebhookConfig) -> Result<WebhookEndpoint, ConfigError> {
    let path = &cfg.path;
    if !path.starts_with('/')
        || path.len() > 200
        || !path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
    {
        return Err(ctx.invalid(
            "path",
            format!(
                "`{path}`: a path starts with `/` and holds letters, digits, `/`, `-`, `_` and `.`"
            ),
        ));
    }
    cfg.verify
        .validate()
        .map_err(|(field, m)| ctx.invalid(&field, m))?;
    let verifier = Verifier::new(&cfg.verify).map_err(|m| ctx.invalid("verify", m))?;
    if cfg.routes.is_empty() && cfg.topic.is_none() {
        return Err(ctx.invalid(
            "topic",
            "set `topic` (where every event goes) or `routes` (by event type)",
        ));
    }
    for (i, r) in cfg.routes.iter().enumerate() {
        ferry::config::validate_topic_name(&r.topic)
            .map_err(|m| ctx.invalid(&format!("routes[{i}].topic"), m))?;
        if r.event_type.is_empty() {
            return Err(ctx.invalid(&format!("routes[{i}].type"), "must not be empty"));
        }
    }
    if let Some(t) = &cfg.topic {
        ferry::config::validate_topic_name(t).map_err(|m| ctx.invalid("topic", m))?;
    }
    let (default_type, default_id) = scheme_defaults(&cfg.verify);
    let event_type = cfg.event_type.clone().or(default_type);
    let delivery_id = cfg.delivery_id.clone().or(default_id);
    if !cfg.routes.is_empty() && event_type.is_none() {
        return Err(ctx.invalid(
            "event_type",
            "routes need an event type: say where it is (`{ header: ... }` or `{ pointer: /... }`)",
        ));
    }
    for (field, l) in [
        ("event_type", &event_type),
        ("delivery_id", &delivery_id),
        ("key", &cfg.key),
    ] {
        match l {
            Some(Locator::Pointer(p)) if !p.starts_with('/') => {
                return Err(ctx.invalid(
                    field,
                    format!("`{p}` is not a JSON pointer (they start with `/`)"),
                ))
            }
            Some(Locator::Header(h)) if axum::http::HeaderName::try_from(h.as_str()).is_err() => {
                return Err(ctx.invalid(field, format!("`{h}` is not a header name")))
            }
            _ => {}
        }
    }
    if cfg.content_types.is_empty() {
        return Err(ctx.invalid("content_types", "list at least one media type"));
    }
    if let Some(rate) = &cfg.accept_rate {
        rate.validate().map_err(|m| ctx.invalid("accept_rate", m))?;
    }
    if cfg.dedup.window.is_zero() || cfg.dedup.max_ids == 0 {
        return Err(ctx.invalid("dedup", "`window` and `max_ids` must be more than 0"));
    }
    let secret_header = match &cfg.verify {
        VerifyConfig::Hmac { header, .. } | VerifyConfig::Token { header, .. } => {
            Some(header.to_ascii_lowercase())
        }
        _ => None,
    };
    let mut keep = Vec::new();
    for (i, h) in cfg.keep_headers.iter().enumerate() {
        let name = axum::http::HeaderName::try_from(h.as_str()).map_err(|_| {
            ctx.invalid(
                &format!("keep_headers[{i}]"),
                format!("`{h}` is not a header name"),
            )
        })?;
        if endpoint::NEVER_KEPT.contains(&name.as_str())
            || secret_header.as_deref() == Some(name.as_str())
        {
            return Err(ctx.invalid(
                &format!("keep_headers[{i}]"),
                format!("`{h}` carries a signature or credential and is never kept"),
            ));
        }
        keep.push(name);
    }
    Ok(WebhookEndpoint {
        name: ctx.spec.name.clone(),
        verifier,
        routes: cfg.routes.clone(),
        default_topic: cfg.topic.clone(),
        event_type,
        delivery_id,
        key: cfg.key.clone(),
        keep_headers: keep,
    })
}

/// Where each scheme's senders put the event type and the delivery id.
fn scheme_defaults(verify: &VerifyConfig) -> (Option<Locator>, Option<Locator>) {
    let header = |h: &str| Some(Locator::Header(h.to_owned()));
    let pointer = |p: &str| Some(Locator::Pointer(p.to_owned()));
    match verify {
        VerifyConfig::StandardWebhooks { .. } => (pointer("/type"), header("webhook-id")),
        VerifyConfig::Github { .. } => (header("x-github-event"), header("x-github-delivery")),
        VerifyConfig::Stripe { .. } => (pointer("/type"), pointer("/id")),
        VerifyConfig::Shopify { .. } => (header("x-shopify-topic"), header("x-shopify-webhook-id")),
        VerifyConfig::Hmac { .. } | VerifyConfig::Token { .. } | VerifyConfig::None => (None, None),
    }
}
