//! A ready-to-paste `curl` that sends a correctly signed test delivery to a
//! webhook connector: `ferry up` prints one for each, so the first webhook
//! is one paste away.

use super::config::WebhookConfig;
use super::verify::{Algorithm, Encoding, VerifyConfig};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha512};

/// The curl for connector `name` served at `url`, signed at `now` (Unix
/// seconds). `None` where Ferry cannot sign for the sender: a `token`
/// scheme (the command would print the token itself).
pub fn signed_curl(name: &str, cfg: &WebhookConfig, url: &str, now: i64) -> Option<String> {
    let delivery = format!("msg_{name}_{now}");
    let body = format!(
        r#"{{"id":"{delivery}","type":"order.created","data":{{"id":"ord_1","total":42}}}}"#
    );
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    match &cfg.verify {
        VerifyConfig::StandardWebhooks { secrets, .. } => {
            let key = B64
                .decode(secrets.first()?.expose().strip_prefix("whsec_")?)
                .ok()?;
            let signed = format!("{delivery}.{now}.{body}");
            headers.push(("webhook-id".into(), delivery.clone()));
            headers.push(("webhook-timestamp".into(), now.to_string()));
            headers.push((
                "webhook-signature".into(),
                format!("v1,{}", B64.encode(sha256(&key, signed.as_bytes()))),
            ));
        }
        VerifyConfig::Github { secrets } => {
            let sig = hex::encode(sha256(
                secrets.first()?.expose().as_bytes(),
                body.as_bytes(),
            ));
            headers.push(("x-github-event".into(), "ping".into()));
            headers.push(("x-github-delivery".into(), delivery.clone()));
            headers.push(("x-hub-signature-256".into(), format!("sha256={sig}")));
        }
        VerifyConfig::Stripe { secrets, .. } => {
            let signed = format!("{now}.{body}");
            let sig = hex::encode(sha256(
                secrets.first()?.expose().as_bytes(),
                signed.as_bytes(),
            ));
            headers.push(("stripe-signature".into(), format!("t={now},v1={sig}")));
        }
        VerifyConfig::Shopify { secrets } => {
            let sig = B64.encode(sha256(
                secrets.first()?.expose().as_bytes(),
                body.as_bytes(),
            ));
            headers.push(("x-shopify-topic".into(), "orders/create".into()));
            headers.push(("x-shopify-webhook-id".into(), delivery.clone()));
            headers.push(("x-shopify-hmac-sha256".into(), sig));
        }
        VerifyConfig::Hmac {
            header,
            prefix,
            encoding,
            algorithm,
            timestamp_header,
            secrets,
            ..
        } => {
            let key = secrets.first()?.expose().as_bytes();
            let signed = match timestamp_header {
                Some(h) => {
                    headers.push((h.clone(), now.to_string()));
                    format!("{now}.{body}")
                }
                None => body.clone(),
            };
            let mac = match algorithm {
                Algorithm::Sha256 => sha256(key, signed.as_bytes()),
                Algorithm::Sha512 => {
                    let mut m = Hmac::<Sha512>::new_from_slice(key).ok()?;
                    m.update(signed.as_bytes());
                    m.finalize().into_bytes().to_vec()
                }
            };
            let sig = match encoding {
                Encoding::Hex => hex::encode(mac),
                Encoding::Base64 => B64.encode(mac),
            };
            headers.push((header.clone(), format!("{prefix}{sig}")));
        }
        VerifyConfig::Token { .. } => return None,
        VerifyConfig::None => {}
    }
    if let Some(super::config::Locator::Header(h)) = &cfg.delivery_id {
        headers.push((h.clone(), delivery.clone()));
    }
    if let Some(super::config::Locator::Header(h)) = &cfg.event_type {
        headers.push((h.clone(), "order.created".into()));
    }
    let mut out = format!("curl -i {url}");
    for (name, value) in headers {
        out.push_str(&format!(" \\\n    -H '{name}: {value}'"));
    }
    out.push_str(&format!(" \\\n    --data-raw '{body}'"));
    Some(out)
}

fn sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}
