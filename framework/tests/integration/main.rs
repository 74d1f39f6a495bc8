//! Framework tests against real components: the embedded broker (tansu, on a
//! free port) and, for the registry, real HTTP between client and server.
//! One test binary for the crate (built once); a module per area.

mod connectors;
mod kafka_layer;
mod partitioner;
mod producer_order;
mod registry;
mod sink_attempts;
