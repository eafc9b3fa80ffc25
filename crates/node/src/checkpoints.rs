//! The site's checkpoints: one checkpoint store per Kafka partition, either at
//! `<state.dir>/<topic>/<partition>/` on a volume the site's nodes share, or at
//! `<state.url>/<topic>/<partition>/` in an object store they all reach (S3 or a compatible
//! service; no shared volume needed).
//!
//! A partition's checkpoint holds the state of the motors whose readings come from that
//! partition (windows, anomaly baselines, alert hysteresis) with the partition's next offset.
//! When the consumer group moves a partition, the node that gets it loads the checkpoint the
//! old owner wrote as it handed the partition over (or the last one it wrote before it died),
//! and starts at its offset. Only the partition's current owner writes to its store; in an
//! object store each owner claims the partition with a higher epoch, and a former owner's
//! writes are refused (see [`tessera_state::ObjectCheckpointStore`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tessera_core::{ConfigError, ensure};
use tessera_ingest::{PartitionStart, PartitionStates, TopicPartition};
use tessera_state::{CheckpointStore, Loaded, ObjectCheckpointStore, PartitionStore, Sealer};

use crate::error::NodeError;

/// The per-partition stores of a site: what the ingest asks for when it is assigned
/// partitions.
#[derive(Debug, Clone)]
pub struct PartitionCheckpoints {
    location: Location,
    keep: usize,
    /// Seals every checkpoint under the site's key (see [`crate::store`]).
    sealer: Option<Arc<dyn Sealer>>,
}

/// Where a site's checkpoints are.
#[derive(Debug, Clone)]
enum Location {
    Dir(PathBuf),
    Objects {
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
        /// Runs the object store's calls (the ingest and the checkpoint writer are threads of
        /// their own, outside any runtime).
        runtime: Arc<tokio::runtime::Runtime>,
    },
}

/// A newly assigned partition's store, opened, and its newest valid checkpoint: what the
/// detection stage restores and then writes to.
#[derive(Debug)]
pub struct AssignedStore {
    /// The partition's store.
    pub store: Box<dyn PartitionStore>,
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
        Ok(Self { location: Location::Dir(dir.to_path_buf()), keep, sealer: None })
    }

    /// The stores the `[state]` section names (`dir` or `url`), if any.
    pub fn configured(config: &StateConfig) -> Result<Option<Self>, NodeError> {
        match (&config.dir, &config.url) {
            (Some(dir), _) => Ok(Some(Self::new(dir, config.keep)?)),
            (None, Some(url)) => Ok(Some(Self::in_object_store(url, &config.object_store, config.keep)?)),
            (None, None) => Ok(None),
        }
    }

    /// The stores under `url` (`s3://bucket/prefix`, `file:///path`, `memory:///`), with the
    /// object store's `options` (e.g. `aws_endpoint`, `aws_region`; credentials also from the
    /// environment's `AWS_*` variables), keeping `keep` checkpoints each.
    pub fn in_object_store(url: &str, options: &BTreeMap<String, String>, keep: usize) -> Result<Self, NodeError> {
        let bad = |why: String| NodeError::Config(ConfigError::new("state.url", why));
        let parsed = url::Url::parse(url).map_err(|e| bad(format!("{url:?} is not a URL: {e}")))?;
        let mut all: BTreeMap<String, String> =
            std::env::vars().filter(|(k, _)| k.starts_with("AWS_")).map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        all.extend(options.clone());
        let (store, prefix) =
            object_store::parse_url_opts(&parsed, all).map_err(|e| bad(format!("opening {url}: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tessera-checkpoint-io")
            .enable_all()
            .build()
            .map_err(|source| NodeError::Io { what: "starting the checkpoint store's runtime", source })?;
        let location = Location::Objects { store: Arc::from(store), prefix, runtime: Arc::new(runtime) };
        Ok(Self { location, keep, sealer: None })
    }

    /// Seals the checkpoints with `sealer` (and opens sealed ones with it).
    pub fn sealed(mut self, sealer: Option<Arc<dyn Sealer>>) -> Self {
        self.sealer = sealer;
        self
    }

    fn open(&self, tp: &TopicPartition) -> Result<PartitionStart, String> {
        let named = |e: &dyn std::fmt::Display| format!("{}/{}: {e}", tp.0, tp.1);
        let store: Box<dyn PartitionStore> = match &self.location {
            Location::Dir(dir) => {
                let mut store = CheckpointStore::open(partition_dir(dir, tp), self.keep).map_err(|e| named(&e))?;
                if let Some(sealer) = &self.sealer {
                    store = store.with_sealer(sealer.clone());
                }
                Box::new(store)
            }
            Location::Objects { store, prefix, runtime } => {
                let at = prefix.clone().join(tp.0.as_str()).clone().join(tp.1.to_string());
                let mut claimed = ObjectCheckpointStore::claim(store.clone(), at, self.keep, runtime.clone())
                    .map_err(|e| named(&e))?;
                if let Some(sealer) = &self.sealer {
                    claimed = claimed.with_sealer(sealer.clone());
                }
                tracing::info!(topic = %tp.0, partition = tp.1, epoch = claimed.epoch(), "claimed the partition's checkpoints");
                Box::new(claimed)
            }
        };
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

    /// The newest valid checkpoint of every partition of the site, read without claiming
    /// anything (a monitor or a test may read while nodes write). Sorted by partition.
    pub fn read_site(&self) -> Result<Vec<(TopicPartition, Loaded)>, NodeError> {
        let (store, prefix, runtime) = match &self.location {
            Location::Dir(dir) => return read_site_sealed(dir, self.sealer.as_deref()),
            Location::Objects { store, prefix, runtime } => (store, prefix, runtime),
        };
        let listing = |at: &ObjectPath| -> Result<Vec<ObjectPath>, NodeError> {
            runtime
                .block_on(store.list_with_delimiter(Some(at)))
                .map(|l| l.common_prefixes)
                .map_err(|e| NodeError::BadCheckpoint(format!("listing {store}/{at}: {e}")))
        };
        let mut out = Vec::new();
        for topic in listing(prefix)? {
            for partition in listing(&topic)? {
                let (Some(name), Some(number)) = (topic.filename(), partition.filename()) else { continue };
                let Ok(number) = number.parse::<i32>() else { continue };
                let latest = ObjectCheckpointStore::read_latest(
                    store.clone(),
                    partition.clone(),
                    self.sealer.clone(),
                    runtime.clone(),
                )
                .map_err(|source| NodeError::Checkpoint {
                    what: format!("reading the checkpoints in {partition}"),
                    source,
                })?;
                if let Some(loaded) = latest {
                    out.push(((name.to_string(), number), loaded));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
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
    read_site_sealed(dir, None)
}

/// [`read_site`] where the checkpoints are sealed (`[store] kek_file` set, see
/// [`crate::store::StoreConfig::checkpoint_sealer`]).
pub fn read_site_sealed(
    dir: &Path,
    sealer: Option<&dyn tessera_state::Sealer>,
) -> Result<Vec<(TopicPartition, Loaded)>, NodeError> {
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
            let latest = CheckpointStore::read_latest_sealed(&path, sealer).map_err(|source| {
                NodeError::Checkpoint { what: format!("reading the checkpoints in {}", path.display()), source }
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
    /// store per Kafka partition under it, see [`crate::checkpoints`]); unset (and no `url`):
    /// no checkpoints (a restart loses open windows and baselines).
    pub dir: Option<PathBuf>,
    /// Instead of `dir`: the checkpoints in an object store every node of the site reaches,
    /// `s3://bucket/prefix` (or `file:///path`), so no volume is shared.
    pub url: Option<String>,
    /// The object store's options (`aws_endpoint`, `aws_region`, `aws_allow_http`, ...); the
    /// credentials are best left to the environment (`AWS_ACCESS_KEY_ID`, ...).
    pub object_store: BTreeMap<String, String>,
    /// How often to checkpoint (and so, at most, how much is read again after a crash).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Checkpoints kept (at least 2).
    pub keep: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self { dir: None, url: None, object_store: BTreeMap::new(), interval: Duration::from_secs(5), keep: 3 }
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
        )?;
        ensure(self.dir.is_none() || self.url.is_none(), "url", "set either dir or url, not both")?;
        if let Some(url) = &self.url {
            let parsed =
                url::Url::parse(url).map_err(|e| ConfigError::new("url", format!("{url:?} is not a URL: {e}")))?;
            ensure(
                matches!(parsed.scheme(), "s3" | "s3a" | "file" | "memory"),
                "url",
                "the scheme must be s3:// (or file:// for a directory, memory:// for tests)",
            )?;
        }
        Ok(())
    }

    /// Whether the node checkpoints (`dir` or `url` set).
    pub fn enabled(&self) -> bool {
        self.dir.is_some() || self.url.is_some()
    }
}
