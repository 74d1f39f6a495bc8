//! No secret of a run reaches a log line, `/connectors` or `/metrics`, even
//! when every call that carries one fails and the failure is reported: an
//! API key in a polled URL's query (reqwest repeats the URL in its error),
//! a bearer token in a header, a sink's credential echoed back in the
//! target's error body, and a raw librdkafka option. The test also checks
//! that those failures *were* reported (with the secret masked), so it
//! cannot pass because nothing happened.

use crate::fake_target::FakeTarget;
use crate::ferry_bin;
use ferry_testkit::{free_addr, http_get, repo_root, FerryProcess, TestBroker};
use std::time::{Duration, Instant};

/// Secret values, passed through the environment as `${env:NAME}`.
const SECRETS: &[(&str, &str)] = &[
    ("FERRY_E2E_API_KEY", "ak-7f3e9c1d/query=x"),
    ("FERRY_E2E_POLL_TOKEN", "pt-55aa21bb-header"),
    ("FERRY_E2E_SINK_TOKEN", "st-90c0ffee-sink"),
    ("FERRY_E2E_SINK_HEADER", "sh-1234abcd-custom"),
    ("FERRY_E2E_KEY_PASSWORD", "kp-0badf00d-librdkafka"),
    // Escaped in a JSON log line (`\"`, `\\`): must be masked there too.
    ("FERRY_E2E_QUOTED", r#"qt"8\x-91-quoted"#),
    ("FERRY_E2E_REGISTRY_PASSWORD", "rp-77d0-registry"),
];

/// Credentials written literally in the config, under names that mark them.
const LITERAL_SECRETS: &[&str] = &["lit-apikey-8812"];

/// The forms a secret can take in text: raw, percent-encoded, and escaped
/// as in a JSON string.
fn forms(secret: &str) -> Vec<String> {
    let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let json = serde_json::to_string(secret).unwrap_or_default();
    vec![
        secret.to_owned(),
        encoded,
        json.trim_matches('"').to_owned(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_line_or_a_status() {
    let broker = TestBroker::start().await;
    // An "external" registry, reached with a password in its URL.
    let registry = ferry_testkit::TestRegistry::start(&broker.bootstrap).await;
    let registry_url = registry.url.replace(
        "http://",
        "http://ferry:${env:FERRY_E2E_REGISTRY_PASSWORD}@",
    );
    let target = FakeTarget::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let admin = free_addr();
    let config = dir.path().join("ferry.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
data_dir: {data}
log:
  level: debug
  format: json
kafka:
  bootstrap_servers: "{bootstrap}"
  librdkafka:
    ssl.key.password: ${{env:FERRY_E2E_KEY_PASSWORD}}
    debug: conf
admin:
  listen: "{admin}"
schema_registry:
  url: {registry_url}
  schemas_dir: {schemas}
topics:
  - name: secrets.out
    partitions: 1
connectors:
  # Nobody listens: reqwest's error repeats the URL, query included.
  - name: down-api
    type: http_poll
    url: http://127.0.0.1:9/contacts?api_key=${{env:FERRY_E2E_API_KEY}}
    topic: secrets.events
    interval: 200ms
    retry: {{ max_attempts: 2, initial_backoff: 10ms, max_backoff: 20ms }}
    headers:
      Authorization: Bearer ${{env:FERRY_E2E_POLL_TOKEN}}
  # Answers 500 with the request's query and headers in the body.
  - name: echo-api
    type: http_poll
    url: {target}/echo/poll
    topic: secrets.events
    interval: 200ms
    retry: {{ max_attempts: 2, initial_backoff: 10ms, max_backoff: 20ms }}
    query:
      api_key: lit-apikey-8812
    headers:
      Authorization: Bearer ${{env:FERRY_E2E_POLL_TOKEN}}
      X-Quoted: ${{env:FERRY_E2E_QUOTED}}
  # A sink whose target echoes its credentials in a 500.
  - name: echo-sink
    type: http
    topic: secrets.out
    url: {target}/echo/{{{{ key }}}}
    auth:
      type: bearer
      token: ${{env:FERRY_E2E_SINK_TOKEN}}
    headers:
      X-Custom-Auth: ${{env:FERRY_E2E_SINK_HEADER}}
"#,
            data = dir.path().display(),
            bootstrap = broker.bootstrap,
            schemas = repo_root().join("schemas").display(),
            target = target.url(),
        ),
    )
    .expect("write config");
    let env: Vec<(&str, String)> = SECRETS.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    let cfg = config.display().to_string();
    let mut ferry = FerryProcess::spawn(&ferry_bin(), &["run", &cfg], &repo_root(), &env);
    ferry.wait_for_stdout("Press Ctrl-C to stop.", Duration::from_secs(90));

    // A record for the sink, so it calls the echoing target.
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .expect("producer");
    producer
        .send(
            rdkafka::producer::FutureRecord::to("secrets.out")
                .key("k1")
                .payload("{\"id\":\"k1\"}"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produced");

    // Wait until each failure was reported at least once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (connectors, metrics) = loop {
        let (_, connectors) = http_get(admin, "/connectors").unwrap_or_default();
        let (_, metrics) = http_get(admin, "/metrics").unwrap_or_default();
        let echoed = target.seen().iter().any(|r| r.path == "/echo/k1");
        let reported = connectors.matches("last_error\":\"").count() >= 2;
        if echoed && reported && connectors.contains("HTTP 500") {
            break (connectors, metrics);
        }
        assert!(
            Instant::now() < deadline,
            "the failures were not reported: {connectors}\n{}",
            ferry.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Let a few more retries and log lines happen.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, connectors_later) = http_get(admin, "/connectors").unwrap_or_default();
    assert_eq!(ferry.interrupt(Duration::from_secs(60)), Some(0));
    let log = ferry.stderr() + ferry.stdout().as_str();

    // The failures are there, masked.
    assert!(
        connectors.contains("api_key=***"),
        "the polled URL is shown with its key masked: {connectors}"
    );
    assert!(log.contains("127.0.0.1:9"), "the failure was logged");
    assert!(
        connectors.contains("x-quoted: ***") || log.contains("x-quoted: ***"),
        "the echoed header was reported, masked"
    );
    assert!(
        log.contains("http://ferry:***@"),
        "the registry URL is shown with its password masked"
    );
    // And no secret anywhere, in any form.
    let named = SECRETS
        .iter()
        .copied()
        .chain(LITERAL_SECRETS.iter().map(|s| ("a literal credential", *s)));
    for (name, secret) in named {
        for form in forms(secret) {
            for (what, text) in [
                ("the log", &log),
                ("/connectors", &connectors),
                ("/connectors (later)", &connectors_later),
                ("/metrics", &metrics),
            ] {
                if let Some(at) = text.find(&form) {
                    let from = at.saturating_sub(200);
                    panic!(
                        "{name} ({form}) leaked into {what}: ...{}...",
                        &text[from..(at + form.len() + 100).min(text.len())]
                    );
                }
            }
        }
    }
    target.stop().await;
    registry.stop().await;
    broker.stop().await;
}
