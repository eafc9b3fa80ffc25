//! The site's checkpoint directory: one checkpoint store per Kafka partition, at
//! `<state.dir>/<topic>/<partition>/`.
//!
//! A partition's checkpoint holds the state of the motors whose readings come from that
//! partition (windows, anomaly baselines, alert hysteresis) with the partition's next offset.
//! The nodes of a site share the directory (a shared volume), so when the consumer group moves
//! a partition, the node that gets it loads the checkpoint the old owner wrote as it handed the
//! partition over (or the last one it wrote before it died), and starts at its offset. Only the
//! partition's current owner writes to its store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tessera_core::{ConfigError, ensure};
use tessera_ingest::{PartitionStart, PartitionStates, TopicPartition};
use tessera_state::{CheckpointStore, Loaded, Sealer};

use crate::error::NodeError;

/// The per-partition stores under a site's state directory: what the ingest asks for when it
/// is assigned partitions.
#[derive(Debug, Clone)]
pub struct PartitionCheckpoints {
    dir: PathBuf,
    keep: usize,
    /// Seals every checkpoint under the site's key (see [`crate::store`]).
    sealer: Option<Arc<dyn Sealer>>,
}

/// A newly assigned partition's store, opened, and its newest valid checkpoint: what the
/// detection stage restores and then writes to.
#[derive(Debug)]
pub struct AssignedStore {
    /// The partition's store.
    pub store: CheckpointStore,
    /// Its newest valid checkpoint (`None`: the partition was never checkpointed).
    pub loaded: Option<Loaded>,
}

/// The directory of one partition's store.
pub fn partition_dir(dir: &Path, (topic, partition): &TopicPartition) -> PathBuf {
    // Kafka topic names are [a-zA-Z0-9._-]+ and never "." or "..": safe as a path component.
    dir.join(topic).join(partition.to_string())
}

impl PartitionCheckpoints {
    /// The stores under `dir` (created if missing), keeping `keep` checkpoints each.
    pub fn new(dir: &Path, keep: usize) -> Result<Self, NodeError> {
        std::fs::create_dir_all(dir).map_err(|source| NodeError::File {
            what: "state.dir",
            path: dir.into(),
            source,
        })?;
        Ok(Self { dir: dir.to_path_buf(), keep, sealer: None })
    }

    /// Seals the checkpoints with `sealer` (and opens sealed ones with it).
    pub fn sealed(mut self, sealer: Option<Arc<dyn Sealer>>) -> Self {
        self.sealer = sealer;
        self
    }

    fn open(&self, tp: &TopicPartition) -> Result<PartitionStart, String> {
        let named = |e: &dyn std::fmt::Display| format!("{}/{}: {e}", tp.0, tp.1);
        let mut store = CheckpointStore::open(partition_dir(&self.dir, tp), self.keep).map_err(|e| named(&e))?;
        if let Some(sealer) = &self.sealer {
            store = store.with_sealer(sealer.clone());
        }
        let loaded = store.latest().map_err(|e| named(&e))?;
        if let Some(l) = &loaded {
            for s in &l.skipped {
                tracing::warn!(file = %s.path.display(), reason = %s.reason, "skipped an unreadable checkpoint");
            }
        }
        let resume_at = loaded
            .as_ref()
            .and_then(|l| l.checkpoint.offsets.iter().find(|o| o.topic == tp.0 && o.partition == tp.1))
            .map(|o| o.next_offset);
        Ok(PartitionStart {
            topic: tp.0.clone(),
            partition: tp.1,
            resume_at,
            state: Some(Box::new(AssignedStore { store, loaded })),
            stale: false,
        })
    }
}

impl PartitionStates for PartitionCheckpoints {
    fn assigned(&self, partitions: &[TopicPartition]) -> Result<Vec<PartitionStart>, String> {
        partitions.iter().map(|tp| self.open(tp)).collect()
    }
}

/// The newest valid checkpoint of every partition under a site's state directory, read
/// without opening the stores (nothing changes; a monitor or a test may read while nodes
/// write). Sorted by partition.
pub fn read_site(dir: &Path) -> Result<Vec<(TopicPartition, Loaded)>, NodeError> {
    let mut out = Vec::new();
    let list = |d: &Path| -> Result<Vec<(String, PathBuf)>, NodeError> {
        let listing = |source| NodeError::File { what: "listing", path: d.into(), source };
        let mut entries = Vec::new();
        for e in std::fs::read_dir(d).map_err(listing)? {
            let e = e.map_err(listing)?;
            if e.file_type().map_err(listing)?.is_dir() {
                entries.push((e.file_name().to_string_lossy().into_owned(), e.path()));
            }
        }
        Ok(entries)
    };
    if !dir.exists() {
        return Ok(out);
    }
    for (topic, topic_dir) in list(dir)? {
        for (partition, path) in list(&topic_dir)? {
            let Ok(partition) = partition.parse::<i32>() else { continue };
            let latest = CheckpointStore::read_latest(&path).map_err(|source| NodeError::Checkpoint {
                what: format!("reading the checkpoints in {}", path.display()),
                source,
            })?;
            if let Some(loaded) = latest {
                out.push(((topic.clone(), partition), loaded));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The `[state]` section: where and how often the node checkpoints its windows, anomaly
/// baselines and alert state together with the Kafka offsets they cover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// The checkpoint directory, on durable site-local storage shared by the site's nodes (one
    /// store per Kafka partition under it, see [`crate::checkpoints`]); unset: no
    /// checkpoints (a restart loses open windows and baselines).
    pub dir: Option<PathBuf>,
    /// How often to checkpoint (and so, at most, how much is read again after a crash).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Checkpoints kept (at least 2).
    pub keep: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self { dir: None, interval: Duration::from_secs(5), keep: 3 }
    }
}

impl StateConfig {
    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(!self.interval.is_zero(), "interval", "must be longer than 0")?;
        ensure(self.keep >= 2, "keep", "must be at least 2 (a damaged newest checkpoint needs one to fall back on)")?;
        ensure(
            self.dir.as_ref().is_none_or(|d| !d.as_os_str().is_empty()),
            "dir",
            "must not be empty (leave it out for no checkpoints)",
        )
    }
}
