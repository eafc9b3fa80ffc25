//! Which Kafka partitions a node answers for now: the partitions assigned to its consumer,
//! how many partitions each input topic has, and a generation that changes with every
//! assignment or revocation. A site's nodes compare these to answer a query for every
//! partition exactly once (see `tessera_sql::site`).
//!
//! A revoked partition leaves the set only once it has been handed over (checkpointed,
//! its motors' rows dropped from the node's tables, its offsets committed), so two nodes
//! never both claim rows of one partition; a newly assigned one joins at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use crate::offsets::TopicPartition;

/// What a node answers for, as of one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnershipSnapshot {
    /// Changes whenever `owned` changes (starts at 0, nothing owned).
    pub generation: u64,
    /// The partitions this node answers for.
    pub owned: BTreeSet<TopicPartition>,
    /// How many partitions each input topic has, as the consumer last learnt (from the
    /// topic's metadata at its first assignment, then librdkafka's statistics); a topic not
    /// yet learnt is absent.
    pub topic_partitions: BTreeMap<String, i32>,
}

/// The live ownership, updated by the consumer's rebalance and statistics callbacks.
#[derive(Debug, Default)]
pub struct PartitionOwnership {
    state: Mutex<OwnershipSnapshot>,
}

impl PartitionOwnership {
    fn update(&self, change: impl FnOnce(&mut OwnershipSnapshot)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let before = state.owned.clone();
        change(&mut state);
        if state.owned != before {
            state.generation += 1;
        }
    }

    /// `partitions` are this node's now.
    pub(crate) fn assign(&self, partitions: &[TopicPartition]) {
        self.update(|s| s.owned.extend(partitions.iter().cloned()));
    }

    /// `partitions` have been handed over.
    pub(crate) fn revoke(&self, partitions: &[TopicPartition]) {
        self.update(|s| partitions.iter().for_each(|tp| _ = s.owned.remove(tp)));
    }

    /// `topic` has `partitions` partitions.
    pub(crate) fn topic_size(&self, topic: &str, partitions: i32) {
        self.update(|s| _ = s.topic_partitions.insert(topic.to_string(), partitions));
    }

    /// The ownership now.
    pub fn snapshot(&self) -> OwnershipSnapshot {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generation_moves_with_the_owned_set_only() {
        let o = PartitionOwnership::default();
        o.topic_size("t", 6);
        assert_eq!(o.snapshot().generation, 0);
        o.assign(&[("t".into(), 0), ("t".into(), 1)]);
        assert_eq!(o.snapshot().generation, 1);
        o.assign(&[("t".into(), 1)]);
        assert_eq!(o.snapshot().generation, 1, "nothing new");
        o.revoke(&[("t".into(), 0)]);
        let s = o.snapshot();
        assert_eq!((s.generation, s.owned.len(), s.topic_partitions["t"]), (2, 1, 6));
    }
}
