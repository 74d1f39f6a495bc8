//! Topic administration. Ferry creates every topic it uses: brokers with
//! auto-creation off (and tansu, which has none) refuse writes to a missing topic.

use super::{FerryClientContext, KafkaConfig, KafkaLayerError};
use crate::config::TopicSpec;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// A topic as the brokers describe it.
#[derive(Debug, Clone, Serialize)]
pub struct TopicDescription {
    pub name: String,
    pub partitions: Vec<PartitionDescription>,
    /// Topic configs, when the broker answers DescribeConfigs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionDescription {
    pub id: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub in_sync_replicas: Vec<i32>,
}

/// What [`KafkaAdmin::ensure_topic`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    Created,
    AlreadyExisted,
}

/// Admin client. Cheap to clone.
#[derive(Clone)]
pub struct KafkaAdmin {
    inner: Arc<AdminClient<FerryClientContext>>,
    timeout: Duration,
    bootstrap: String,
}

impl KafkaAdmin {
    pub fn new(config: &KafkaConfig, bootstrap_servers: &str) -> Result<Self, KafkaLayerError> {
        let inner = config
            .client_config(bootstrap_servers)
            .create_with_context(FerryClientContext::default())
            .map_err(KafkaLayerError::ClientConfig)?;
        Ok(Self {
            inner: Arc::new(inner),
            timeout: config.request_timeout,
            bootstrap: bootstrap_servers.to_owned(),
        })
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout))
    }

    /// Creates `spec.name` unless it exists. An existing topic is left as it
    /// is (its partition count and configs are not changed).
    pub async fn ensure_topic(&self, spec: &TopicSpec) -> Result<Ensured, KafkaLayerError> {
        let replication = spec
            .replication_factor
            .map_or(-1, |r| i32::try_from(r.get()).unwrap_or(i32::MAX));
        let partitions = i32::try_from(spec.partitions.get()).unwrap_or(i32::MAX);
        let mut topic = NewTopic::new(&spec.name, partitions, TopicReplication::Fixed(replication));
        for (k, v) in &spec.config {
            topic = topic.set(k, v);
        }
        let results = self
            .inner
            .create_topics([&topic], &self.options())
            .await
            .map_err(|source| {
                self.unreachable_or(source, format!("creating topic `{}`", spec.name))
            })?;
        match results.into_iter().next() {
            Some(Ok(_)) => Ok(Ensured::Created),
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(Ensured::AlreadyExisted),
            Some(Err((name, code))) => Err(KafkaLayerError::Topic {
                topic: name,
                message: format!("the broker refused to create it: {code}"),
            }),
            None => Err(KafkaLayerError::Topic {
                topic: spec.name.clone(),
                message: "the broker gave no answer to CreateTopics".into(),
            }),
        }
    }

    /// Creates a topic Ferry keeps state in (source positions, schemas):
    /// compacted, so each key's last value stays forever. An existing topic
    /// must be compacted too: under `cleanup.policy=delete` its records
    /// would be deleted after the retention time, and the state with them.
    /// Brokers that do not answer DescribeConfigs are trusted (logged).
    pub async fn ensure_state_topic(
        &self,
        spec: &TopicSpec,
        config_key: &str,
    ) -> Result<Ensured, KafkaLayerError> {
        let outcome = self.ensure_topic(spec).await?;
        if outcome == Ensured::Created {
            return Ok(outcome);
        }
        match self.topic_config(&spec.name).await {
            Some(config) => {
                let policy = config
                    .get("cleanup.policy")
                    .map_or("delete", String::as_str);
                // `compact,delete` still deletes after retention: a position
                // that has not changed for a week would go (Kafka Connect
                // demands exactly `compact` too).
                if policy.split(',').map(str::trim).ne(["compact"]) {
                    return Err(KafkaLayerError::Topic {
                        topic: spec.name.clone(),
                        message: format!(
                            "exists with cleanup.policy={policy}, but Ferry keeps state in it and needs exactly `compact` (otherwise the state is deleted with old records); set cleanup.policy=compact on it, or name another topic in `{config_key}`"
                        ),
                    });
                }
            }
            None => {
                tracing::warn!(topic = %spec.name, "the broker did not describe the topic's configs; trusting that it is compacted");
            }
        }
        Ok(outcome)
    }

    /// Creates every topic in `specs` that does not exist yet.
    pub async fn ensure_topics(&self, specs: &[TopicSpec]) -> Result<(), KafkaLayerError> {
        for spec in specs {
            let outcome = self.ensure_topic(spec).await?;
            tracing::info!(topic = %spec.name, ?outcome, "topic ensured");
        }
        Ok(())
    }

    /// Every topic the cluster has, with its partitions, sorted by name.
    pub async fn describe_all(&self) -> Result<Vec<TopicDescription>, KafkaLayerError> {
        self.metadata(None).await
    }

    /// One topic with its partitions and (where the broker answers) configs.
    pub async fn describe(&self, topic: &str) -> Result<TopicDescription, KafkaLayerError> {
        let mut found = self.metadata(Some(topic.to_owned())).await?;
        let mut d = found
            .pop()
            .filter(|d| d.name == topic && !d.partitions.is_empty())
            .ok_or_else(|| KafkaLayerError::Topic {
                topic: topic.to_owned(),
                message: "no such topic".into(),
            })?;
        d.config = self.topic_config(topic).await;
        Ok(d)
    }

    async fn topic_config(
        &self,
        topic: &str,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        let results = self
            .inner
            .describe_configs([&ResourceSpecifier::Topic(topic)], &self.options())
            .await
            .ok()?;
        let resource = results.into_iter().next()?.ok()?;
        Some(
            resource
                .entries
                .into_iter()
                .filter_map(|e| e.value.map(|v| (e.name, v)))
                .collect(),
        )
    }

    async fn metadata(
        &self,
        topic: Option<String>,
    ) -> Result<Vec<TopicDescription>, KafkaLayerError> {
        let inner = self.inner.clone();
        let timeout = self.timeout;
        let md = tokio::task::spawn_blocking(move || {
            inner.inner().fetch_metadata(topic.as_deref(), timeout)
        })
        .await
        .map_err(|e| KafkaLayerError::Topic {
            topic: "*".into(),
            message: format!("metadata task failed: {e}"),
        })?
        .map_err(|source| self.unreachable_or(source, "fetching metadata".into()))?;
        let mut topics: Vec<TopicDescription> = md
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| TopicDescription {
                name: t.name().to_owned(),
                partitions: t
                    .partitions()
                    .iter()
                    .map(|p| PartitionDescription {
                        id: p.id(),
                        leader: p.leader(),
                        replicas: p.replicas().to_vec(),
                        in_sync_replicas: p.isr().to_vec(),
                    })
                    .collect(),
                config: None,
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    fn unreachable_or(
        &self,
        source: rdkafka::error::KafkaError,
        context: String,
    ) -> KafkaLayerError {
        use rdkafka::error::KafkaError as E;
        match &source {
            E::MetadataFetch(
                RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::AllBrokersDown,
            )
            | E::AdminOp(RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::AllBrokersDown) => {
                KafkaLayerError::Unreachable {
                    bootstrap: self.bootstrap.clone(),
                    timeout: self.timeout,
                    source,
                }
            }
            _ => KafkaLayerError::Client { context, source },
        }
    }
}
