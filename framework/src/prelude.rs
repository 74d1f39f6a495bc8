//! What a connector author imports: `use ferry::prelude::*;`.

pub use crate::config::Secret;
pub use crate::error::{ConnectorError, Domain, Retry};
pub use crate::runtime::Shutdown;
pub use crate::sink::{Sink, SinkContext, SinkFailure, SinkRecord};
pub use crate::source::{Durable, Poll, Position, Positions, Source, SourceContext, SourceRecord};
pub use apache_avro::types::Value as AvroValue;
