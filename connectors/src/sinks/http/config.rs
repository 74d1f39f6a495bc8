//! `type: http` settings.

use crate::sources::http_poll::config::Auth;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Calls a target API for each record (or batch of records).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// Topic to consume.
    pub topic: String,
    /// URL template, e.g. `https://api.example.com/contacts/{{ key }}`.
    /// Placeholders: `key`, `topic`, `partition`, `offset`,
    /// `correlation_id`, `value.<field>.<field>`; substituted values are
    /// percent-encoded.
    /// May hold secret references (`?key=${env:API_KEY}`).
    #[serde(deserialize_with = "ferry::config::secret::embedded")]
    pub url: String,
    /// `POST` (default), `PUT`, `PATCH`, `DELETE` or `GET`.
    #[serde(default = "post")]
    pub method: String,
    /// Extra headers; values may use the URL's placeholders.
    #[serde(default, deserialize_with = "crate::http::scalar_map")]
    pub headers: BTreeMap<String, String>,
    /// What the request body is.
    #[serde(default)]
    pub body: Body,
    /// Send several records in one request, as a JSON array.
    #[serde(default)]
    pub batch: Option<Batch>,
    /// How the `Idempotency-Key` header is derived.
    #[serde(default)]
    pub idempotency_key: IdempotencyKey,
    #[serde(default)]
    pub auth: Option<Auth>,
    /// Follow `307` and `308` redirects, which re-send the same method and
    /// body. Off by default: any 3xx is then a permanent failure. `301`,
    /// `302` and `303` are never followed (a client would turn the request
    /// into a bodyless GET, and its answer would count as delivered).
    #[serde(default)]
    pub follow_redirects: bool,
    /// Consumer group (default `<kafka.consumer.group_id>-sink-<connector
    /// name>`, i.e. `ferry-sink-<name>`).
    #[serde(default)]
    pub group_id: Option<String>,
    /// Batches (one request each, or with `batch` one request per batch)
    /// in flight at once: across partitions and, within a partition,
    /// across keys; a key's records are still sent in order. 1 (the
    /// default) sends in series.
    #[serde(default = "one")]
    pub concurrency: usize,
    /// Records held in memory before consumption pauses.
    #[serde(default = "thousand")]
    pub max_in_flight_records: usize,
    /// Bytes held in memory before consumption pauses.
    #[serde(default = "sixteen_mib")]
    pub max_in_flight_bytes: usize,
}

/// The request body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Body {
    /// The record's value as JSON (Avro decoded through the registry).
    #[default]
    Value,
    /// For event envelopes: the original payload as the source received it.
    Payload,
    /// A JSON template: string leaves with placeholders are filled in; a
    /// leaf that is exactly one placeholder keeps the value's JSON type.
    Template(serde_json::Value),
}

/// Batching several records into one request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    #[serde(default = "hundred")]
    pub max_records: usize,
    #[serde(default = "one_mib")]
    pub max_bytes: usize,
    #[serde(default = "hundred_ms", with = "humantime_serde")]
    pub max_wait: Duration,
}

/// Where the `Idempotency-Key` header comes from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum IdempotencyKey {
    /// `<topic>-<partition>-<offset>` (a batch: first and last offsets).
    #[default]
    Offset,
    /// A field of the value (JSON pointer, e.g. `/id`).
    Field(String),
    /// No header.
    None,
}

fn post() -> String {
    "POST".to_owned()
}
fn hundred_ms() -> Duration {
    Duration::from_millis(100)
}
fn thousand() -> usize {
    1000
}
fn one() -> usize {
    1
}
fn hundred() -> usize {
    100
}
fn sixteen_mib() -> usize {
    16 << 20
}
fn one_mib() -> usize {
    1 << 20
}
