//! The checkpoint writer thread: one barrier's checkpoints after the other, made durable
//! only once the broker has confirmed everything the stage sent before them and the site
//! store holds every reading before their barrier (see [`crate::durability`]). Barriers that
//! wait for the store are merged: a partition's newest checkpoint replaces its older ones.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::durability::{Durability, Reached};
use crate::error::NodeError;
use rdkafka::producer::{Producer as _, ThreadedProducer};
use tessera_ingest::{BatchAck, TopicPartition};
use tessera_state::{Checkpoint, PartitionStore};

use super::{DeliveryCheck, DetectStats};

/// A partition's checkpoint store, shared by the detection thread and the writer.
pub(super) type SharedStore = Arc<Mutex<Box<dyn PartitionStore>>>;

/// A due partition, its store, and its checkpoint.
pub(super) type CheckpointFile = (TopicPartition, SharedStore, Checkpoint);

/// One barrier's checkpoints, encoded on the detection thread, for the writer.
pub(super) struct CheckpointJob {
    pub(super) epoch: u64,
    pub(super) files: Vec<CheckpointFile>,
    /// The batches before the barrier: acknowledged once the checkpoints are durable.
    pub(super) acks: Vec<BatchAck>,
    /// Time spent encoding.
    pub(super) encode: Duration,
}

/// The checkpoint writer thread: takes the barriers' jobs in order, and for each waits for the
/// broker to confirm what the stage sent so far, writes the checkpoints durably, and then
/// acknowledges the batches they cover. It stops at the first failure, acknowledging nothing
/// more (the detection thread then stops the stage with the error).
pub(super) struct CheckpointWriter {
    pub(super) producer: Arc<ThreadedProducer<DeliveryCheck>>,
    pub(super) delivery_failed: Arc<Mutex<Option<String>>>,
    pub(super) stats: Arc<Mutex<DetectStats>>,
    /// The site store the checkpoints wait for, if the node has one.
    pub(super) store: Option<Arc<Durability>>,
}

/// The writer's queue and its running thread.
pub(super) type RunningWriter = (SyncSender<CheckpointJob>, JoinHandle<Result<(), NodeError>>);

impl CheckpointWriter {
    /// Starts the writer's thread; the detection thread starts it when its loop starts, and
    /// joins it before the loop returns.
    pub(super) fn spawn(self) -> Result<RunningWriter, NodeError> {
        // One job queued while another is written: a slow disk holds up the detection thread
        // (and so the ingest) instead of piling up encoded state.
        let (jobs, queue) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("tessera-checkpoint".into())
            .spawn(move || self.run(queue))
            .map_err(|source| NodeError::Io { what: "starting the checkpoint writer", source })?;
        Ok((jobs, thread))
    }

    fn run(self, jobs: Receiver<CheckpointJob>) -> Result<(), NodeError> {
        let Some(store) = self.store.clone() else {
            for job in jobs {
                self.complete(job)?;
            }
            return Ok(());
        };
        // The jobs whose barrier the store is not yet durable through, oldest first.
        let mut waiting: Vec<CheckpointJob> = Vec::new();
        let mut open = true;
        loop {
            if waiting.is_empty() && open {
                match jobs.recv() {
                    Ok(job) => waiting.push(job),
                    Err(_) => open = false,
                }
            }
            while open {
                match jobs.try_recv() {
                    Ok(job) => waiting.push(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            let Some(oldest) = waiting.first().map(|j| j.epoch) else {
                if open {
                    continue;
                }
                break;
            };
            // Woken as soon as the store cuts, so that the window between its segment and the
            // checkpoints that cover it stays short.
            let reached = store.wait_through(oldest, Duration::from_millis(20));
            let through = store.through();
            let ready = waiting.iter().take_while(|j| j.epoch <= through).count();
            if ready > 0 {
                self.complete(merge(waiting.drain(..ready)))?;
            } else if reached == Reached::Never {
                // The store stopped before holding these barriers' readings: their checkpoints
                // are not written and their batches stay unacknowledged (read again).
                tracing::warn!(
                    barriers = waiting.len(),
                    "the store stopped first: the newest checkpoints are not written"
                );
                waiting.drain(..).flat_map(|j| j.acks).for_each(BatchAck::leave_unacknowledged);
                break;
            }
        }
        Ok(())
    }

    /// Writes `job`'s checkpoints and then acknowledges its batches.
    fn complete(&self, job: CheckpointJob) -> Result<(), NodeError> {
        if !job.files.is_empty() {
            self.write(&job)?;
            fail::fail_point!("detect-after-checkpoint-write");
        }
        job.acks.into_iter().for_each(BatchAck::ack);
        Ok(())
    }

    fn write(&self, job: &CheckpointJob) -> Result<(), NodeError> {
        let started = Instant::now();
        self.producer.flush(Duration::from_secs(60)).map_err(|source| NodeError::Kafka {
            what: "checkpoint: waiting for the broker to confirm alerts and late readings".into(),
            source,
        })?;
        if let Some(why) = self.delivery_failed.lock().ok().and_then(|f| f.clone()) {
            return Err(NodeError::Undelivered(why));
        }
        let flushed = started.elapsed();
        let (mut bytes, mut write) = (0, Duration::ZERO);
        for (tp, store, checkpoint) in &job.files {
            let written =
                store.lock().map_err(|_| NodeError::Poisoned("checkpoint store"))?.write(checkpoint).map_err(
                    |source| NodeError::Checkpoint { what: format!("checkpoint of {}/{}", tp.0, tp.1), source },
                )?;
            bytes += written.bytes;
            write += written.elapsed;
            if let Ok(mut s) = self.stats.lock() {
                s.written.insert(tp.clone(), checkpoint.id);
            }
        }
        if let Ok(mut s) = self.stats.lock() {
            s.checkpoints += job.files.len() as u64;
            s.last_checkpoint_bytes = bytes;
            s.last_checkpoint_flush_us = flushed.as_micros() as u64;
            s.last_checkpoint_encode_us = job.encode.as_micros() as u64;
            s.last_checkpoint_write_us = write.as_micros() as u64;
            s.checkpoint_encode.observe(job.encode);
            s.checkpoint_write.observe(started.elapsed());
        }
        tracing::debug!(partitions = job.files.len(), bytes, epoch = job.epoch, "checkpoints written");
        Ok(())
    }
}

/// Barriers' jobs as one: each partition's newest checkpoint, every batch's acknowledgement.
fn merge(jobs: impl Iterator<Item = CheckpointJob>) -> CheckpointJob {
    let mut newest: BTreeMap<TopicPartition, (SharedStore, Checkpoint)> = BTreeMap::new();
    let mut merged = CheckpointJob { epoch: 0, files: Vec::new(), acks: Vec::new(), encode: Duration::ZERO };
    for job in jobs {
        merged.epoch = merged.epoch.max(job.epoch);
        merged.encode += job.encode;
        merged.acks.extend(job.acks);
        for (tp, store, checkpoint) in job.files {
            newest.insert(tp, (store, checkpoint));
        }
    }
    merged.files = newest.into_iter().map(|(tp, (store, checkpoint))| (tp, store, checkpoint)).collect();
    merged
}
