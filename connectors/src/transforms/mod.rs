//! Transforms written in Rust: the escape hatch for mappings config cannot
//! say. Each is registered in [`crate::registry::TRANSFORMS`] and named by
//! a source's `mapping: { transform: NAME }`; it checks at plan time that
//! the topic's schema is the one it builds.

pub mod salesforce;
