//! The checkpoint writer thread: one barrier's checkpoints after the other, made durable
//! only once the broker has confirmed everything the stage sent before them.

use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::NodeError;
use rdkafka::producer::{Producer as _, ThreadedProducer};
use tessera_ingest::{BatchAck, TopicPartition};
use tessera_state::{Checkpoint, CheckpointStore};

use super::{DeliveryCheck, DetectStats};

/// A due partition, its store, and its checkpoint.
pub(super) type CheckpointFile = (TopicPartition, Arc<Mutex<CheckpointStore>>, Checkpoint);

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
        for job in jobs {
            if !job.files.is_empty() {
                self.write(&job)?;
                fail::fail_point!("detect-after-checkpoint-write");
            }
            job.acks.into_iter().for_each(BatchAck::ack);
        }
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
        }
        tracing::debug!(partitions = job.files.len(), bytes, epoch = job.epoch, "checkpoints written");
        Ok(())
    }
}
