//! What lets a sink write several batches at once without breaking order
//! or committing past a record that is not written (`concurrency`).
//!
//! **Lanes.** Records of one lane are written in Kafka order, one batch at
//! a time: a lane is a key within its partition (records without a key
//! share their partition's lane), or the whole partition for a sink that
//! keeps its offsets in its target (an offset there says "everything
//! before is written", which holds only if the partition is written in
//! order). A lane is a hash: two keys that collide share a lane, which
//! only orders them more than needed.
//!
//! **Progress.** Per partition, the records taken from Kafka and whether
//! each is written. The position that may be committed is the lowest
//! record not written yet (else the offset after the last one taken): a
//! crash, a rebalance or an abandoned batch then repeats records, never
//! skips one. How far a partition runs ahead of that record (records
//! written after it, `ahead`) is bounded by the sink task, so one record
//! that keeps failing cannot make a crash repeat more than that.

use crate::kafka::TopicPartition;
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};

/// A lane's identity (see the module doc).
pub(crate) type Lane = u64;

/// The lane of a record of `topic`/`partition` with `key`; `by_key`
/// false puts the whole partition in one lane.
pub(crate) fn lane(topic: &str, partition: i32, key: Option<&[u8]>, by_key: bool) -> Lane {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    topic.hash(&mut h);
    partition.hash(&mut h);
    if by_key {
        key.hash(&mut h);
    }
    h.finish()
}

/// Lanes with a batch in the sink.
#[derive(Debug, Default)]
pub(crate) struct Busy(HashSet<Lane>);

impl Busy {
    pub fn contains(&self, lane: Lane) -> bool {
        self.0.contains(&lane)
    }

    pub fn hold(&mut self, lanes: &[Lane]) {
        self.0.extend(lanes.iter().copied());
    }

    pub fn free(&mut self, lanes: &[Lane]) {
        for l in lanes {
            self.0.remove(l);
        }
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// Per partition, every record taken from Kafka at or after the lowest
/// one not yet written (offset → written), and how many of them are
/// written (the partition's run-ahead).
#[derive(Debug, Default)]
pub(crate) struct Progress(BTreeMap<TopicPartition, Partition>);

#[derive(Debug, Default)]
struct Partition {
    records: BTreeMap<i64, bool>,
    ahead: usize,
}

impl Progress {
    /// A record was taken from Kafka (buffered).
    pub fn taken(&mut self, tp: &TopicPartition, offset: i64) {
        let p = match self.0.get_mut(tp) {
            Some(p) => p,
            None => self.0.entry(tp.clone()).or_default(),
        };
        if p.records.insert(offset, false) == Some(true) {
            p.ahead -= 1;
        }
    }

    /// A record is in the target (or the dead-letter topic). Records of a
    /// partition forgotten meanwhile (revoked, read again) are ignored.
    pub fn written(&mut self, tp: &TopicPartition, offset: i64) {
        let Some(p) = self.0.get_mut(tp) else {
            return;
        };
        if let Some(w) = p.records.get_mut(&offset) {
            if !*w {
                *w = true;
                p.ahead += 1;
            }
        }
        // Drop the written prefix: only what is at or after the lowest
        // unwritten record is kept.
        while let Some(entry) = p.records.first_entry() {
            if !*entry.get() {
                break;
            }
            entry.remove();
            p.ahead -= 1;
        }
    }

    /// The lowest record of `tp` not written yet.
    pub fn lowest_unwritten(&self, tp: &TopicPartition) -> Option<i64> {
        self.0.get(tp)?.records.keys().next().copied()
    }

    /// How many records of `tp` after its lowest unwritten one are
    /// written: what a crash would write again on top of what was not
    /// written.
    pub fn ahead(&self, tp: &TopicPartition) -> usize {
        self.0.get(tp).map_or(0, |p| p.ahead)
    }

    /// Forgets `tp` (revoked, or read again from an earlier offset).
    pub fn forget(&mut self, tp: &TopicPartition) {
        self.0.remove(tp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        ("t".to_owned(), p)
    }

    #[test]
    fn the_position_stops_at_the_lowest_unwritten_record() {
        let mut p = Progress::default();
        for o in 10..15 {
            p.taken(&tp(0), o);
        }
        p.written(&tp(0), 12);
        p.written(&tp(0), 13);
        assert_eq!(p.lowest_unwritten(&tp(0)), Some(10));
        p.written(&tp(0), 10);
        assert_eq!(p.lowest_unwritten(&tp(0)), Some(11));
        p.written(&tp(0), 11);
        assert_eq!(
            p.lowest_unwritten(&tp(0)),
            Some(14),
            "12 and 13 were written before 11: the position jumps past them"
        );
        p.written(&tp(0), 14);
        assert_eq!(p.lowest_unwritten(&tp(0)), None);
        assert_eq!(p.lowest_unwritten(&tp(1)), None);
    }

    #[test]
    fn a_forgotten_partition_ignores_late_writes() {
        let mut p = Progress::default();
        p.taken(&tp(0), 1);
        p.forget(&tp(0));
        p.written(&tp(0), 1);
        p.taken(&tp(0), 5);
        assert_eq!(p.lowest_unwritten(&tp(0)), Some(5));
    }

    #[test]
    fn the_run_ahead_counts_what_is_written_past_the_lowest_unwritten_record() {
        let mut p = Progress::default();
        for o in 0..5 {
            p.taken(&tp(0), o);
        }
        // Records 1..3 written, 0 stuck.
        for o in 1..4 {
            p.written(&tp(0), o);
        }
        p.written(&tp(0), 3);
        assert_eq!(p.ahead(&tp(0)), 3, "written twice counts once");
        p.written(&tp(0), 0);
        assert_eq!(p.ahead(&tp(0)), 0, "the prefix went: nothing ahead");
        assert_eq!(p.lowest_unwritten(&tp(0)), Some(4));
        assert_eq!(p.ahead(&tp(1)), 0);
        // Taken again (read again after a seek) counts as unwritten.
        p.taken(&tp(0), 5);
        p.written(&tp(0), 5);
        assert_eq!(p.ahead(&tp(0)), 1);
        p.taken(&tp(0), 5);
        assert_eq!(p.ahead(&tp(0)), 0);
    }

    #[test]
    fn lanes_separate_keys_unless_the_partition_is_the_lane() {
        let a = lane("t", 0, Some(b"a"), true);
        assert_eq!(a, lane("t", 0, Some(b"a"), true));
        assert_ne!(a, lane("t", 0, Some(b"b"), true));
        assert_ne!(a, lane("t", 1, Some(b"a"), true));
        assert_ne!(a, lane("t", 0, None, true));
        assert_eq!(
            lane("t", 0, Some(b"a"), false),
            lane("t", 0, Some(b"b"), false)
        );
        let mut busy = Busy::default();
        busy.hold(&[a]);
        assert!(busy.contains(a));
        busy.free(&[a]);
        assert!(!busy.contains(a));
    }
}
