//! The runtime: the process lifecycle ([`process`]) and shutdown
//! ([`shutdown`]). Connectors' workers, offsets and backpressure join here.

pub mod process;
pub mod shutdown;

pub use process::{BrokerMode, Endpoints, Running, StartError};
pub use shutdown::{Shutdown, Signals};
