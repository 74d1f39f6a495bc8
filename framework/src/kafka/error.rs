use rdkafka::error::KafkaError;
use std::net::SocketAddr;

/// Errors from the Kafka layer's clients (admin, consumer, health).
#[derive(Debug, thiserror::Error)]
pub enum KafkaLayerError {
    /// librdkafka refused the client configuration.
    #[error("invalid Kafka client configuration: {0}")]
    ClientConfig(#[source] KafkaError),
    /// No broker answered within the timeout.
    #[error("cannot reach Kafka at {bootstrap} (no answer within {timeout:?}): {source}")]
    Unreachable {
        bootstrap: String,
        timeout: std::time::Duration,
        #[source]
        source: KafkaError,
    },
    /// The broker refused an operation on a topic.
    #[error("topic `{topic}`: {message}")]
    Topic { topic: String, message: String },
    /// Any other client error.
    #[error("{context}: {source}")]
    Client {
        context: String,
        #[source]
        source: KafkaError,
    },
}

impl KafkaLayerError {
    /// Whether trying again later can help (a broker that is down may come back;
    /// a bad config will not fix itself).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Client { .. })
    }
}

/// A record Kafka did not accept. The record is handed back so nothing is lost.
#[derive(Debug, thiserror::Error)]
#[error("produce to `{topic}` failed: {source}")]
pub struct ProduceError {
    pub topic: String,
    #[source]
    pub source: KafkaError,
    /// The record's key and payload, returned to the caller.
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

impl ProduceError {
    /// librdkafka has already retried up to `delivery_timeout`; what reaches the
    /// caller is retryable only if the broker may still accept it later.
    pub fn is_retryable(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode as C;
        !matches!(
            self.source.rdkafka_error_code(),
            Some(
                C::MessageSizeTooLarge
                    | C::InvalidMessageSize
                    | C::TopicAuthorizationFailed
                    | C::UnknownTopicOrPartition
                    | C::UnknownTopic
                    | C::InvalidRecord
            )
        )
    }
}

/// Errors starting the embedded broker.
#[derive(Debug, thiserror::Error)]
pub enum DevBrokerError {
    #[error("embedded broker: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("embedded broker: cannot use data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("embedded broker: {0}")]
    Start(String),
    #[error("embedded broker on {addr} did not accept connections within {waited:?}")]
    NotReady {
        addr: SocketAddr,
        waited: std::time::Duration,
    },
}
