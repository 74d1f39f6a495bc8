//! Ferry's end-to-end suites: the real `ferry` binary, a real broker, real
//! standard clients. One test binary (built once); a module per suite.

mod bad_input;
mod chaos;
mod compose;
mod consumers;
mod contracts;
mod dlq;
mod fake_target;
mod mapping;
mod pipeline;
mod postgres;
mod processor;
mod quickstart;
mod rebalance;
mod restart;
mod schemas;
mod secrets;
mod sink_concurrency;
mod sink_faults;
mod sink_setup;
mod state_topics;
mod versions;
mod webhook_durability;
mod webhook_mapping;
mod webhook_support;
mod webhooks;

use ferry_testkit::free_addr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The `ferry` binary Cargo built for this test run.
pub fn ferry_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ferry"))
}

/// Ports and a data directory of its own for one `ferry up`.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub broker: SocketAddr,
    pub admin: SocketAddr,
    pub registry: SocketAddr,
    pub demo: SocketAddr,
    pub webhooks: SocketAddr,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            broker: free_addr(),
            admin: free_addr(),
            registry: free_addr(),
            demo: free_addr(),
            webhooks: free_addr(),
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Environment overrides that move the quickstart onto this sandbox.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("FERRY__DATA_DIR", self.data_dir().display().to_string()),
            ("FERRY__EMBEDDED_BROKER__LISTEN", self.broker.to_string()),
            ("FERRY__ADMIN__LISTEN", self.admin.to_string()),
            ("FERRY__SCHEMA_REGISTRY__LISTEN", self.registry.to_string()),
            ("FERRY_DEMO_ADDR", self.demo.to_string()),
            ("FERRY__WEBHOOKS__LISTEN", self.webhooks.to_string()),
        ]
    }

    /// The URL of the registry `ferry up` serves in this sandbox.
    pub fn registry_url(&self) -> String {
        format!("http://{}", self.registry)
    }
}
