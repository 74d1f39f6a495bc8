//! A webhook connector with a `mapping:`: each delivery's body becomes a
//! normalized `Contact` (schemas/contact.avsc) on the connector's topic, or,
//! when the mapping refuses it, goes raw to the dead-letter topic with the
//! field and rule in its headers. The sender gets 2xx either way, and only
//! once the record is in Kafka: every accepted delivery lands in exactly one
//! of the two topics, once, whatever the sender repeats.

use crate::mapping::{
    assert_normalized, expected_contacts, partitions, read, tail_lines, BAD_EMAIL, ITEMS, NO_ID,
    SALESFORCE_MAPPING,
};
use crate::rebalance::start_ferry;
use crate::sink_setup::services_yaml;
use crate::webhook_support::{now, standard, with_delivery};
use ferry::schema::envelope::EventEnvelope;
use ferry::schema::registry::{Codecs, RegistryClient};
use ferry_testkit::{free_addr, TestBroker};
use std::collections::BTreeMap;
use std::time::Duration;

const CONNECTOR: &str = "crm-hooks";
const TOPIC: &str = "crm.contacts.hooks";
const DLQ: &str = "crm-hooks.dlq";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn config(
    dir: &std::path::Path,
    bootstrap: &str,
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
) -> String {
    config_with(dir, bootstrap, listen, admin, "", "")
}

/// The config, with more `kafka:` settings and `webhooks:` settings (YAML
/// lines indented two spaces).
fn config_with(
    dir: &std::path::Path,
    bootstrap: &str,
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    kafka: &str,
    webhooks: &str,
) -> String {
    format!(
        r#"
data_dir: {data}
kafka:
  bootstrap_servers: "{bootstrap}"
{kafka}{services}webhooks:
  listen: "{listen}"
{webhooks}connectors:
  - name: {CONNECTOR}
    type: webhook
    path: /crm
    verify:
      scheme: standard_webhooks
      secrets: ["{SECRET}"]
    event_type: {{ header: x-crm-event }}
    key: {{ pointer: /Id }}
    topic: {TOPIC}
    partitions: 3
{SALESFORCE_MAPPING}"#,
        data = dir.display(),
        services = services_yaml(admin),
    )
}

/// The delivery id the sender gives item `i`.
fn delivery(i: usize) -> String {
    format!("msg_contact_{i}")
}

/// Sends `item` as delivery `i`, signed; returns the status and the body.
async fn send(client: &reqwest::Client, url: &str, i: usize, item: &str) -> (u16, String) {
    let headers = standard(SECRET, &delivery(i), now(), item.as_bytes());
    let req = client.post(url).header("x-crm-event", "contact.updated");
    let resp = with_delivery(req, Some("application/json"), &headers, item.as_bytes())
        .send()
        .await
        .expect("POST");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_webhook_writes_normalized_records_and_dead_letters_the_rest() {
    let broker = TestBroker::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (listen, admin) = (free_addr(), free_addr());
    let path = dir.path().join("ferry.yaml");
    std::fs::write(&path, config(dir.path(), &broker.bootstrap, listen, admin))
        .expect("write config");
    let ferry = start_ferry("run", &path, vec![]).await;

    let bootstrap = broker.bootstrap.clone();
    let dlq_partitions = tokio::task::spawn_blocking(move || partitions(&bootstrap, DLQ))
        .await
        .expect("metadata");
    assert_eq!(
        dlq_partitions, 3,
        "`{DLQ}` created at start, as wide as `{TOPIC}`"
    );

    // Each item sent twice (a sender's retry): the repeat is answered 200
    // `duplicate` and not written again.
    let client = reqwest::Client::new();
    let url = format!("http://{listen}/crm");
    for round in 0..2 {
        for (i, item) in ITEMS.iter().enumerate() {
            let (status, body) = send(&client, &url, i, item).await;
            assert_eq!(
                status,
                200,
                "round {round}, item {i}: every delivery is stored (mapped or dead-lettered): {body}\n{}",
                tail_lines(&ferry.stderr(), 20)
            );
            if round == 1 {
                assert!(body.contains("duplicate"), "round 1, item {i}: {body}");
            }
        }
    }

    let records = read(&broker.bootstrap, TOPIC).await;
    let dead = read(&broker.bootstrap, DLQ).await;
    let log = || tail_lines(&ferry.stderr(), 40);
    let expected = expected_contacts();
    assert_eq!(records.len(), expected.len(), "{records:?}\n{}", log());
    assert_eq!(dead.len(), 2, "{dead:?}\n{}", log());

    let registry = {
        let text = std::fs::read_to_string(&path).expect("config");
        let cfg: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
        cfg["schema_registry"]["listen"]
            .as_str()
            .expect("registry address")
            .to_owned()
    };
    let codecs = Codecs::new(
        RegistryClient::new(&format!("http://{registry}"), None, Duration::from_secs(30))
            .expect("registry client"),
    );
    let index_of = |item: &str| ITEMS.iter().position(|i| *i == item).expect("an item");
    let mut keys = Vec::new();
    for r in &records {
        let (key, item) = assert_normalized(&codecs, r, &expected).await;
        let d = delivery(index_of(item));
        let id = EventEnvelope::delivery_event_id(CONNECTOR, &d).to_string();
        assert_eq!(r.header("ferry-event-id"), Some(id.as_str()), "{r:?}");
        assert_eq!(r.header("ferry-delivery-id"), Some(d.as_str()), "{r:?}");
        assert_eq!(r.header("ferry-correlation-id"), Some(d.as_str()), "{r:?}");
        assert_eq!(
            r.header("ferry-schema-subject"),
            Some(format!("{TOPIC}-value").as_str()),
            "{r:?}"
        );
        keys.push(key);
    }
    keys.sort();
    assert_eq!(keys, ["0035e00000AbCdEAAV", "003B", "003D"]);

    let mut refused = BTreeMap::new();
    for d in &dead {
        let item = std::str::from_utf8(&d.value).unwrap_or_else(|_| panic!("{d:?}"));
        let (key, field, rule) = match item {
            BAD_EMAIL => (Some("003C"), "email", "email"),
            NO_ID => (None, "id", "required"),
            other => panic!("not a refused body, byte for byte: {other}\n{d:?}"),
        };
        assert_eq!(d.key.as_deref(), key, "{d:?}");
        assert_eq!(d.header("ferry-dlq-error-class"), Some("mapping"), "{d:?}");
        assert_eq!(d.header("ferry-dlq-mapping-field"), Some(field), "{d:?}");
        assert_eq!(d.header("ferry-dlq-mapping-rule"), Some(rule), "{d:?}");
        assert_eq!(d.header("ferry-dlq-connector"), Some(CONNECTOR), "{d:?}");
        assert_eq!(d.header("ferry-dlq-source-topic"), Some(TOPIC), "{d:?}");
        let dl = delivery(index_of(item));
        assert_eq!(d.header("ferry-delivery-id"), Some(dl.as_str()), "{d:?}");
        let id = EventEnvelope::delivery_event_id(CONNECTOR, &dl).to_string();
        assert_eq!(d.header("ferry-event-id"), Some(id.as_str()), "{d:?}");
        assert_eq!(d.header("ferry-schema-subject"), None, "{d:?}");
        *refused.entry(item).or_insert(0) += 1;
    }
    assert_eq!(refused, BTreeMap::from([(BAD_EMAIL, 1), (NO_ID, 1)]));

    let (_, metrics) = ferry_testkit::http_get(admin, "/metrics").expect("GET /metrics");
    let dead_letters: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("ferry_dead_letters_total")
                && l.contains("class=\"mapping\"")
                && l.contains(CONNECTOR)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(dead_letters as usize, 2, "{metrics}");

    let (ferry, status) = crate::rebalance::stop_ferry(ferry, "INT", Duration::from_secs(60)).await;
    assert!(status.success(), "{status:?}\n{}", ferry.stderr());
    broker.stop().await;
}

/// The dead-letter topic is one the spool may hold: with Kafka down, a
/// delivery the mapping refuses is spooled (202) like a mapped one, and
/// after Ferry is killed and the broker is back, the restarted Ferry drains
/// each to its own topic; none is set aside as "not a topic this connector
/// writes".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_dead_letter_reaches_the_dead_letter_topic_after_a_crash() {
    use crate::rebalance::stop_ferry;
    use crate::webhook_support::Broker;
    let broker = Broker::new("");
    let broker_p = broker.start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (listen, admin) = (free_addr(), free_addr());
    let path = dir.path().join("ferry.yaml");
    std::fs::write(
        &path,
        config_with(
            dir.path(),
            &broker.addr.to_string(),
            listen,
            admin,
            "  producer:\n    delivery_timeout: 60s\n  librdkafka:\n    reconnect.backoff.max.ms: \"1000\"\n",
            "  spool:\n    kafka_deadline: 1s\n",
        ),
    )
    .expect("write config");
    let ferry = start_ferry("run", &path, vec![]).await;

    let (dead_broker, _) = stop_ferry(broker_p, "KILL", Duration::from_secs(30)).await;
    drop(dead_broker);
    let client = reqwest::Client::new();
    let url = format!("http://{listen}/crm");
    for (i, item) in [(0, ITEMS[0]), (2, BAD_EMAIL)] {
        let (status, body) = send(&client, &url, i, item).await;
        assert_eq!(
            status,
            202,
            "item {i}: spooled while Kafka is down: {body}\n{}",
            tail_lines(&ferry.stderr(), 20)
        );
    }
    let (killed, status) = stop_ferry(ferry, "KILL", Duration::from_secs(30)).await;
    assert_eq!(status.code(), None, "ferry was killed");
    drop(killed);

    let broker_p = broker.start().await;
    let ferry = start_ferry("run", &path, vec![]).await;
    let bootstrap = broker.addr.to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let (records, dead) = loop {
        let (records, dead) = (read(&bootstrap, TOPIC).await, read(&bootstrap, DLQ).await);
        if !records.is_empty() && !dead.is_empty() {
            break (records, dead);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after the restart: {} record(s) in `{TOPIC}`, {} in `{DLQ}`\n{}",
            records.len(),
            dead.len(),
            tail_lines(&ferry.stderr(), 40)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // A spooled event may be written twice (once by the producer of the
    // first life, once from the spool): every copy is the same event.
    let ada = EventEnvelope::delivery_event_id(CONNECTOR, &delivery(0)).to_string();
    let bad = EventEnvelope::delivery_event_id(CONNECTOR, &delivery(2)).to_string();
    assert!(
        records
            .iter()
            .all(|r| r.header("ferry-event-id") == Some(ada.as_str())),
        "only the mapped contact in `{TOPIC}`: {records:?}"
    );
    assert!(
        dead.iter()
            .all(|d| d.header("ferry-event-id") == Some(bad.as_str())
                && d.value == BAD_EMAIL.as_bytes()
                && d.header("ferry-dlq-mapping-rule") == Some("email")),
        "only the refused body, raw, in `{DLQ}`: {dead:?}"
    );
    let rejected = dir.path().join("webhooks").join(CONNECTOR).join("rejected");
    let set_aside = std::fs::read_dir(&rejected).map_or(0, Iterator::count);
    assert_eq!(set_aside, 0, "nothing set aside in {}", rejected.display());

    let (ferry, status) = stop_ferry(ferry, "INT", Duration::from_secs(60)).await;
    assert!(status.success(), "{status:?}\n{}", ferry.stderr());
    let _ = stop_ferry(broker_p, "INT", Duration::from_secs(30)).await;
}
