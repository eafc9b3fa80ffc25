//! Which Kafka offsets may be committed.
//!
//! The consumer thread cuts messages into *chunks*, numbered in order. A chunk is held while
//! it is decoded, by every shard batch that has rows from it until that batch is acknowledged
//! downstream, and by every dead-letter message from it until the broker confirms it. A chunk
//! whose holds are all released is *done*; the committable offset of a partition is one past
//! the last offset of that partition in the longest run of done chunks from the oldest one.
//! Committing in chunk order (never past an unfinished chunk) is what makes the ingest
//! at-least-once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;

/// A topic and partition.
pub type TopicPartition = (String, i32);

/// Why nothing more may be committed: the first failure that stops the ingest.
#[derive(Debug, Clone)]
pub(crate) enum Halt {
    /// A dead letter could not be sent, or the broker did not confirm it.
    DeadLetter(KafkaError),
    /// The decoder thread stopped on an error (which it returns itself).
    DecoderFailed,
}

#[derive(Debug)]
struct Chunk {
    holds: u32,
    /// The last offset of each partition in the chunk.
    last_offsets: Vec<(TopicPartition, i64)>,
}

#[derive(Debug, Default)]
struct State {
    /// Chunks not yet folded into `committable`, oldest first; `chunks[i]` has id `first_id + i`.
    chunks: VecDeque<Chunk>,
    first_id: u64,
    next_id: u64,
    /// Chunks with holds > 0.
    busy: usize,
    /// Next offset to commit, per partition, from done chunks.
    committable: BTreeMap<TopicPartition, i64>,
    /// What was last handed out for committing, per partition.
    committed: BTreeMap<TopicPartition, i64>,
    /// Partitions this consumer no longer owns: never committed again until reassigned.
    revoked: BTreeSet<TopicPartition>,
    failure: Option<Halt>,
}

/// Shared between the consumer thread, the decoder thread, acknowledgements and the
/// dead-letter producer's delivery callbacks.
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    state: Mutex<State>,
    idle: Condvar,
}

impl OffsetTracker {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a new chunk, held once (for its decoding); returns its id.
    pub(crate) fn open_chunk(&self, last_offsets: Vec<(TopicPartition, i64)>) -> u64 {
        let mut s = self.lock();
        let id = s.next_id;
        s.next_id += 1;
        s.chunks.push_back(Chunk { holds: 1, last_offsets });
        s.busy += 1;
        id
    }

    /// Adds a hold on a chunk.
    pub(crate) fn hold(&self, id: u64) {
        let mut s = self.lock();
        let index = (id - s.first_id) as usize;
        let chunk = &mut s.chunks[index];
        chunk.holds += 1;
        if chunk.holds == 1 {
            s.busy += 1;
        }
    }

    /// Releases one hold on each of the chunks.
    pub(crate) fn release(&self, ids: &[u64]) {
        let mut s = self.lock();
        for &id in ids {
            let index = (id - s.first_id) as usize;
            let chunk = &mut s.chunks[index];
            debug_assert!(chunk.holds > 0, "chunk {id} released more often than held");
            chunk.holds -= 1;
            if chunk.holds == 0 {
                s.busy -= 1;
            }
        }
        Self::fold_done(&mut s);
        if s.busy == 0 {
            self.idle.notify_all();
        }
    }

    fn fold_done(s: &mut State) {
        while s.chunks.front().is_some_and(|c| c.holds == 0) {
            let chunk = s.chunks.pop_front().expect("front exists");
            s.first_id += 1;
            for (tp, last) in chunk.last_offsets {
                let next = s.committable.entry(tp).or_insert(last + 1);
                *next = (*next).max(last + 1);
            }
        }
    }

    /// Records a failure that must stop the ingest (nothing past it will be committed).
    pub(crate) fn fail(&self, why: Halt) {
        let mut s = self.lock();
        s.failure.get_or_insert(why);
        self.idle.notify_all();
    }

    /// The first failure recorded, if any.
    pub(crate) fn failure(&self) -> Option<Halt> {
        self.lock().failure.clone()
    }

    /// Offsets to commit now: the committable ones that moved since last time, for owned
    /// partitions. Empty after a failure.
    pub(crate) fn take_committable(&self) -> Vec<(TopicPartition, i64)> {
        let mut s = self.lock();
        if s.failure.is_some() {
            return Vec::new();
        }
        let changed: Vec<_> = s
            .committable
            .iter()
            .filter(|(tp, next)| !s.revoked.contains(*tp) && s.committed.get(*tp) != Some(next))
            .map(|(tp, next)| (tp.clone(), *next))
            .collect();
        for (tp, next) in &changed {
            s.committed.insert(tp.clone(), *next);
        }
        changed
    }

    /// A commit of these offsets failed: offer them again next time (unless they moved on).
    pub(crate) fn commit_failed(&self, offsets: &[(TopicPartition, i64)]) {
        let mut s = self.lock();
        for (tp, next) in offsets {
            if s.committed.get(tp) == Some(next) {
                s.committed.remove(tp);
            }
        }
    }

    /// Partitions were taken away: forget their progress and never commit them again unless
    /// they are assigned back.
    pub(crate) fn revoke(&self, partitions: &[TopicPartition]) {
        let mut s = self.lock();
        for tp in partitions {
            s.committable.remove(tp);
            s.committed.remove(tp);
            s.revoked.insert(tp.clone());
        }
    }

    /// Partitions were assigned (again).
    pub(crate) fn assign(&self, partitions: &[TopicPartition]) {
        let mut s = self.lock();
        for tp in partitions {
            s.revoked.remove(tp);
        }
    }

    /// Waits until no chunk is held, or a failure, or the deadline. True if idle.
    pub(crate) fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        while s.busy > 0 && s.failure.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self.idle.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        s.busy == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        ("t".to_string(), p)
    }

    #[test]
    fn commits_only_the_done_prefix() {
        let t = OffsetTracker::default();
        let a = t.open_chunk(vec![(tp(0), 9), (tp(1), 4)]);
        let b = t.open_chunk(vec![(tp(0), 19)]);
        let c = t.open_chunk(vec![(tp(1), 8)]);
        t.hold(a); // a shard batch holds rows of a
        t.release(&[a, b, c]); // decoding of all three is done
        assert!(t.take_committable().is_empty(), "a is still held by its batch");
        t.release(&[a]); // the batch is acknowledged
        assert_eq!(t.take_committable(), vec![(tp(0), 20), (tp(1), 9)]);
        assert!(t.take_committable().is_empty(), "nothing moved since");
        assert!(t.wait_idle(Duration::ZERO));
    }

    #[test]
    fn failed_commits_are_offered_again() {
        let t = OffsetTracker::default();
        let a = t.open_chunk(vec![(tp(0), 5)]);
        t.release(&[a]);
        let first = t.take_committable();
        assert_eq!(first, vec![(tp(0), 6)]);
        t.commit_failed(&first);
        assert_eq!(t.take_committable(), first);
    }

    #[test]
    fn revoked_partitions_are_not_committed() {
        let t = OffsetTracker::default();
        let a = t.open_chunk(vec![(tp(0), 5), (tp(1), 5)]);
        t.revoke(&[tp(1)]);
        t.release(&[a]);
        assert_eq!(t.take_committable(), vec![(tp(0), 6)]);
        let b = t.open_chunk(vec![(tp(1), 7)]);
        t.assign(&[tp(1)]);
        t.release(&[b]);
        assert_eq!(t.take_committable(), vec![(tp(1), 8)]);
    }

    #[test]
    fn a_failure_stops_commits_and_wakes_waiters() {
        let t = OffsetTracker::default();
        let a = t.open_chunk(vec![(tp(0), 1)]);
        let lost = KafkaError::MessageProduction(rdkafka::error::RDKafkaErrorCode::MessageTimedOut);
        t.fail(Halt::DeadLetter(lost.clone()));
        t.fail(Halt::DecoderFailed);
        assert!(!t.wait_idle(Duration::from_secs(5)));
        t.release(&[a]);
        assert!(t.take_committable().is_empty());
        assert!(matches!(t.failure(), Some(Halt::DeadLetter(e)) if e == lost), "the first failure is kept");
    }
}
