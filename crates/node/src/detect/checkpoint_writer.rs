//! The checkpoint writer thread: one barrier's checkpoints after the other, made durable
//! only once the broker has confirmed everything the stage sent before them.

use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
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

impl CheckpointWriter {
    pub(super) fn run(self, jobs: Receiver<CheckpointJob>) -> Result<()> {
        for job in jobs {
            if !job.files.is_empty() {
                self.write(&job)?;
                fail::fail_point!("detect-after-checkpoint-write");
            }
            job.acks.into_iter().for_each(BatchAck::ack);
        }
        Ok(())
    }

    fn write(&self, job: &CheckpointJob) -> Result<()> {
        let started = Instant::now();
        self.producer
            .flush(Duration::from_secs(60))
            .context("checkpoint: waiting for the broker to confirm alerts and late readings")?;
        if let Some(why) = self.delivery_failed.lock().ok().and_then(|f| f.clone()) {
            anyhow::bail!(
                "checkpoint: an alert or late reading was not delivered ({why}); stopping without committing past it"
            );
        }
        let flushed = started.elapsed();
        let (mut bytes, mut write) = (0, Duration::ZERO);
        for (tp, store, checkpoint) in &job.files {
            let written = store
                .lock()
                .map_err(|_| anyhow::anyhow!("checkpoint store lock poisoned"))?
                .write(checkpoint)
                .context("checkpoint")?;
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
