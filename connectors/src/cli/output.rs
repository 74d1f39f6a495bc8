//! How bytes from Kafka are shown as JSON: embedded JSON when they are JSON,
//! a string when they are UTF-8 text, `{"base64": ...}` otherwise.

use base64::Engine;
use serde_json::Value;

pub(crate) fn bytes_to_json(bytes: Option<&[u8]>) -> Value {
    let Some(bytes) = bytes else {
        return Value::Null;
    };
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())),
        Err(_) => {
            serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) })
        }
    }
}

/// Header values are shown as text when they are UTF-8, else base64.
pub(crate) fn header_to_json(bytes: Option<&[u8]>) -> Value {
    match bytes.map(std::str::from_utf8) {
        None => Value::Null,
        Some(Ok(text)) => Value::String(text.to_owned()),
        Some(Err(_)) => bytes_to_json(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_and_binary_are_told_apart() {
        assert_eq!(
            bytes_to_json(Some(br#"{"a":1}"#)),
            serde_json::json!({"a": 1})
        );
        assert_eq!(bytes_to_json(Some(b"hello")), serde_json::json!("hello"));
        assert_eq!(
            bytes_to_json(Some(&[0xff, 0x00])),
            serde_json::json!({"base64": "/wA="})
        );
        assert_eq!(bytes_to_json(None), Value::Null);
    }
}
