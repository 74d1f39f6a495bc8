//! The quickstart's demo API, served by `ferry up` when config has a `demo`
//! section, so data flows with no outside service: a fake CRM whose
//! contacts keep changing (`GET /contacts`, keyset-paginated, with
//! `updated_since`) and a fake target that records what it is sent
//! (`PUT /target/contacts/{id}`, `GET /target`). The end-to-end tests use
//! the same API in-process, driving changes and stalls themselves.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::task::JoinHandle;

/// One contact as the CRM stores it.
#[derive(Debug, Clone)]
struct Contact {
    id: String,
    version: u64,
    updated_at: i64,
    name: String,
    email: String,
}

impl Contact {
    fn json(&self) -> serde_json::Value {
        json!({
            "id": self.id, "version": self.version, "updated_at": self.updated_at,
            "name": self.name, "email": self.email,
        })
    }
}

#[derive(Debug, Default)]
struct CrmState {
    contacts: BTreeMap<String, Contact>,
    clock: i64,
    versions_written: u64,
    /// Every (id, version) ever returned by `GET /contacts`.
    served: std::collections::BTreeSet<(String, u64)>,
}

/// What the fake target received, in arrival order: (contact id, version).
#[derive(Debug, Default)]
struct TargetState {
    received: Vec<(String, u64)>,
    stalled: bool,
}

/// The demo API's shared state. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Demo {
    crm: Arc<Mutex<CrmState>>,
    target: Arc<Mutex<TargetState>>,
    unstalled: Arc<tokio::sync::Notify>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Demo {
    /// Creates or changes contact `id`: a new version with a later `updated_at`.
    pub fn upsert(&self, id: &str) {
        let mut crm = lock(&self.crm);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        // Strictly increasing, so every change sorts after every earlier one.
        crm.clock = now.max(crm.clock + 1);
        let updated_at = crm.clock;
        crm.versions_written += 1;
        let c = crm
            .contacts
            .entry(id.to_owned())
            .or_insert_with(|| Contact {
                id: id.to_owned(),
                version: 0,
                updated_at,
                name: String::new(),
                email: String::new(),
            });
        c.version += 1;
        c.updated_at = updated_at;
        c.name = format!("Contact {id} v{}", c.version);
        c.email = format!("{id}.v{}@example.com", c.version);
    }

    /// Every (id, latest version) in the CRM.
    pub fn latest_versions(&self) -> BTreeMap<String, u64> {
        lock(&self.crm)
            .contacts
            .values()
            .map(|c| (c.id.clone(), c.version))
            .collect()
    }

    /// How many versions have been written in all.
    pub fn versions_written(&self) -> u64 {
        lock(&self.crm).versions_written
    }

    /// Every (id, version) `GET /contacts` has returned: what a poller could see.
    pub fn served(&self) -> std::collections::BTreeSet<(String, u64)> {
        lock(&self.crm).served.clone()
    }

    /// Everything the target received, in order.
    pub fn received(&self) -> Vec<(String, u64)> {
        lock(&self.target).received.clone()
    }

    /// While stalled, the target holds every request open without answering.
    pub fn set_stalled(&self, stalled: bool) {
        lock(&self.target).stalled = stalled;
        if !stalled {
            self.unstalled.notify_waiters();
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/contacts", get(list_contacts))
            .route("/target", get(target_stats))
            .route("/target/contacts/{id}", put(receive))
            .with_state(self.clone())
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    updated_since: Option<i64>,
    /// `<updated_at>:<id>` of the last item of the previous page.
    cursor: Option<String>,
    limit: Option<usize>,
}

/// Keyset pagination over (updated_at, id), ascending; `updated_since` is
/// inclusive.
async fn list_contacts(State(demo): State<Demo>, Query(q): Query<ListQuery>) -> impl IntoResponse {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let after = q.cursor.as_deref().and_then(|c| {
        let (t, id) = c.split_once(':')?;
        Some((t.parse::<i64>().ok()?, id.to_owned()))
    });
    let mut crm = lock(&demo.crm);
    let mut all: Vec<&Contact> = crm
        .contacts
        .values()
        .filter(|c| q.updated_since.is_none_or(|s| c.updated_at >= s))
        .filter(|c| {
            after
                .as_ref()
                .is_none_or(|(t, id)| (c.updated_at, &c.id) > (*t, id))
        })
        .collect();
    all.sort_by(|a, b| (a.updated_at, &a.id).cmp(&(b.updated_at, &b.id)));
    let page: Vec<serde_json::Value> = all.iter().take(limit).map(|c| c.json()).collect();
    let next = (all.len() > limit)
        .then(|| {
            all.get(limit - 1)
                .map(|c| format!("{}:{}", c.updated_at, c.id))
        })
        .flatten();
    let served: Vec<(String, u64)> = all
        .iter()
        .take(limit)
        .map(|c| (c.id.clone(), c.version))
        .collect();
    crm.served.extend(served);
    Json(json!({ "data": page, "next_cursor": next }))
}

async fn receive(
    State(demo): State<Demo>,
    Path(id): Path<String>,
    Json(body): Json<serde_json::Value>,
) -> impl IntoResponse {
    loop {
        let notified = demo.unstalled.notified();
        if !lock(&demo.target).stalled {
            break;
        }
        notified.await;
    }
    let version = body.get("version").and_then(serde_json::Value::as_u64);
    match version {
        Some(v) => {
            lock(&demo.target).received.push((id, v));
            StatusCode::NO_CONTENT
        }
        None => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

async fn target_stats(State(demo): State<Demo>) -> impl IntoResponse {
    let received = lock(&demo.target).received.len();
    Json(json!({ "received": received }))
}

/// The demo API served on a listener, with contacts changing on their own.
pub struct DemoApi {
    demo: Demo,
    addr: SocketAddr,
    server: JoinHandle<()>,
    updater: Option<JoinHandle<()>>,
}

impl DemoApi {
    /// Serves the demo on `listen` with 20 contacts, one changing every 500 ms.
    pub async fn start(listen: SocketAddr) -> std::io::Result<Self> {
        let api = Self::serve(listen, Demo::default()).await?;
        for i in 0..20 {
            api.demo.upsert(&format!("c{i:03}"));
        }
        let demo = api.demo.clone();
        let updater = tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                n += 1;
                demo.upsert(&format!("c{:03}", (n * 7) % 20));
            }
        });
        Ok(Self {
            updater: Some(updater),
            ..api
        })
    }

    /// Serves `demo` on `listen` (port 0: any free port) with no changes of its own.
    pub async fn serve(listen: SocketAddr, demo: Demo) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let router = demo.router();
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(error = %e, "demo API stopped");
            }
        });
        Ok(Self {
            demo,
            addr,
            server,
            updater: None,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn demo(&self) -> &Demo {
        &self.demo
    }

    pub async fn stop(self) {
        if let Some(u) = self.updater {
            u.abort();
        }
        self.server.abort();
        let _ = self.server.await;
    }
}
