//! Every metric Ferry emits is named here, and nowhere else.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Records Kafka acknowledged.
pub const KAFKA_PRODUCED_RECORDS_TOTAL: &str = "ferry_kafka_produced_records_total";
/// Key plus payload bytes of records Kafka acknowledged.
pub const KAFKA_PRODUCED_BYTES_TOTAL: &str = "ferry_kafka_produced_bytes_total";
/// Records Kafka did not accept after librdkafka's retries.
pub const KAFKA_PRODUCE_ERRORS_TOTAL: &str = "ferry_kafka_produce_errors_total";
/// Records received from Kafka.
pub const KAFKA_CONSUMED_RECORDS_TOTAL: &str = "ferry_kafka_consumed_records_total";
/// Non-fatal errors a consumer reported (a broker transport failure, a
/// coordinator moving); the consumer carries on.
pub const KAFKA_CONSUME_ERRORS_TOTAL: &str = "ferry_kafka_consume_errors_total";
/// Partitions a sink gave back to its group after a revocation, by `connector`.
pub const SINK_PARTITIONS_REVOKED_TOTAL: &str = "ferry_sink_partitions_revoked_total";
/// Records a sink dropped unwritten because their partition was revoked
/// (the new owner reads them from the committed offset), by `connector`.
pub const SINK_RECORDS_RELEASED_TOTAL: &str = "ferry_sink_records_released_total";
/// Registry log records the registry could not read (written by something else, or garbled).
pub const SCHEMA_LOG_SKIPPED_RECORDS_TOTAL: &str = "ferry_schema_log_skipped_records_total";
/// Schema registry HTTP requests answered, by `status` class (2xx, 4xx, 5xx).
pub const SCHEMA_REGISTRY_REQUESTS_TOTAL: &str = "ferry_schema_registry_requests_total";
/// Records a source connector got into Kafka, by `connector`.
pub const SOURCE_RECORDS_TOTAL: &str = "ferry_source_records_total";
/// Source failures, by `connector` and `stage` (receiving, processing, sending).
pub const SOURCE_ERRORS_TOTAL: &str = "ferry_source_errors_total";
/// Records a sink connector wrote to its target, by `connector`.
pub const SINK_RECORDS_TOTAL: &str = "ferry_sink_records_total";
/// Sink failures, by `connector` and `stage`.
pub const SINK_ERRORS_TOTAL: &str = "ferry_sink_errors_total";
/// Records a sink holds in memory (consumed, not yet written), by `connector`.
pub const SINK_IN_FLIGHT_RECORDS: &str = "ferry_sink_in_flight_records";
/// Connector task restarts after a failure, by `connector`.
pub const CONNECTOR_RESTARTS_TOTAL: &str = "ferry_connector_restarts_total";
/// Connectors stopped for good by a failure that retrying cannot fix, by `connector`.
pub const CONNECTOR_FAILURES_TOTAL: &str = "ferry_connector_failures_total";
/// A target's circuit breaker, by `target`: 0 closed, 1 half-open, 2 open.
pub const CIRCUIT_STATE: &str = "ferry_circuit_state";
/// Calls a circuit breaker held back (open, or every probe out), by `target`.
pub const CIRCUIT_REJECTED_TOTAL: &str = "ferry_circuit_rejected_total";
/// The request limit a target advertised for its window, by `target`.
pub const RATE_LIMIT_LIMIT: &str = "ferry_rate_limit_limit";
/// Requests Ferry may still send to a target in its window, by `target`.
pub const RATE_LIMIT_REMAINING: &str = "ferry_rate_limit_remaining";
/// Share of a target's advertised limit used in its window (0 to 1), by `target`.
pub const RATE_LIMIT_UTILIZATION: &str = "ferry_rate_limit_utilization";
/// Outbound calls retried after a failure that may pass, by `connector`.
pub const OUTBOUND_RETRIES_TOTAL: &str = "ferry_outbound_retries_total";
/// Records a sink moved to a retry topic (`ordering: relaxed`), by `connector`.
pub const RETRY_TOPIC_RECORDS_TOTAL: &str = "ferry_retry_topic_records_total";
/// Records a sink parked in its fallback topic (target unavailable), by `connector`.
pub const PARKED_RECORDS_TOTAL: &str = "ferry_parked_records_total";
/// Records a sink sent to its dead-letter topic, by `connector` and `class`.
pub const DEAD_LETTERS_TOTAL: &str = "ferry_dead_letters_total";
/// Requests to a webhook endpoint, by `connector` and `outcome`
/// (`stored_kafka`, `stored_spool`, `duplicate`, `unauthorized`,
/// `bad_request`, `too_large`, `unsupported_media_type`, `rate_limited`,
/// `unknown_type`, `kafka_refused`, `in_progress`, `unavailable`, `busy`, `timeout`)
/// and, for 401s,
/// `reason` (`missing_signature`, `malformed_signature`, `bad_signature`,
/// `expired`, `future`; else `none`).
pub const WEBHOOK_REQUESTS_TOTAL: &str = "ferry_webhook_requests_total";
/// Seconds from a webhook request's arrival to its answer, by `connector`.
pub const WEBHOOK_REQUEST_DURATION_SECONDS: &str = "ferry_webhook_request_duration_seconds";
/// Events in a webhook connector's spool, not yet acknowledged by Kafka.
pub const WEBHOOK_SPOOL_RECORDS: &str = "ferry_webhook_spool_records";
/// Bytes those events take on disk.
pub const WEBHOOK_SPOOL_BYTES: &str = "ferry_webhook_spool_bytes";
/// Age of the oldest event in the spool (0 when empty).
pub const WEBHOOK_SPOOL_OLDEST_AGE_SECONDS: &str = "ferry_webhook_spool_oldest_age_seconds";
/// Events drained from the spool to Kafka.
pub const WEBHOOK_SPOOL_DRAINED_TOTAL: &str = "ferry_webhook_spool_drained_records_total";
/// Spooled events Kafka refuses for good (too large, invalid), kept in
/// `<data_dir>/webhooks/<connector>/rejected/` instead.
pub const WEBHOOK_SPOOL_REJECTED_TOTAL: &str = "ferry_webhook_spool_rejected_total";
/// Always 1; labels carry the version.
pub const BUILD_INFO: &str = "ferry_build_info";
/// 1 while the last readiness probe reached Kafka, else 0.
pub const KAFKA_READY: &str = "ferry_kafka_ready";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns the handle
/// `/metrics` renders from.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder was already installed; /metrics shows only Ferry's own"
                );
            }
            metrics::gauge!(BUILD_INFO, "version" => crate::VERSION).set(1.0);
            handle
        })
        .clone()
}
