//! Avro schemas and the Confluent wire format.
//!
//! Every record Ferry writes to Kafka is `0x00`, a 4-byte big-endian schema
//! id, then the Avro binary datum: what every Confluent-compatible
//! deserializer in every language reads. [`wire`] frames and unframes;
//! [`codec`] encodes and decodes datums, refusing a record that does not match
//! its schema before it reaches Kafka; [`files`] loads the `.avsc` files.

pub mod codec;
pub mod compatibility;
pub mod files;
pub mod wire;

pub use codec::{AvroCodec, CodecError};
pub use compatibility::{CompatibilityLevel, Incompatibility};
pub use files::{load_dir, SchemaFile, SchemaFileError};
pub use wire::{WireError, MAGIC_BYTE};
