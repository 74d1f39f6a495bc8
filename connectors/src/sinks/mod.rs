//! Built-in sink connectors.

pub mod http;
pub mod map;
pub mod postgres;
