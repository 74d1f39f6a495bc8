//! A Ferry process: start everything in a fixed order, run, drain in reverse.
//!
//! Start order: admin and registry listeners bound (a port in use fails before
//! anything else starts), Kafka (embedded broker if allowed and no bootstrap
//! servers are configured), Kafka reachable, topics created, schema registry
//! replayed and served (unless an external one is configured), topic schemas
//! registered, producer, admin API served.
//! Stop order: HTTP listeners, producer flushed, registry log reader, embedded
//! broker last, so every client has flushed before the broker goes away.

use crate::admin::{self, AdminBindError, AdminState};
use crate::config::{FerryConfig, TopicSpec};
use crate::kafka::{KafkaAdmin, KafkaConfig, KafkaHealth, KafkaLayerError, KafkaProducer};
use crate::runtime::connectors::Planned;
use crate::runtime::offsets::{OffsetStore, OffsetsError};
use crate::runtime::supervisor::{supervise, Statuses};
use crate::runtime::target::SourceTarget;
use crate::runtime::Shutdown;
use crate::schema::bindings::{topic_bindings, Binding};
use crate::schema::registry::log::LogError;
use crate::schema::registry::{self, Codecs, CodecsError, Registry};
use crate::schema::AvroCodec;
use crate::schema::Part;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// A push connector as `start_connectors` hands it to the listener: name,
/// topics, mount, and the mapping of each mapped topic.
type Pushed = (
    String,
    Vec<TopicSpec>,
    crate::ingress::Mount,
    std::collections::BTreeMap<String, super::SourceMapping>,
);

/// Whether this process may start the embedded broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerMode {
    /// `ferry up`: embed a broker when `kafka.bootstrap_servers` is unset.
    EmbedIfUnset,
    /// `ferry run`: always use an external Kafka.
    External,
}

/// Why a process did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `ferry run` (or a build without the embedded broker) with no brokers configured.
    #[error("{origin}: key `kafka.bootstrap_servers`: not set; {hint}")]
    NoBootstrap { origin: String, hint: &'static str },
    #[error(transparent)]
    Admin(#[from] AdminBindError),
    #[cfg(feature = "embedded-broker")]
    #[error(transparent)]
    Broker(#[from] crate::kafka::DevBrokerError),
    #[error(transparent)]
    Kafka(#[from] KafkaLayerError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("schema registry: cannot listen on {addr}: {source}")]
    RegistryBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("schema registry: {0}")]
    RegistryLog(#[from] LogError),
    #[error("schema registry: {0}")]
    RegistryClient(#[from] registry::ClientError),
    #[error(transparent)]
    Offsets(#[from] OffsetsError),
    /// A source's topic has no registered value schema.
    #[error("connector `{connector}`: topic `{topic}` has no value schema registered")]
    NoSchema { connector: String, topic: String },
    #[error(transparent)]
    Webhooks(#[from] crate::ingress::listener::ListenError),
    /// A webhook connector's spool or delivery-id file cannot be opened, or
    /// its path is taken by another.
    #[error("connector `{connector}`: {message}")]
    WebhookState { connector: String, message: String },
    /// A topic's schema was refused (incompatible with the registered one, say).
    #[error("{origin}: topic `{topic}`: schema {} under subject `{subject}`: {source}", file.display())]
    Schema {
        origin: String,
        topic: String,
        subject: String,
        file: PathBuf,
        #[source]
        source: CodecsError,
    },
}

impl StartError {
    /// A configuration mistake (exit code 2) rather than a runtime failure (1).
    pub fn is_config_error(&self) -> bool {
        match self {
            Self::NoBootstrap { .. } | Self::Config(_) => true,
            Self::Schema { source, .. } => !source.is_retryable(),
            _ => false,
        }
    }
}

/// Where a running process can be reached.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `bootstrap.servers` for clients.
    pub kafka: String,
    /// Whether that is the embedded broker.
    pub embedded_broker: bool,
    /// The embedded broker's data file, when it keeps one.
    pub broker_data: Option<PathBuf>,
    pub admin: SocketAddr,
    /// The webhook listener, once a webhook connector is started.
    pub webhooks: Option<SocketAddr>,
    /// The schema registry clients use.
    pub schema_registry: String,
    /// Whether that is the registry this process serves.
    pub schema_registry_served: bool,
}

/// A topic's schema as registered at startup.
#[derive(Debug, Clone)]
pub struct RegisteredSchema {
    pub binding: Binding,
    pub codec: AvroCodec,
    /// The subject version that holds it.
    pub version: u32,
}

/// A started process. Call [`Running::shutdown`] to drain it.
pub struct Running {
    pub endpoints: Endpoints,
    pub producer: KafkaProducer,
    pub admin_client: KafkaAdmin,
    /// Codecs through the registry (Ferry's own or the configured one).
    pub codecs: Codecs,
    /// The schemas topics declare, registered.
    pub schemas: Vec<RegisteredSchema>,
    /// Every connector's state.
    pub statuses: Statuses,
    kafka: KafkaConfig,
    webhooks: crate::ingress::WebhooksConfig,
    data_dir: PathBuf,
    offsets_topic: String,
    offsets: Option<OffsetStore>,
    budget: StopBudget,
    connector_tasks: Vec<JoinHandle<()>>,
    shutdown: Shutdown,
    admin_task: JoinHandle<()>,
    registry_task: Option<JoinHandle<()>>,
    #[cfg(feature = "embedded-broker")]
    broker: Option<crate::kafka::DevBroker>,
}

impl Running {
    /// Starts Ferry from a validated `config` (`origin` names its file).
    pub async fn start(
        config: &FerryConfig,
        origin: &str,
        mode: BrokerMode,
    ) -> Result<Self, StartError> {
        let metrics = crate::telemetry::metrics::install();
        let admin_listener = admin::bind(config.admin.listen).await?;
        let admin_addr = admin_listener.local_addr().unwrap_or(config.admin.listen);
        let bindings = topic_bindings(config, origin)?;
        let registry_listener = if config.schema_registry.serves() {
            let addr = config.schema_registry.listen;
            Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::RegistryBind { addr, source })?,
            )
        } else {
            None
        };

        #[cfg(feature = "embedded-broker")]
        let mut broker = None;
        // Set only when the broker is embedded, which a build without the feature never does.
        #[cfg_attr(not(feature = "embedded-broker"), allow(unused_mut))]
        let mut broker_data = None;
        #[cfg_attr(not(feature = "embedded-broker"), allow(unused_mut))]
        let mut embedded_broker = false;
        let bootstrap = match (&config.kafka.bootstrap_servers, mode) {
            (Some(b), _) => b.clone(),
            (None, BrokerMode::External) => {
                return Err(StartError::NoBootstrap {
                    origin: origin.to_owned(),
                    hint: "`ferry run` needs an external Kafka (set it, or FERRY__KAFKA__BOOTSTRAP_SERVERS); `ferry up` starts an embedded broker instead",
                })
            }
            #[cfg(feature = "embedded-broker")]
            (None, BrokerMode::EmbedIfUnset) => {
                use crate::kafka::{BrokerStorage, DevBroker, StorageKind};
                let storage = match config.embedded_broker.storage {
                    StorageKind::Memory => BrokerStorage::Memory,
                    StorageKind::Sqlite => {
                        let path = config.data_dir.join("broker.db");
                        broker_data = Some(path.clone());
                        BrokerStorage::Sqlite(path)
                    }
                };
                let b = DevBroker::start(config.embedded_broker.listen, storage).await?;
                let servers = b.bootstrap_servers();
                broker = Some(b);
                embedded_broker = true;
                servers
            }
            #[cfg(not(feature = "embedded-broker"))]
            (None, BrokerMode::EmbedIfUnset) => {
                return Err(StartError::NoBootstrap {
                    origin: origin.to_owned(),
                    hint: "this build of Ferry has no embedded broker (feature `embedded-broker`)",
                })
            }
        };

        let started = async {
            let health = KafkaHealth::new(&config.kafka, &bootstrap)?;
            health.wait_ready(config.kafka.request_timeout).await?;
            let admin_client = KafkaAdmin::new(&config.kafka, &bootstrap)?;
            admin_client.ensure_topics(&config.topics).await?;
            let registry = match registry_listener {
                Some(_) => Some(Arc::new(
                    Registry::open(
                        &config.kafka,
                        &bootstrap,
                        &config.schema_registry.settings(),
                    )
                    .await?,
                )),
                None => None,
            };
            let producer = KafkaProducer::new(&config.kafka, &bootstrap)?;
            Ok::<_, StartError>((health, admin_client, registry, producer))
        }
        .await;
        let (health, admin_client, registry, producer) = match started {
            Ok(parts) => parts,
            Err(e) => {
                #[cfg(feature = "embedded-broker")]
                if let Some(b) = broker {
                    b.stop().await;
                }
                return Err(e);
            }
        };

        let shutdown = Shutdown::new();
        let registry_task = match (registry, registry_listener) {
            (Some(registry), Some(listener)) => {
                let router = registry::server::router(registry);
                let stop = shutdown.clone();
                Some(tokio::spawn(async move {
                    let served = axum::serve(listener, router)
                        .with_graceful_shutdown(stop.cancelled_owned())
                        .await;
                    if let Err(e) = served {
                        tracing::error!(error = %e, "schema registry stopped");
                    }
                }))
            }
            _ => None,
        };
        let statuses = Statuses::default();
        let router = admin::router(AdminState {
            kafka: health,
            metrics,
            connectors: statuses.clone(),
        });
        let stop = shutdown.clone();
        let admin_task = tokio::spawn(async move {
            let served = axum::serve(admin_listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "admin API stopped");
            }
        });

        let mut running = Self {
            endpoints: Endpoints {
                kafka: bootstrap,
                embedded_broker,
                broker_data,
                admin: admin_addr,
                webhooks: None,
                schema_registry: config.schema_registry.client_url(),
                schema_registry_served: registry_task.is_some(),
            },
            producer,
            admin_client,
            codecs: Codecs::new(config.schema_registry.client(None)?),
            schemas: Vec::new(),
            statuses,
            kafka: config.kafka.clone(),
            webhooks: config.webhooks.clone(),
            data_dir: config.data_dir.clone(),
            offsets_topic: config.offsets.topic.clone(),
            offsets: None,
            budget: StopBudget::new(config.shutdown_timeout),
            connector_tasks: Vec::new(),
            shutdown,
            admin_task,
            registry_task,
            #[cfg(feature = "embedded-broker")]
            broker,
        };
        for binding in bindings {
            let registered = async {
                let codec = running
                    .codecs
                    .register(&binding.subject, &binding.file.text)
                    .await?;
                let version = running
                    .codecs
                    .client()
                    .lookup(&binding.subject, &binding.file.text)
                    .await?
                    .map_or(0, |v| v.version);
                Ok::<_, CodecsError>((codec, version))
            };
            match registered.await {
                Ok((codec, version)) => {
                    tracing::info!(topic = %binding.topic, subject = %binding.subject, id = codec.id(), version, "topic schema registered");
                    running.schemas.push(RegisteredSchema {
                        binding,
                        codec,
                        version,
                    });
                }
                Err(source) => {
                    let error = StartError::Schema {
                        origin: origin.to_owned(),
                        topic: binding.topic.clone(),
                        subject: binding.subject.clone(),
                        file: binding.file.path.clone(),
                        source,
                    };
                    let _ = running.shutdown().await;
                    return Err(error);
                }
            }
        }
        Ok(running)
    }

    /// The registered schema of `topic`'s key or value, if it declares one.
    pub fn schema_of(&self, topic: &str, part: Part) -> Option<&RegisteredSchema> {
        self.schemas
            .iter()
            .find(|s| s.binding.topic == topic && s.binding.part == part)
    }

    /// Starts each connector as a supervised task. A source's topic must be
    /// among the config's topics with a `value_schema` (see `ferry up`,
    /// which adds connectors' topics before starting).
    pub async fn start_connectors(
        &mut self,
        planned: Vec<(String, Planned)>,
    ) -> Result<(), StartError> {
        let mut pushed = Vec::new();
        for (name, plan) in planned {
            match plan {
                Planned::Push {
                    topics,
                    mount,
                    mappings,
                } => {
                    for (topic, m) in &mappings {
                        if let Some(spec) = topics.iter().find(|t| &t.name == topic) {
                            self.source_dead_letter_topic(spec, &m.dead_letter_topic)
                                .await?;
                        }
                    }
                    pushed.push((name, topics, mount, mappings));
                }
                Planned::Source {
                    topic,
                    make,
                    mapping,
                } => {
                    if let Some(m) = &mapping {
                        self.source_dead_letter_topic(&topic, &m.dead_letter_topic)
                            .await?;
                    }
                    let mut target = self.target_of(&name, &topic.name)?;
                    target.mapping = mapping;
                    let offsets = match &self.offsets {
                        Some(o) => o.clone(),
                        None => {
                            let o = OffsetStore::open(
                                &self.kafka,
                                &self.endpoints.kafka,
                                &self.offsets_topic,
                                self.producer.clone(),
                            )
                            .await?;
                            self.offsets = Some(o.clone());
                            o
                        }
                    };
                    let producer = self.producer.clone();
                    let shutdown = self.shutdown.clone();
                    let task_name = name.clone();
                    let stop_budget = self.budget.task_drain();
                    let task = supervise(
                        name,
                        "source",
                        self.statuses.clone(),
                        self.shutdown.clone(),
                        move |_handle| {
                            let (make, target, producer, offsets, shutdown, name) = (
                                Arc::clone(&make),
                                target.clone(),
                                producer.clone(),
                                offsets.clone(),
                                shutdown.clone(),
                                task_name.clone(),
                            );
                            async move {
                                let source = make()?;
                                super::source_task::run(
                                    &name,
                                    source,
                                    &target,
                                    &producer,
                                    &offsets,
                                    &shutdown,
                                    stop_budget,
                                )
                                .await
                            }
                        },
                    );
                    self.connector_tasks.push(task);
                }
                Planned::Sink { settings, make } => {
                    let dead_letters = self.dead_letter_topic(&name, &settings).await?;
                    let output = self.outputs_of(&name, &settings.outputs)?;
                    // What `ferry dlq replay` puts back and what waits in
                    // the retry topics is delivered by a second task of the
                    // sink, in a group of its own: in the sink's group, the
                    // assignor would balance partitions across all topics,
                    // and a second process could end up with only these.
                    let mut returning = (*settings).clone();
                    returning.topics = dead_letters.returning_topics();
                    returning.group_id = format!("{}-returning", settings.group_id);
                    // Whatever `auto_offset_reset` says for the sink: what
                    // came back before this group's first commit is still
                    // to be delivered.
                    let mut returning_kafka = self.kafka.clone();
                    returning_kafka.consumer.auto_offset_reset =
                        crate::kafka::AutoOffsetReset::Earliest;
                    for (task_name, settings, kafka) in [
                        (name.clone(), *settings, self.kafka.clone()),
                        (format!("{name}.returning"), returning, returning_kafka),
                    ] {
                        let task = self.sink_task(
                            task_name,
                            settings,
                            kafka,
                            &make,
                            &dead_letters,
                            &output,
                        );
                        self.connector_tasks.push(task);
                    }
                }
            }
        }
        if !pushed.is_empty() {
            self.serve_webhooks(pushed)?;
        }
        Ok(())
    }

    /// Opens each push connector's spool and delivery-id window, starts its
    /// drain as a supervised task, and serves them all on `webhooks.listen`.
    // The error of `start_connectors`, which calls this once at startup
    // (clippy checks only non-async functions for the error's size).
    #[allow(clippy::result_large_err)]
    fn serve_webhooks(&mut self, pushed: Vec<Pushed>) -> Result<(), StartError> {
        use crate::ingress::{lane::Lane, listener, seen::Seen};
        let listener = listener::Listener::bind(&self.webhooks)?;
        let mut served: Vec<listener::Served> = Vec::new();
        for (name, topics, mount, mut mappings) in pushed {
            if let Some(other) = served.iter().find(|s| s.mount.path == mount.path) {
                return Err(StartError::WebhookState {
                    message: format!(
                        "path `{}` is already served by connector `{}`",
                        mount.path, other.name
                    ),
                    connector: name,
                });
            }
            let mut targets = std::collections::HashMap::new();
            let mut dead_letter_topics = Vec::new();
            for topic in &topics {
                let mut target = self.target_of(&name, &topic.name)?;
                target.mapping = mappings.remove(&topic.name);
                if let Some(m) = &target.mapping {
                    dead_letter_topics.push(m.dead_letter_topic.clone());
                }
                targets.insert(topic.name.clone(), target);
            }
            let dir = self.data_dir.join("webhooks").join(&name);
            let state_error = |message: String| StartError::WebhookState {
                connector: name.clone(),
                message,
            };
            let lane = Lane::open(
                &name,
                &dir.join("spool"),
                &self.webhooks.spool,
                self.producer.clone(),
                targets.keys().cloned().chain(dead_letter_topics),
            )
            .map_err(|e| state_error(e.to_string()))?;
            let seen = Seen::open(
                &dir.join("delivery-ids"),
                mount.dedup_window,
                mount.dedup_max,
                crate::schema::envelope::now_millis(),
            )
            .map_err(|e| state_error(e.to_string()))?;
            let drain = Arc::clone(&lane);
            let shutdown = self.shutdown.clone();
            let task = supervise(
                name.clone(),
                "source",
                self.statuses.clone(),
                self.shutdown.clone(),
                move |_handle| {
                    let (lane, shutdown) = (Arc::clone(&drain), shutdown.clone());
                    async move {
                        lane.drain(shutdown).await;
                        Ok(super::Exit::Stopped)
                    }
                },
            );
            self.connector_tasks.push(task);
            tracing::info!(connector = %name, path = %mount.path, "webhook served");
            served.push(listener::Served {
                name,
                mount,
                lane,
                seen: Arc::new(std::sync::Mutex::new(seen)),
                targets,
            });
        }
        let addr = listener.local_addr();
        tracing::info!(listen = ?addr, tls = self.webhooks.tls.is_some(), "webhook listener started");
        self.endpoints.webhooks = addr;
        let task = listener.serve(served, self.shutdown.clone(), self.budget.task_drain());
        self.connector_tasks.push(task);
        Ok(())
    }

    /// Supervises one sink task.
    fn sink_task(
        &self,
        name: String,
        settings: super::SinkSettings,
        kafka: KafkaConfig,
        make: &super::SinkFactory,
        dead_letters: &super::dead_letter::DeadLetters,
        output: &Option<crate::sink::KafkaOutput>,
    ) -> JoinHandle<()> {
        let (bootstrap, codecs, shutdown) = (
            self.endpoints.kafka.clone(),
            self.codecs.clone(),
            self.shutdown.clone(),
        );
        let (make, dead_letters) = (Arc::clone(make), dead_letters.clone());
        let output = output.clone();
        let task_name = name.clone();
        let stop_budget = self.budget.task_drain();
        supervise(
            name,
            "sink",
            self.statuses.clone(),
            self.shutdown.clone(),
            move |handle| {
                let (make, settings, kafka, bootstrap, codecs, shutdown, name) = (
                    Arc::clone(&make),
                    settings.clone(),
                    kafka.clone(),
                    bootstrap.clone(),
                    codecs.clone(),
                    shutdown.clone(),
                    task_name.clone(),
                );
                let (dead_letters, output) = (dead_letters.clone(), output.clone());
                async move {
                    super::sink_task::run(
                        &name,
                        &make,
                        &settings,
                        super::sink_task::SinkEnv {
                            kafka: &kafka,
                            bootstrap: &bootstrap,
                            codecs: &codecs,
                            shutdown: &shutdown,
                            handle: &handle,
                            stop_budget,
                            dead_letters: &dead_letters,
                            output: output.clone(),
                        },
                    )
                    .await
                }
            },
        )
    }
}

impl Running {
    /// Creates sink `name`'s dead-letter topic, its replay topic and (with
    /// `ordering: relaxed`) its retry topics unless they exist: as many
    /// partitions as the (first) topic it consumes, not compacted.
    async fn dead_letter_topic(
        &self,
        name: &str,
        settings: &super::SinkSettings,
    ) -> Result<super::dead_letter::DeadLetters, StartError> {
        let topic = settings.resilience.dead_letter_topic(name);
        let partitions = match settings.topics.first() {
            Some(source) => match self.admin_client.describe(source).await {
                Ok(d) => u32::try_from(d.partitions.len()).unwrap_or(1),
                Err(_) => 1,
            },
            None => 1,
        };
        let spec = TopicSpec {
            name: topic.clone(),
            partitions: std::num::NonZeroU32::new(partitions).unwrap_or(std::num::NonZeroU32::MIN),
            replication_factor: None,
            config: std::collections::BTreeMap::new(),
            value_schema: None,
            key_schema: None,
        };
        self.admin_client.ensure_topic(&spec).await?;
        let replay = TopicSpec {
            name: super::dead_letter::replay_topic(&topic),
            ..spec
        };
        self.admin_client.ensure_topic(&replay).await?;
        let stages = settings.resilience.retry_topics(name);
        let park = settings.resilience.parking_topic();
        let mut more: Vec<String> = stages.iter().map(|(t, _)| t.clone()).collect();
        if let Some(p) = &park {
            more.push(p.clone());
            more.push(super::dead_letter::replay_topic(p));
        }
        for name in more {
            let spec = TopicSpec {
                name,
                ..replay.clone()
            };
            self.admin_client.ensure_topic(&spec).await?;
        }
        Ok(super::dead_letter::DeadLetters::new(
            self.producer.clone(),
            &topic,
            name,
            stages,
            park,
        ))
    }

    /// Where connector `name`'s records for `topic` go: the topic's
    /// registered value schema (its codec, subject and version).
    #[allow(clippy::result_large_err)]
    fn target_of(&self, name: &str, topic: &str) -> Result<SourceTarget, StartError> {
        let schema = self
            .schema_of(topic, Part::Value)
            .ok_or_else(|| StartError::NoSchema {
                connector: name.to_owned(),
                topic: topic.to_owned(),
            })?;
        Ok(SourceTarget {
            topic: topic.to_owned(),
            codec: schema.codec.clone(),
            subject: schema.binding.subject.clone(),
            version: schema.version,
            mapping: None,
        })
    }

    /// The output topics of processor `name` (a sink that writes to
    /// Kafka), with their registered schemas; `None` for a plain sink.
    #[allow(clippy::result_large_err)]
    fn outputs_of(
        &self,
        name: &str,
        outputs: &[TopicSpec],
    ) -> Result<Option<crate::sink::KafkaOutput>, StartError> {
        if outputs.is_empty() {
            return Ok(None);
        }
        let mut targets = std::collections::BTreeMap::new();
        for topic in outputs {
            targets.insert(topic.name.clone(), self.target_of(name, &topic.name)?);
        }
        Ok(Some(crate::sink::KafkaOutput {
            producer: self.producer.clone(),
            targets,
        }))
    }

    /// Creates a mapped source's dead-letter topic unless it exists: as
    /// many partitions as the topic the source writes, so per-key order
    /// holds there too.
    async fn source_dead_letter_topic(
        &self,
        topic: &TopicSpec,
        dead_letter_topic: &str,
    ) -> Result<(), StartError> {
        let spec = TopicSpec {
            name: dead_letter_topic.to_owned(),
            partitions: topic.partitions,
            replication_factor: topic.replication_factor,
            config: std::collections::BTreeMap::new(),
            value_schema: None,
            key_schema: None,
        };
        self.admin_client.ensure_topic(&spec).await?;
        Ok(())
    }

    /// The token connectors' tasks watch.
    pub fn shutdown_token(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Drains within the stop budget (`shutdown_timeout`, see [`StopBudget`]):
    /// connectors first (sinks finish the batch in the target and commit,
    /// sources deliver the batch in hand and store its positions), and what
    /// overruns is aborted; then the HTTP listeners, the producer's flush, and
    /// the embedded broker last. Returns an error if records could not be
    /// flushed.
    pub async fn shutdown(self) -> Result<(), KafkaLayerError> {
        let started = tokio::time::Instant::now();
        let budget = self.budget;
        self.shutdown.cancel();
        let mut tasks = self.connector_tasks;
        let drained = futures::future::join_all(tasks.iter_mut());
        if tokio::time::timeout(budget.connectors(), drained)
            .await
            .is_err()
        {
            tracing::warn!(
                within = ?budget.connectors(),
                "connectors did not stop in time; they are abandoned, and what they held is delivered again after restart"
            );
            for t in &tasks {
                t.abort();
            }
            for t in tasks {
                let _ = t.await;
            }
        }
        let _ = self.admin_task.await;
        if let Some(t) = self.registry_task {
            let _ = t.await;
        }
        let flush_within = budget.flush(started.elapsed());
        let flushed = self.producer.flush(flush_within).await;
        // Every client goes before the broker does, so none of them sees it vanish.
        drop(self.offsets);
        drop(self.producer);
        drop(self.admin_client);
        drop(self.codecs);
        #[cfg(feature = "embedded-broker")]
        if let Some(b) = self.broker {
            b.stop().await;
        }
        flushed
    }
}

/// One stop budget, nested so each inner limit sits below its outer one:
/// connectors get two thirds of it; within that, each task drains its batch
/// in flight within two fifths of the whole, then commits and closes within
/// a third of that (together 8/15: the rest of the connectors' share is
/// slack for a task that notices the stop late); the producer flushes in
/// what remains, less a reserve for the embedded broker to stop.
#[derive(Debug, Clone, Copy)]
pub struct StopBudget {
    total: Duration,
}

impl StopBudget {
    /// What stopping may take in all.
    pub fn new(total: Duration) -> Self {
        Self { total }
    }

    /// For the connectors, together; overrunning tasks are aborted.
    pub fn connectors(&self) -> Duration {
        self.total * 2 / 3
    }

    /// For one task's batch in flight (a sink's write, a source's
    /// acknowledgements) before it is abandoned. A task then has a third of
    /// this to commit and close.
    pub fn task_drain(&self) -> Duration {
        self.total * 2 / 5
    }

    /// For the producer's flush, `elapsed` into the stop.
    pub fn flush(&self, elapsed: Duration) -> Duration {
        self.total
            .saturating_sub(elapsed)
            .saturating_sub(BROKER_STOP_RESERVE)
            .max(Duration::from_millis(100))
    }
}

/// Kept back from the flush for the embedded broker's own stop.
const BROKER_STOP_RESERVE: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_budget_nests() {
        for secs in [3, 10, 30, 120] {
            let b = StopBudget::new(Duration::from_secs(secs));
            // A task drains, then commits and closes (a third of its drain
            // budget, as the sink and source tasks take it), inside the
            // connectors' share, with slack left.
            let task = b.task_drain() + b.task_drain() / 3;
            assert!(task < b.connectors(), "{secs}s: {task:?}");
            assert!(b.connectors() < Duration::from_secs(secs));
        }
        let b = StopBudget::new(Duration::from_secs(30));
        assert_eq!(b.flush(b.connectors()), Duration::from_secs(9));
        assert_eq!(b.flush(Duration::from_secs(40)), Duration::from_millis(100));
    }
}
