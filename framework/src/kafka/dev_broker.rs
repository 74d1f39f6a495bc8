//! The embedded development broker: tansu 0.6.0, served in-process.
//!
//! `ferry up` starts it when no `kafka.bootstrap_servers` is configured, so a
//! fresh clone has a working Kafka without installing one. Any Kafka client
//! can use it. It keeps records in a sqlite file (or in memory, for tests).
//! Ferry never relies on what only tansu does: it creates its topics
//! explicitly and uses no transactions.

use super::DevBrokerError;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;
use tansu_broker::broker::Broker;
use tansu_broker::coordinator::group::administrator::Controller;
use tansu_storage::StorageContainer;
use tokio::task::JoinHandle;
use url::Url;

/// Where the embedded broker keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerStorage {
    /// Nothing survives the process.
    Memory,
    /// A sqlite database file; created with its directory if missing.
    Sqlite(PathBuf),
}

/// A running embedded broker. Stop it with [`DevBroker::stop`] after every
/// client has flushed and committed.
pub struct DevBroker {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

const READY_WITHIN: Duration = Duration::from_secs(20);

impl DevBroker {
    /// Starts a broker listening (and advertising) on `listen`. Port 0 picks
    /// a free port; [`DevBroker::addr`] tells which.
    pub async fn start(listen: SocketAddr, storage: BrokerStorage) -> Result<Self, DevBrokerError> {
        // Bind once ourselves: a port in use is reported here, by address,
        // rather than as an error inside the broker task. Port 0 becomes a real port.
        let addr = std::net::TcpListener::bind(listen)
            .and_then(|l| l.local_addr())
            .map_err(|source| DevBrokerError::Bind {
                addr: listen,
                source,
            })?;

        let storage_url = match &storage {
            BrokerStorage::Memory => parse_url("memory://tansu/")?,
            BrokerStorage::Sqlite(path) => sqlite_url(path)?,
        };
        let listener = parse_url(&format!("tcp://{addr}"))?;

        let mut broker = Broker::<Controller<StorageContainer>, StorageContainer>::builder()
            .node_id(111)
            .cluster_id("ferry-dev")
            .incarnation_id(uuid::Uuid::new_v4())
            .advertised_listener(listener.clone())
            .storage(storage_url)
            .listener(listener)
            .silent(true)
            .build()
            .await
            .map_err(|e| DevBrokerError::Start(format!("{e:?}")))?;

        let task = tokio::spawn(async move {
            if let Err(e) = broker.serve(tokio::time::Instant::now()).await {
                tracing::error!(error = ?e, "embedded broker stopped");
            }
        });

        let started = tokio::time::Instant::now();
        loop {
            if task.is_finished() {
                return Err(DevBrokerError::Start(format!(
                    "the broker on {addr} stopped during startup (see the log above)"
                )));
            }
            if tokio::task::spawn_blocking(move || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            })
            .await
            .is_ok_and(|r| r.is_ok())
            {
                break;
            }
            if started.elapsed() > READY_WITHIN {
                task.abort();
                return Err(DevBrokerError::NotReady {
                    addr,
                    waited: READY_WITHIN,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!(%addr, ?storage, "embedded broker ready");
        Ok(Self { addr, task })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `bootstrap.servers` for this broker.
    pub fn bootstrap_servers(&self) -> String {
        self.addr.to_string()
    }

    /// Stops the broker. Everything the broker acknowledged is already in
    /// storage (sqlite commits before it answers a produce).
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn parse_url(s: &str) -> Result<Url, DevBrokerError> {
    Url::parse(s).map_err(|e| DevBrokerError::Start(format!("bad URL `{s}`: {e}")))
}

/// tansu resolves a sqlite URL's path against the working directory unless the
/// path, after its first `/`, is still absolute: hence `sqlite:////abs/file.db`.
fn sqlite_url(path: &std::path::Path) -> Result<Url, DevBrokerError> {
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    std::fs::create_dir_all(&dir).map_err(|source| DevBrokerError::DataDir {
        path: dir.display().to_string(),
        source,
    })?;
    let dir = dir
        .canonicalize()
        .map_err(|source| DevBrokerError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
    let file = path
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| "broker.db".into());
    let abs = dir.join(file);
    let s = abs.to_str().ok_or_else(|| {
        DevBrokerError::Start(format!("data path {} is not UTF-8", abs.display()))
    })?;
    parse_url(&format!("sqlite:///{s}"))
}
