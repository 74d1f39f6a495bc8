//! The admin HTTP listener (default 127.0.0.1:8083): `/health` (the process
//! is alive), `/ready` (Kafka is reachable), `/metrics` (Prometheus text)
//! and `/connectors` (each connector's state, restarts and last error).

use crate::kafka::KafkaHealth;
use crate::telemetry::metrics as m;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

/// The admin listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("admin API: cannot listen on {addr}: {source}")]
pub struct AdminBindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// What the handlers need.
#[derive(Clone)]
pub struct AdminState {
    pub kafka: KafkaHealth,
    pub metrics: PrometheusHandle,
    pub connectors: crate::runtime::Statuses,
}

/// Binds the listener. Done before anything else starts, so a port in use
/// fails fast with its address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, AdminBindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AdminBindError { addr, source })
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/connectors", get(connectors))
        .with_state(state)
}

async fn health() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok", "version": crate::VERSION }))
}

async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    match state.kafka.check(Duration::from_secs(2)).await {
        Ok(brokers) => {
            metrics::gauge!(m::KAFKA_READY).set(1.0);
            (
                StatusCode::OK,
                Json(serde_json::json!({ "status": "ready", "kafka": { "brokers": brokers } })),
            )
        }
        Err(e) => {
            metrics::gauge!(m::KAFKA_READY).set(0.0);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(
                    serde_json::json!({ "status": "not_ready", "kafka": { "error": e.to_string() } }),
                ),
            )
        }
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}

async fn connectors(State(state): State<AdminState>) -> impl IntoResponse {
    Json(state.connectors.snapshot())
}
