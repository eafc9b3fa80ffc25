//! One running node: the ingest feeding the detection stage, checkpointed when the config
//! names a state directory.
//!
//! Start-up with a state directory: the newest valid checkpoint is restored into the engine
//! (damaged newer files are skipped and reported; a directory where nothing is readable stops
//! the node rather than silently starting empty), and the ingest resumes at the checkpoint's
//! offsets, skipping what the state already holds. The ingest then sends a barrier every
//! `state.interval`, and on revoke and stop; the detection stage checkpoints at each one before
//! acknowledging (see [`crate::detect`]).

use std::path::PathBuf;
use std::sync::mpsc::sync_channel;

use anyhow::{Context as _, Result};
use tessera_ingest::{Ingest, IngestStats};
use tessera_state::{CheckpointStore, Skipped};
use tessera_stream::{RestoreReport, StreamEngine};

use crate::config::NodeConfig;
use crate::detect::{Checkpointing, Detect, DetectStats, ENGINE_SECTION, build_engine};

/// What a start-up restored.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The checkpoint's id and file.
    pub id: u64,
    /// Its file.
    pub path: PathBuf,
    /// Which queries got their state back.
    pub report: RestoreReport,
    /// Newer checkpoint files that did not decode.
    pub skipped: Vec<Skipped>,
    /// Partitions with a resume offset.
    pub partitions: usize,
}

/// A running node.
pub struct Node {
    ingest: Ingest,
    detect: Detect,
    restored: Option<Restored>,
}

impl Node {
    /// Builds the engine from the config, restores the newest checkpoint if a state directory
    /// is configured, and starts the ingest and the detection stage.
    pub fn start(config: &NodeConfig) -> Result<Node> {
        config.validate()?;
        let mut engine = build_engine(&config.detect)?;
        let mut ingest_config = config.ingest.clone();
        let mut resume = Vec::new();
        let mut restored = None;
        let checkpointing = match &config.state.dir {
            None => None,
            Some(dir) => {
                ingest_config.checkpoint_interval = config.state.interval;
                let store = CheckpointStore::open(dir, config.state.keep).context("opening the state directory (state.dir)")?;
                let latest = store.latest().context("loading the newest checkpoint")?;
                let (last_id, offsets) = match latest {
                    None => (0, Vec::new()),
                    Some(loaded) => {
                        for s in &loaded.skipped {
                            tracing::warn!(file = %s.path.display(), reason = %s.reason, "skipped an unreadable checkpoint");
                        }
                        let section = loaded
                            .checkpoint
                            .section(ENGINE_SECTION)
                            .with_context(|| format!("checkpoint {} has no {ENGINE_SECTION} section", loaded.path.display()))?;
                        let report = engine.restore(section).with_context(|| format!("restoring {}", loaded.path.display()))?;
                        let cp = &loaded.checkpoint;
                        resume = cp.offsets.iter().map(|o| (o.topic.clone(), o.partition, o.next_offset)).collect();
                        tracing::info!(
                            id = cp.id,
                            motors = report.motors,
                            open_windows = report.open_windows,
                            fresh = ?report.fresh,
                            dropped = ?report.dropped,
                            "restored checkpoint"
                        );
                        restored = Some(Restored { id: cp.id, path: loaded.path.clone(), report, skipped: loaded.skipped.clone(), partitions: cp.offsets.len() });
                        (cp.id, cp.offsets.clone())
                    }
                };
                Some(Checkpointing { store, last_id, offsets })
            }
        };
        let (tx, rx) = sync_channel(64);
        let ingest = Ingest::start_from(ingest_config, tx, resume).context("starting the ingest")?;
        let detect = Detect::start_checkpointed(engine, &config.detect, &config.ingest.brokers, rx, checkpointing)?;
        Ok(Node { ingest, detect, restored })
    }

    /// What start-up restored, if anything.
    pub fn restored(&self) -> Option<&Restored> {
        self.restored.as_ref()
    }

    /// The ingest's counters.
    pub fn ingest_stats(&self) -> IngestStats {
        self.ingest.metrics().snapshot()
    }

    /// The detection stage's counters.
    pub fn detect_stats(&self) -> DetectStats {
        self.detect.stats()
    }

    /// True if a part of the node has ended on its own (an error); [`Node::stop`] says which.
    pub fn failed(&self) -> bool {
        self.ingest.is_finished() || self.detect.is_finished()
    }

    /// Stops: the ingest hands everything on behind a last barrier (checkpointed, then
    /// committed), then the detection stage ends. Returns the ingest's counters and the
    /// engine; if the detection stage failed, its error (the root cause) comes first.
    pub fn stop(self) -> Result<(IngestStats, StreamEngine)> {
        let ingest = self.ingest.stop();
        let engine = self.detect.stop();
        match (ingest, engine) {
            (_, Err(e)) => Err(e),
            (Err(e), _) => Err(e.into()),
            (Ok(stats), Ok(engine)) => Ok((stats, engine)),
        }
    }
}
