//! Avro schemas, the Confluent wire format and the schema registry.
//!
//! Every record Ferry writes to Kafka is `0x00`, a 4-byte big-endian schema
//! id, then the Avro binary datum: what every Confluent-compatible
//! deserializer in every language reads. [`wire`] frames and unframes;
//! [`codec`] encodes and decodes datums, refusing a record that does not match
//! its schema before it reaches Kafka; [`json`] converts plain JSON to Avro
//! values and back; [`files`] loads the `.avsc` files and [`bindings`] says
//! which subject each is registered under ([`subject`] strategies);
//! [`compatibility`] holds the evolution rules; [`registry`] serves and
//! queries a Confluent-compatible registry.

pub mod bindings;
pub mod codec;
pub mod compatibility;
mod encode;
pub mod envelope;
pub mod files;
pub mod json;
pub mod registry;
pub mod subject;
pub mod wire;

pub use codec::{AvroCodec, CodecError};
pub use compatibility::{CompatibilityLevel, Incompatibility};
pub use files::{load_dir, SchemaFile, SchemaFileError};
pub use subject::{Part, SubjectNameStrategy};
pub use wire::{WireError, MAGIC_BYTE};
