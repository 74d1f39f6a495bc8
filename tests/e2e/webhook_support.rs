//! What the webhook suites (`webhooks`, `webhook_durability`) share: how a
//! Standard Webhooks sender signs a delivery and posts it, and a broker
//! running as a process of its own.

use crate::rebalance::start_ferry;
use crate::sink_setup::services_yaml;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ferry_testkit::{free_addr, FerryProcess};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Request headers, in the order they are sent.
pub(crate) type Headers = Vec<(String, String)>;

/// Seconds since the epoch, as senders stamp their deliveries.
pub(crate) fn now() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    i64::try_from(since.expect("clock after 1970").as_secs()).expect("seconds fit")
}

/// HMAC-SHA256 of `parts`, one after another.
pub(crate) fn hmac256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    parts.iter().for_each(|p| mac.update(p));
    mac.finalize().into_bytes().to_vec()
}

pub(crate) fn h(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Standard Webhooks: base64 HMAC-SHA256 with the key after `whsec_`, over
/// `{id}.{timestamp}.{body}`.
pub(crate) fn standard(secret: &str, id: &str, ts: i64, body: &[u8]) -> Headers {
    let key = B64
        .decode(secret.strip_prefix("whsec_").expect("whsec_ secret"))
        .expect("base64 key");
    let t = ts.to_string();
    let sig = B64.encode(hmac256(
        &key,
        &[id.as_bytes(), b".", t.as_bytes(), b".", body],
    ));
    h(&[
        ("webhook-id", id),
        ("webhook-timestamp", &t),
        ("webhook-signature", &format!("v1,{sig}")),
    ])
}

/// `req` as a sender makes it: `body` with `content_type` (if any) and
/// `headers`.
pub(crate) fn with_delivery(
    req: reqwest::RequestBuilder,
    content_type: Option<&str>,
    headers: &Headers,
    body: &[u8],
) -> reqwest::RequestBuilder {
    let mut req = req.body(body.to_vec());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req
}

/// A broker as a process of its own (`ferry up`: the embedded broker on
/// sqlite, no connectors), so that killing it drops every connection, as
/// when a real broker dies. Restarts reuse its port and data.
pub(crate) struct Broker {
    pub(crate) addr: SocketAddr,
    pub(crate) config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// `extra`: more of its config (top-level YAML, each line ending in a
    /// newline), such as `topics:` to create.
    pub(crate) fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("broker dir");
        let addr = free_addr();
        let config = dir.path().join("broker.yaml");
        std::fs::write(
            &config,
            format!(
                r#"
data_dir: {data}
embedded_broker:
  listen: "{addr}"
  storage: sqlite
{services}{extra}"#,
                data = dir.path().display(),
                services = services_yaml(free_addr()),
            ),
        )
        .expect("write broker config");
        Self {
            addr,
            config,
            _dir: dir,
        }
    }

    pub(crate) async fn start(&self) -> FerryProcess {
        start_ferry("up", &self.config, Vec::new()).await
    }
}
