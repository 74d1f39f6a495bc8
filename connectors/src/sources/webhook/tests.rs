//! The webhook connector's own logic, no listener or Kafka: config checks
//! (what `ferry validate` reports), routing, locators, the envelope it
//! builds, and that the banner's example curl is signed correctly.
#![allow(clippy::unwrap_used)]

use super::config::WebhookConfig;
use super::endpoint::glob;
use crate::plan::Context;
use apache_avro::types::Value as Avro;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use ferry::config::ConfigError;
use ferry::ingress::{Endpoint, Inbound, Rejection};
use ferry::runtime::{ConnectorSpec, Planned};
use serde_json::json;
use std::net::SocketAddr;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn spec(settings: serde_json::Value) -> ConnectorSpec {
    let mut map = settings.as_object().cloned().unwrap_or_default();
    map.insert("name".into(), json!("hooks"));
    map.insert("type".into(), json!("webhook"));
    serde_json::from_value(serde_json::Value::Object(map)).unwrap()
}

fn plan(settings: serde_json::Value) -> Result<Planned, ConfigError> {
    let spec = spec(settings);
    let config = ferry::config::FerryConfig::default();
    super::plan(&Context {
        spec: &spec,
        key: "connectors[0]".into(),
        origin: "test.yaml",
        group_prefix: "ferry",
        config: &config,
        transforms: crate::registry::TRANSFORMS,
    })
}

fn error(settings: serde_json::Value) -> String {
    match plan(settings) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e.to_string(),
    }
}

fn base() -> serde_json::Value {
    json!({
        "path": "/hooks",
        "verify": { "scheme": "github", "secrets": ["s3cret"] },
        "routes": [
            { "type": "push", "topic": "gh.push" },
            { "type": "pull_request*", "topic": "gh.pulls" }
        ],
        "topic": "gh.other",
    })
}

fn endpoint(settings: serde_json::Value) -> (Vec<String>, std::sync::Arc<dyn Endpoint>) {
    match plan(settings).unwrap() {
        Planned::Push { topics, mount, .. } => {
            (topics.into_iter().map(|t| t.name).collect(), mount.endpoint)
        }
        other => panic!("not a push connector: {other:?}"),
    }
}

fn github_headers(body: &[u8], event: &str, delivery: &str) -> HeaderMap {
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
    m.update(body);
    let sig = hex::encode(m.finalize().into_bytes());
    let mut h = HeaderMap::new();
    h.insert(
        "x-hub-signature-256",
        HeaderValue::from_str(&format!("sha256={sig}")).unwrap(),
    );
    h.insert("x-github-event", HeaderValue::from_str(event).unwrap());
    h.insert(
        "x-github-delivery",
        HeaderValue::from_str(delivery).unwrap(),
    );
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h
}

fn receive(
    ep: &dyn Endpoint,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<ferry::ingress::Accepted, Rejection> {
    ep.receive(&Inbound {
        headers,
        body,
        peer: SocketAddr::from(([127, 0, 0, 1], 1)),
        now: ferry::schema::envelope::now_millis() / 1000,
    })
}

fn field<'a>(value: &'a Avro, name: &str) -> &'a Avro {
    match value {
        Avro::Record(fields) => &fields.iter().find(|(n, _)| n == name).unwrap().1,
        other => panic!("not a record: {other:?}"),
    }
}

#[test]
fn topics_are_every_route_and_the_default_once() {
    let (topics, _) = endpoint(base());
    assert_eq!(topics, ["gh.other", "gh.pulls", "gh.push"]);
}

#[test]
fn the_event_type_picks_the_topic_and_the_body_is_kept_as_received() {
    let (_, ep) = endpoint(base());
    // Odd spacing: the payload is the bytes received, not re-serialized JSON.
    let body = br#"{ "action" :"opened",  "n": 1 }"#;
    for (event, topic) in [
        ("push", "gh.push"),
        ("pull_request", "gh.pulls"),
        ("pull_request_review", "gh.pulls"),
        ("issues", "gh.other"),
    ] {
        let a = receive(ep.as_ref(), &github_headers(body, event, "d-1"), body).unwrap();
        assert_eq!(a.topic, topic, "{event}");
        assert_eq!(a.delivery_id.as_deref(), Some("d-1"));
        assert_eq!(field(&a.value, "payload"), &Avro::Bytes(body.to_vec()));
        assert_eq!(field(&a.value, "type"), &Avro::String(event.into()));
        let id = ferry::schema::envelope::EventEnvelope::delivery_event_id("hooks", "d-1");
        assert_eq!(field(&a.value, "id"), &Avro::Uuid(id));
        assert_eq!(a.event_id, id.to_string());
        // No traceparent or X-Request-Id: the delivery id correlates.
        assert_eq!(a.correlation_id, "d-1");
    }
}

#[test]
fn without_a_default_topic_an_unknown_type_is_422_and_a_bad_signature_401() {
    let mut cfg = base();
    cfg.as_object_mut().unwrap().remove("topic");
    let (_, ep) = endpoint(cfg);
    let body = b"{}";
    assert_eq!(
        receive(ep.as_ref(), &github_headers(body, "issues", "d"), body).err(),
        Some(Rejection::UnknownType {
            event_type: "issues".into()
        })
    );
    let mut h = github_headers(body, "push", "d");
    h.insert("x-hub-signature-256", HeaderValue::from_static("sha256=00"));
    assert!(matches!(
        receive(ep.as_ref(), &h, body),
        Err(Rejection::Unauthorized { .. })
    ));
    // Missing event type or delivery id: malformed, 400.
    let mut h = github_headers(body, "push", "d");
    h.remove("x-github-delivery");
    assert!(matches!(
        receive(ep.as_ref(), &h, body),
        Err(Rejection::BadRequest { .. })
    ));
}

#[test]
fn pointers_read_the_json_body_and_a_non_json_body_is_400() {
    let (_, ep) = endpoint(json!({
        "path": "/s",
        "verify": { "scheme": "none" },
        "event_type": { "pointer": "/type" },
        "delivery_id": { "pointer": "/id" },
        "key": { "pointer": "/data/object/customer" },
        "routes": [{ "type": "invoice.*", "topic": "stripe.invoices" }],
    }));
    let body = br#"{"id":"evt_1","type":"invoice.paid","data":{"object":{"customer":42}}}"#;
    let a = receive(ep.as_ref(), &HeaderMap::new(), body).unwrap();
    assert_eq!(
        (a.topic.as_str(), a.key.as_deref()),
        ("stripe.invoices", Some("42"))
    );
    assert_eq!(a.delivery_id.as_deref(), Some("evt_1"));
    assert!(matches!(
        receive(ep.as_ref(), &HeaderMap::new(), b"not json"),
        Err(Rejection::BadRequest { .. })
    ));
    assert!(matches!(
        receive(
            ep.as_ref(),
            &HeaderMap::new(),
            br#"{"id":"e","type":{"x":1}}"#
        ),
        Err(Rejection::BadRequest { .. })
    ));
}

#[test]
fn kept_headers_and_a_traceparent_travel_with_the_event() {
    let mut cfg = base();
    cfg["keep_headers"] = json!(["User-Agent"]);
    let (_, ep) = endpoint(cfg);
    let body = b"{}";
    let mut h = github_headers(body, "push", "d-2");
    h.insert("user-agent", HeaderValue::from_static("GitHub-Hookshot/1"));
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    h.insert("traceparent", HeaderValue::from_static(tp));
    let a = receive(ep.as_ref(), &h, body).unwrap();
    assert_eq!(a.correlation_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(a
        .headers
        .contains(&("traceparent".to_owned(), tp.as_bytes().to_vec())));
    match field(&a.value, "attributes") {
        Avro::Map(m) => {
            assert_eq!(
                m.get("user-agent"),
                Some(&Avro::String("GitHub-Hookshot/1".into()))
            );
            assert_eq!(m.get("delivery_id"), Some(&Avro::String("d-2".into())));
            assert!(!m.contains_key("x-hub-signature-256"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_mistakes_name_the_key() {
    let with = |k: &str, v: serde_json::Value| {
        let mut c = base();
        c[k] = v;
        error(c)
    };
    for (key, value, needle) in [
        ("path", json!("hooks"), "connectors[0].path"),
        ("path", json!("/a b"), "connectors[0].path"),
        (
            "keep_headers",
            json!(["X-Hub-Signature-256"]),
            "keep_headers[0]",
        ),
        ("keep_headers", json!(["bad header"]), "keep_headers[0]"),
        ("retry", json!({}), "connectors[0].retry"),
        (
            "event_type",
            json!({ "pointer": "type" }),
            "connectors[0].event_type",
        ),
        ("content_types", json!([]), "content_types"),
        (
            "accept_rate",
            json!({ "requests_per_second": 0 }),
            "accept_rate",
        ),
        (
            "routes",
            json!([{ "type": "x", "topic": "bad topic" }]),
            "routes[0].topic",
        ),
        ("surprise", json!(1), "surprise"),
    ] {
        let e = with(key, value.clone());
        assert!(e.contains(needle), "{key}={value}: {e}");
    }
    let mut c = base();
    c["verify"] = json!({ "scheme": "standard_webhooks", "secrets": ["not-whsec"] });
    let e = error(c);
    assert!(e.contains("verify") && !e.contains("not-whsec"), "{e}");
    // Routes need an event type; the token scheme has none by default.
    let mut c = base();
    c["verify"] = json!({ "scheme": "token", "secrets": ["t0k"] });
    assert!(error(c).contains("event_type"));
    let mut c = base();
    c.as_object_mut().unwrap().remove("routes");
    c.as_object_mut().unwrap().remove("topic");
    assert!(error(c).contains("topic"));
}

#[test]
fn globs() {
    assert!(glob("invoice.*", "invoice.paid"));
    assert!(glob("*", ""));
    assert!(glob("*.created", "order.created"));
    assert!(glob("a*b*c", "a-b-c"));
    assert!(!glob("a*b*c", "a-c-b"));
    assert!(!glob("ab*ba", "aba"));
    assert!(glob("push", "push"));
    assert!(!glob("push", "pushed"));
}

#[test]
fn the_banner_curl_is_signed_correctly_for_every_scheme_it_can_sign() {
    let schemes = [
        json!({ "scheme": "standard_webhooks", "secrets": [SECRET] }),
        json!({ "scheme": "github", "secrets": ["s3cret"] }),
        json!({ "scheme": "stripe", "secrets": ["whsec_abc"] }),
        json!({ "scheme": "shopify", "secrets": ["shpss"] }),
        json!({ "scheme": "hmac", "header": "X-Sig", "prefix": "sha512=", "encoding": "base64",
                "algorithm": "sha512", "timestamp_header": "X-Ts", "secrets": ["k"] }),
        json!({ "scheme": "none" }),
    ];
    for verify in schemes {
        let cfg: WebhookConfig = serde_json::from_value(json!({
            "path": "/h", "verify": verify.clone(), "topic": "t"
        }))
        .unwrap();
        let now = ferry::schema::envelope::now_millis() / 1000;
        let curl = super::example::signed_curl("hooks", &cfg, "http://x/h", now).unwrap();
        // Take the headers and body back out of the command, as a shell would.
        let mut headers = HeaderMap::new();
        let mut body = String::new();
        for line in curl.lines() {
            let line = line.trim().trim_end_matches('\\').trim();
            if let Some(h) = line.strip_prefix("-H '").and_then(|l| l.strip_suffix('\'')) {
                let (n, v) = h.split_once(": ").unwrap();
                headers.insert(
                    HeaderName::try_from(n).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            } else if let Some(b) = line
                .strip_prefix("--data-raw '")
                .and_then(|l| l.strip_suffix('\''))
            {
                body = b.to_owned();
            }
        }
        let mut settings = json!({ "path": "/h", "verify": verify.clone(), "topic": "t" });
        if verify["scheme"] == "hmac" || verify["scheme"] == "none" {
            settings["event_type"] = json!({ "pointer": "/type" });
            settings["routes"] = json!([{ "type": "order.*", "topic": "t" }]);
        }
        let (_, ep) = endpoint(settings);
        let a = receive(ep.as_ref(), &headers, body.as_bytes());
        assert!(a.is_ok(), "{verify}: {a:?}\n{curl}");
    }
    let token: WebhookConfig = serde_json::from_value(json!({
        "path": "/h", "verify": { "scheme": "token", "secrets": ["t0k"] }, "topic": "t"
    }))
    .unwrap();
    assert!(
        super::example::signed_curl("h", &token, "http://x/h", 0).is_none(),
        "a token is never printed"
    );
}
