//! Ferry's built-in connectors and the `ferry` command line.
//!
//! - [`sources`] and [`sinks`]: one folder per connector (`mod.rs` plans it
//!   from config, `config.rs` holds its typed settings, `source.rs` /
//!   `sink.rs` the work);
//! - [`registry`]: the table from `type:` to connector, and [`plan`]: what
//!   a connector's factory is given (connectors depend on `plan`, the
//!   table on them, never back);
//! - [`http`]: what HTTP connectors share (auth, error classification);
//! - [`cli`]: the `ferry` binary.

pub mod cli;
pub mod demo;
pub mod http;
pub mod mapping;
pub mod plan;
pub mod registry;
pub mod sinks;
pub mod sources;
pub mod transforms;
