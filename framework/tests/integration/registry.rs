//! The schema registry over real HTTP, stored in a real broker's `_schemas`
//! topic: Confluent's API and error codes, compatibility per subject and
//! globally, restarts that keep every id, and two instances that agree.

use ferry::kafka::{BrokerStorage, DevBroker, KafkaConfig};
use ferry::schema::registry::api::VersionRef;
use ferry::schema::registry::{server, Registry, RegistryClient, RegistrySettings};
use ferry::schema::CompatibilityLevel;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const V1: &str = r#"{"type": "record", "name": "User", "namespace": "t", "fields": [
    {"name": "id", "type": "string"},
    {"name": "email", "type": "string"}]}"#;
const V1_REFORMATTED: &str = r#"{"namespace":"t","name":"User","type":"record","fields":[{"type":"string","name":"id"},{"type":"string","name":"email"}]}"#;
const V2_ADDED_WITH_DEFAULT: &str = r#"{"type": "record", "name": "User", "namespace": "t", "fields": [
    {"name": "id", "type": "string"},
    {"name": "email", "type": "string"},
    {"name": "phone", "type": ["null", "string"], "default": null}]}"#;
const CHANGED_TYPE: &str = r#"{"type": "record", "name": "User", "namespace": "t", "fields": [
    {"name": "id", "type": "string"},
    {"name": "email", "type": "int"}]}"#;

/// A registry served on a free port, over `bootstrap`.
struct Served {
    registry: Arc<Registry>,
    client: RegistryClient,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(bootstrap: &str) -> Self {
        let settings = RegistrySettings {
            topic: "_schemas".into(),
            default_compatibility: CompatibilityLevel::Backward,
            timeout: Duration::from_secs(20),
        };
        let registry = Registry::open(&KafkaConfig::default(), bootstrap, &settings)
            .await
            .expect("registry opens its log");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let registry = Arc::new(registry);
        let router = server::router(Arc::clone(&registry));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let client = RegistryClient::new(&format!("http://{addr}"), None, Duration::from_secs(30))
            .expect("client");
        Self {
            registry,
            client,
            addr,
            task,
        }
    }

    /// Stops serving; the registry (and its log reader) is dropped with the router.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn broker(storage: BrokerStorage) -> DevBroker {
    DevBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)), storage)
        .await
        .expect("broker starts")
}

fn code(e: &ferry::schema::registry::ClientError) -> Option<u32> {
    e.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_api_speaks_confluent() {
    let b = broker(BrokerStorage::Memory).await;
    let r = Served::start(&b.bootstrap_servers()).await;
    let c = &r.client;

    // Register; the same schema written differently registers once.
    assert_eq!(c.register("users-value", V1).await.expect("v1"), 1);
    assert_eq!(
        c.register("users-value", V1_REFORMATTED)
            .await
            .expect("again"),
        1
    );
    assert_eq!(c.versions("users-value").await.expect("versions"), vec![1]);
    // The same schema under another subject keeps its global id.
    assert_eq!(c.register("other-value", V1).await.expect("other"), 1);

    // Evolve compatibly; refuse an incompatible change naming the field.
    assert_eq!(
        c.register("users-value", V2_ADDED_WITH_DEFAULT)
            .await
            .expect("v2"),
        2
    );
    let e = c
        .register("users-value", CHANGED_TYPE)
        .await
        .expect_err("incompatible");
    assert_eq!(code(&e), Some(409), "{e}");
    assert!(e.to_string().contains("email"), "{e}");
    let e = c
        .register("users-value", "{\"type\": \"recrod\"}")
        .await
        .expect_err("invalid");
    assert_eq!(code(&e), Some(42201), "{e}");

    // Reads.
    let latest = c
        .latest("users-value")
        .await
        .expect("latest")
        .expect("exists");
    assert_eq!((latest.version, latest.id), (2, 2));
    assert_eq!(
        c.version("users-value", VersionRef::Number(1))
            .await
            .expect("v1")
            .id,
        1
    );
    assert_eq!(
        c.schema_by_id(2).await.expect("id 2"),
        V2_ADDED_WITH_DEFAULT
    );
    let found = c
        .lookup("users-value", V1_REFORMATTED)
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!((found.version, found.id), (1, 1));
    assert!(c
        .lookup("users-value", CHANGED_TYPE)
        .await
        .expect("lookup")
        .is_none());
    assert_eq!(
        c.subjects().await.expect("subjects"),
        vec!["other-value".to_owned(), "users-value".to_owned()]
    );

    // Errors carry Confluent's codes.
    let e = c.versions("nope").await.expect_err("unknown subject");
    assert_eq!(code(&e), Some(40401));
    let e = c
        .version("users-value", VersionRef::Number(9))
        .await
        .expect_err("no v9");
    assert_eq!(code(&e), Some(40402));
    let e = c.schema_by_id(99).await.expect_err("no id 99");
    assert_eq!(code(&e), Some(40403));

    // Compatibility endpoint.
    let ok = c
        .check("users-value", VersionRef::Latest, V2_ADDED_WITH_DEFAULT)
        .await
        .expect("check");
    assert!(ok.is_compatible);
    let bad = c
        .check("users-value", VersionRef::Latest, CHANGED_TYPE)
        .await
        .expect("check");
    assert!(
        !bad.is_compatible && bad.messages.iter().any(|m| m.contains("email")),
        "{bad:?}"
    );

    // Config: global default, per subject, and NONE lets anything through.
    assert_eq!(
        c.compatibility(None).await.expect("global"),
        CompatibilityLevel::Backward
    );
    c.set_compatibility(Some("users-value"), CompatibilityLevel::None)
        .await
        .expect("set");
    assert_eq!(
        c.compatibility(Some("users-value")).await.expect("subject"),
        CompatibilityLevel::None
    );
    assert_eq!(
        c.register("users-value", CHANGED_TYPE)
            .await
            .expect("NONE allows"),
        3
    );

    // Soft delete hides the subject; ids stay resolvable; versions are not reused.
    assert_eq!(
        c.delete_subject("users-value").await.expect("delete"),
        vec![1, 2, 3]
    );
    assert_eq!(
        c.subjects().await.expect("subjects"),
        vec!["other-value".to_owned()]
    );
    assert_eq!(
        code(&c.versions("users-value").await.expect_err("gone")),
        Some(40401)
    );
    assert!(c.schema_by_id(3).await.is_ok());
    assert_eq!(c.register("users-value", V1).await.expect("re-register"), 1);
    assert_eq!(c.versions("users-value").await.expect("versions"), vec![4]);

    raw_http_details(r.addr).await;
    r.stop().await;
    b.stop().await;
}

/// What a client sees on the wire: both content types accepted, Confluent's
/// media type and error bodies returned.
async fn raw_http_details(addr: SocketAddr) {
    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://{addr}{p}");
    let body = serde_json::json!({ "schema": "\"string\"" }).to_string();
    for ct in ["application/json", "application/vnd.schemaregistry.v1+json"] {
        let resp = http
            .post(url("/subjects/plain-value/versions"))
            .header("content-type", ct)
            .body(body.clone())
            .send()
            .await
            .expect("POST");
        assert_eq!(resp.status(), 200, "{ct}");
        assert_eq!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/vnd.schemaregistry.v1+json")
        );
        let v: serde_json::Value = resp.json().await.expect("json");
        assert!(v["id"].as_u64().is_some(), "{v}");
    }
    let resp = http
        .get(url("/subjects/nope/versions"))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 404);
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["error_code"], 40401);
    assert!(
        v["message"].as_str().is_some_and(|m| m.contains("nope")),
        "{v}"
    );

    let resp = http
        .get(url("/subjects/plain-value/versions/x"))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 422);
    assert_eq!(
        resp.json::<serde_json::Value>().await.expect("json")["error_code"],
        42202
    );

    let resp = http
        .put(url("/config"))
        .body(r#"{"compatibility": "SIDEWAYS"}"#)
        .send()
        .await
        .expect("PUT");
    assert_eq!(resp.status(), 422);
    assert_eq!(
        resp.json::<serde_json::Value>().await.expect("json")["error_code"],
        42203
    );

    let resp = http
        .get(url("/config/plain-value"))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<serde_json::Value>().await.expect("json")["error_code"],
        40408
    );

    let resp = http
        .get(url("/subjects/plain-value/versions/latest"))
        .send()
        .await
        .expect("GET");
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["subject"], "plain-value");
    assert_eq!(v["version"], 1);
    assert_eq!(v["schema"], "\"string\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_registry_keeps_every_subject_version_and_id() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("broker.db");
    let b = broker(BrokerStorage::Sqlite(db.clone())).await;
    let addr = b.addr();
    let r = Served::start(&b.bootstrap_servers()).await;
    r.client.register("a-value", V1).await.expect("a");
    r.client
        .register("a-value", V2_ADDED_WITH_DEFAULT)
        .await
        .expect("a v2");
    r.client.register("b-value", "\"string\"").await.expect("b");
    r.client
        .set_compatibility(Some("b-value"), CompatibilityLevel::Full)
        .await
        .expect("config");
    let before = snapshot(&r.client).await;
    r.stop().await;
    b.stop().await;

    let b = broker_at(addr, db).await;
    let r = Served::start(&b.bootstrap_servers()).await;
    assert_eq!(snapshot(&r.client).await, before);
    assert_eq!(
        r.client
            .compatibility(Some("b-value"))
            .await
            .expect("config"),
        CompatibilityLevel::Full
    );
    // New ids continue after the old ones.
    assert_eq!(
        r.client.register("c-value", "\"long\"").await.expect("c"),
        4
    );
    r.stop().await;
    b.stop().await;
}

async fn broker_at(addr: SocketAddr, db: std::path::PathBuf) -> DevBroker {
    // The port was just released; retry briefly if the OS has not let go yet.
    for _ in 0..50 {
        if let Ok(b) = DevBroker::start(addr, BrokerStorage::Sqlite(db.clone())).await {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("broker did not restart on {addr}");
}

/// Every subject with its versions as (version, id, schema).
async fn snapshot(c: &RegistryClient) -> BTreeMap<String, Vec<(u32, u32, String)>> {
    let mut out = BTreeMap::new();
    for s in c.subjects().await.expect("subjects") {
        let mut versions = Vec::new();
        for v in c.versions(&s).await.expect("versions") {
            let sv = c.version(&s, VersionRef::Number(v)).await.expect("version");
            versions.push((sv.version, sv.id, sv.schema));
        }
        out.insert(s, versions);
    }
    out
}

fn user_with(field: usize) -> String {
    format!(
        r#"{{"type": "record", "name": "User", "fields": [{{"name": "id", "type": "string"}}, {{"name": "f{field}", "type": ["null", "long"], "default": null}}]}}"#
    )
}

/// Two registries on one cluster, hammered at once with registrations that
/// race for the same versions and ids: both end with the same subjects,
/// versions and ids, every schema has one id, and each caller got that id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_registries_on_one_cluster_agree() {
    let b = broker(BrokerStorage::Memory).await;
    let a = Served::start(&b.bootstrap_servers()).await;
    let other = Served::start(&b.bootstrap_servers()).await;
    let mut calls = Vec::new();
    for i in 0..24 {
        let client = if i % 2 == 0 {
            a.client.clone()
        } else {
            other.client.clone()
        };
        // Four subjects; each schema appears under two subjects (shared ids).
        let subject = format!("s{}-value", i % 4);
        let schema = user_with(i / 2);
        calls.push(tokio::spawn(async move {
            let id = client.register(&subject, &schema).await;
            (subject, schema, id)
        }));
    }
    let mut returned = Vec::new();
    for call in calls {
        let (subject, schema, id) = call.await.expect("task");
        returned.push((
            subject,
            schema,
            id.expect("registration succeeds despite races"),
        ));
    }

    let seen_by_a = snapshot(&a.client).await;
    let seen_by_other = snapshot(&other.client).await;
    assert_eq!(seen_by_a, seen_by_other, "both registries agree");
    // The races happened: both instances (caught up by the snapshots) saw
    // the same proposals lose.
    let lost = a.registry.rejected_proposals();
    assert!(lost > 0, "registrations raced for versions and ids");
    assert_eq!(other.registry.rejected_proposals(), lost);
    let mut id_of_schema = BTreeMap::new();
    for versions in seen_by_a.values() {
        for (_, id, schema) in versions {
            let prior = id_of_schema.insert(schema.clone(), *id);
            assert!(prior.is_none_or(|p| p == *id), "one id per schema");
        }
    }
    let distinct_ids: std::collections::BTreeSet<_> = id_of_schema.values().collect();
    assert_eq!(distinct_ids.len(), id_of_schema.len(), "one schema per id");
    for (subject, schema, id) in &returned {
        assert_eq!(
            id_of_schema.get(schema),
            Some(id),
            "{subject}: caller got the agreed id"
        );
        let versions = &seen_by_a[subject];
        assert!(
            versions.iter().any(|(_, i, _)| i == id),
            "{subject} holds id {id}"
        );
    }
    a.stop().await;
    other.stop().await;
    b.stop().await;
}
