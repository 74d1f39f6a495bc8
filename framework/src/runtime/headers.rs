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
/// The sender's delivery id of a webhook (`webhook-id`, `X-GitHub-Delivery`,
/// the Stripe event id, ...): repeats that reached different Ferry workers
/// carry the same one.
pub const DELIVERY_ID: &str = "ferry-delivery-id";
/// The envelope `id` of the event a mapped (normalized) record was made
/// from: a repeat of the event carries the same one.
pub const EVENT_ID: &str = "ferry-event-id";

/// Headers of a dead letter (a record a sink could not deliver), beside the
/// record's own headers. Times are Unix epoch milliseconds.
pub mod dead_letter {
    /// `decode` (the value cannot be decoded), `rejected` (the target
    /// refused it for good), `mapping` (a source's mapping or the topic's
    /// schema refused it), `parked` (`fallback: { topic }`),
    /// `retries_exhausted` (`ordering: relaxed`, past
    /// `retry.max_elapsed`).
    pub const ERROR_CLASS: &str = "ferry-dlq-error-class";
    /// The HTTP status of the last failure, when there was one.
    pub const ERROR_STATUS: &str = "ferry-dlq-error-status";
    /// The last failure's message, redacted.
    pub const ERROR_MESSAGE: &str = "ferry-dlq-error-message";
    /// Attempts made to deliver the record.
    pub const ATTEMPTS: &str = "ferry-dlq-attempts";
    pub const FIRST_FAILURE_MS: &str = "ferry-dlq-first-failure-ms";
    pub const LAST_FAILURE_MS: &str = "ferry-dlq-last-failure-ms";
    /// The sink connector that gave up on it.
    pub const CONNECTOR: &str = "ferry-dlq-connector";
    pub const SOURCE_TOPIC: &str = "ferry-dlq-source-topic";
    pub const SOURCE_PARTITION: &str = "ferry-dlq-source-partition";
    pub const SOURCE_OFFSET: &str = "ferry-dlq-source-offset";
    /// Set (to the value's size) when the value was too large to go with
    /// the dead-letter headers: it is still in the source topic.
    pub const VALUE_OMITTED: &str = "ferry-dlq-value-omitted";
    /// A mapping failure: the target field (`email`, `address.city`).
    pub const MAPPING_FIELD: &str = "ferry-dlq-mapping-field";
    /// A mapping failure: the rule that failed (`email`, `required`, ...).
    pub const MAPPING_RULE: &str = "ferry-dlq-mapping-rule";
    /// A mapping failure: where in the payload the value was read.
    pub const MAPPING_SOURCE: &str = "ferry-dlq-mapping-source";
    /// How many times `ferry dlq replay` has put it back already.
    pub const REPLAYS: &str = "ferry-dlq-replays";
    /// On a retry topic's record: which retry topic (0 = the first).
    pub const RETRY_STAGE: &str = "ferry-retry-stage";
    /// On a retry topic's record: not to be tried again before this.
    pub const RETRY_NOT_BEFORE_MS: &str = "ferry-retry-not-before-ms";

    /// Every header above: a dead letter that goes back to the DLQ again
    /// carries fresh ones, not both.
    pub const ALL: &[&str] = &[
        ERROR_CLASS,
        ERROR_STATUS,
        ERROR_MESSAGE,
        ATTEMPTS,
        FIRST_FAILURE_MS,
        LAST_FAILURE_MS,
        CONNECTOR,
        SOURCE_TOPIC,
        SOURCE_PARTITION,
        SOURCE_OFFSET,
        RETRY_STAGE,
        RETRY_NOT_BEFORE_MS,
        VALUE_OMITTED,
        MAPPING_FIELD,
        MAPPING_RULE,
        MAPPING_SOURCE,
    ];
}
