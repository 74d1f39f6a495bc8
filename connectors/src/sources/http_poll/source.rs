//! The polling loop's single step: fetch one page, turn its items into
//! envelopes, work out the next page and the position.
//!
//! A poll *cycle* walks every page once. With `incremental`, each request
//! carries the cursor the cycle started from, and the largest value of the
//! incremental field seen becomes the next cycle's cursor.
//!
//! **Positions.** Each page's last record carries where the cycle stands
//! after it: `{"cursor": <start>, "cycle": {"max", "next", "pages"}}` (the
//! request for the next page, and the largest value seen so far); the last
//! page's carries `{"cursor": <new cursor>}`. A page with no records is a
//! checkpoint of its own. The runtime stores each once Kafka has the page,
//! so a restart resumes at the page after the last one delivered, within
//! the same cycle (and the cursor still moves only when a cycle completes).
//! A kill repeats at most the page in flight. If the stored page request is
//! refused after a restart (an expired page token), the cycle starts over
//! from its start cursor: repeats, never a gap.
//!
//! **Order.** Incremental sync is only safe when the API returns items in
//! ascending order of the field: each item is checked, and an item below
//! the one before it stops the connector (FAILED, naming both values),
//! because moving the cursor past it would skip changes for good.
//!
//! **Event ids.** An envelope's `id` is derived from the connector, the
//! item's key and its content ([`EventEnvelope::event_id`]): the same item
//! fetched twice is the same event, so consumers drop repeats by `id`.

use super::config::{Auth, HttpPollConfig, Pagination};
use crate::http::auth::Authenticator;
use crate::http::status_error;
use ferry::error::ConnectorError;
use ferry::resilience::{CallError, FallbackConfig, Outbound, WhenOpen};
use ferry::schema::envelope::{now_millis, EventEnvelope};
use ferry::schema::json::kind;
use ferry::source::{Poll, Position, Positions, Source, SourceContext, SourceRecord};
use ferry::telemetry::redact;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// The one source partition of an `http_poll` connector: its endpoint.
const PARTITION: &str = "endpoint";

pub struct HttpPollSource {
    name: String,
    cfg: HttpPollConfig,
    client: reqwest::Client,
    auth: Authenticator,
    outbound: Outbound,
    /// The incremental cursor the next cycle starts from.
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
    /// The incremental cursor every request of the cycle carries.
    start: Option<Json>,
    /// The largest incremental value seen so far.
    max: Option<Json>,
    /// The incremental value of the item before (the order check).
    last: Option<Json>,
    next: Option<Request>,
    /// Pages read in this cycle.
    pages: u32,
    /// Pages read since the cycle last paused for `max_pages`.
    round: u32,
    etag: Option<String>,
    /// Hashes of the items whose incremental value equals `max`.
    at_max: HashSet<u64>,
    /// Continued from a stored position: a refused first request starts
    /// the cycle over instead of failing.
    resumed: bool,
    /// Continued after a `max_pages` pause: a refused first request means
    /// the API's page tokens do not outlive the pause.
    after_pause: bool,
    /// Hashes of the requests made in this cycle (a paginator that loops
    /// back would never end it); bounded.
    seen: HashSet<u64>,
}

/// The next page to ask for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Request {
    /// The configured URL with extra query parameters.
    Params(Vec<(String, String)>),
    /// A full URL from the API (next link).
    Url(String),
}

/// Whether an error is the API refusing the request itself (as it refuses
/// an expired page token), rather than failing to answer.
fn refused(e: &ConnectorError) -> bool {
    matches!(e.status, Some(400 | 401 | 403 | 404 | 410 | 422))
}

/// Redirect hops followed at most.
const MAX_REDIRECTS: usize = 10;

/// Requests remembered per cycle to catch a looping paginator.
const MAX_SEEN_REQUESTS: usize = 100_000;

fn request_hash(r: &Request) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    r.hash(&mut h);
    h.finish()
}

/// Hashes of boundary items kept at most (the cursor not moving for this
/// many changed items is an odd API; past it, repeats instead of memory).
const MAX_BOUNDARY: usize = 100_000;

/// Where an unfinished cycle stands, as stored in a position.
#[derive(Debug, Serialize, Deserialize)]
struct CycleState {
    max: Option<Json>,
    next: Request,
    pages: u32,
}

impl HttpPollSource {
    pub fn new(
        name: &str,
        cfg: HttpPollConfig,
        outbound: Outbound,
    ) -> Result<Self, ConnectorError> {
        // reqwest drops `Authorization` and cookies on a redirect to another
        // host, not headers it cannot know are credentials: with configured
        // headers (or a key in a header), only same-origin redirects.
        let carries_headers = !cfg.headers.is_empty()
            || matches!(
                &cfg.auth,
                Some(Auth::ApiKey {
                    header: Some(_),
                    ..
                })
            );
        let client = reqwest::Client::builder()
            .timeout(outbound.config().timeout)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                let same_origin = attempt
                    .previous()
                    .first()
                    .is_some_and(|first| first.origin() == attempt.url().origin());
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if same_origin || !carries_headers {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
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
            outbound,
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

    async fn fetch(
        &mut self,
        request: &Request,
        since: Option<&Json>,
        first: bool,
    ) -> Result<Page, ConnectorError> {
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
                    let since = since.map(scalar).or_else(|| inc.initial.clone());
                    if let Some(since) = since {
                        all.push((inc.param.clone(), since));
                    }
                }
                all.extend(p.iter().cloned());
                (self.cfg.url.clone(), all)
            }
        };
        let target = url::Url::parse(&url).map_err(|e| {
            ConnectorError::user(format!("polling {}: not a URL: {e}", redact::url(&url)))
        })?;
        for attempt in 0..2 {
            let mut req = self.client.get(target.clone()).query(&params);
            for (k, v) in &self.cfg.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            if first {
                if let Some(tag) = &self.etag {
                    req = req.header(reqwest::header::IF_NONE_MATCH, tag.as_str());
                }
            }
            let request = self
                .auth
                .apply(&self.client, req)
                .await?
                .build()
                .map_err(|e| {
                    ConnectorError::user(format!("polling: cannot build the request: {e}"))
                })?;
            let (client, limit) = (&self.client, self.cfg.max_response_bytes);
            let reply = match self
                .outbound
                .call(&target, WhenOpen::Skip, || {
                    crate::http::attempt(client, &request, Some(limit), "polling")
                })
                .await
            {
                Ok(reply) => reply,
                Err(e @ CallError::Open { .. }) => {
                    let wait = ferry::resilience::stack::until_open_ends(&e).unwrap_or_default();
                    return Ok(Page::CircuitOpen(wait));
                }
                Err(CallError::Failed(e)) => return Err(e),
            };
            let status = reply.status;
            if status == 401 && attempt == 0 {
                self.auth.invalidate();
                continue;
            }
            if status == 304 {
                return Ok(Page::NotModified);
            }
            let etag = reply
                .headers
                .get(reqwest::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let link_next = reply
                .headers
                .get_all(reqwest::header::LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(next_link);
            if (300..400).contains(&status) {
                return Err(ConnectorError::http_status(
                    status,
                    format!(
                        "polling {}: HTTP {status}, a redirect to {}, not followed: it leaves the API's origin and the request carries configured headers (possibly credentials)",
                        redact::url(&url),
                        redact::url(reply.location())
                    ),
                ));
            }
            if !(200..300).contains(&status) {
                return Err(status_error(
                    "polling",
                    &url,
                    status,
                    &reply.text(),
                    self.outbound.retries(status),
                ));
            }
            let json: Json = serde_json::from_slice(&reply.body).map_err(|e| {
                ConnectorError::external(format!(
                    "polling {}: the answer is not JSON: {e}",
                    ferry::telemetry::redact::url(&url)
                ))
            })?;
            return Ok(Page::Body {
                json,
                body: reply.body,
                etag,
                link_next,
                url: reply.url,
            });
        }
        Err(ConnectorError::user(format!(
            "polling {}: HTTP 401 twice: the credentials are refused",
            redact::url(&url)
        )))
    }

    fn record(
        &self,
        item: &Json,
        payload: Vec<u8>,
        url: &str,
    ) -> Result<SourceRecord, ConnectorError> {
        let key = match &self.cfg.key {
            None => None,
            Some(ptr) => match item.pointer(ptr) {
                Some(Json::String(s)) => Some(s.clone()),
                Some(v @ (Json::Number(_) | Json::Bool(_))) => Some(v.to_string()),
                // One item without a key must not stop the source (nor, with
                // a mapping, keep it from the dead-letter topic): it is
                // written unkeyed.
                _ => {
                    tracing::warn!(connector = %self.name, url = %redact::url(url), key = %ptr,
                        item = %excerpt(item), "an item has no key; written without one");
                    None
                }
            },
        };
        let occurred_at = self
            .cfg
            .occurred_at
            .as_ref()
            .and_then(|p| item.pointer(p))
            .and_then(epoch_millis);
        let id = EventEnvelope::event_id(&self.name, key.as_deref(), &payload);
        // A repeat of the event carries the same correlation id as well.
        let correlation_id = id.to_string();
        let envelope = EventEnvelope {
            id,
            source: self.name.clone(),
            event_type: self.cfg.event_type.clone(),
            occurred_at,
            received_at: now_millis(),
            correlation_id: correlation_id.clone(),
            content_type: "application/json".to_owned(),
            payload,
            attributes: HashMap::from([("url".to_owned(), ferry::telemetry::redact::url(url))]),
        };
        Ok(
            SourceRecord::new(PARTITION, Json::Null, envelope.into_value())
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
    /// The target's circuit breaker is open for this long: skip the poll.
    CircuitOpen(Duration),
    Body {
        json: Json,
        /// The answer as received: each item's payload is its own bytes.
        body: Vec<u8>,
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
        let position = resume.get(PARTITION);
        self.cursor = position
            .and_then(|p| p.get("cursor"))
            .filter(|c| !c.is_null())
            .cloned();
        self.cycle = position
            .and_then(|p| p.get("cycle"))
            .filter(|c| !c.is_null())
            .and_then(|c| match serde_json::from_value::<CycleState>(c.clone()) {
                Ok(state) => Some(state),
                Err(e) => {
                    tracing::warn!(connector = %self.name, error = %e, "the stored position's cycle is not readable; starting a new cycle");
                    None
                }
            })
            .map(|state| {
                tracing::info!(connector = %self.name, pages = state.pages, "resuming a poll cycle where it stopped");
                Cycle {
                    start: self.cursor.clone(),
                    last: state.max.clone(),
                    max: state.max,
                    next: Some(state.next),
                    pages: state.pages,
                    round: 0,
                    etag: None,
                    at_max: HashSet::new(),
                    resumed: true,
                    after_pause: false,
                    seen: HashSet::new(),
                }
            });
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
                self.new_cycle()
            }
        };
        if cycle.round >= self.cfg.max_pages {
            tracing::info!(connector = %self.name, pages = cycle.pages, max_pages = self.cfg.max_pages, "max_pages reached; the cycle goes on from the next page after `interval`");
            cycle.round = 0;
            cycle.after_pause = true;
            self.cycle = Some(cycle);
            return Ok(Poll::Idle(self.cfg.interval));
        }
        let Some(request) = cycle.next.take() else {
            // Cannot happen: a cycle without a next page has ended.
            return Ok(Poll::Idle(Duration::ZERO));
        };
        let first = cycle.pages == 0;
        // Cancel-safety: the cycle is kept only once the page is in hand; a
        // poll dropped mid-request restarts from the last stored position.
        let page = match self.fetch(&request, cycle.start.as_ref(), first).await {
            Ok(page) => page,
            Err(e) if cycle.resumed && refused(&e) => {
                tracing::warn!(connector = %self.name, error = %e, "the stored page request was refused (an expired page token?); the cycle starts over from its start cursor");
                return Ok(Poll::Idle(Duration::ZERO));
            }
            Err(e) if cycle.after_pause && refused(&e) => {
                return Err(ConnectorError::user(format!(
                    "connector `{}`: after pausing for `max_pages` ({}), the next page was refused: the API's page tokens do not outlive `interval` ({:?}); raise `max_pages` or lower `interval` ({e})",
                    self.name, self.cfg.max_pages, self.cfg.interval
                )));
            }
            Err(e)
                if e.is_retryable()
                    && self.outbound.config().fallback == Some(FallbackConfig::Skip) =>
            {
                // `fallback: skip`: this cycle is given up; the next starts
                // from the cursor it started from (repeats, never a gap).
                tracing::warn!(connector = %self.name, error = %e, "polling failed after retries; skipping this cycle (fallback: skip), the position stays where it was");
                self.last_cycle_end = Some(Instant::now());
                self.next_run = self.schedule.as_ref().and_then(next_fire);
                return Ok(Poll::Idle(self.cfg.interval));
            }
            Err(e) => return Err(e),
        };
        if let Page::CircuitOpen(wait) = page {
            // The breaker is open: no request went out; the cycle waits
            // where it stands.
            cycle.next = Some(request);
            self.cycle = Some(cycle);
            return Ok(Poll::Idle(wait.max(Duration::from_millis(10))));
        }
        cycle.resumed = false;
        cycle.after_pause = false;
        let (json, body, etag, link_next, url) = match page {
            Page::CircuitOpen(_) => return Ok(Poll::Idle(Duration::ZERO)),
            Page::NotModified => {
                self.last_cycle_end = Some(Instant::now());
                self.next_run = self.schedule.as_ref().and_then(next_fire);
                return Ok(Poll::Idle(self.cfg.interval));
            }
            Page::Body {
                json,
                body,
                etag,
                link_next,
                url,
            } => (json, body, etag, link_next, url),
        };
        if first {
            cycle.etag = etag;
        }
        cycle.pages += 1;
        cycle.round += 1;
        let items = match json.pointer(&self.cfg.items) {
            Some(Json::Array(items)) => items.as_slice(),
            Some(other) => {
                return Err(ConnectorError::user(format!(
                    "connector `{}`: `items: {}` in the answer from {} is {}, not an array",
                    self.name,
                    self.cfg.items,
                    ferry::telemetry::redact::url(&url),
                    kind(other)
                )))
            }
            None => {
                return Err(ConnectorError::user(format!(
                    "connector `{}`: the answer from {} has nothing at `items: {}`: {}",
                    self.name,
                    ferry::telemetry::redact::url(&url),
                    self.cfg.items,
                    excerpt(&json)
                )))
            }
        };
        // Each item exactly as the API sent it (keys in its order, its
        // spacing and number forms): the envelope's payload, its id and
        // the boundary hash. Re-serialized only if the body cannot be
        // walked that way (not UTF-8).
        let raw = std::str::from_utf8(&body)
            .ok()
            .and_then(|b| raw_items(b, &self.cfg.items))
            .filter(|r| r.len() == items.len());
        let mut records = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let payload = match raw.as_ref().and_then(|r| r.get(i)) {
                Some(r) => r.get().as_bytes().to_vec(),
                None => serde_json::to_vec(item).unwrap_or_default(),
            };
            if let Some(inc) = &self.cfg.incremental {
                if let Some(v) = item.pointer(&inc.field).filter(|v| !v.is_null()) {
                    if let Some(last) = &cycle.last {
                        if compare(v, last) == Ordering::Less {
                            return Err(ConnectorError::user(format!(
                                "connector `{}`: item {i} of page {} from {} has `{}` = {v}, below the {last} of the item before it: the API does not return items in ascending order of `{}`, so incremental sync would skip changes; sort the API's results by it (and use keyset pagination)",
                                self.name,
                                cycle.pages,
                                ferry::telemetry::redact::url(&url),
                                inc.field,
                                inc.field
                            )));
                        }
                    }
                    cycle.last = Some(v.clone());
                    let hash = payload_hash(&payload);
                    if cycle.start.as_ref() == Some(v) && self.boundary.contains(&hash) {
                        // Already delivered last cycle, unchanged.
                        continue;
                    }
                    if cycle
                        .max
                        .as_ref()
                        .is_none_or(|m| compare(v, m) == Ordering::Greater)
                    {
                        cycle.max = Some(v.clone());
                        cycle.at_max.clear();
                    }
                    if cycle.max.as_ref() == Some(v) {
                        cycle.at_max.insert(hash);
                    }
                }
            }
            records.push(self.record(item, payload, &url)?);
        }
        // An empty page that names itself as the next one is the end (some
        // APIs echo their cursor on the last page); an empty page pointing
        // elsewhere is not (filtered APIs return empty pages mid-way).
        let next = match self.next_request(&request, &json, link_next, items.len()) {
            Some(n) if items.is_empty() && n == request => None,
            other => other,
        };
        if cycle.seen.len() < MAX_SEEN_REQUESTS {
            cycle.seen.insert(request_hash(&request));
        }
        if next
            .as_ref()
            .is_some_and(|n| cycle.seen.contains(&request_hash(n)))
        {
            return Err(ConnectorError::user(format!(
                "connector `{}`: the page after {} is one this cycle has read already: the pagination settings do not match the API (the cycle would never end)",
                self.name,
                redact::url(&url)
            )));
        }
        let position = match next {
            Some(next) => {
                let state = CycleState {
                    max: cycle.max.clone(),
                    next: next.clone(),
                    pages: cycle.pages,
                };
                cycle.next = Some(next);
                let position = serde_json::json!({ "cursor": cycle.start, "cycle": state });
                self.cycle = Some(cycle);
                position
            }
            None => self.finish(cycle),
        };
        if records.is_empty() {
            return Ok(Poll::Checkpoint {
                partition: PARTITION.to_owned(),
                position,
            });
        }
        for r in &mut records {
            r.position = position.clone();
        }
        Ok(Poll::Records(records))
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
    fn new_cycle(&self) -> Cycle {
        Cycle {
            start: self.cursor.clone(),
            max: self.cursor.clone(),
            last: None,
            next: Some(self.first_request()),
            pages: 0,
            round: 0,
            etag: None,
            at_max: HashSet::new(),
            resumed: false,
            after_pause: false,
            seen: HashSet::new(),
        }
    }

    /// Ends a cycle; returns the position after it (the new cursor).
    fn finish(&mut self, mut cycle: Cycle) -> Position {
        self.last_cycle_end = Some(Instant::now());
        self.next_run = self.schedule.as_ref().and_then(next_fire);
        // An ETag stands for the first page only: a 304 for it says nothing
        // about later pages, so it is used only for one-page resources.
        self.etag = if cycle.pages == 1 {
            cycle.etag.take()
        } else {
            None
        };
        if cycle.max != cycle.start {
            self.boundary = std::mem::take(&mut cycle.at_max);
        } else {
            self.boundary.extend(cycle.at_max.drain());
            if self.boundary.len() > MAX_BOUNDARY {
                // Bounded memory: forgetting only means repeats, never a gap.
                self.boundary.clear();
            }
        }
        self.cursor = cycle.max;
        serde_json::json!({ "cursor": self.cursor })
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

/// Compares incremental values exactly: integers as integers (no rounding
/// past 2^53), other numbers as floats, RFC 3339 timestamps as instants
/// (whatever their offsets and fractions), strings of digits as integers of
/// any size, and anything else as text.
fn compare(a: &Json, b: &Json) -> Ordering {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => {
            let int = |n: &serde_json::Number| {
                n.as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from))
            };
            match (int(x), int(y)) {
                (Some(i), Some(j)) => i.cmp(&j),
                _ => x
                    .as_f64()
                    .zip(y.as_f64())
                    .and_then(|(f, g)| f.partial_cmp(&g))
                    .unwrap_or(Ordering::Equal),
            }
        }
        (Json::String(x), Json::String(y)) => {
            if let (Ok(s), Ok(t)) = (
                chrono::DateTime::parse_from_rfc3339(x),
                chrono::DateTime::parse_from_rfc3339(y),
            ) {
                return s.cmp(&t);
            }
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
            if digits(x) && digits(y) {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                return x.len().cmp(&y.len()).then_with(|| x.cmp(y));
            }
            x.cmp(y)
        }
        _ => scalar(a).cmp(&scalar(b)),
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

/// The items at `pointer` in `body`, each as its own slice of the body.
fn raw_items<'a>(body: &'a str, pointer: &str) -> Option<Vec<&'a serde_json::value::RawValue>> {
    use serde_json::value::RawValue;
    let mut at: &'a RawValue = serde_json::from_str(body).ok()?;
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        let text: &'a str = at.get();
        at = if text.starts_with('[') {
            let items: Vec<&'a RawValue> = serde_json::from_str(text).ok()?;
            items.get(token.parse::<usize>().ok()?).copied()?
        } else {
            let fields: HashMap<String, &'a RawValue> = serde_json::from_str(text).ok()?;
            fields.get(&token).copied()?
        };
    }
    serde_json::from_str(at.get()).ok()
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
    fn cursors_compare_exactly() {
        use serde_json::json;
        assert_eq!(compare(&json!(10), &json!(9)), Ordering::Greater);
        // Past 2^53, f64 would call these equal.
        assert_eq!(
            compare(
                &json!(9_007_199_254_740_993_u64),
                &json!(9_007_199_254_740_992_u64)
            ),
            Ordering::Greater
        );
        assert_eq!(compare(&json!(1.5), &json!(1.25)), Ordering::Greater);
        assert_eq!(
            compare(
                &json!("2026-11-25T10:00:01Z"),
                &json!("2026-11-25T10:00:00Z")
            ),
            Ordering::Greater
        );
        // As text, "11:00+02:00" sorts after "10:00Z"; as instants it is earlier.
        assert_eq!(
            compare(
                &json!("2026-11-25T11:00:00+02:00"),
                &json!("2026-11-25T10:00:00Z")
            ),
            Ordering::Less
        );
        assert_eq!(
            compare(
                &json!("2026-11-25T10:00:00.5Z"),
                &json!("2026-11-25T10:00:00Z")
            ),
            Ordering::Greater
        );
        assert_eq!(
            compare(
                &json!("100000000000000000000001"),
                &json!("99999999999999999999999")
            ),
            Ordering::Greater
        );
        assert_eq!(compare(&json!("b"), &json!("a")), Ordering::Greater);
        assert_eq!(
            epoch_millis(&serde_json::json!("1970-01-01T00:00:01Z")),
            Some(1000)
        );
    }

    #[test]
    fn items_keep_the_bytes_the_api_sent() {
        let body = r#"{ "meta": {"n": 2},
            "data": [ {"z": 1, "a": 1.50, "s": "\u00e9"} ,{"b":[1, 2]} ] }"#;
        let items = raw_items(body, "/data").expect("items");
        let got: Vec<&str> = items.iter().map(|r| r.get()).collect();
        assert_eq!(
            got,
            [r#"{"z": 1, "a": 1.50, "s": "\u00e9"}"#, r#"{"b":[1, 2]}"#]
        );
        let root = raw_items(r#"[ {"x" : 1} ]"#, "").expect("root array");
        assert_eq!(root[0].get(), r#"{"x" : 1}"#);
        let nested =
            raw_items(r#"{"a/b": {"list": [[{"k":1}]]}}"#, "/a~1b/list/0").expect("nested");
        assert_eq!(nested[0].get(), r#"{"k":1}"#);
        assert!(raw_items(r#"{"data": {}}"#, "/data").is_none());
        assert!(raw_items(r#"{"data": []}"#, "/missing").is_none());
    }
}
