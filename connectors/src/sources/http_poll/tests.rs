//! `http_poll` against a fake API in-process (the third party): each
//! pagination style and auth scheme, ETags and incremental positions. No
//! Kafka here: the source is driven the way the runtime drives it.

use super::config::HttpPollConfig;
use super::source::HttpPollSource;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ferry::runtime::Shutdown;
use ferry::source::{Poll, Positions, Source, SourceContext};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// 25 items `{id, n}`; every endpoint pages them differently.
const ITEMS: usize = 25;

#[derive(Default)]
struct Fake {
    token_requests: AtomicUsize,
    /// Bearer tokens accepted so far by /oauth/items; the first one is
    /// revoked after one use to force a refresh.
    api_calls: AtomicUsize,
    since_seen: std::sync::Mutex<Vec<String>>,
    /// Every request the fake received, as `path?query`, in order.
    log: std::sync::Mutex<Vec<String>>,
    /// `/changes` serves its items in this order when set.
    order: std::sync::Mutex<Option<Vec<usize>>>,
    /// `/paged` refuses page tokens of an earlier generation (they expire).
    token_generation: AtomicUsize,
    /// `/changes` serves this item with a changed body (`"rev": 2`).
    changed: std::sync::Mutex<Option<usize>>,
}

impl Fake {
    fn requests(&self) -> Vec<String> {
        self.log.lock().expect("lock").clone()
    }
}

fn item(i: usize) -> Value {
    json!({"id": format!("i{i:02}"), "n": i})
}

fn page(from: usize, size: usize) -> Vec<Value> {
    (from..(from + size).min(ITEMS)).map(item).collect()
}

async fn link(Query(q): Query<HashMap<String, String>>, headers: HeaderMap) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer s3cret") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let p: usize = q.get("p").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut h = HeaderMap::new();
    if (p + 1) * 10 < ITEMS {
        let next = format!("</link?p={}>; rel=\"next\"", p + 1);
        h.insert("link", next.parse().expect("header"));
    }
    (h, Json(page(p * 10, 10))).into_response()
}

async fn numbered(Query(q): Query<HashMap<String, String>>) -> Response {
    if q.get("api_key").map(String::as_str) != Some("k") {
        return StatusCode::FORBIDDEN.into_response();
    }
    let n: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1);
    let size: usize = q.get("per_page").and_then(|v| v.parse().ok()).unwrap_or(5);
    Json(json!({"results": page((n - 1) * size, size)})).into_response()
}

async fn offset(Query(q): Query<HashMap<String, String>>, headers: HeaderMap) -> Response {
    // "user:pass" in base64.
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Basic dXNlcjpwYXNz") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let off: usize = q.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
    let limit: usize = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(10);
    Json(json!({"items": page(off, limit)})).into_response()
}

async fn next_url(Query(q): Query<HashMap<String, String>>) -> Response {
    let at: usize = q.get("at").and_then(|v| v.parse().ok()).unwrap_or(0);
    let next = (at + 7 < ITEMS).then(|| format!("/next?at={}", at + 7));
    Json(json!({"data": page(at, 7), "links": {"next": next}})).into_response()
}

async fn token(State(f): State<Arc<Fake>>) -> Json<Value> {
    let n = f.token_requests.fetch_add(1, Ordering::SeqCst) + 1;
    Json(json!({"access_token": format!("t{n}"), "expires_in": 3600}))
}

async fn oauth_items(State(f): State<Arc<Fake>>, headers: HeaderMap) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let call = f.api_calls.fetch_add(1, Ordering::SeqCst);
    // t1 is revoked after its first use: the source must fetch t2 on the 401.
    let ok = auth == "Bearer t2" || (auth == "Bearer t1" && call == 0);
    if !ok {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    Json(page(0, 3)).into_response()
}

async fn etagged(headers: HeaderMap) -> Response {
    if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some("\"v1\"") {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let mut h = HeaderMap::new();
    h.insert("etag", "\"v1\"".parse().expect("header"));
    (h, Json(page(0, 4))).into_response()
}

async fn changes(State(f): State<Arc<Fake>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let since: usize = q.get("since").and_then(|v| v.parse().ok()).unwrap_or(0);
    if let Ok(mut seen) = f.since_seen.lock() {
        seen.push(q.get("since").cloned().unwrap_or_default());
    }
    let order = f.order.lock().expect("lock").clone();
    let changed = *f.changed.lock().expect("lock");
    let served = |n: usize| {
        let mut v = item(n);
        if changed == Some(n) {
            v["rev"] = json!(2);
        }
        v
    };
    let items: Vec<Value> = match order {
        Some(order) => order
            .into_iter()
            .filter(|n| *n >= since)
            .map(served)
            .collect(),
        None => (since..ITEMS).map(served).collect(),
    };
    Json(items).into_response()
}

/// Keyset pages of 10 over `n`, with page tokens that carry a generation:
/// a token from an earlier generation is refused with 400 (it expired).
async fn paged(State(f): State<Arc<Fake>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let generation = f.token_generation.load(Ordering::SeqCst);
    let after: usize = match q.get("page_token") {
        None => 0,
        Some(t) => match t.split_once('-') {
            Some((g, at)) if g.parse() == Ok(generation) => at.parse().unwrap_or(0),
            _ => return (StatusCode::BAD_REQUEST, "page token expired").into_response(),
        },
    };
    let since: usize = q.get("since").and_then(|v| v.parse().ok()).unwrap_or(0);
    let from = after.max(since);
    let next = (from + 10 < ITEMS).then(|| format!("{generation}-{}", from + 10));
    Json(json!({"data": page(from, 10), "next": next})).into_response()
}

/// Two pages; the second names itself as the next page (a broken API).
async fn looping(Query(q): Query<HashMap<String, String>>) -> Response {
    match q.get("c").map(String::as_str) {
        None => Json(json!({"data": page(0, 10), "next": "c1"})).into_response(),
        _ => Json(json!({"data": page(10, 10), "next": "c1"})).into_response(),
    }
}

/// Two pages, then an empty one that echoes its cursor (the end).
async fn echoing(Query(q): Query<HashMap<String, String>>) -> Response {
    match q.get("c").map(String::as_str) {
        None => Json(json!({"data": page(0, 10), "next": "c1"})).into_response(),
        Some("c1") => Json(json!({"data": page(10, 10), "next": "c2"})).into_response(),
        _ => Json(json!({"data": [], "next": "c2"})).into_response(),
    }
}

/// A body far larger than any sane page.
async fn huge() -> Response {
    let items: Vec<Value> = (0..50_000).map(item).collect();
    Json(items).into_response()
}

/// Records every request's path and query in the fake's log.
async fn log_requests(
    State(f): State<Arc<Fake>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let uri = req.uri();
    let line = match uri.query() {
        Some(q) => format!("{}?{q}", uri.path()),
        None => uri.path().to_owned(),
    };
    f.log.lock().expect("lock").push(line);
    next.run(req).await
}

async fn serve() -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route("/link", get(link))
        .route("/numbered", get(numbered))
        .route("/offset", get(offset))
        .route("/next", get(next_url))
        .route("/oauth/token", post(token))
        .route("/oauth/items", get(oauth_items))
        .route("/etag", get(etagged))
        .route("/changes", get(changes))
        .route("/paged", get(paged))
        .route("/huge", get(huge))
        .route("/looping", get(looping))
        .route("/echoing", get(echoing))
        .route("/down", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
        .route("/slow", get(slow_body))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&fake),
            log_requests,
        ))
        .with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, fake)
}

fn source(settings: Value) -> HttpPollSource {
    let cfg: HttpPollConfig = serde_json::from_value(settings).expect("config parses");
    HttpPollSource::new("test", cfg, crate::http::tests_support::quick_outbound()).expect("builds")
}

fn ctx() -> SourceContext {
    SourceContext {
        name: "test".into(),
        shutdown: Shutdown::new(),
    }
}

/// What one walk through a poll cycle gave.
#[derive(Debug, Default)]
struct Walk {
    /// The items' `n`, in delivery order.
    ns: Vec<u64>,
    /// The envelopes' ids, in delivery order.
    ids: Vec<String>,
    /// Each poll's position (records or checkpoint), in order.
    positions: Vec<Value>,
}

impl Walk {
    fn last_position(&self) -> Option<&Value> {
        self.positions.last()
    }
}

fn envelope_field(r: &ferry::source::SourceRecord, name: &str) -> apache_avro::types::Value {
    let apache_avro::types::Value::Record(fields) = &r.value else {
        panic!("an envelope record");
    };
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("envelope field {name}"))
}

/// Polls until the cycle ends (a position without a `cycle` in it) or the
/// source goes idle. Tests assert the fake's request log as well, so a
/// source that was merely not due cannot pass for one that polled.
async fn walk(s: &mut HttpPollSource) -> Walk {
    let mut w = Walk::default();
    for _ in 0..100 {
        let position = match s.poll(&ctx()).await.expect("poll") {
            Poll::Records(rs) => {
                for r in &rs {
                    let apache_avro::types::Value::Bytes(b) = envelope_field(r, "payload") else {
                        panic!("payload bytes");
                    };
                    let payload: Value = serde_json::from_slice(&b).expect("JSON payload");
                    w.ns.push(payload["n"].as_u64().expect("n"));
                    let apache_avro::types::Value::Uuid(id) = envelope_field(r, "id") else {
                        panic!("uuid id");
                    };
                    w.ids.push(id.to_string());
                }
                match rs.last() {
                    Some(r) => r.position.clone(),
                    None => continue,
                }
            }
            Poll::Checkpoint { position, .. } => position,
            Poll::Idle(_) | Poll::Done => return w,
        };
        let done = position.get("cycle").is_none();
        w.positions.push(position);
        if done {
            return w;
        }
    }
    panic!("the cycle did not end");
}

fn all() -> Vec<u64> {
    (0..ITEMS as u64).collect()
}

#[tokio::test]
async fn link_header_pagination_with_a_bearer_token() {
    let (base, _) = serve().await;
    let mut s = source(json!({
        "url": format!("{base}/link"), "topic": "t", "key": "/id",
        "auth": {"type": "bearer", "token": "s3cret"},
        "pagination": {"type": "link_header"}
    }));
    s.open(&ctx(), Positions::new()).await.expect("open");
    assert_eq!(walk(&mut s).await.ns, all());
}

#[tokio::test]
async fn page_numbers_with_an_api_key_in_the_query() {
    let (base, _) = serve().await;
    let mut s = source(json!({
        "url": format!("{base}/numbered"), "topic": "t", "items": "/results",
        "auth": {"type": "api_key", "query": "api_key", "value": "k"},
        "pagination": {"type": "page", "size_param": "per_page", "size": 4}
    }));
    s.open(&ctx(), Positions::new()).await.expect("open");
    assert_eq!(walk(&mut s).await.ns, all());
}

#[tokio::test]
async fn offset_and_limit_with_basic_auth() {
    let (base, _) = serve().await;
    let mut s = source(json!({
        "url": format!("{base}/offset"), "topic": "t", "items": "/items",
        "auth": {"type": "basic", "username": "user", "password": "pass"},
        "pagination": {"type": "offset", "limit": 10}
    }));
    s.open(&ctx(), Positions::new()).await.expect("open");
    assert_eq!(walk(&mut s).await.ns, all());
}

#[tokio::test]
async fn next_url_from_the_body() {
    let (base, _) = serve().await;
    let mut s = source(json!({
        "url": format!("{base}/next"), "topic": "t", "items": "/data",
        "pagination": {"type": "next_url", "from": "/links/next"}
    }));
    s.open(&ctx(), Positions::new()).await.expect("open");
    assert_eq!(walk(&mut s).await.ns, all());
}

#[tokio::test]
async fn oauth2_token_is_fetched_cached_and_refreshed_on_401() {
    let (base, fake) = serve().await;
    let mut s = source(json!({
        "url": format!("{base}/oauth/items"), "topic": "t", "interval": "1ms",
        "auth": {"type": "oauth2", "token_url": format!("{base}/oauth/token"),
                 "client_id": "c", "client_secret": "s", "scope": "read"}
    }));
    s.open(&ctx(), Positions::new()).await.expect("open");
    assert_eq!(walk(&mut s).await.ns, vec![0, 1, 2]);
    assert_eq!(
        fake.token_requests.load(Ordering::SeqCst),
        1,
        "one token for the first call"
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // t1 is now refused: the source refreshes once and carries on.
    assert_eq!(walk(&mut s).await.ns, vec![0, 1, 2]);
    assert_eq!(fake.token_requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_unchanged_resource_is_not_fetched_again() {
    let (base, fake) = serve().await;
    let mut s = source(json!({"url": format!("{base}/etag"), "topic": "t", "interval": "1ms"}));
    s.open(&ctx(), Positions::new()).await.expect("open");
    assert_eq!(walk(&mut s).await.ns, vec![0, 1, 2, 3]);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert!(
        walk(&mut s).await.ns.is_empty(),
        "304 Not Modified: nothing new"
    );
    assert_eq!(
        fake.requests(),
        vec!["/etag", "/etag"],
        "the second cycle did ask (with If-None-Match) and got 304"
    );
}

#[tokio::test]
async fn the_incremental_cursor_is_the_position_and_is_sent_back_after_a_restart() {
    let (base, fake) = serve().await;
    let settings = json!({
        "url": format!("{base}/changes"), "topic": "t", "interval": "1ms",
        "incremental": {"field": "/n", "param": "since"}
    });
    let mut s = source(settings.clone());
    s.open(&ctx(), Positions::new()).await.expect("open");
    let first = walk(&mut s).await;
    assert_eq!(first.ns, all());
    assert_eq!(first.last_position(), Some(&json!({"cursor": 24})));
    // The boundary item (n = 24) comes back (`>=`) but is not delivered again.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = walk(&mut s).await;
    assert!(second.ns.is_empty());
    assert_eq!(
        second.last_position(),
        Some(&json!({"cursor": 24})),
        "the second cycle polled and ended at the same cursor"
    );

    // A restarted source resumes from the durable position.
    let mut restarted = source(settings);
    let resume = Positions::from([("endpoint".to_owned(), json!({"cursor": 20}))]);
    restarted.open(&ctx(), resume).await.expect("open");
    assert_eq!(walk(&mut restarted).await.ns, vec![20, 21, 22, 23, 24]);
    assert_eq!(
        fake.requests(),
        vec!["/changes", "/changes?since=24", "/changes?since=20"],
        "first poll sends no cursor; then the cursor, then the resumed one"
    );
}

#[tokio::test]
async fn a_cycle_longer_than_max_pages_goes_on_where_it_stopped() {
    let (base, fake) = serve().await;
    let mut s = source(json!({
        "url": format!("{base}/link"), "topic": "t", "interval": "1ms", "max_pages": 1,
        "auth": {"type": "bearer", "token": "s3cret"},
        "pagination": {"type": "link_header"}
    }));
    s.open(&ctx(), Positions::new()).await.expect("open");
    let mut ns = Vec::new();
    for _ in 0..3 {
        ns.extend(walk(&mut s).await.ns);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(ns, all(), "every item once, none skipped past max_pages");
    assert_eq!(
        fake.requests(),
        vec!["/link", "/link?p=1", "/link?p=2"],
        "each later round went on from the page where the last one stopped"
    );
}

#[tokio::test]
async fn each_page_is_a_position_and_a_restart_resumes_mid_cycle() {
    let (base, fake) = serve().await;
    let settings = json!({
        "url": format!("{base}/paged"), "topic": "t", "interval": "1ms", "items": "/data",
        "pagination": {"type": "cursor", "from": "/next", "param": "page_token"},
        "incremental": {"field": "/n", "param": "since"}
    });
    let mut s = source(settings.clone());
    s.open(&ctx(), Positions::new()).await.expect("open");
    // The first page: its records carry where the cycle stands after it.
    let Poll::Records(page1) = s.poll(&ctx()).await.expect("poll") else {
        panic!("records");
    };
    assert_eq!(page1.len(), 10);
    let after_page1 = page1.last().map(|r| r.position.clone()).expect("position");
    assert_eq!(
        after_page1,
        json!({"cursor": null, "cycle": {"max": 9, "next": {"params": [["page_token", "0-10"]]}, "pages": 1}}),
        "the cursor moves only when the cycle completes"
    );
    // Killed here; a new source resumes at page 2 of the same cycle.
    let mut restarted = source(settings.clone());
    let resume = Positions::from([("endpoint".to_owned(), after_page1)]);
    restarted.open(&ctx(), resume).await.expect("open");
    let rest = walk(&mut restarted).await;
    assert_eq!(rest.ns, (10..ITEMS as u64).collect::<Vec<_>>());
    assert_eq!(rest.last_position(), Some(&json!({"cursor": 24})));
    assert_eq!(
        fake.requests(),
        vec!["/paged", "/paged?page_token=0-10", "/paged?page_token=0-20"],
        "no page was fetched twice"
    );

    // An expired page token after a restart: the cycle starts over from its
    // start cursor (repeats, never a gap).
    fake.token_generation.store(1, Ordering::SeqCst);
    let stale = json!({"cursor": 5, "cycle": {"max": 19, "next": {"params": [["page_token", "0-20"]]}, "pages": 2}});
    let mut again = source(settings);
    again
        .open(&ctx(), Positions::from([("endpoint".to_owned(), stale)]))
        .await
        .expect("open");
    let mut ns = walk(&mut again).await.ns;
    ns.extend(walk(&mut again).await.ns);
    assert_eq!(ns, (5..ITEMS as u64).collect::<Vec<_>>());
    assert_eq!(
        fake.requests()[3..],
        [
            "/paged?since=5&page_token=0-20",
            "/paged?since=5",
            "/paged?since=5&page_token=1-15",
        ],
        "the refused token, then the cycle from its start"
    );
}

#[tokio::test]
async fn page_tokens_that_expire_during_a_max_pages_pause_fail_loudly() {
    let (base, fake) = serve().await;
    let mut s = source(json!({
        "url": format!("{base}/paged"), "topic": "t", "interval": "1ms", "items": "/data",
        "max_pages": 1,
        "pagination": {"type": "cursor", "from": "/next", "param": "page_token"}
    }));
    s.open(&ctx(), Positions::new()).await.expect("open");
    assert_eq!(walk(&mut s).await.ns, (0..10).collect::<Vec<_>>());
    // The pause outlives the token.
    fake.token_generation.store(1, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let e = s.poll(&ctx()).await.expect_err("refused token");
    assert!(!e.is_retryable(), "it would be refused after every pause");
    let m = e.to_string();
    assert!(m.contains("max_pages") && m.contains("interval"), "{m}");
}

#[tokio::test]
async fn a_paginator_that_loops_back_stops_the_connector_and_an_echoed_cursor_on_an_empty_page_ends_the_cycle(
) {
    let (base, fake) = serve().await;
    let settings = |path: &str| {
        json!({
            "url": format!("{base}/{path}"), "topic": "t", "interval": "1ms", "items": "/data",
            "pagination": {"type": "cursor", "from": "/next", "param": "c"}
        })
    };
    let mut looping = source(settings("looping"));
    looping.open(&ctx(), Positions::new()).await.expect("open");
    let Poll::Records(first) = looping.poll(&ctx()).await.expect("page 1") else {
        panic!("records");
    };
    assert_eq!(first.len(), 10);
    let e = looping.poll(&ctx()).await.expect_err("loops back");
    assert!(e.to_string().contains("read already"), "{e}");

    let mut echoing = source(settings("echoing"));
    echoing.open(&ctx(), Positions::new()).await.expect("open");
    let w = walk(&mut echoing).await;
    assert_eq!(w.ns, (0..20).collect::<Vec<_>>());
    assert!(
        w.last_position().is_some_and(|p| p.get("cycle").is_none()),
        "the cycle ended: {:?}",
        w.last_position()
    );
    let echo_requests = fake
        .requests()
        .iter()
        .filter(|r| r.starts_with("/echoing"))
        .count();
    assert_eq!(echo_requests, 3);
}

#[tokio::test]
async fn items_out_of_incremental_order_stop_the_connector_instead_of_skipping_changes() {
    let (base, fake) = serve().await;
    *fake.order.lock().expect("lock") = Some(vec![0, 1, 2, 7, 5, 8]);
    let mut s = source(json!({
        "url": format!("{base}/changes"), "topic": "t",
        "incremental": {"field": "/n", "param": "since"}
    }));
    s.open(&ctx(), Positions::new()).await.expect("open");
    let e = s.poll(&ctx()).await.expect_err("out of order");
    assert!(
        !e.is_retryable(),
        "retrying would not change the API's order"
    );
    let m = e.to_string();
    assert!(
        m.contains("= 5") && m.contains("7") && m.contains("ascending"),
        "{m}"
    );
}

#[tokio::test]
async fn an_answer_larger_than_the_limit_is_refused() {
    let (base, _) = serve().await;
    let mut s = source(json!({
        "url": format!("{base}/huge?api_key=k-secret-1"), "topic": "t",
        "max_response_bytes": 10000
    }));
    s.open(&ctx(), Positions::new()).await.expect("open");
    let e = s.poll(&ctx()).await.expect_err("too large");
    assert!(!e.is_retryable(), "the same answer will be as large again");
    let m = e.to_string();
    assert!(
        m.contains("max_response_bytes") && m.contains("10000"),
        "{m}"
    );
    assert!(!m.contains("k-secret-1"), "the API key is not printed: {m}");
}

#[tokio::test]
async fn a_repeated_item_keeps_its_event_id_and_a_changed_one_gets_a_new_id() {
    let (base, fake) = serve().await;
    let mut s = source(json!({
        "url": format!("{base}/changes"), "topic": "t", "interval": "1ms", "key": "/id"
    }));
    s.open(&ctx(), Positions::new()).await.expect("open");
    let first = walk(&mut s).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = walk(&mut s).await;
    assert_eq!(first.ns, all());
    assert_eq!(first.ids, second.ids, "the same items, the same ids");
    let unique: std::collections::BTreeSet<&String> = first.ids.iter().collect();
    assert_eq!(unique.len(), ITEMS, "different items, different ids");
    // A new source (another process) gives the same items the same ids.
    let mut other = source(json!({
        "url": format!("{base}/changes"), "topic": "t", "key": "/id"
    }));
    other.open(&ctx(), Positions::new()).await.expect("open");
    assert_eq!(
        walk(&mut other).await.ids,
        first.ids,
        "ids do not depend on the process"
    );
    // Item 3 changes: a new id for it, the same ids for the rest.
    *fake.changed.lock().expect("lock") = Some(3);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let third = walk(&mut s).await;
    assert_eq!(third.ns, all());
    for (i, (before, after)) in first.ids.iter().zip(&third.ids).enumerate() {
        if i == 3 {
            assert_ne!(before, after, "a changed item is a new event");
        } else {
            assert_eq!(before, after, "item {i} did not change");
        }
    }
}

#[tokio::test]
async fn a_cron_schedule_waits_for_its_time() {
    let (base, fake) = serve().await;
    // Midnight on January 1st: not now.
    let mut s = source(json!({
        "url": format!("{base}/changes"), "topic": "t", "schedule": "0 0 1 1 *"
    }));
    s.open(&ctx(), Positions::new()).await.expect("open");
    match s.poll(&ctx()).await.expect("poll") {
        Poll::Idle(wait) => assert!(wait > std::time::Duration::from_secs(60), "{wait:?}"),
        other => panic!("expected to wait for the schedule, got {other:?}"),
    }
    assert!(
        fake.since_seen.lock().expect("lock").is_empty(),
        "no request yet"
    );
    assert!(super::source::parse_schedule("every tuesday").is_err());
    assert!(super::source::parse_schedule("*/15 * * * *").is_ok());
    assert!(
        super::source::parse_schedule("30 */15 * * * *").is_ok(),
        "seconds first"
    );
}

/// A source on `/down` (always 503) with its own resilience settings.
fn down_source(base: &str, resilience: &str) -> HttpPollSource {
    let cfg: HttpPollConfig = serde_json::from_value(json!({
        "topic": "t", "url": format!("{base}/down"), "items": "/items", "interval": "1s",
    }))
    .expect("config parses");
    let rc: ferry::resilience::ResilienceConfig =
        serde_json::from_value(serde_yaml::from_str::<Value>(resilience).expect("yaml"))
            .expect("resilience config");
    HttpPollSource::new("down", cfg, ferry::resilience::Outbound::new("down", &rc)).expect("builds")
}

fn downs(fake: &Fake) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.starts_with("/down"))
        .count()
}

#[tokio::test]
async fn an_open_breaker_skips_polls_without_calling_the_api() {
    let (base, fake) = serve().await;
    let mut s = down_source(
        &base,
        "{retry: {max_attempts: 1}, circuit_breaker: {min_calls: 2, open_for: 60s}}",
    );
    s.open(&ctx(), Positions::new()).await.expect("opens");
    for _ in 0..2 {
        let e = s.poll(&ctx()).await.expect_err("503");
        assert!(e.is_retryable(), "{e}");
    }
    assert_eq!(downs(&fake), 2);
    // Open: the poll is skipped (idle until the breaker lets a probe
    // through), no request goes out, no record, no position.
    for _ in 0..3 {
        match s.poll(&ctx()).await {
            Ok(Poll::Idle(wait)) => assert!(wait > std::time::Duration::from_secs(50), "{wait:?}"),
            other => panic!("expected a skipped poll, got {other:?}"),
        }
    }
    assert_eq!(downs(&fake), 2, "nothing reached the API while open");
    assert_eq!(
        ferry::resilience::targets::circuit_of("down"),
        Some(ferry::resilience::CircuitState::Open)
    );
}

#[tokio::test]
async fn fallback_skip_gives_up_the_cycle_after_the_retries() {
    let (base, fake) = serve().await;
    let mut s = down_source(
        &base,
        "{retry: {max_attempts: 3, initial_backoff: 1ms, max_backoff: 2ms}, fallback: skip}",
    );
    s.open(&ctx(), Positions::new()).await.expect("opens");
    match s.poll(&ctx()).await {
        Ok(Poll::Idle(wait)) => assert_eq!(wait, std::time::Duration::from_secs(1)),
        other => panic!("expected the cycle to be skipped, got {other:?}"),
    }
    assert_eq!(downs(&fake), 3, "the retries came first");
}

/// A page whose body trickles: 10 chunks, 100 ms apart.
async fn slow_body() -> Response {
    let chunks = futures::stream::unfold(0u32, |i| async move {
        if i == 10 {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let text = match i {
            0 => "{\"items\": [".to_owned(),
            9 => "{\"id\": 9}]}".to_owned(),
            n => format!("{{\"id\": {n}}},"),
        };
        Some((
            Ok::<_, std::io::Error>(axum::body::Bytes::from(text)),
            i + 1,
        ))
    });
    axum::body::Body::from_stream(chunks).into_response()
}

#[tokio::test]
async fn the_timeout_covers_a_body_that_trickles() {
    let (base, fake) = serve().await;
    let cfg: HttpPollConfig = serde_json::from_value(json!({
        "topic": "t", "url": format!("{base}/slow"), "items": "/items",
    }))
    .expect("config parses");
    let rc: ferry::resilience::ResilienceConfig = serde_json::from_value(json!({
        "timeout": "300ms", "retry": {"max_attempts": 2, "initial_backoff": "1ms", "max_backoff": "2ms"}
    }))
    .expect("resilience");
    let mut s = HttpPollSource::new("slow", cfg, ferry::resilience::Outbound::new("slow", &rc))
        .expect("builds");
    s.open(&ctx(), Positions::new()).await.expect("opens");
    let started = std::time::Instant::now();
    let e = s
        .poll(&ctx())
        .await
        .expect_err("the body takes 1 s, the timeout is 300 ms");
    assert!(e.is_retryable() && e.message.contains("time"), "{e}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let slow = fake
        .requests()
        .iter()
        .filter(|r| r.starts_with("/slow"))
        .count();
    assert_eq!(slow, 2, "each attempt timed out, then was retried once");
}
