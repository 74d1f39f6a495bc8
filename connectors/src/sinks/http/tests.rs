//! The `http` sink against a fake target in-process: templated requests,
//! batching into one JSON array, the `Idempotency-Key` header, and how
//! statuses are reported to the runtime.

use super::config::HttpSinkConfig;
use super::sink::HttpSink;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{post, put};
use axum::{Json, Router};
use ferry::error::ConnectorError;
use ferry::sink::{Sink, SinkRecord};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

type Seen = Arc<Mutex<Vec<(String, Option<String>, Value)>>>;

async fn record_put(
    State(seen): State<Seen>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let failing = body.get("fail").and_then(Value::as_u64);
    seen.lock().expect("lock").push((id, key, body));
    match failing {
        Some(code) => StatusCode::from_u16(u16::try_from(code).unwrap_or(500))
            .unwrap_or(StatusCode::IM_A_TEAPOT),
        None => StatusCode::OK,
    }
}

async fn record_batch(
    State(seen): State<Seen>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    seen.lock().expect("lock").push(("batch".into(), key, body));
    StatusCode::ACCEPTED
}

async fn serve() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/contacts/{id}", put(record_put))
        .route("/bulk", post(record_batch))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, seen)
}

fn record(offset: i64, key: &str, value: Value) -> SinkRecord {
    SinkRecord {
        topic: "contacts".into(),
        partition: 1,
        offset,
        timestamp: None,
        key: Some(key.into()),
        raw_key: None,
        value,
        raw: None,
        headers: Vec::new(),
        correlation_id: format!("corr-{offset}"),
    }
}

fn sink(settings: Value) -> HttpSink {
    let cfg: HttpSinkConfig = serde_json::from_value(settings).expect("config parses");
    HttpSink::new("test", cfg, crate::http::tests_support::quick_outbound()).expect("builds")
}

#[tokio::test]
async fn one_templated_request_per_record_with_an_offset_idempotency_key() {
    let (base, seen) = serve().await;
    let mut s = sink(json!({
        "topic": "contacts", "method": "PUT", "url": format!("{base}/contacts/{{{{ key }}}}"),
        "body": {"template": {"email": "{{ value.email }}", "n": "{{ value.n }}", "src": "crm"}}
    }));
    let batch = [
        record(7, "a/1", json!({"email": "a@x", "n": 1})),
        record(8, "b", json!({"email": "b@x", "n": 2})),
    ];
    s.write(&batch).await.expect("written");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].0, "a/1",
        "the key is percent-encoded into one path segment"
    );
    assert_eq!(seen[0].1.as_deref(), Some("contacts-1-7"));
    assert_eq!(seen[0].2, json!({"email": "a@x", "n": 1, "src": "crm"}));
    assert_eq!(seen[1].1.as_deref(), Some("contacts-1-8"));
}

#[tokio::test]
async fn a_batch_is_one_request_with_a_json_array() {
    let (base, seen) = serve().await;
    let mut s = sink(json!({
        "topic": "contacts", "url": format!("{base}/bulk"),
        "batch": {"max_records": 10}, "idempotency_key": {"field": "/id"}
    }));
    let batch = [
        record(1, "a", json!({"id": "a"})),
        record(2, "b", json!({"id": "b"})),
        record(3, "c", json!({"id": "c"})),
    ];
    s.write(&batch).await.expect("written");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1, "one request");
    assert_eq!(seen[0].2, json!([{"id": "a"}, {"id": "b"}, {"id": "c"}]));
    assert_eq!(seen[0].1.as_deref(), Some("a,b,c"));
}

#[tokio::test]
async fn failures_say_how_far_the_batch_got_and_whether_to_retry() {
    let (base, _) = serve().await;
    let mut s = sink(json!({
        "topic": "contacts", "method": "PUT", "url": format!("{base}/contacts/{{{{ key }}}}")
    }));
    let batch = [
        record(1, "ok", json!({})),
        record(2, "down", json!({"fail": 503})),
        record(3, "never", json!({})),
    ];
    let f = s.write(&batch).await.expect_err("503");
    assert_eq!(f.written_prefix(), 1, "the first record is safely written");
    let e = f.first_error().expect("an error");
    assert!(e.is_retryable());
    assert_eq!(e.status, Some(503));

    let f = s
        .write(&[record(4, "bad", json!({"fail": 400}))])
        .await
        .expect_err("400");
    let e = f.first_error().expect("an error");
    assert!(!e.is_retryable(), "a 400 will not change by retrying");
    assert!(e.to_string().contains("HTTP 400"), "{e}");

    let mut unreachable = sink(json!({"topic": "contacts", "url": "http://127.0.0.1:9/x"}));
    let f = unreachable
        .write(&[record(5, "k", json!({}))])
        .await
        .expect_err("no server");
    assert!(
        f.first_error().is_some_and(ConnectorError::is_retryable),
        "a peer that is down may come back"
    );
}

#[tokio::test]
async fn refused_credentials_are_the_connectors_fault_not_the_records() {
    let (base, _seen) = serve().await;
    let mut s = sink(json!({
        "topic": "contacts", "method": "PUT", "url": format!("{base}/contacts/{{{{ key }}}}"),
        "headers": { "Authorization": "Bearer expired" },
    }));
    let batch = vec![record(0, "a", json!({"fail": 401}))];
    let f = s.write(&batch).await.expect_err("401");
    let e = f.first_error().expect("an error");
    assert!(!e.is_retryable());
    assert_eq!(e.scope, ferry::error::Scope::Connector, "{e}");
    // A 403 is about the record (this resource), as before.
    let f = s
        .write(&[record(1, "b", json!({"fail": 403}))])
        .await
        .expect_err("403");
    assert_eq!(
        f.first_error().map(|e| e.scope),
        Some(ferry::error::Scope::Record)
    );
}
