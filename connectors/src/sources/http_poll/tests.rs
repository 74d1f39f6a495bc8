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
    let items: Vec<Value> = (since..ITEMS).map(item).collect();
    Json(items).into_response()
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
    HttpPollSource::new("test", cfg).expect("builds")
}

fn ctx() -> SourceContext {
    SourceContext {
        name: "test".into(),
        shutdown: Shutdown::new(),
    }
}

/// One poll cycle: the items' `n`, in order, and the last record's position.
async fn cycle(s: &mut HttpPollSource) -> (Vec<u64>, Option<Value>) {
    let mut ns = Vec::new();
    let mut last = None;
    for _ in 0..100 {
        match s.poll(&ctx()).await.expect("poll") {
            Poll::Records(rs) => {
                for r in rs {
                    let apache_avro::types::Value::Record(fields) = &r.value else {
                        panic!("an envelope record");
                    };
                    let payload = fields
                        .iter()
                        .find(|(k, _)| k == "payload")
                        .and_then(|(_, v)| match v {
                            apache_avro::types::Value::Bytes(b) => {
                                serde_json::from_slice::<Value>(b).ok()
                            }
                            _ => None,
                        })
                        .expect("payload");
                    ns.push(payload["n"].as_u64().expect("n"));
                    last = Some(r.position.clone());
                }
            }
            Poll::Idle(_) | Poll::Done => return (ns, last),
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
    assert_eq!(cycle(&mut s).await.0, all());
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
    assert_eq!(cycle(&mut s).await.0, all());
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
    assert_eq!(cycle(&mut s).await.0, all());
}

#[tokio::test]
async fn next_url_from_the_body() {
    let (base, _) = serve().await;
    let mut s = source(json!({
        "url": format!("{base}/next"), "topic": "t", "items": "/data",
        "pagination": {"type": "next_url", "from": "/links/next"}
    }));
    s.open(&ctx(), Positions::new()).await.expect("open");
    assert_eq!(cycle(&mut s).await.0, all());
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
    assert_eq!(cycle(&mut s).await.0, vec![0, 1, 2]);
    assert_eq!(
        fake.token_requests.load(Ordering::SeqCst),
        1,
        "one token for the first call"
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // t1 is now refused: the source refreshes once and carries on.
    assert_eq!(cycle(&mut s).await.0, vec![0, 1, 2]);
    assert_eq!(fake.token_requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_unchanged_resource_is_not_fetched_again() {
    let (base, _) = serve().await;
    let mut s = source(json!({"url": format!("{base}/etag"), "topic": "t", "interval": "1ms"}));
    s.open(&ctx(), Positions::new()).await.expect("open");
    assert_eq!(cycle(&mut s).await.0, vec![0, 1, 2, 3]);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert!(
        cycle(&mut s).await.0.is_empty(),
        "304 Not Modified: nothing new"
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
    let (ns, position) = cycle(&mut s).await;
    assert_eq!(ns, all());
    assert_eq!(position, Some(json!({"cursor": 24})));
    // The boundary item (n = 24) comes back (`>=`) but is not delivered again.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert!(cycle(&mut s).await.0.is_empty());

    // A restarted source resumes from the durable position.
    let mut restarted = source(settings);
    let resume = Positions::from([("endpoint".to_owned(), json!({"cursor": 20}))]);
    restarted.open(&ctx(), resume).await.expect("open");
    assert_eq!(cycle(&mut restarted).await.0, vec![20, 21, 22, 23, 24]);
    let seen = fake.since_seen.lock().expect("lock").clone();
    assert_eq!(
        seen.first().map(String::as_str),
        Some(""),
        "first poll sends no cursor"
    );
    assert_eq!(seen.last().map(String::as_str), Some("20"));
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
