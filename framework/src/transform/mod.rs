//! Mapping: raw JSON payloads from external APIs into normalized records of
//! a target Avro schema (one `Contact` shape whatever CRM it came from),
//! declared in config rather than written in code.
//!
//! This module owns the `mapping:` config ([`MappingConfig`]), its
//! compilation against the target schema ([`Mapping::compile`]), the
//! normalizers (email, phone, name, timestamp, country, value maps, trim
//! and case, number/integer/boolean parsing), and the [`Transform`] trait
//! that a mapping and any hand-written Rust mapping both implement, so the
//! runtime holds an `Arc<dyn Transform>` either way.
//!
//! The contract: [`Mapping::compile`] does every check that needs no record
//! (unknown or unmapped fields, paths, normalizer options, normalizer output
//! against the field's Avro type, constants and defaults) and never does
//! I/O. [`Transform::apply`] then turns one payload into an Avro value that
//! matches the schema, or fails with a [`MappingError`] naming the target
//! field, the rule, the payload location and the reason. It never panics on
//! any input, and a failure is the record's fault: not retryable, the record
//! belongs on the dead-letter topic with its raw payload. The original
//! payload is kept on the record wherever the config says `raw`.

mod config;
mod convert;
mod error;
pub mod functions;
pub(crate) mod normalize;
mod path;
mod plan;
mod shape;
mod value;

#[cfg(test)]
mod tests;

pub use config::{
    CountryFormat, FieldRule, MapConfig, MapKey, MappingConfig, NameConfig, NormalizeConfig,
    OneOrMany, PathList, PhoneConfig, RuleConfig, TimestampConfig,
};
pub use error::{MappingConfigError, MappingError, Rule};
pub use path::Path;
pub use plan::Mapping;

use apache_avro::types::Value;
use serde_json::Value as Json;

/// Turns one payload into a record of the target schema. Implemented by
/// [`Mapping`] (declarative) and by Rust code for what config cannot say;
/// a plain function or closure with the same signature is one too.
pub trait Transform: Send + Sync + 'static {
    /// `raw` is the payload as received; `payload` is it parsed. The result
    /// must match the target schema; a failure is the record's fault.
    fn apply(&self, raw: &[u8], payload: &Json) -> Result<Value, MappingError>;
}

impl<F> Transform for F
where
    F: Fn(&[u8], &Json) -> Result<Value, MappingError> + Send + Sync + 'static,
{
    fn apply(&self, raw: &[u8], payload: &Json) -> Result<Value, MappingError> {
        self(raw, payload)
    }
}
