//! How the detection stage and the site store agree on what is durable.
//!
//! The stage sends the store its readings and what it made of them ([`StoreInput::Rows`]:
//! window results, alert events, late readings) and, after each checkpoint
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
use datafusion::arrow::datatypes::SchemaRef;
use tessera_core::telemetry_schema;
use tessera_ingest::BatchAck;
use tessera_stream::alerts::{alerts_schema, motor_windows_schema};
use tessera_stream::engine::late_schema;

/// What a store keeps: each stream is a table the detection stage fills, kept in segments of
/// its own and served under the table's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StoredStream {
    /// The readings taken in.
    Telemetry,
    /// Each query's result per closed window.
    MotorWindows,
    /// Alert events (open, update, close).
    Alerts,
    /// Readings too late for a window.
    LateEvents,
}

impl StoredStream {
    /// Every stream, in the order tables are listed.
    pub const ALL: [Self; 4] = [Self::Telemetry, Self::MotorWindows, Self::Alerts, Self::LateEvents];

    /// The stream's (and its table's) name, as graded in the cluster's grade map.
    pub fn name(self) -> &'static str {
        match self {
            Self::Telemetry => "telemetry",
            Self::MotorWindows => "motor_windows",
            Self::Alerts => "alerts",
            Self::LateEvents => "late_events",
        }
    }

    /// The stream served as table `name`, if one is.
    pub fn of_table(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The rows' schema: the engine table's.
    pub fn schema(self) -> SchemaRef {
        match self {
            Self::Telemetry => telemetry_schema(),
            Self::MotorWindows => motor_windows_schema(),
            Self::Alerts => alerts_schema(),
            Self::LateEvents => late_schema(),
        }
    }

    /// The event-time column segments are ranged, expired and pruned by (one of
    /// [`tessera_store::EVENT_TIME_COLUMNS`]).
    pub fn time_column(self) -> &'static str {
        match self {
            Self::Telemetry | Self::LateEvents => "ts",
            Self::MotorWindows | Self::Alerts => "window_start",
        }
    }
}

/// What the detection stage sends the store, in the order it took the readings in.
#[derive(Debug)]
pub enum StoreInput {
    /// Rows of a stream: readings taken in, or what the engine made of them.
    Rows(StoredStream, RecordBatch),
    /// Everything sent before is to be durable for the checkpoints of barrier `epoch`.
    Mark {
        /// The barrier's epoch.
        epoch: u64,
        /// Cut a segment at once rather than when one is due.
        now: bool,
        /// Motors first seen since the last barrier, with the partition (`topic/number`) their
        /// readings come from: the store files each row's segment under its partition.
        motors: Vec<(String, String)>,
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
