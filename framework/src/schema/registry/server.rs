//! The REST API: Confluent Schema Registry paths, bodies and error codes over
//! [`Registry`]. Bodies are read whatever their content type says
//! (`application/vnd.schemaregistry.v1+json`, `application/json`, none), as
//! Confluent's server does.

use super::api::{
    code, ConfigAnswer, ConfigUpdate, ErrorBody, RegisteredId, SchemaById, SchemaRequest,
    VersionRef, CONTENT_TYPE,
};
use super::service::{Registry, ServiceError};
use crate::schema::CompatibilityLevel;
use crate::telemetry::metrics as m;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

type Shared = State<Arc<Registry>>;

/// The routes, to be served on the registry's own listener.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/", get(|| async { reply(&serde_json::json!({})) }))
        .route("/schemas/types", get(|| async { reply(&["AVRO"]) }))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version))
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(version_schema),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(schema_text_by_id))
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check),
        )
        .route("/config", get(global_config).put(set_global_config))
        .route(
            "/config/{subject}",
            get(subject_config)
                .put(set_subject_config)
                .delete(clear_subject_config),
        )
        .with_state(registry)
}

/// A failed request: Confluent's status and `{"error_code", "message"}` body.
struct ApiError {
    code: u32,
    message: String,
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        Self {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(code::status(self.code))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        count(status);
        let body = ErrorBody {
            error_code: self.code,
            message: self.message,
        };
        (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], json(&body)).into_response()
    }
}

type Reply = Result<Response, ApiError>;

fn count(status: StatusCode) {
    let class = match status.as_u16() {
        200..=299 => "2xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!(m::SCHEMA_REGISTRY_REQUESTS_TOTAL, "status" => class).increment(1);
}

fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn reply<T: Serialize + ?Sized>(value: &T) -> Response {
    count(StatusCode::OK);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], json(value)).into_response()
}

fn body<T: DeserializeOwned>(bytes: &[u8], invalid_code: u32) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError {
        code: invalid_code,
        message: format!("Invalid request body: {e}"),
    })
}

fn version_ref(raw: &str) -> Result<VersionRef, ApiError> {
    VersionRef::parse(raw).ok_or_else(|| ServiceError::InvalidVersion(raw.to_owned()).into())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Flags {
    deleted: bool,
    permanent: bool,
    default_to_global: bool,
}

async fn subjects(State(r): Shared, Query(f): Query<Flags>) -> Reply {
    Ok(reply(&r.subjects(f.deleted).await?))
}

async fn lookup(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(f): Query<Flags>,
    raw: Bytes,
) -> Reply {
    let req: SchemaRequest = body(&raw, code::INVALID_SCHEMA)?;
    Ok(reply(&r.lookup(&subject, &req, f.deleted).await?))
}

async fn register(State(r): Shared, Path(subject): Path<String>, raw: Bytes) -> Reply {
    let req: SchemaRequest = body(&raw, code::INVALID_SCHEMA)?;
    let id = r.register(&subject, &req).await?;
    Ok(reply(&RegisteredId { id }))
}

async fn versions(State(r): Shared, Path(subject): Path<String>, Query(f): Query<Flags>) -> Reply {
    Ok(reply(&r.versions(&subject, f.deleted).await?))
}

async fn version(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(f): Query<Flags>,
) -> Reply {
    let v = version_ref(&version)?;
    Ok(reply(&r.version(&subject, v, f.deleted).await?))
}

async fn version_schema(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
) -> Reply {
    let v = version_ref(&version)?;
    let found = r.version(&subject, v, false).await?;
    count(StatusCode::OK);
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], found.schema).into_response())
}

async fn schema_by_id(State(r): Shared, Path(id): Path<String>) -> Reply {
    let id = parse_id(&id)?;
    Ok(reply(&SchemaById {
        schema: r.schema_by_id(id).await?,
    }))
}

async fn schema_text_by_id(State(r): Shared, Path(id): Path<String>) -> Reply {
    let id = parse_id(&id)?;
    let text = r.schema_by_id(id).await?;
    count(StatusCode::OK);
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

fn parse_id(raw: &str) -> Result<u32, ApiError> {
    raw.parse().map_err(|_| {
        ServiceError::SchemaNotFound(format!("Schema {raw} not found: not a schema id")).into()
    })
}

async fn check(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
    raw: Bytes,
) -> Reply {
    let v = version_ref(&version)?;
    let req: SchemaRequest = body(&raw, code::INVALID_SCHEMA)?;
    Ok(reply(&r.check(&subject, v, &req).await?))
}

async fn global_config(State(r): Shared) -> Reply {
    let level = r.config(None, true).await?;
    Ok(reply(&ConfigAnswer {
        compatibility_level: level,
    }))
}

async fn subject_config(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(f): Query<Flags>,
) -> Reply {
    let level = r.config(Some(&subject), f.default_to_global).await?;
    Ok(reply(&ConfigAnswer {
        compatibility_level: level,
    }))
}

fn level_from(raw: &[u8]) -> Result<CompatibilityLevel, ApiError> {
    let update: ConfigUpdate = body(raw, code::INVALID_COMPATIBILITY_LEVEL)?;
    Ok(update.compatibility)
}

async fn set_global_config(State(r): Shared, raw: Bytes) -> Reply {
    let level = level_from(&raw)?;
    r.set_config(None, level).await?;
    Ok(reply(&ConfigUpdate {
        compatibility: level,
    }))
}

async fn set_subject_config(State(r): Shared, Path(subject): Path<String>, raw: Bytes) -> Reply {
    let level = level_from(&raw)?;
    r.set_config(Some(&subject), level).await?;
    Ok(reply(&ConfigUpdate {
        compatibility: level,
    }))
}

async fn clear_subject_config(State(r): Shared, Path(subject): Path<String>) -> Reply {
    let level = r.clear_config(&subject).await?;
    Ok(reply(&ConfigAnswer {
        compatibility_level: level,
    }))
}

async fn delete_subject(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(f): Query<Flags>,
) -> Reply {
    if f.permanent {
        return Err(ApiError {
            code: 42200,
            message: "permanent deletion is not supported: schema ids stay valid for the records that carry them; soft-delete instead".into(),
        });
    }
    Ok(reply(&r.delete_subject(&subject).await?))
}
