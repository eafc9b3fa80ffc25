//! How the detection stage and the site store agree on what is durable.
//!
//! The stage sends the store its readings ([`StoreInput::Rows`]) and, after each checkpoint
//! barrier, a mark ([`StoreInput::Mark`]) carrying the barrier's epoch. The store makes every
//! row sent before a mark durable in a segment at its next cut (at once for a mark with `now`:
//! a partition is handed over, or the stage stops) and then raises [`Durability::through`] to
//! that epoch. A barrier's checkpoints are written, and its batches acknowledged (so their
//! offsets committed), only once the store is durable through its epoch: a checkpoint never
//! points past readings the store could still lose. A stage without checkpoints hands the
//! store its acknowledgements instead ([`StoreInput::Acks`]), given once their rows are cut.

use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use arrow_array::RecordBatch;
use tessera_ingest::BatchAck;

/// What the detection stage sends the store, in the order it took the readings in.
#[derive(Debug)]
pub enum StoreInput {
    /// Readings taken in.
    Rows(RecordBatch),
    /// Everything sent before is to be durable for the checkpoints of barrier `epoch`.
    Mark {
        /// The barrier's epoch.
        epoch: u64,
        /// Cut a segment at once rather than when one is due.
        now: bool,
    },
    /// Acknowledgements of batches whose rows were sent before (a stage without
    /// checkpoints): given once those rows are in a segment.
    Acks(Vec<BatchAck>),
}

/// Where the detection stage sends the store its input, and how far the store is durable.
#[derive(Debug, Clone)]
pub struct StoreLink {
    pub(crate) input: SyncSender<StoreInput>,
    pub(crate) durability: Arc<Durability>,
}

/// How far the store is durable: every row sent before mark `through` is in a segment.
#[derive(Debug, Default)]
pub struct Durability {
    state: Mutex<DurableState>,
    changed: Condvar,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct DurableState {
    through: u64,
    /// The store's writer has stopped (cleanly or not): `through` moves no more.
    closed: bool,
}

/// What waiting for a mark found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// Durable through the mark.
    Yes,
    /// Not yet.
    NotYet,
    /// Never: the store stopped first.
    Never,
}

impl Durability {
    /// Records that the rows before mark `epoch` are durable.
    pub(crate) fn durable_through(&self, epoch: u64) {
        if let Ok(mut s) = self.state.lock()
            && epoch > s.through
        {
            s.through = epoch;
            self.changed.notify_all();
        }
    }

    /// Records that the store's writer stopped.
    pub(crate) fn close(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.closed = true;
            self.changed.notify_all();
        }
    }

    /// Waits up to `timeout` for the store to be durable through `epoch`.
    pub fn wait_through(&self, epoch: u64, timeout: Duration) -> Reached {
        let Ok(guard) = self.state.lock() else { return Reached::Never };
        let Ok((s, _)) = self.changed.wait_timeout_while(guard, timeout, |s| s.through < epoch && !s.closed) else {
            return Reached::Never;
        };
        match (s.through >= epoch, s.closed) {
            (true, _) => Reached::Yes,
            (false, true) => Reached::Never,
            (false, false) => Reached::NotYet,
        }
    }

    /// The newest mark the store is durable through.
    pub fn through(&self) -> u64 {
        self.state.lock().map(|s| s.through).unwrap_or(0)
    }
}

/// Closes the [`Durability`] when dropped: the store's writer holds one, so that waiters learn
/// of its end however it ends.
pub(crate) struct CloseOnDrop(pub(crate) Arc<Durability>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_ends_at_the_mark_or_at_the_stores_end() {
        let d = Arc::new(Durability::default());
        assert_eq!(d.wait_through(1, Duration::from_millis(1)), Reached::NotYet);
        let raiser = {
            let d = d.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                d.durable_through(3);
            })
        };
        assert_eq!(d.wait_through(2, Duration::from_secs(10)), Reached::Yes, "a later mark covers an earlier one");
        raiser.join().unwrap();
        d.durable_through(1);
        assert_eq!(d.through(), 3, "never moves back");
        assert_eq!(d.wait_through(4, Duration::from_millis(1)), Reached::NotYet);
        drop(CloseOnDrop(d.clone()));
        assert_eq!(d.wait_through(4, Duration::from_secs(10)), Reached::Never);
        assert_eq!(d.wait_through(3, Duration::from_secs(10)), Reached::Yes);
    }
}
