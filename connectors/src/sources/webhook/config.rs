//! `type: webhook`: the connector's own settings.

use super::verify::VerifyConfig;
use ferry::ingress::admission::AcceptRate;
use serde::Deserialize;
use std::num::NonZeroU32;
use std::time::Duration;

/// A webhook receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The path it is served on, on the shared listener (`webhooks.listen`),
    /// e.g. `/webhooks/github`. Unique among webhook connectors.
    pub path: String,
    /// How a delivery proves it comes from the sender (`scheme:` and its
    /// secrets). `scheme: none` must be written out, and is warned about.
    pub verify: VerifyConfig,
    /// Ordered rules from event type to topic; the first match wins.
    #[serde(default)]
    pub routes: Vec<RouteRule>,
    /// The topic for event types no route takes. Unset (with routes): such
    /// deliveries are refused with 422.
    pub topic: Option<String>,
    /// Where the event type is read: `{ header: X-GitHub-Event }` or
    /// `{ pointer: /type }`. Default per scheme: github `X-GitHub-Event`,
    /// shopify `X-Shopify-Topic`, stripe and standard_webhooks `/type`;
    /// others have none (every event has type `webhook`).
    pub event_type: Option<Locator>,
    /// Where the delivery id is read, for deduplication and the event id.
    /// Default per scheme: standard_webhooks `webhook-id`, github
    /// `X-GitHub-Delivery`, stripe `/id`, shopify `X-Shopify-Webhook-Id`;
    /// others have none (no deduplication).
    pub delivery_id: Option<Locator>,
    /// Where the Kafka record key is read (per-key order). Unset: no key.
    pub key: Option<Locator>,
    /// Accepted media types; anything else is answered 415.
    /// `application/json` also takes `application/<x>+json`.
    #[serde(default = "json_only")]
    pub content_types: Vec<String>,
    /// Requests accepted per second, per sender IP (`per: ip`, default) or
    /// overall (`per: all`); beyond it senders get 429 with `Retry-After`.
    pub accept_rate: Option<AcceptRate>,
    /// How repeats of one delivery are recognised.
    #[serde(default)]
    pub dedup: DedupConfig,
    /// Request headers copied into the envelope's `attributes` (besides the
    /// delivery id and event type). Signature and credential headers are
    /// never copied.
    #[serde(default)]
    pub keep_headers: Vec<String>,
    /// Partitions of the topics it creates.
    #[serde(default = "one_partition")]
    pub partitions: NonZeroU32,
    /// Replication factor of the topics it creates (unset: the broker's default).
    pub replication_factor: Option<NonZeroU32>,
}

/// A value of the request: a header, or a JSON pointer into the body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Locator {
    Header(String),
    Pointer(String),
}

/// One routing rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// The event type: exact, or a pattern where `*` stands for any run of
    /// characters (`invoice.*`, `*`).
    #[serde(rename = "type")]
    pub event_type: String,
    /// Where matching events go.
    pub topic: String,
}

/// Delivery-id deduplication.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// How long a delivery id is remembered (kept on disk beside the spool,
    /// so a restart remembers it). Senders retry for up to about a day.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// The most ids remembered (the oldest are forgotten first).
    pub max_ids: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(24 * 3600),
            max_ids: 1_000_000,
        }
    }
}

fn json_only() -> Vec<String> {
    vec!["application/json".to_owned()]
}

fn one_partition() -> NonZeroU32 {
    NonZeroU32::MIN
}
