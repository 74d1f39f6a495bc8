//! Webhook signature verification: the `verify:` block of a webhook connector
//! and the [`Verifier`] built from it, which decides whether a delivery is
//! authentic before anything else reads it. The contract:
//!
//! - signatures are computed over the **raw body bytes** as received, never a
//!   re-serialized form (a JSON body re-encoded with other spacing fails);
//! - every comparison with a secret-derived value is constant time (`subtle`),
//!   and every signature in a header is tried against every configured secret,
//!   so a secret is rotated by listing the old and the new one;
//! - header parsing is total: any header value ends in a [`Refusal`], never a
//!   panic, and no refusal or error text holds a secret or an expected
//!   signature.
//!
//! Schemes: `standard_webhooks` (<https://www.standardwebhooks.com/>),
//! `github` (`X-Hub-Signature-256`), `stripe` (`Stripe-Signature`), `shopify`
//! (`X-Shopify-Hmac-Sha256`), a generic `hmac` (SHA-256/512, hex or base64,
//! optional signed timestamp), a shared `token`, and `none`.

use std::fmt;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ferry::config::Secret;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest as _, Sha256, Sha512};
use subtle::{Choice, ConstantTimeEq};

const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);
const MAX_TOLERANCE: Duration = Duration::from_secs(24 * 60 * 60);

fn default_tolerance() -> Duration {
    DEFAULT_TOLERANCE
}

fn default_token_header() -> String {
    "authorization".to_owned()
}

/// `verify:` of a webhook connector.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case", deny_unknown_fields)]
pub enum VerifyConfig {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp` and
    /// `webhook-signature` (`v1,<base64>` entries); HMAC-SHA256 over
    /// `{id}.{timestamp}.{body}`.
    StandardWebhooks {
        /// Signing secrets, each `whsec_` followed by the base64 key. List the
        /// old and the new secret while rotating.
        secrets: Vec<Secret>,
        /// How far the signed timestamp may be from now, either way
        /// (default `5m`, at most `1d`).
        #[serde(default = "default_tolerance", with = "humantime_serde")]
        tolerance: Duration,
    },
    /// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
    Github {
        /// Webhook secrets as entered in GitHub. List the old and the new
        /// secret while rotating.
        secrets: Vec<Secret>,
    },
    /// Stripe: `Stripe-Signature: t=<unix>,v1=<hex>,...`; HMAC-SHA256 over
    /// `{t}.{body}`.
    Stripe {
        /// Endpoint signing secrets (`whsec_...`), used as-is. List the old
        /// and the new secret while rotating.
        secrets: Vec<Secret>,
        /// How far `t` may be from now, either way (default `5m`, at most `1d`).
        #[serde(default = "default_tolerance", with = "humantime_serde")]
        tolerance: Duration,
    },
    /// Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the body>`.
    Shopify {
        /// App client secrets. List the old and the new secret while rotating.
        secrets: Vec<Secret>,
    },
    /// Any HMAC signature carried in one header.
    Hmac {
        /// Header holding the signature, e.g. `x-signature`.
        header: String,
        /// Text before the signature in the header, stripped before decoding
        /// (e.g. `sha256=`). Empty by default.
        #[serde(default)]
        prefix: String,
        /// How the signature is written: `hex` (default) or `base64`.
        #[serde(default)]
        encoding: Encoding,
        /// Hash of the HMAC: `sha256` (default) or `sha512`.
        #[serde(default)]
        algorithm: Algorithm,
        /// Header holding a Unix timestamp (seconds). When set, the signed
        /// content is `{timestamp}.{body}` and the timestamp is checked
        /// against `tolerance`; otherwise the signed content is the body.
        #[serde(default)]
        timestamp_header: Option<String>,
        /// HMAC keys. List the old and the new secret while rotating.
        secrets: Vec<Secret>,
        /// How far the timestamp may be from now, either way (default `5m`,
        /// at most `1d`). Used only with `timestamp_header`.
        #[serde(default = "default_tolerance", with = "humantime_serde")]
        tolerance: Duration,
    },
    /// A shared token in a header. It does not sign the body: prefer a
    /// signing scheme whenever the sender offers one.
    Token {
        /// Header holding the token (default `authorization`).
        #[serde(default = "default_token_header")]
        header: String,
        /// Text before the token, stripped before comparing (e.g. `Bearer `).
        /// Empty by default.
        #[serde(default)]
        prefix: String,
        /// Accepted tokens. List the old and the new token while rotating.
        secrets: Vec<Secret>,
    },
    /// No verification: every delivery is accepted.
    None,
}

/// How the signature of the `hmac` scheme is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Hexadecimal, either case.
    #[default]
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// Hash function of the `hmac` scheme.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// HMAC-SHA256.
    #[default]
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

/// A config problem: the field (`verify.secrets[1]`) and what is wrong.
type Invalid = (String, String);

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    (field.into(), message.into())
}

impl VerifyConfig {
    /// Checks the config without I/O. Messages never contain a secret.
    pub fn validate(&self) -> Result<(), (String, String)> {
        match self {
            Self::Hmac {
                header,
                timestamp_header,
                ..
            } => {
                header_name(header, "verify.header")?;
                if let Some(name) = timestamp_header {
                    header_name(name, "verify.timestamp_header")?;
                }
            }
            Self::Token { header, .. } => header_name(header, "verify.header")?,
            Self::None => return Ok(()),
            _ => {}
        }
        if self.secrets().is_empty() {
            return Err(invalid("verify.secrets", "at least one secret is required"));
        }
        for (i, secret) in self.secrets().iter().enumerate() {
            let field = format!("verify.secrets[{i}]");
            if secret.expose().is_empty() {
                return Err(invalid(field, "a secret must not be empty"));
            }
            if let Self::StandardWebhooks { .. } = self {
                whsec_key(secret).map_err(|m| invalid(field, m))?;
            }
        }
        match self.tolerance() {
            Some(t) if t.is_zero() => Err(invalid("verify.tolerance", "must be greater than 0")),
            Some(t) if t > MAX_TOLERANCE => Err(invalid("verify.tolerance", "must be at most 1d")),
            _ => Ok(()),
        }
    }

    fn secrets(&self) -> &[Secret] {
        match self {
            Self::StandardWebhooks { secrets, .. }
            | Self::Github { secrets }
            | Self::Stripe { secrets, .. }
            | Self::Shopify { secrets }
            | Self::Hmac { secrets, .. }
            | Self::Token { secrets, .. } => secrets,
            Self::None => &[],
        }
    }

    fn tolerance(&self) -> Option<Duration> {
        match self {
            Self::StandardWebhooks { tolerance, .. }
            | Self::Stripe { tolerance, .. }
            | Self::Hmac { tolerance, .. } => Some(*tolerance),
            _ => None,
        }
    }
}

/// The key of a Standard Webhooks secret. The message never echoes the secret
/// (nor base64's error, which quotes the offending byte).
fn whsec_key(secret: &Secret) -> Result<Vec<u8>, &'static str> {
    let Some(encoded) = secret.expose().strip_prefix("whsec_") else {
        return Err("must start with `whsec_`");
    };
    match B64.decode(encoded) {
        Ok(key) if !key.is_empty() => Ok(key),
        Ok(_) => Err("the key after `whsec_` is empty"),
        Err(_) => Err("the part after `whsec_` is not valid base64"),
    }
}

fn header_name(name: &str, field: &str) -> Result<(), Invalid> {
    if name.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    HeaderName::from_bytes(name.as_bytes())
        .map(drop)
        .map_err(|_| invalid(field, format!("`{name}` is not a valid HTTP header name")))
}

/// A delivery that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Unix seconds from the signed content, when the scheme carries one.
    pub timestamp: Option<i64>,
}

/// Why a delivery was refused. The caller answers every refusal with 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A required header is absent or not valid UTF-8.
    #[error("header `{0}` is missing or not valid UTF-8")]
    MissingHeader(String),
    /// A header is present but could not be parsed.
    #[error("header `{0}` could not be parsed")]
    MalformedHeader(String),
    /// No signature matched any configured secret.
    #[error("no signature matched any configured secret")]
    BadSignature,
    /// The signed timestamp is older than now by more than the tolerance.
    #[error("the signed timestamp is older than the tolerance allows")]
    Expired,
    /// The signed timestamp is newer than now by more than the tolerance.
    #[error("the signed timestamp is further ahead than the tolerance allows")]
    Future,
}

impl Refusal {
    /// A bounded metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_signature",
            Self::MalformedHeader(_) => "malformed_signature",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::Future => "future",
        }
    }
}

/// Checks deliveries against one `verify:` config; built once per connector.
pub struct Verifier {
    cfg: VerifyConfig,
    /// One per secret: the HMAC key, or for `token` the SHA-256 of the token.
    keys: Vec<Vec<u8>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme())
            .finish_non_exhaustive()
    }
}

const WEBHOOK_ID: &str = "webhook-id";
const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
const WEBHOOK_SIGNATURE: &str = "webhook-signature";
const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
const STRIPE_SIGNATURE: &str = "stripe-signature";
const SHOPIFY_SIGNATURE: &str = "x-shopify-hmac-sha256";

impl Verifier {
    /// Validates the config and decodes its keys. The error text names the
    /// field and never contains a secret.
    pub fn new(cfg: &VerifyConfig) -> Result<Self, String> {
        cfg.validate()
            .map_err(|(field, message)| format!("{field}: {message}"))?;
        let key = |(i, secret): (usize, &Secret)| match cfg {
            VerifyConfig::StandardWebhooks { .. } => {
                whsec_key(secret).map_err(|m| format!("verify.secrets[{i}]: {m}"))
            }
            VerifyConfig::Token { .. } => Ok(Sha256::digest(secret.expose()).to_vec()),
            // Stripe signs with the `whsec_...` string itself, not a decoded key.
            _ => Ok(secret.expose().as_bytes().to_vec()),
        };
        let keys = cfg
            .secrets()
            .iter()
            .enumerate()
            .map(key)
            .collect::<Result<_, _>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            keys,
        })
    }

    /// The scheme's config name, e.g. `"standard_webhooks"`.
    pub fn scheme(&self) -> &'static str {
        match self.cfg {
            VerifyConfig::StandardWebhooks { .. } => "standard_webhooks",
            VerifyConfig::Github { .. } => "github",
            VerifyConfig::Stripe { .. } => "stripe",
            VerifyConfig::Shopify { .. } => "shopify",
            VerifyConfig::Hmac { .. } => "hmac",
            VerifyConfig::Token { .. } => "token",
            VerifyConfig::None => "none",
        }
    }

    /// `now` is Unix seconds. Checks the signature and, where the scheme
    /// carries one, the timestamp. The signature is checked first, so
    /// `Expired`/`Future` mean an authentic but stale (or replayed) delivery.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<Verified, Refusal> {
        let (keys, untimed) = (&self.keys, Verified { timestamp: None });
        let sha256 = Algorithm::Sha256;
        match &self.cfg {
            VerifyConfig::StandardWebhooks { tolerance, .. } => {
                let id = header(headers, WEBHOOK_ID)?;
                let t = header(headers, WEBHOOK_TIMESTAMP)?;
                let list = header(headers, WEBHOOK_SIGNATURE)?;
                let ts = unix(t).ok_or_else(|| malformed(WEBHOOK_TIMESTAMP))?;
                // Space-separated `version,signature`; versions but v1 are ignored.
                let sigs: Vec<_> = (list.split(' '))
                    .filter_map(|item| B64.decode(item.strip_prefix("v1,")?).ok())
                    .collect();
                if sigs.is_empty() {
                    return Err(malformed(WEBHOOK_SIGNATURE));
                }
                let content = [id.as_bytes(), b".", t.as_bytes(), b".", body];
                matches(sha256, keys, &content, &sigs)?;
                fresh(ts, now, *tolerance)
            }
            VerifyConfig::Github { .. } => {
                let sig = (header(headers, GITHUB_SIGNATURE)?.strip_prefix("sha256="))
                    .and_then(|hex| decode(Encoding::Hex, hex))
                    .ok_or_else(|| malformed(GITHUB_SIGNATURE))?;
                matches(sha256, keys, &[body], &[sig]).map(|()| untimed)
            }
            VerifyConfig::Stripe { tolerance, .. } => {
                let (mut t, mut sigs) = (None, Vec::new());
                for item in header(headers, STRIPE_SIGNATURE)?.split(',') {
                    match item.trim().split_once('=') {
                        Some(("t", value)) if t.is_none() => t = Some(value),
                        Some(("v1", value)) => sigs.extend(decode(Encoding::Hex, value)),
                        _ => {} // v0 and schemes Stripe may add later
                    }
                }
                let (Some(t), false) = (t, sigs.is_empty()) else {
                    return Err(malformed(STRIPE_SIGNATURE));
                };
                let ts = unix(t).ok_or_else(|| malformed(STRIPE_SIGNATURE))?;
                matches(sha256, keys, &[t.as_bytes(), b".", body], &sigs)?;
                fresh(ts, now, *tolerance)
            }
            VerifyConfig::Shopify { .. } => {
                let sig = decode(Encoding::Base64, header(headers, SHOPIFY_SIGNATURE)?)
                    .ok_or_else(|| malformed(SHOPIFY_SIGNATURE))?;
                matches(sha256, keys, &[body], &[sig]).map(|()| untimed)
            }
            VerifyConfig::Hmac {
                header: name,
                prefix,
                encoding,
                algorithm,
                timestamp_header,
                tolerance,
                ..
            } => {
                let sig = (header(headers, name)?.strip_prefix(prefix.as_str()))
                    .and_then(|s| decode(*encoding, s))
                    .ok_or_else(|| malformed(name))?;
                let Some(ts_name) = timestamp_header else {
                    return matches(*algorithm, keys, &[body], &[sig]).map(|()| untimed);
                };
                let t = header(headers, ts_name)?;
                let ts = unix(t).ok_or_else(|| malformed(ts_name))?;
                matches(*algorithm, keys, &[t.as_bytes(), b".", body], &[sig])?;
                fresh(ts, now, *tolerance)
            }
            VerifyConfig::Token {
                header: name,
                prefix,
                ..
            } => {
                let token = (header(headers, name)?.strip_prefix(prefix.as_str()))
                    .ok_or_else(|| malformed(name))?;
                // `ct_eq` on the raw strings returns early when the lengths
                // differ, leaking the token's length. Both sides are SHA-256
                // digests instead: the compare always runs over 32 bytes, and
                // the hashing time depends only on the caller's own token.
                let presented = Sha256::digest(token).to_vec();
                let hit = keys
                    .iter()
                    .fold(Choice::from(0), |hit, k| hit | k.ct_eq(&presented));
                bool::from(hit)
                    .then_some(untimed)
                    .ok_or(Refusal::BadSignature)
            }
            VerifyConfig::None => Ok(untimed),
        }
    }
}

/// Header names are matched case-insensitively (`HeaderMap` lowercases).
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, Refusal> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Refusal::MissingHeader(name.to_owned()))
}

fn malformed(name: &str) -> Refusal {
    Refusal::MalformedHeader(name.to_owned())
}

/// Unix seconds written as plain digits; `None` for anything else or overflow.
fn unix(text: &str) -> Option<i64> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| text.parse().ok()).flatten()
}

fn decode(encoding: Encoding, text: &str) -> Option<Vec<u8>> {
    match encoding {
        Encoding::Hex => hex::decode(text).ok(),
        Encoding::Base64 => B64.decode(text).ok(),
    }
}

fn fresh(ts: i64, now: i64, tolerance: Duration) -> Result<Verified, Refusal> {
    // i128 so no pair of i64s overflows; milliseconds so a sub-second
    // tolerance still means what it says.
    let age_ms = (i128::from(now) - i128::from(ts)) * 1000;
    let tolerance_ms = i128::try_from(tolerance.as_millis()).unwrap_or(i128::MAX);
    if age_ms > tolerance_ms {
        Err(Refusal::Expired)
    } else if -age_ms > tolerance_ms {
        Err(Refusal::Future)
    } else {
        Ok(Verified {
            timestamp: Some(ts),
        })
    }
}

/// Tries every signature against every key, each compare in constant time,
/// without stopping at the first match.
fn matches(
    alg: Algorithm,
    keys: &[Vec<u8>],
    content: &[&[u8]],
    sigs: &[Vec<u8>],
) -> Result<(), Refusal> {
    let mut hit = Choice::from(0);
    for expected in keys.iter().filter_map(|key| mac(alg, key, content)) {
        // Unequal lengths compare false at once, revealing only the (public)
        // length of the hash.
        sigs.iter().for_each(|sig| hit |= expected.ct_eq(sig));
    }
    bool::from(hit).then_some(()).ok_or(Refusal::BadSignature)
}

fn mac(algorithm: Algorithm, key: &[u8], content: &[&[u8]]) -> Option<Vec<u8>> {
    fn run<M: Mac + KeyInit>(key: &[u8], content: &[&[u8]]) -> Option<Vec<u8>> {
        let mut m = <M as KeyInit>::new_from_slice(key).ok()?;
        content.iter().for_each(|part| m.update(part));
        Some(m.finalize().into_bytes().to_vec())
    }
    match algorithm {
        Algorithm::Sha256 => run::<Hmac<Sha256>>(key, content),
        Algorithm::Sha512 => run::<Hmac<Sha512>>(key, content),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;
    use serde_json::json;

    const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const NEW: &str = "whsec_ZmVycnktbmV3LXNpZ25pbmcta2V5LTAx";
    const OTHER: &str = "whsec_c29tZW9uZS1lbHNlcy1zaWduaW5nLWtleQ==";
    const SCHEMES: [&str; 6] = [
        "standard_webhooks",
        "github",
        "stripe",
        "shopify",
        "hmac",
        "token",
    ];
    /// Header values no scheme accepts: empty, non-UTF-8, half-formed, overflowing.
    const GARBAGE: [&str; 8] = [
        "",
        "é",
        "v1,",
        "t=,v1=",
        "sha256=zz",
        "🦀",
        "Bearer",
        "9999999999999999999",
    ];
    const TS: i64 = 1_700_000_000;

    fn headers<V: AsRef<str>>(pairs: &[(&str, V)]) -> HeaderMap {
        let value = |v: &V| HeaderValue::from_str(v.as_ref()).unwrap();
        pairs
            .iter()
            .map(|(n, v)| (HeaderName::from_bytes(n.as_bytes()).unwrap(), value(v)))
            .collect()
    }

    fn verifier(scheme: &str, secrets: &[&str]) -> Verifier {
        let mut cfg = json!({ "scheme": scheme, "secrets": secrets });
        if scheme == "hmac" {
            cfg["header"] = json!("x-signature");
            cfg["prefix"] = json!("sha256=");
            cfg["timestamp_header"] = json!("x-timestamp");
        } else if scheme == "token" {
            cfg["prefix"] = json!("Bearer ");
        }
        Verifier::new(&serde_json::from_value(cfg).unwrap()).unwrap()
    }

    fn header_names(scheme: &str) -> &'static [&'static str] {
        match scheme {
            "standard_webhooks" => &[WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE],
            "github" => &[GITHUB_SIGNATURE],
            "stripe" => &[STRIPE_SIGNATURE],
            "shopify" => &[SHOPIFY_SIGNATURE],
            "hmac" => &["x-signature", "x-timestamp"],
            _ => &["authorization"],
        }
    }

    /// The headers a sender of `scheme` attaches. The vectors in
    /// `published_and_reference_vectors` pin `mac`; this only assembles.
    fn sign(scheme: &str, secret: &str, body: &[u8], ts: i64) -> HeaderMap {
        let t = ts.to_string();
        let hmac = |key: &[u8], content: &[&[u8]]| mac(Algorithm::Sha256, key, content).unwrap();
        let (key, timed) = (secret.as_bytes(), [t.as_bytes(), b".", body]);
        let hex_of = |content: &[&[u8]]| hex::encode(hmac(key, content));
        headers(&match scheme {
            "standard_webhooks" => {
                let k = whsec_key(&Secret::new(secret)).unwrap();
                let sig = B64.encode(hmac(&k, &[b"msg_1.", t.as_bytes(), b".", body]));
                vec![
                    (WEBHOOK_ID, "msg_1".into()),
                    (WEBHOOK_TIMESTAMP, t.clone()),
                    (WEBHOOK_SIGNATURE, format!("v1,{sig}")),
                ]
            }
            "github" => vec![(GITHUB_SIGNATURE, format!("sha256={}", hex_of(&[body])))],
            "stripe" => vec![(STRIPE_SIGNATURE, format!("t={t},v1={}", hex_of(&timed)))],
            "shopify" => vec![(SHOPIFY_SIGNATURE, B64.encode(hmac(key, &[body])))],
            "hmac" => {
                let sig = format!("sha256={}", hex_of(&timed));
                vec![("x-timestamp", t.clone()), ("x-signature", sig)]
            }
            _ => vec![("authorization", format!("Bearer {secret}"))],
        })
    }

    #[test]
    fn published_and_reference_vectors() {
        // The first two are the Standard Webhooks spec's and GitHub's docs'
        // vectors. The other three were computed once with Python's standard
        // library, independently of this module:
        //   hmac.new(b"whsec_ferry_stripe_test", b'1700000000.{"id":"evt_1","object":"event"}', sha256).hexdigest()
        //   b64encode(hmac.new(b"shpss_ferry_test", b'{"id":820982911946154508}', sha256).digest())
        //   b64encode(hmac.new(b"ferry-generic", b'1700000000.{"a":1}', sha512).digest())
        let hmac = json!({ "scheme": "hmac", "header": "X-Sig", "encoding": "base64",
            "algorithm": "sha512", "timestamp_header": "X-Ts", "secrets": ["ferry-generic"] });
        let cases = [
            (json!({ "scheme": "standard_webhooks", "secrets": [OLD] }), vec![
                (WEBHOOK_ID, "msg_p5jXN8AQM9LWM0D4loKWxJek"),
                (WEBHOOK_TIMESTAMP, "1614265330"),
                (WEBHOOK_SIGNATURE, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            ], r#"{"test": 2432232314}"#, 1_614_265_330, Some(1_614_265_330)),
            // Several signatures in one header, other versions ignored, one valid.
            (json!({ "scheme": "standard_webhooks", "secrets": [NEW, OLD] }), vec![
                (WEBHOOK_ID, "msg_p5jXN8AQM9LWM0D4loKWxJek"),
                (WEBHOOK_TIMESTAMP, "1614265330"),
                (WEBHOOK_SIGNATURE, "v1a,AAAA v1,Zm9v v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v2,!!"),
            ], r#"{"test": 2432232314}"#, 1_614_265_330, Some(1_614_265_330)),
            (json!({ "scheme": "github", "secrets": ["It's a Secret to Everybody"] }), vec![
                (GITHUB_SIGNATURE, "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
            ], "Hello, World!", 0, None),
            // Items in any order, several v1, v0 ignored.
            (json!({ "scheme": "stripe", "secrets": ["whsec_ferry_stripe_test"] }), vec![
                (STRIPE_SIGNATURE, "v0=ab,v1=00ff, t=1700000000,v1=825ca9fa26b39aa0e536a72654f233c8217ea226555f8bbf98ba5ce8b97d2dfb"),
            ], r#"{"id":"evt_1","object":"event"}"#, TS + 5, Some(TS)),
            (json!({ "scheme": "shopify", "secrets": ["shpss_ferry_test"] }), vec![
                (SHOPIFY_SIGNATURE, "P2t/4+1Rkf+PBFlNlG1NO2nNYa2bfx+j9+okmPXLYro="),
            ], r#"{"id":820982911946154508}"#, 0, None),
            (hmac, vec![
                ("x-ts", "1700000000"),
                ("x-sig", "QdCdG7/RpbZr2J6wvbbn3FXy0gfBJ4Y+wCOIUKYNqg6P6MoD3xozyY0v+qXYTjFya7N6zocTyW5uuWeI9usabg=="),
            ], r#"{"a":1}"#, TS, Some(TS)),
        ];
        for (cfg, pairs, body, now, timestamp) in cases {
            let v = Verifier::new(&serde_json::from_value(cfg).unwrap()).unwrap();
            let h = headers(&pairs);
            let verified = Ok(Verified { timestamp });
            assert_eq!(v.verify(&h, body.as_bytes(), now), verified, "{v:?}");
            // The signature covers the raw bytes: re-encoded JSON fails.
            let reencoded = serde_json::from_str(body)
                .map_or(format!("{body} "), |j: serde_json::Value| format!("{j:#}"));
            let refused = Err(Refusal::BadSignature);
            assert_eq!(v.verify(&h, reencoded.as_bytes(), now), refused, "{v:?}");
        }
    }

    #[test]
    fn tampering_wrong_secrets_and_rotation() {
        let body = br#"{"a": 1}"#;
        for scheme in SCHEMES {
            let v = verifier(scheme, &[OLD, NEW]);
            for secret in [OLD, NEW] {
                assert!(
                    v.verify(&sign(scheme, secret, body, TS), body, TS).is_ok(),
                    "{scheme}"
                );
            }
            let other = v.verify(&sign(scheme, OTHER, body, TS), body, TS);
            assert_eq!(other, Err(Refusal::BadSignature), "{scheme}");
            // Re-serialized JSON is other bytes (a token does not sign the body).
            let compact = v.verify(&sign(scheme, OLD, body, TS), br#"{"a":1}"#, TS);
            assert_eq!(compact.is_ok(), scheme == "token", "{scheme}");
        }
    }

    #[test]
    fn timestamps_outside_tolerance_are_refused() {
        let ok = Ok(Verified {
            timestamp: Some(TS),
        });
        let (expired, future) = (Err(Refusal::Expired), Err(Refusal::Future));
        let cases = [
            (TS + 300, &ok),
            (TS - 300, &ok),
            (TS + 301, &expired),
            (i64::MAX, &expired),
            (TS - 301, &future),
            (i64::MIN, &future),
        ];
        for scheme in ["standard_webhooks", "stripe", "hmac"] {
            let (v, h) = (verifier(scheme, &[OLD]), sign(scheme, OLD, b"x", TS));
            for (now, want) in &cases {
                assert_eq!(&v.verify(&h, b"x", *now), *want, "{scheme} at {now}");
            }
        }
    }

    #[test]
    fn missing_and_garbage_headers_are_refused() {
        for scheme in SCHEMES {
            let v = verifier(scheme, &[OLD]);
            let refused = v.verify(&HeaderMap::new(), b"x", TS).unwrap_err();
            assert_eq!(refused.reason(), "missing_signature", "{scheme}");
            for name in header_names(scheme) {
                let mut h = sign(scheme, OLD, b"x", TS);
                h.remove(*name);
                let missing = Err(Refusal::MissingHeader(name.to_string()));
                assert_eq!(v.verify(&h, b"x", TS), missing);
                for garbage in GARBAGE {
                    h.insert(*name, HeaderValue::from_bytes(garbage.as_bytes()).unwrap());
                    assert!(
                        v.verify(&h, b"x", TS).is_err(),
                        "{scheme} {name}: {garbage}"
                    );
                }
            }
        }
        let v = verifier("stripe", &[OLD]);
        let h = headers(&[(STRIPE_SIGNATURE, "t=17000,v0=ab")]);
        let malformed = Err(Refusal::MalformedHeader(STRIPE_SIGNATURE.into()));
        assert_eq!(v.verify(&h, b"x", TS), malformed);
        let none = Verifier::new(&VerifyConfig::None).unwrap();
        assert_eq!(
            none.verify(&HeaderMap::new(), b"", 0),
            Ok(Verified { timestamp: None })
        );
    }

    fn parse(cfg: serde_json::Value) -> Result<VerifyConfig, serde_json::Error> {
        serde_json::from_value(cfg)
    }

    #[test]
    fn config_defaults_and_validation() {
        let hmac = parse(json!({ "scheme": "hmac", "header": "x-s", "secrets": ["k"] })).unwrap();
        let VerifyConfig::Hmac {
            encoding,
            algorithm,
            tolerance,
            prefix,
            ..
        } = hmac
        else {
            panic!("{hmac:?}")
        };
        assert_eq!((encoding, algorithm), (Encoding::Hex, Algorithm::Sha256));
        assert_eq!((tolerance, prefix.as_str()), (DEFAULT_TOLERANCE, ""));
        let token = parse(json!({ "scheme": "token", "secrets": ["k"] }));
        assert!(
            matches!(token, Ok(VerifyConfig::Token { header, .. }) if header == "authorization")
        );

        let sw = |secrets: serde_json::Value| json!({ "scheme": "standard_webhooks", "secrets": secrets });
        let stripe = |tolerance: &str| json!({ "scheme": "stripe", "secrets": ["k"], "tolerance": tolerance });
        let hmac = |header: &str, ts: &str| json!({ "scheme": "hmac", "header": header, "timestamp_header": ts, "secrets": ["k"] });
        let invalid = [
            (sw(json!([OLD, "whsec_hunter*2"])), "verify.secrets[1]"),
            (sw(json!(["hunter2"])), "verify.secrets[0]"),
            (
                json!({ "scheme": "github", "secrets": [] }),
                "verify.secrets",
            ),
            (
                json!({ "scheme": "shopify", "secrets": [""] }),
                "verify.secrets[0]",
            ),
            (stripe("0s"), "verify.tolerance"),
            (stripe("25h"), "verify.tolerance"),
            (hmac("", "x"), "verify.header"),
            (hmac("x", "a:b"), "verify.timestamp_header"),
            (
                json!({ "scheme": "token", "header": "x y", "secrets": ["k"] }),
                "verify.header",
            ),
        ];
        for (cfg, field) in invalid {
            let cfg = parse(cfg).unwrap();
            let (at, message) = cfg.validate().unwrap_err();
            let built = Verifier::new(&cfg).unwrap_err();
            assert_eq!((at.as_str(), built.starts_with(field)), (field, true));
            assert!(
                !message.contains("hunter") && !built.contains("hunter"),
                "{built}"
            );
        }
        assert!(
            parse(json!({ "scheme": "github" })).is_err(),
            "secrets are required"
        );
        assert!(parse(json!({ "scheme": "gitlab", "secrets": ["k"] })).is_err());
        assert!(parse(json!({ "scheme": "github", "secrets": ["k"], "tolerence": "1m" })).is_err());
    }

    fn insert_all(scheme: &str, values: Vec<Vec<u8>>) -> HeaderMap {
        let named = header_names(scheme).iter().zip(values);
        let valid =
            |(n, v): (&&'static str, Vec<u8>)| Some((*n, HeaderValue::from_bytes(&v).ok()?));
        named
            .filter_map(valid)
            .map(|(n, v)| (HeaderName::from_static(n), v))
            .collect()
    }

    /// Values shaped like each header's real format, so the parsers' inner
    /// branches are reached rather than the first check.
    fn shaped(name: &str) -> &'static str {
        match name {
            WEBHOOK_SIGNATURE => "((v1|v1a|v2|),[A-Za-z0-9+/=]{0,48} ?){0,4}",
            WEBHOOK_TIMESTAMP | "x-timestamp" => "[0-9+-]{0,22}",
            STRIPE_SIGNATURE => {
                "((t=[0-9-]{0,22}|v1=[0-9a-fA-F]{0,66}|v0=[a-z]{0,4}|[ =,]{0,2}),?){0,5}"
            }
            GITHUB_SIGNATURE | "x-signature" => "(sha256=)?[0-9a-fA-Fg]{0,66}",
            "authorization" => "(Bearer )?[ -~]{0,48}",
            _ => "[ -~]{0,48}",
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_nor_pass(
            scheme in prop::sample::select(SCHEMES.to_vec()),
            values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..96), 3),
            body in prop::collection::vec(any::<u8>(), 0..64),
            now in any::<i64>(),
        ) {
            let h = insert_all(scheme, values);
            prop_assert!(verifier(scheme, &[OLD, NEW]).verify(&h, &body, now).is_err());
        }

        #[test]
        fn shaped_garbage_never_panics_nor_passes(
            (scheme, values) in prop::sample::select(SCHEMES.to_vec()).prop_flat_map(|s| {
                let regex = |n: &&str| proptest::string::string_regex(shaped(n)).unwrap();
                (Just(s), header_names(s).iter().map(regex).collect::<Vec<_>>())
            }),
            body in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let h = insert_all(scheme, values.into_iter().map(String::into_bytes).collect());
            prop_assert!(verifier(scheme, &[OLD, NEW]).verify(&h, &body, TS).is_err());
        }

        #[test]
        fn signed_bodies_verify_and_any_change_is_refused(
            scheme in prop::sample::select(SCHEMES[..5].to_vec()),
            body in prop::collection::vec(any::<u8>(), 0..256),
            at in any::<prop::sample::Index>(),
        ) {
            let (v, h) = (verifier(scheme, &[OLD]), sign(scheme, OLD, &body, TS));
            prop_assert!(v.verify(&h, &body, TS).is_ok());
            let mut changed = body.clone();
            if body.is_empty() { changed.push(0) } else { changed[at.index(body.len())] ^= 1 }
            prop_assert_eq!(v.verify(&h, &changed, TS), Err(Refusal::BadSignature));
        }
    }
}
