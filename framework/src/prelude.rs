//! What a connector author imports: `use ferry::prelude::*;`.

pub use crate::config::{FerryConfig, Secret};
pub use crate::kafka::{KafkaConsumer, KafkaProducer, OutgoingRecord, ProduceError};
pub use crate::runtime::Shutdown;
