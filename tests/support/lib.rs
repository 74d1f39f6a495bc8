//! Test harness for Ferry's end-to-end suites.
//!
//! - [`TestBroker`]: a fresh embedded broker (tansu, sqlite in a temp dir) on
//!   a free port.
//! - [`FerryProcess`]: the real `ferry` binary as a child process, with its
//!   output captured, signals, and exit status.
//! - [`python`]: a virtualenv with Python's `confluent-kafka`, installed on first use.
//! - [`TestRegistry`]: Ferry's schema registry served in-process over a
//!   broker, standing in for an external registry (Confluent, Karapace).
//! - [`http_get`]: a minimal HTTP/1.0 GET, so the harness needs no HTTP client.

pub mod chaos;
pub mod process;
pub use process::Finished;
pub mod node;
pub mod python;

pub use process::FerryProcess;

use ferry::kafka::{BrokerStorage, DevBroker};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

/// A port for a test's listener that no other test (in this process or a
/// parallel one) is handed, and that the kernel will not give to anyone
/// asking for an ephemeral port.
///
/// Binding `127.0.0.1:0` and closing it again, as tests often do, races: the
/// kernel may hand the same port to the next ephemeral bind (a broker, an
/// outgoing connection) before the test's server takes it. So ports come
/// from below the kernel's ephemeral range (`ip_local_port_range`), and each
/// is claimed with an exclusive lock on a file named after it, held for the
/// life of the process: parallel test processes skip each other's ports, and
/// a crashed process releases its claims.
pub fn free_port() -> u16 {
    ports::claim()
}

mod ports {
    use std::fs::File;
    use std::net::TcpListener;
    use std::sync::Mutex;

    /// The locks this process holds; never released before exit.
    static CLAIMED: Mutex<Vec<File>> = Mutex::new(Vec::new());

    /// `[low, high)`: ports the kernel never picks for ephemeral binds.
    fn range() -> (u16, u16) {
        let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32768);
        if ephemeral_low > 12_000 {
            (10_000, ephemeral_low)
        } else {
            (61_000, 65_000)
        }
    }

    pub fn claim() -> u16 {
        let (low, high) = range();
        let span = u32::from(high - low);
        let dir = std::env::temp_dir().join("ferry-test-ports");
        let _ = std::fs::create_dir_all(&dir);
        // Start somewhere different in each process; walk from there.
        let seed = std::process::id().wrapping_mul(2_654_435_761).wrapping_add(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos()),
        );
        let mut claimed = CLAIMED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for i in 0..span {
            let port = low + u16::try_from((seed.wrapping_add(i * 7919)) % span).unwrap_or(0);
            let Ok(file) = File::create(dir.join(format!("{port}.lock"))) else {
                continue;
            };
            if file.try_lock().is_err() {
                continue; // another test process holds it
            }
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue; // something outside the tests uses it
            }
            claimed.push(file);
            return port;
        }
        panic!("no free port on 127.0.0.1 between {low} and {high}");
    }
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// The repository root (where `examples/` and `schemas/` live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .expect("tests/ has a parent")
}

/// A fresh broker for one suite; stopped when dropped.
///
/// It keeps its data in sqlite, not in memory: tansu 0.6.0's memory engine
/// answers a fetch from the middle of a producer batch with the *next*
/// batch, so a consumer resuming mid-batch (after a restart, a rebalance or
/// a pause) would skip records. Its sqlite engine stores records one by one
/// and is correct (see `../shared/notes/dev-broker.md`).
pub struct TestBroker {
    broker: Option<DevBroker>,
    pub bootstrap: String,
    _dir: tempfile::TempDir,
}

impl TestBroker {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("broker data dir");
        let storage = BrokerStorage::Sqlite(dir.path().join("broker.db"));
        let broker = DevBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)), storage)
            .await
            .expect("embedded test broker starts");
        let bootstrap = broker.bootstrap_servers();
        Self {
            broker: Some(broker),
            bootstrap,
            _dir: dir,
        }
    }

    pub async fn stop(mut self) {
        if let Some(b) = self.broker.take() {
            b.stop().await;
        }
    }
}

/// A schema registry in the test process, over `bootstrap`: for tests of a
/// `ferry` configured with an external registry (`schema_registry.url`).
pub struct TestRegistry {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl TestRegistry {
    pub async fn start(bootstrap: &str) -> Self {
        use ferry::schema::registry::{server, Registry, RegistrySettings};
        let settings = RegistrySettings {
            // Its own topic: not Confluent's `_schemas`, nor the `ferry` under test's.
            topic: "_test_registry_schemas".into(),
            default_compatibility: ferry::schema::CompatibilityLevel::Backward,
            timeout: Duration::from_secs(20),
        };
        let registry = Registry::open(&ferry::kafka::KafkaConfig::default(), bootstrap, &settings)
            .await
            .expect("test registry opens its log");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let router = server::router(std::sync::Arc::new(registry));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { url, task }
    }

    /// A client for it.
    pub fn client(&self) -> ferry::schema::registry::RegistryClient {
        ferry::schema::registry::RegistryClient::new(&self.url, None, Duration::from_secs(30))
            .expect("client")
    }

    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// GETs `path` from `addr`; returns (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
