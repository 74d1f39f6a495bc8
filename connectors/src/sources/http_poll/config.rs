//! `type: http_poll` settings.

use ferry::config::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

/// Polls a REST API and writes each item as an event envelope.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPollConfig {
    /// The endpoint, e.g. `https://crm.example.com/api/contacts`.
    /// May hold secret references (`?key=${env:API_KEY}`).
    #[serde(deserialize_with = "ferry::config::secret::embedded")]
    pub url: String,
    /// Topic the envelopes go to; created at startup if absent.
    pub topic: String,
    /// Partitions of a created topic.
    #[serde(default = "three")]
    pub partitions: NonZeroU32,
    /// Replication factor of a created topic (unset: the broker's default).
    #[serde(default)]
    pub replication_factor: Option<NonZeroU32>,
    /// `retention.ms` of a created topic, e.g. `7d` (unset: the broker's default).
    #[serde(default, with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// Time between the end of one poll and the start of the next.
    #[serde(default = "five_seconds", with = "humantime_serde")]
    pub interval: Duration,
    /// A cron schedule instead of `interval`: standard five fields (or six,
    /// with seconds first), in UTC, e.g. `*/15 * * * *` or `0 2 * * *`
    /// for a nightly batch transfer.
    #[serde(default)]
    pub schedule: Option<String>,
    /// JSON pointer to the array of items in a response (`""`: the body is the array).
    #[serde(default)]
    pub items: String,
    /// JSON pointer, within an item, of the record key (e.g. `/id`).
    #[serde(default)]
    pub key: Option<String>,
    /// The envelope's `type`, e.g. `contact.updated`.
    #[serde(default = "default_event_type")]
    pub event_type: String,
    /// JSON pointer, within an item, of when it happened (epoch ms or RFC 3339).
    #[serde(default)]
    pub occurred_at: Option<String>,
    #[serde(default)]
    pub auth: Option<Auth>,
    #[serde(default)]
    pub pagination: Option<Pagination>,
    #[serde(default)]
    pub incremental: Option<Incremental>,
    /// Extra request headers.
    #[serde(default, deserialize_with = "crate::http::scalar_map")]
    pub headers: BTreeMap<String, String>,
    /// Extra query parameters.
    #[serde(default, deserialize_with = "crate::http::scalar_map")]
    pub query: BTreeMap<String, String>,
    /// Most pages fetched in one go. A cycle with more pages pauses there
    /// for `interval` and then goes on from the page where it stopped (a
    /// runaway paginator cannot monopolise the API); nothing is skipped.
    #[serde(default = "thousand")]
    pub max_pages: u32,
    /// Largest response body read, in bytes; a larger answer fails the poll
    /// (naming the URL and the limit) instead of filling memory.
    #[serde(default = "sixteen_mib")]
    pub max_response_bytes: usize,
}

/// How requests authenticate.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer { token: Secret },
    /// HTTP basic.
    Basic { username: String, password: Secret },
    /// A key in a header (`header: X-Api-Key`) or a query parameter (`query: api_key`).
    ApiKey {
        #[serde(default)]
        header: Option<String>,
        #[serde(default)]
        query: Option<String>,
        value: Secret,
    },
    /// OAuth2 client credentials; the token is cached and refreshed before it expires.
    Oauth2 {
        token_url: String,
        client_id: String,
        client_secret: Secret,
        #[serde(default)]
        scope: Option<String>,
    },
}

/// How to get the next page.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// A cursor in the body (`from`, a JSON pointer) sent back as query parameter `param`.
    Cursor { from: String, param: String },
    /// The next page's URL in the body (`from`, a JSON pointer).
    NextUrl { from: String },
    /// The RFC 8288 `Link: <...>; rel="next"` header.
    LinkHeader,
    /// `?page=N` from `start`, optionally with a page size parameter.
    Page {
        #[serde(default = "page_param")]
        param: String,
        #[serde(default = "one")]
        start: u64,
        #[serde(default)]
        size_param: Option<String>,
        #[serde(default)]
        size: Option<u64>,
    },
    /// `?offset=N&limit=M`, until a page has fewer than `limit` items.
    Offset {
        #[serde(default = "offset_param")]
        offset_param: String,
        #[serde(default = "limit_param")]
        limit_param: String,
        limit: u64,
    },
}

/// Incremental sync: only what changed since the last poll.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incremental {
    /// JSON pointer, within an item, of the value that grows with each change
    /// (e.g. `/updated_at`); the largest seen becomes the source position.
    pub field: String,
    /// Query parameter that sends it back (e.g. `updated_since`). The API must
    /// return items whose field is *greater than or equal to* it, so items
    /// sharing the boundary value are fetched again rather than lost, and
    /// must return them in ascending order of the field with keyset
    /// pagination (`cursor`, `next_url` or `link_header`): then a change made
    /// during a cycle moves its item to the end, where the cycle still reads
    /// it. Ferry checks the order on every item and stops the connector
    /// (FAILED, naming the item) when it is broken, rather than move the
    /// cursor past changes it never saw.
    pub param: String,
    /// The value for the very first poll (unset: no parameter, everything).
    #[serde(default)]
    pub initial: Option<String>,
}

fn three() -> NonZeroU32 {
    NonZeroU32::MIN.saturating_add(2)
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn thousand() -> u32 {
    1000
}
fn sixteen_mib() -> usize {
    16 << 20
}
fn default_event_type() -> String {
    "record".to_owned()
}
fn page_param() -> String {
    "page".to_owned()
}
fn offset_param() -> String {
    "offset".to_owned()
}
fn limit_param() -> String {
    "limit".to_owned()
}
fn one() -> u64 {
    1
}
