//! The redaction policy: which keys hold secrets. Logs, error messages and any
//! printed configuration pass values through [`redact_value`].

/// Substrings that mark a key as secret (matched case-insensitively).
const SECRET_MARKERS: &[&str] = &[
    "password",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "api-key",
    "credential",
    "private_key",
    "sasl.oauthbearer",
    "ssl.key",
];

/// The text shown in place of a secret.
pub const REDACTED: &str = "***";

/// Whether a key (config key, header name, librdkafka option) holds a secret.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hidden_and_the_rest_is_not() {
        assert_eq!(redact_value("sasl.password", "hunter2"), REDACTED);
        assert_eq!(redact_value("Authorization", "Bearer x"), REDACTED);
        assert_eq!(redact_value("X-Api-Key", "k"), REDACTED);
        assert_eq!(redact_value("socket.keepalive.enable", "true"), "true");
    }
}
