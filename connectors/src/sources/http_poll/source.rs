//! The polling loop's single step: fetch one page, turn its items into
//! envelopes, work out the next page and the position.
//!
//! A poll *cycle* walks every page once. With `incremental`, the request
//! carries the cursor the cycle started from, and the largest value of the
//! incremental field seen becomes the next cursor. Every record of a cycle
//! carries the start cursor as its position except the cycle's very last,
//! which carries the new one: a crash anywhere in a cycle repeats the cycle
//! (duplicates, never a gap), whatever order the API returns items in. To
//! know which record is last, a page's records are held until the next page
//! (or the end) is known.

use super::config::{HttpPollConfig, Pagination};
use crate::http::auth::Authenticator;
use crate::http::{status_error, transport_error};
use ferry::error::ConnectorError;
use ferry::schema::envelope::{now_millis, EventEnvelope};
use ferry::schema::json::kind;
use ferry::source::{Poll, Position, Positions, Source, SourceContext, SourceRecord};
use serde_json::Value as Json;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// The one source partition of an `http_poll` connector: its endpoint.
const PARTITION: &str = "endpoint";

pub struct HttpPollSource {
    name: String,
    cfg: HttpPollConfig,
    client: reqwest::Client,
    auth: Authenticator,
    /// The durable incremental cursor (what the next cycle starts from).
    cursor: Option<Json>,
    etag: Option<String>,
    cycle: Option<Cycle>,
    last_cycle_end: Option<Instant>,
    /// Hashes of the items sitting exactly on the cursor value: the API
    /// returns them again (`>=`), and they are skipped unless changed.
    boundary: HashSet<u64>,
    schedule: Option<croner::Cron>,
    /// With a schedule: when the next cycle may start.
    next_run: Option<Instant>,
}

/// Parses a cron expression (5 fields, or 6 with seconds).
pub fn parse_schedule(expr: &str) -> Result<croner::Cron, String> {
    croner::Cron::new(expr)
        .with_seconds_optional()
        .parse()
        .map_err(|e| format!("`{expr}` is not a cron schedule: {e}"))
}

/// The next time `cron` fires, as an `Instant`.
fn next_fire(cron: &croner::Cron) -> Option<Instant> {
    let now = chrono::Utc::now();
    let next = cron.find_next_occurrence(&now, false).ok()?;
    let wait = (next - now).to_std().ok()?;
    Some(Instant::now() + wait)
}

/// One walk through the pages.
struct Cycle {
    start: Option<Json>,
    max: Option<Json>,
    next: Option<Request>,
    held: Vec<SourceRecord>,
    pages: u32,
    etag: Option<String>,
    /// Hashes of the items whose incremental value equals `max`.
    at_max: HashSet<u64>,
}

/// The next page to ask for.
#[derive(Debug, Clone)]
enum Request {
    /// The configured URL with extra query parameters.
    Params(Vec<(String, String)>),
    /// A full URL from the API (next link).
    Url(String),
}

impl HttpPollSource {
    pub fn new(name: &str, cfg: HttpPollConfig) -> Result<Self, ConnectorError> {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| ConnectorError::internal(format!("HTTP client: {e}")))?;
        let schedule = match &cfg.schedule {
            Some(expr) => Some(parse_schedule(expr).map_err(ConnectorError::user)?),
            None => None,
        };
        Ok(Self {
            schedule,
            next_run: None,
            name: name.to_owned(),
            auth: Authenticator::new(cfg.auth.clone()),
            cfg,
            client,
            cursor: None,
            etag: None,
            cycle: None,
            last_cycle_end: None,
            boundary: HashSet::new(),
        })
    }

    fn first_request(&self) -> Request {
        let mut params = Vec::new();
        match &self.cfg.pagination {
            Some(Pagination::Page {
                param,
                start,
                size_param,
                size,
            }) => {
                params.push((param.clone(), start.to_string()));
                if let (Some(p), Some(s)) = (size_param, size) {
                    params.push((p.clone(), s.to_string()));
                }
            }
            Some(Pagination::Offset {
                offset_param,
                limit_param,
                limit,
            }) => {
                params.push((offset_param.clone(), "0".to_owned()));
                params.push((limit_param.clone(), limit.to_string()));
            }
            _ => {}
        }
        Request::Params(params)
    }

    async fn fetch(&mut self, request: &Request, first: bool) -> Result<Page, ConnectorError> {
        let (url, params) = match request {
            Request::Url(u) => (u.clone(), Vec::new()),
            Request::Params(p) => {
                let mut all: Vec<(String, String)> = self
                    .cfg
                    .query
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if let Some(inc) = &self.cfg.incremental {
                    let since = self
                        .cursor
                        .as_ref()
                        .map(scalar)
                        .or_else(|| inc.initial.clone());
                    if let Some(since) = since {
                        all.push((inc.param.clone(), since));
                    }
                }
                all.extend(p.iter().cloned());
                (self.cfg.url.clone(), all)
            }
        };
        for attempt in 0..2 {
            let mut req = self.client.get(&url).query(&params);
            for (k, v) in &self.cfg.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            if first {
                if let Some(tag) = &self.etag {
                    req = req.header(reqwest::header::IF_NONE_MATCH, tag.as_str());
                }
            }
            let req = self.auth.apply(&self.client, req).await?;
            let resp = req
                .send()
                .await
                .map_err(|e| transport_error("polling", &url, &e))?;
            let status = resp.status().as_u16();
            if status == 401 && attempt == 0 {
                self.auth.invalidate();
                continue;
            }
            if status == 304 {
                return Ok(Page::NotModified);
            }
            let etag = resp
                .headers()
                .get(reqwest::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let link_next = resp
                .headers()
                .get_all(reqwest::header::LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(next_link);
            let final_url = resp.url().to_string();
            let body = resp
                .text()
                .await
                .map_err(|e| transport_error("polling", &url, &e))?;
            if !(200..300).contains(&status) {
                return Err(status_error("polling", &url, status, &body));
            }
            let json: Json = serde_json::from_str(&body).map_err(|e| {
                ConnectorError::external(format!("polling {url}: the answer is not JSON: {e}"))
            })?;
            return Ok(Page::Body {
                json,
                etag,
                link_next,
                url: final_url,
            });
        }
        Err(ConnectorError::user(format!(
            "polling {url}: HTTP 401 twice: the credentials are refused"
        )))
    }

    fn record(
        &self,
        item: &Json,
        payload: Vec<u8>,
        url: &str,
        position: Position,
    ) -> Result<SourceRecord, ConnectorError> {
        let key = match &self.cfg.key {
            None => None,
            Some(ptr) => Some(match item.pointer(ptr) {
                Some(Json::String(s)) => s.clone(),
                Some(v @ (Json::Number(_) | Json::Bool(_))) => v.to_string(),
                _ => {
                    return Err(ConnectorError::user(format!(
                        "connector `{}`: an item from {url} has no key at `{ptr}`: {}",
                        self.name,
                        excerpt(item)
                    )))
                }
            }),
        };
        let occurred_at = self
            .cfg
            .occurred_at
            .as_ref()
            .and_then(|p| item.pointer(p))
            .and_then(epoch_millis);
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let envelope = EventEnvelope {
            id: uuid::Uuid::new_v4(),
            source: self.name.clone(),
            event_type: self.cfg.event_type.clone(),
            occurred_at,
            received_at: now_millis(),
            correlation_id: correlation_id.clone(),
            content_type: "application/json".to_owned(),
            payload,
            attributes: HashMap::from([("url".to_owned(), url.to_owned())]),
        };
        Ok(
            SourceRecord::new(PARTITION, position, envelope.into_value())
                .with_key(key)
                .with_correlation_id(correlation_id),
        )
    }

    /// The page after `body`, if there is one.
    fn next_request(
        &self,
        current: &Request,
        body: &Json,
        link_next: Option<String>,
        count: usize,
    ) -> Option<Request> {
        let bump = |name: &str, by: u64| -> Option<Request> {
            let Request::Params(params) = current else {
                return None;
            };
            let mut params = params.clone();
            for (k, v) in &mut params {
                if k == name {
                    *v = (v.parse::<u64>().ok()? + by).to_string();
                }
            }
            Some(Request::Params(params))
        };
        match &self.cfg.pagination {
            None => None,
            Some(Pagination::Cursor { from, param }) => {
                let cursor = body.pointer(from).filter(|v| !v.is_null()).map(scalar)?;
                if cursor.is_empty() {
                    return None;
                }
                let mut params = match current {
                    Request::Params(p) => p.clone(),
                    Request::Url(_) => Vec::new(),
                };
                params.retain(|(k, _)| k != param);
                params.push((param.clone(), cursor));
                Some(Request::Params(params))
            }
            Some(Pagination::NextUrl { from }) => {
                let next = body
                    .pointer(from)
                    .and_then(Json::as_str)
                    .filter(|s| !s.is_empty())?;
                let base = url::Url::parse(&self.cfg.url).ok()?;
                Some(Request::Url(base.join(next).ok()?.to_string()))
            }
            Some(Pagination::LinkHeader) => {
                let next = link_next?;
                let base = url::Url::parse(&self.cfg.url).ok()?;
                Some(Request::Url(base.join(&next).ok()?.to_string()))
            }
            Some(Pagination::Page { param, .. }) => (count > 0).then(|| bump(param, 1)).flatten(),
            Some(Pagination::Offset {
                offset_param,
                limit,
                ..
            }) => (count as u64 >= *limit)
                .then(|| bump(offset_param, *limit))
                .flatten(),
        }
    }
}

enum Page {
    NotModified,
    Body {
        json: Json,
        etag: Option<String>,
        link_next: Option<String>,
        url: String,
    },
}

impl Source for HttpPollSource {
    async fn open(
        &mut self,
        _ctx: &SourceContext,
        resume: Positions,
    ) -> Result<(), ConnectorError> {
        self.cursor = resume
            .get(PARTITION)
            .and_then(|p| p.get("cursor"))
            .filter(|c| !c.is_null())
            .cloned();
        self.cycle = None;
        self.next_run = self.schedule.as_ref().and_then(next_fire);
        Ok(())
    }

    async fn poll(&mut self, _ctx: &SourceContext) -> Result<Poll, ConnectorError> {
        let mut cycle = match self.cycle.take() {
            Some(c) => c,
            None => {
                let due = match (&self.schedule, self.last_cycle_end) {
                    (Some(_), _) => self.next_run,
                    (None, Some(end)) => Some(end + self.cfg.interval),
                    (None, None) => None,
                };
                if let Some(due) = due {
                    let now = Instant::now();
                    if now < due {
                        return Ok(Poll::Idle(due - now));
                    }
                }
                Cycle {
                    start: self.cursor.clone(),
                    max: self.cursor.clone(),
                    next: Some(self.first_request()),
                    held: Vec::new(),
                    pages: 0,
                    etag: None,
                    at_max: HashSet::new(),
                }
            }
        };
        let Some(request) = cycle.next.take() else {
            return Ok(self.finish(cycle));
        };
        let first = cycle.pages == 0;
        // Cancel-safety: the cycle is put back only after the page is in hand;
        // a poll dropped mid-request restarts the cycle from its start cursor.
        let page = self.fetch(&request, first).await?;
        let (json, etag, link_next, url) = match page {
            Page::NotModified => {
                self.last_cycle_end = Some(Instant::now());
                self.next_run = self.schedule.as_ref().and_then(next_fire);
                return Ok(Poll::Idle(self.cfg.interval));
            }
            Page::Body {
                json,
                etag,
                link_next,
                url,
            } => (json, etag, link_next, url),
        };
        if first {
            cycle.etag = etag;
        }
        cycle.pages += 1;
        let items = match json.pointer(&self.cfg.items) {
            Some(Json::Array(items)) => items.as_slice(),
            Some(other) => {
                return Err(ConnectorError::user(format!(
                    "connector `{}`: `items: {}` in the answer from {url} is {}, not an array",
                    self.name,
                    self.cfg.items,
                    kind(other)
                )))
            }
            None => {
                return Err(ConnectorError::user(format!(
                    "connector `{}`: the answer from {url} has nothing at `items: {}`: {}",
                    self.name,
                    self.cfg.items,
                    excerpt(&json)
                )))
            }
        };
        let start_position = serde_json::json!({ "cursor": cycle.start });
        let mut page_records = Vec::with_capacity(items.len());
        for item in items {
            // Serialized once: the envelope's payload and the boundary hash.
            let payload = serde_json::to_vec(item).unwrap_or_default();
            if let Some(inc) = &self.cfg.incremental {
                if let Some(v) = item.pointer(&inc.field).filter(|v| !v.is_null()) {
                    let hash = payload_hash(&payload);
                    if cycle.start.as_ref() == Some(v) && self.boundary.contains(&hash) {
                        // Already delivered last cycle, unchanged.
                        continue;
                    }
                    if cycle.max.as_ref().is_none_or(|m| greater(v, m)) {
                        cycle.max = Some(v.clone());
                        cycle.at_max.clear();
                    }
                    if cycle.max.as_ref() == Some(v) {
                        cycle.at_max.insert(hash);
                    }
                }
            }
            page_records.push(self.record(item, payload, &url, start_position.clone())?);
        }
        cycle.next = if cycle.pages >= self.cfg.max_pages {
            tracing::warn!(connector = %self.name, pages = cycle.pages, "max_pages reached; the rest waits for the next poll");
            None
        } else {
            self.next_request(&request, &json, link_next, items.len())
        };
        let ready = std::mem::replace(&mut cycle.held, page_records);
        self.cycle = Some(cycle);
        if ready.is_empty() {
            // Nothing to release yet; go straight on to the next page.
            return Ok(Poll::Records(Vec::new()));
        }
        Ok(Poll::Records(ready))
    }

    async fn durable(
        &mut self,
        _partition: &str,
        position: &Position,
    ) -> Result<(), ConnectorError> {
        tracing::debug!(connector = %self.name, %position, "position durable");
        Ok(())
    }
}

impl HttpPollSource {
    /// Ends a cycle: the held records go out, the last carrying the new cursor.
    fn finish(&mut self, mut cycle: Cycle) -> Poll {
        self.last_cycle_end = Some(Instant::now());
        self.next_run = self.schedule.as_ref().and_then(next_fire);
        if cycle.etag.is_some() {
            self.etag = cycle.etag.take();
        }
        let new_position = serde_json::json!({ "cursor": cycle.max });
        if cycle.max != cycle.start {
            self.boundary = std::mem::take(&mut cycle.at_max);
        } else {
            self.boundary.extend(cycle.at_max.drain());
        }
        self.cursor = cycle.max.clone();
        if let Some(last) = cycle.held.last_mut() {
            last.position = new_position;
        } else if cycle.max != cycle.start {
            // Cannot happen: a larger cursor comes from a record. Keep the old one.
            self.cursor = cycle.start.clone();
        }
        if cycle.held.is_empty() {
            Poll::Idle(self.cfg.interval)
        } else {
            Poll::Records(std::mem::take(&mut cycle.held))
        }
    }
}

fn payload_hash(payload: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    payload.hash(&mut h);
    h.finish()
}

/// A JSON scalar as a query parameter value.
fn scalar(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Numbers compare as numbers, anything else as text (ISO 8601 timestamps in
/// one format sort correctly as text).
fn greater(a: &Json, b: &Json) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x > y,
        _ => scalar(a) > scalar(b),
    }
}

fn epoch_millis(v: &Json) -> Option<i64> {
    match v {
        Json::Number(n) => n.as_i64(),
        Json::String(s) => humantime::parse_rfc3339_weak(s)
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok()),
        _ => None,
    }
}

/// `<url>; rel="next"` from one `Link` header value.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        is_next.then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

fn excerpt(v: &Json) -> String {
    v.to_string().chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_are_parsed_per_rfc_8288() {
        assert_eq!(
            next_link(
                r#"<https://api.x/c?page=2>; rel="next", <https://api.x/c?page=9>; rel="last""#
            ),
            Some("https://api.x/c?page=2".into())
        );
        assert_eq!(next_link(r#"<https://api.x/c?page=1>; rel="prev""#), None);
        assert_eq!(next_link("</c?p=3>; rel=next"), Some("/c?p=3".into()));
    }

    #[test]
    fn cursors_compare_as_numbers_or_text() {
        assert!(greater(&serde_json::json!(10), &serde_json::json!(9)));
        assert!(greater(
            &serde_json::json!("2026-11-25T10:00:01Z"),
            &serde_json::json!("2026-11-25T10:00:00Z")
        ));
        assert_eq!(
            epoch_millis(&serde_json::json!("1970-01-01T00:00:01Z")),
            Some(1000)
        );
    }
}
