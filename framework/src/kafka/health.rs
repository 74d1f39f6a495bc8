//! Is Kafka reachable? One metadata round trip on a quiet client.

use super::{FerryClientContext, KafkaConfig, KafkaLayerError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::sync::Arc;
use std::time::Duration;

/// A probe for startup and `/ready`.
#[derive(Clone)]
pub struct KafkaHealth {
    client: Arc<BaseConsumer<FerryClientContext>>,
    bootstrap: String,
}

impl KafkaHealth {
    pub fn new(config: &KafkaConfig, bootstrap_servers: &str) -> Result<Self, KafkaLayerError> {
        let client = config
            .client_config(bootstrap_servers)
            .create_with_context(FerryClientContext::quiet())
            .map_err(KafkaLayerError::ClientConfig)?;
        Ok(Self {
            client: Arc::new(client),
            bootstrap: bootstrap_servers.to_owned(),
        })
    }

    /// Ok with the number of brokers when the cluster answers within `timeout`.
    pub async fn check(&self, timeout: Duration) -> Result<usize, KafkaLayerError> {
        let client = self.client.clone();
        let md = tokio::task::spawn_blocking(move || client.fetch_metadata(None, timeout))
            .await
            .map_err(|e| KafkaLayerError::Topic {
                topic: "*".into(),
                message: format!("health task failed: {e}"),
            })?;
        md.map(|md| md.brokers().len())
            .map_err(|source| KafkaLayerError::Unreachable {
                bootstrap: self.bootstrap.clone(),
                timeout,
                source,
            })
    }

    /// Waits until the cluster answers or `deadline` has passed.
    pub async fn wait_ready(&self, deadline: Duration) -> Result<usize, KafkaLayerError> {
        let start = tokio::time::Instant::now();
        loop {
            let left = deadline.saturating_sub(start.elapsed());
            let attempt = left
                .min(Duration::from_secs(2))
                .max(Duration::from_millis(200));
            match self.check(attempt).await {
                Ok(n) => return Ok(n),
                Err(e) if start.elapsed() >= deadline => {
                    return Err(match e {
                        KafkaLayerError::Unreachable {
                            bootstrap, source, ..
                        } => KafkaLayerError::Unreachable {
                            bootstrap,
                            timeout: deadline,
                            source,
                        },
                        other => other,
                    })
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}
