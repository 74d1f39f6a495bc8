//! A Ferry process: start everything in a fixed order, run, drain in reverse.
//!
//! Start order: admin listener bound (a port in use fails before anything
//! else starts), Kafka (embedded broker if allowed and no bootstrap servers are
//! configured), Kafka reachable, topics created, producer, admin API served.
//! Stop order: admin API, producer flushed, embedded broker last, so every
//! client has flushed and committed before the broker goes away.

use crate::admin::{self, AdminBindError, AdminState};
use crate::config::FerryConfig;
use crate::kafka::{KafkaAdmin, KafkaHealth, KafkaLayerError, KafkaProducer};
use crate::runtime::Shutdown;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::task::JoinHandle;

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
}

impl StartError {
    /// A configuration mistake (exit code 2) rather than a runtime failure (1).
    pub fn is_config_error(&self) -> bool {
        matches!(self, Self::NoBootstrap { .. })
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
}

/// A started process. Call [`Running::shutdown`] to drain it.
pub struct Running {
    pub endpoints: Endpoints,
    pub producer: KafkaProducer,
    pub admin_client: KafkaAdmin,
    shutdown: Shutdown,
    admin_task: JoinHandle<()>,
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
            let producer = KafkaProducer::new(&config.kafka, &bootstrap)?;
            Ok::<_, KafkaLayerError>((health, admin_client, producer))
        }
        .await;
        let (health, admin_client, producer) = match started {
            Ok(parts) => parts,
            Err(e) => {
                #[cfg(feature = "embedded-broker")]
                if let Some(b) = broker {
                    b.stop().await;
                }
                return Err(e.into());
            }
        };

        let shutdown = Shutdown::new();
        let router = admin::router(AdminState {
            kafka: health,
            metrics,
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

        Ok(Self {
            endpoints: Endpoints {
                kafka: bootstrap,
                embedded_broker,
                broker_data,
                admin: admin_addr,
            },
            producer,
            admin_client,
            shutdown,
            admin_task,
            #[cfg(feature = "embedded-broker")]
            broker,
        })
    }

    /// The token connectors' tasks watch.
    pub fn shutdown_token(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Drains: stops accepting work, flushes the producer, then stops the
    /// embedded broker. Returns an error if records could not be flushed.
    pub async fn shutdown(self, flush_within: Duration) -> Result<(), KafkaLayerError> {
        self.shutdown.cancel();
        let _ = self.admin_task.await;
        let flushed = self.producer.flush(flush_within).await;
        // Every client goes before the broker does, so none of them sees it vanish.
        drop(self.producer);
        drop(self.admin_client);
        #[cfg(feature = "embedded-broker")]
        if let Some(b) = self.broker {
            b.stop().await;
        }
        flushed
    }
}
