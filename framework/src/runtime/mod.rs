//! The runtime: the process lifecycle ([`process`]), shutdown
//! ([`shutdown`]), and connectors: how config declares them
//! ([`connectors`]), how each runs ([`source_task`], [`sink_task`]), where
//! source positions live ([`offsets`]), how sinks write batches at once
//! (`sink_lanes`), and how failed tasks restart
//! ([`supervisor`]).

pub mod connectors;
pub mod dead_letter;
pub mod headers;
pub mod offsets;
pub mod process;
pub mod shutdown;
mod sink_lanes;
pub mod sink_task;
pub mod source_task;
pub mod supervisor;
pub mod target;

pub use connectors::{ConnectorSpec, Planned, SinkFactory, SourceFactory, SourceMapping};
pub use process::{BrokerMode, Endpoints, Running, StartError, StopBudget};
pub use shutdown::{Shutdown, Signals};
pub use sink_task::SinkSettings;
pub use source_task::Exit;
pub use supervisor::{ConnectorStatus, Statuses, TaskState};
pub use target::{Encoded, SourceTarget};
