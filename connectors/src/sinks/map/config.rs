//! `type: map` settings.

use serde::Deserialize;
use std::num::NonZeroU32;

/// Maps each record of `topic` into a record of `to`'s schema (the
/// connector's `mapping:` section) and writes it there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapConfig {
    /// The topic consumed: event envelopes (their `payload` is mapped) or
    /// JSON records (mapped whole).
    pub topic: String,
    /// The topic the mapped records go to; created at startup (with the
    /// mapping's schema registered) unless it exists.
    pub to: String,
    /// Partitions of `to` when Ferry creates it.
    #[serde(default = "default_partitions")]
    pub partitions: NonZeroU32,
    /// Replication factor of `to` when Ferry creates it (unset: the
    /// broker's default).
    #[serde(default)]
    pub replication_factor: Option<NonZeroU32>,
    /// Consumer group (default `<kafka.consumer.group_id>-sink-<name>`).
    #[serde(default)]
    pub group_id: Option<String>,
    /// Records mapped and written at a time.
    #[serde(default = "default_batch")]
    pub batch_max_records: usize,
}

fn default_partitions() -> NonZeroU32 {
    NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN)
}

fn default_batch() -> usize {
    500
}
