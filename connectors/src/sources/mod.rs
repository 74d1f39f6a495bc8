//! Built-in source connectors.

pub mod http_poll;
pub mod webhook;
