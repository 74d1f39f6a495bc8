//! The Confluent Schema Registry REST contract: request and response bodies,
//! and the error codes both sides speak. The server writes these; the client
//! reads them from any compatible registry (Confluent, Karapace, Apicurio's
//! ccompat API, Redpanda, Ferry's own).

use crate::schema::CompatibilityLevel;
use serde::{Deserialize, Serialize};

/// The media type Confluent's clients send and expect.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// `POST /subjects/{s}/versions` and `POST /subjects/{s}` bodies. Unknown
/// fields (`metadata`, `ruleSet`, ...) are accepted and ignored, as newer
/// clients send them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRequest {
    pub schema: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<serde_json::Value>,
}

/// `POST /subjects/{s}/versions` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisteredId {
    pub id: u32,
}

/// One version of a subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
}

/// `GET /schemas/ids/{id}` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchemaById {
    pub schema: String,
}

/// `POST /compatibility/...` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompatibilityAnswer {
    pub is_compatible: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<String>,
}

/// `GET /config` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigAnswer {
    pub compatibility_level: CompatibilityLevel,
}

/// `PUT /config` body and answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigUpdate {
    pub compatibility: CompatibilityLevel,
}

/// Confluent's error body: `{"error_code": 40401, "message": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error_code: u32,
    pub message: String,
}

/// Confluent's error codes. The first three digits are the HTTP status.
pub mod code {
    pub const SUBJECT_NOT_FOUND: u32 = 40401;
    pub const VERSION_NOT_FOUND: u32 = 40402;
    pub const SCHEMA_NOT_FOUND: u32 = 40403;
    pub const SUBJECT_CONFIG_NOT_FOUND: u32 = 40408;
    pub const INCOMPATIBLE_SCHEMA: u32 = 409;
    pub const INVALID_SCHEMA: u32 = 42201;
    pub const INVALID_VERSION: u32 = 42202;
    pub const INVALID_COMPATIBILITY_LEVEL: u32 = 42203;
    pub const STORE_ERROR: u32 = 50001;
    pub const STORE_TIMEOUT: u32 = 50002;

    /// The HTTP status a code travels with.
    pub fn status(code: u32) -> u16 {
        match code {
            c if c >= 10_000 => u16::try_from(c / 100).unwrap_or(500),
            c => u16::try_from(c).unwrap_or(500),
        }
    }
}

/// A version in a path: a number from 1, or `latest` (also `-1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef {
    Number(u32),
    Latest,
}

impl VersionRef {
    /// Parses a path segment; `None` for anything else (42202).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "latest" | "-1" => Some(Self::Latest),
            n => n.parse::<u32>().ok().filter(|n| *n > 0).map(Self::Number),
        }
    }
}

impl std::fmt::Display for VersionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Latest => f.write_str("latest"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_carry_their_status() {
        assert_eq!(code::status(code::SUBJECT_NOT_FOUND), 404);
        assert_eq!(code::status(code::INVALID_SCHEMA), 422);
        assert_eq!(code::status(code::INCOMPATIBLE_SCHEMA), 409);
        assert_eq!(code::status(code::STORE_TIMEOUT), 500);
    }

    #[test]
    fn versions_parse_like_confluent() {
        assert_eq!(VersionRef::parse("latest"), Some(VersionRef::Latest));
        assert_eq!(VersionRef::parse("-1"), Some(VersionRef::Latest));
        assert_eq!(VersionRef::parse("3"), Some(VersionRef::Number(3)));
        assert_eq!(VersionRef::parse("0"), None);
        assert_eq!(VersionRef::parse("x"), None);
    }

    #[test]
    fn requests_from_newer_clients_with_extra_fields_parse() {
        let r: SchemaRequest = serde_json::from_str(
            r#"{"schema": "\"string\"", "schemaType": "AVRO", "metadata": null, "ruleSet": null}"#,
        )
        .expect("parses");
        assert_eq!(r.schema_type.as_deref(), Some("AVRO"));
    }
}
