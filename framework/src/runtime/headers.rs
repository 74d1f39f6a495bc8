//! The Kafka headers Ferry puts on every record it writes.

/// Correlation id, carried from the source through logs to the sink's calls.
pub const CORRELATION_ID: &str = "ferry-correlation-id";
/// The connector that wrote the record.
pub const SOURCE_CONNECTOR: &str = "ferry-source-connector";
/// The schema registry subject of the value schema.
pub const SCHEMA_SUBJECT: &str = "ferry-schema-subject";
/// The subject version of the value schema.
pub const SCHEMA_VERSION: &str = "ferry-schema-version";
/// The media type of what the source received.
pub const CONTENT_TYPE: &str = "content-type";
