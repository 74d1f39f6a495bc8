//! Built-in sink connectors.

pub mod http;
