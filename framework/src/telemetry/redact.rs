//! The redaction policy, one for everything Ferry writes: log lines, error
//! messages, connector statuses on `/connectors`, and (later) dead-letter
//! headers.
//!
//! Two rules:
//! - **By value.** Every secret Ferry resolves (`${env:NAME}` and
//!   `${file:/path}` references, wherever they appear in config; OAuth2
//!   tokens it obtains) is registered here, and [`scrub`] replaces each
//!   occurrence of a registered value (raw or percent-encoded) with `***`.
//!   This catches a secret wherever a library puts it (reqwest's error
//!   text carries the URL with its query string, librdkafka logs its
//!   config), without knowing the library.
//! - **By name.** [`url`] hides the password of a URL's userinfo and the
//!   value of query parameters whose names mark a secret (`api_key`,
//!   `token`, ...), registered or not; [`redact_value`] does the same for a
//!   config key, header name or librdkafka option.
//!
//! The log writer ([`crate::telemetry::logging`]) passes every line
//! through [`scrub`], so a secret never reaches stderr even from a
//! dependency's log line.

use std::borrow::Cow;
use std::sync::RwLock;

/// Substrings that mark a key as secret (matched case-insensitively).
const SECRET_MARKERS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "api-key",
    "access_key",
    "credential",
    "private_key",
    "signature",
    "sasl.oauthbearer",
    "ssl.key",
];

/// Names whose *values* are credentials, exactly (case and `-`/`_`
/// ignored): values written literally under these names are registered and
/// scrubbed everywhere. Narrower than [`SECRET_MARKERS`], which only decides
/// what a printed URL or option hides: `page_token` or
/// `sasl.oauthbearer.client.id` values are ordinary words that must not be
/// blanked out of every log line.
const CREDENTIAL_NAMES: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "x-apikey",
    "api-key",
    "apikey",
    "x-auth-token",
    "auth-token",
    "x-access-token",
    "access-token",
    "token",
    "client-secret",
    "secret",
    "password",
    "passwd",
    "private-key",
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "ssl.key.pem",
    "sasl.oauthbearer.client.secret",
];

/// The text shown in place of a secret.
pub const REDACTED: &str = "***";

/// Registered values shorter than this are not scrubbed by value: a secret
/// of one or two characters would blank out ordinary text (name-based
/// redaction still applies).
const MIN_SCRUBBED_LEN: usize = 4;

/// Most dynamically obtained secrets (OAuth2 tokens) remembered; the oldest
/// go first. Configured secrets are never forgotten.
const MAX_DYNAMIC: usize = 256;

#[derive(Default)]
struct Registry {
    /// Configured secrets and their encoded forms, longest first.
    fixed: Vec<String>,
    /// Obtained at run time (tokens), oldest first.
    dynamic: std::collections::VecDeque<String>,
}

static REGISTRY: RwLock<Registry> = RwLock::new(Registry {
    fixed: Vec::new(),
    dynamic: std::collections::VecDeque::new(),
});

/// The forms a value may take in text: as it is, percent-encoded (in a
/// URL's query or path), and escaped as a JSON string or by `{:?}` (in a
/// JSON log line, a `Debug` print).
fn forms(value: &str) -> Vec<String> {
    let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    let quoted = |s: String| {
        s.strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .map(str::to_owned)
            .unwrap_or(s)
    };
    let json = quoted(serde_json::to_string(value).unwrap_or_default());
    let debug = quoted(format!("{value:?}"));
    let mut out = Vec::new();
    for f in [
        value.to_owned(),
        encoded.replace('+', "%20"),
        encoded,
        json,
        debug,
    ] {
        if !f.is_empty() && !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

/// Registers a configured secret's value: it never appears in output again.
pub fn register(value: &str) {
    if value.len() < MIN_SCRUBBED_LEN {
        return;
    }
    let mut r = REGISTRY
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for f in forms(value) {
        if !r.fixed.contains(&f) {
            r.fixed.push(f);
        }
    }
    r.fixed.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Whether `key` (a header, query parameter or librdkafka option) names a
/// credential exactly.
pub fn is_credential_name(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('_', "-");
    CREDENTIAL_NAMES.iter().any(|n| *n == key)
}

/// Registers `value` when `key` names a credential, though it was written
/// literally.
pub fn register_named(key: &str, value: &str) {
    if is_credential_name(key) {
        // `Bearer <token>`: the token is the secret, and so is the whole.
        if let Some((_, token)) = value.split_once(' ') {
            register(token.trim());
        }
        register(value);
    }
}

/// Registers a secret obtained at run time (an OAuth2 access token).
pub fn register_dynamic(value: &str) {
    if value.len() < MIN_SCRUBBED_LEN {
        return;
    }
    let mut r = REGISTRY
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if r.dynamic.iter().any(|v| v == value) {
        return;
    }
    r.dynamic.push_back(value.to_owned());
    while r.dynamic.len() > MAX_DYNAMIC {
        r.dynamic.pop_front();
    }
}

/// `text` with every registered secret replaced by [`REDACTED`].
pub fn scrub(text: &str) -> Cow<'_, str> {
    let r = REGISTRY
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = Cow::Borrowed(text);
    for secret in r.fixed.iter().chain(r.dynamic.iter()) {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
        }
    }
    out
}

/// Whether a key (config key, header name, query parameter, librdkafka
/// option) holds a secret.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_MARKERS.iter().any(|m| key.contains(m))
}

/// `value`, or [`REDACTED`] when `key` holds a secret.
pub fn redact_value<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret_key(key) {
        REDACTED
    } else {
        value
    }
}

/// A URL fit to print: no userinfo password, no value for query
/// parameters named like secrets, no registered secret anywhere. Text that
/// is not a URL is only scrubbed.
pub fn url(text: &str) -> String {
    let Ok(mut u) = url::Url::parse(text) else {
        return scrub(text).into_owned();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some(REDACTED));
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_key(&k) {
                    REDACTED.to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    // The query serializer encodes `*`; keep the marker readable.
    scrub(&u.to_string().replace("%2A%2A%2A", REDACTED)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hidden_by_name_and_the_rest_is_not() {
        assert_eq!(redact_value("sasl.password", "hunter2"), REDACTED);
        assert_eq!(redact_value("Authorization", "Bearer x"), REDACTED);
        assert_eq!(redact_value("X-Api-Key", "k"), REDACTED);
        assert_eq!(redact_value("socket.keepalive.enable", "true"), "true");
    }

    #[test]
    fn registered_values_are_scrubbed_raw_and_percent_encoded() {
        register("s3cr3t/with space");
        let text = "GET http://x/?k=s3cr3t%2Fwith%20space failed; header s3cr3t/with space; \
                    form s3cr3t%2Fwith+space";
        let out = scrub(text);
        assert!(!out.contains("s3cr3t"), "{out}");
        assert_eq!(out.matches(REDACTED).count(), 3, "{out}");
        assert_eq!(scrub("nothing secret here"), "nothing secret here");
    }

    #[test]
    fn json_and_debug_escaped_forms_are_scrubbed_too() {
        register(r#"q"uo\te-77"#);
        let json = serde_json::json!({ "error": r#"echo: q"uo\te-77"# }).to_string();
        assert!(!scrub(&json).contains("uo"), "{json} -> {}", scrub(&json));
        let debug = format!("{:?}", r#"q"uo\te-77"#);
        assert_eq!(scrub(&debug), format!("\"{REDACTED}\""));
    }

    #[test]
    fn literal_credentials_under_credential_names_are_registered() {
        register_named("Authorization", "Bearer lit-token-5150");
        register_named("api_key", "lit-key-5150");
        assert_eq!(
            scrub("got lit-token-5150 and lit-key-5150"),
            "got *** and ***"
        );
        // Names that merely contain a marker hold ordinary words.
        for (k, v) in [
            ("page", "not-a-secret-5150"),
            ("page_token", "cursor-5150"),
            ("sasl.oauthbearer.client.id", "ferry-5150"),
            ("ssl.keystore.location", "/etc/ferry/keys-5150"),
        ] {
            register_named(k, v);
            assert_eq!(scrub(v), v, "{k}");
        }
    }

    #[test]
    fn short_values_are_not_scrubbed_by_value() {
        register("ab");
        assert_eq!(scrub("a cab"), "a cab");
    }

    #[test]
    fn urls_lose_passwords_and_secret_query_values() {
        let u = url("https://user:pw@api.example.com/c?api_key=k123&page=2&access_token=t");
        assert_eq!(
            u,
            "https://user:***@api.example.com/c?api_key=***&page=2&access_token=***"
        );
        assert_eq!(url("not a url"), "not a url");
    }

    #[test]
    fn dynamic_secrets_are_bounded() {
        for i in 0..(MAX_DYNAMIC + 10) {
            register_dynamic(&format!("token-{i:05}"));
        }
        assert!(scrub("token-00000").contains("token-00000"), "forgotten");
        assert!(!scrub(&format!("token-{:05}", MAX_DYNAMIC + 9)).contains("token"));
    }
}
