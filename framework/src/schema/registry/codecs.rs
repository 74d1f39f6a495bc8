//! Codecs by schema id and by subject, fetched from a registry once and kept:
//! the serializer and deserializer every Ferry component uses.

use super::client::{ClientError, RegistryClient};
use crate::schema::{wire, AvroCodec, CodecError};
use apache_avro::types::Value;
use apache_avro::Schema;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Why a record could not be encoded or decoded through the registry.
#[derive(Debug, thiserror::Error)]
pub enum CodecsError {
    #[error(transparent)]
    Registry(#[from] ClientError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("schema for subject `{subject}` is not a valid Avro schema: {message}")]
    Invalid { subject: String, message: String },
    #[error("schema id {id} from the registry is not a valid Avro schema: {message}")]
    InvalidRegistered { id: u32, message: String },
}

impl CodecsError {
    /// Only an unreachable or failing registry is worth another try.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Registry(e) if e.is_retryable())
    }
}

/// A registry client with codec caches. Cheap to clone.
#[derive(Clone)]
pub struct Codecs {
    client: RegistryClient,
    by_id: Arc<RwLock<HashMap<u32, AvroCodec>>>,
    by_subject: Arc<RwLock<HashMap<(String, String), AvroCodec>>>,
}

impl Codecs {
    pub fn new(client: RegistryClient) -> Self {
        Self {
            client,
            by_id: Arc::default(),
            by_subject: Arc::default(),
        }
    }

    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    /// The codec for schema `id`, asking the registry the first time.
    pub async fn by_id(&self, id: u32) -> Result<AvroCodec, CodecsError> {
        if let Some(c) = read(&self.by_id).get(&id) {
            return Ok(c.clone());
        }
        let text = self.client.schema_by_id(id).await?;
        let schema = Schema::parse_str(&text).map_err(|e| CodecsError::InvalidRegistered {
            id,
            message: e.to_string(),
        })?;
        let codec = AvroCodec::new(schema, id)?;
        write(&self.by_id).insert(id, codec.clone());
        Ok(codec)
    }

    /// Registers the schema `text` under `subject` (or finds it there:
    /// registering an identical schema is idempotent) and returns its codec.
    pub async fn register(&self, subject: &str, text: &str) -> Result<AvroCodec, CodecsError> {
        let key = (subject.to_owned(), text.to_owned());
        if let Some(c) = read(&self.by_subject).get(&key) {
            return Ok(c.clone());
        }
        let schema = Schema::parse_str(text).map_err(|e| CodecsError::Invalid {
            subject: subject.to_owned(),
            message: e.to_string(),
        })?;
        let id = self.client.register(subject, text).await?;
        let codec = AvroCodec::new(schema, id)?;
        write(&self.by_subject).insert(key, codec.clone());
        write(&self.by_id)
            .entry(id)
            .or_insert_with(|| codec.clone());
        Ok(codec)
    }

    /// Decodes a framed payload with the schema its id names.
    pub async fn decode(&self, payload: &[u8]) -> Result<(AvroCodec, Value), CodecsError> {
        let (id, _) = wire::unframe(payload).map_err(CodecError::from)?;
        let codec = self.by_id(id).await?;
        let value = codec.decode(payload)?;
        Ok((codec, value))
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
