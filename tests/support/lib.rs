//! Test harness for Ferry's end-to-end suites.
//!
//! - [`TestBroker`]: a fresh embedded broker (tansu, in memory) on a free port.
//! - [`FerryProcess`]: the real `ferry` binary as a child process, with its
//!   output captured, signals, and exit status.
//! - [`python`]: a virtualenv with Python's `confluent-kafka`, installed on first use.
//! - [`http_get`]: a minimal HTTP/1.0 GET, so the harness needs no HTTP client.

pub mod process;
pub use process::Finished;
pub mod python;

pub use process::FerryProcess;

use ferry::kafka::{BrokerStorage, DevBroker};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
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

/// A fresh in-memory broker for one suite; stopped when dropped.
pub struct TestBroker {
    broker: Option<DevBroker>,
    pub bootstrap: String,
}

impl TestBroker {
    pub async fn start() -> Self {
        let broker = DevBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)), BrokerStorage::Memory)
            .await
            .expect("embedded test broker starts");
        let bootstrap = broker.bootstrap_servers();
        Self {
            broker: Some(broker),
            bootstrap,
        }
    }

    pub async fn stop(mut self) {
        if let Some(b) = self.broker.take() {
            b.stop().await;
        }
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
