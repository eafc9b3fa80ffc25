//! The Raft log on disk: one redb file holding the entries (by index), the vote, the last
//! purged log id and the committed log id.
//!
//! Every write is one redb write transaction committed with `Durability::Immediate` (fsync
//! before `commit` returns), run on a blocking thread. So `save_vote` returns only once the
//! vote is on disk, and `append` reports its entries flushed only once they are; a crash at
//! any point leaves the file at the previous commit (redb's copy-on-write B-tree with a
//! checksummed commit record).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::TypeConfig;

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const LAST_PURGED: &str = "last_purged";
const COMMITTED: &str = "committed";

/// Turns any storage error into the `io::Error` openraft's storage traits return.
pub(crate) fn io_error(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(e)
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, io::Error> {
    serde_json::to_vec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, io::Error> {
    serde_json::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The Raft log of one node (cheap to clone: clones share the file).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// Opens (or creates) the log file at `path`.
    pub fn open(path: &Path) -> Result<Self, io::Error> {
        let db = Database::create(path).map_err(io_error)?;
        let tx = db.begin_write().map_err(io_error)?;
        tx.open_table(ENTRIES).map_err(io_error)?;
        tx.open_table(META).map_err(io_error)?;
        tx.commit().map_err(io_error)?;
        Ok(Self { db: Arc::new(db) })
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, io::Error> {
        let tx = self.db.begin_read().map_err(io_error)?;
        let table = tx.open_table(META).map_err(io_error)?;
        let value = table.get(key).map_err(io_error)?;
        value.map(|v| decode(v.value())).transpose()
    }

    /// Runs `write` in one durable write transaction on a blocking thread.
    async fn write(
        &self,
        write: impl FnOnce(&redb::WriteTransaction) -> Result<(), io::Error> + Send + 'static,
    ) -> Result<(), io::Error> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_write().map_err(io_error)?;
            write(&tx)?;
            tx.commit().map_err(io_error)
        })
        .await
        .map_err(io_error)?
    }

    async fn put_meta<T: Serialize>(&self, key: &'static str, value: &T) -> Result<(), io::Error> {
        let bytes = encode(value)?;
        self.write(move |tx| {
            tx.open_table(META).map_err(io_error)?.insert(key, bytes.as_slice()).map_err(io_error)?;
            Ok(())
        })
        .await
    }

    /// How many entries the log holds now (after purges), for status output.
    pub fn len(&self) -> Result<u64, io::Error> {
        let tx = self.db.begin_read().map_err(io_error)?;
        tx.open_table(ENTRIES).map_err(io_error)?.len().map_err(io_error)
    }

    /// Whether the log holds no entries.
    pub fn is_empty(&self) -> Result<bool, io::Error> {
        Ok(self.len()? == 0)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<TypeConfig>>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(*i),
            Bound::Excluded(i) => Bound::Excluded(*i),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(*i),
            Bound::Excluded(i) => Bound::Excluded(*i),
            Bound::Unbounded => Bound::Unbounded,
        };
        let tx = self.db.begin_read().map_err(io_error)?;
        let table = tx.open_table(ENTRIES).map_err(io_error)?;
        let mut entries = Vec::new();
        for item in table.range::<u64>((start, end)).map_err(io_error)? {
            let (index, bytes) = item.map_err(io_error)?;
            let entry: EntryOf<TypeConfig> = decode(bytes.value())?;
            if entry.index() != index.value() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("log entry stored at index {} says it is {}", index.value(), entry.index()),
                ));
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<TypeConfig>>, io::Error> {
        self.get_meta(VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogIdOf<TypeConfig>> = self.get_meta(LAST_PURGED)?;
        let tx = self.db.begin_read().map_err(io_error)?;
        let table = tx.open_table(ENTRIES).map_err(io_error)?;
        let last = match table.last().map_err(io_error)? {
            Some((_, bytes)) => Some(decode::<EntryOf<TypeConfig>>(bytes.value())?.log_id()),
            None => None,
        };
        Ok(LogState { last_log_id: last.or(last_purged_log_id), last_purged_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> Result<(), io::Error> {
        self.put_meta(VOTE, vote).await
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<TypeConfig>>) -> Result<(), io::Error> {
        self.put_meta(COMMITTED, &committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<TypeConfig>>, io::Error> {
        Ok(self.get_meta::<Option<LogIdOf<TypeConfig>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded =
            entries.into_iter().map(|e| Ok((e.index(), encode(&e)?))).collect::<Result<Vec<_>, io::Error>>()?;
        let result = self
            .write(move |tx| {
                let mut table = tx.open_table(ENTRIES).map_err(io_error)?;
                for (index, bytes) in &encoded {
                    table.insert(*index, bytes.as_slice()).map_err(io_error)?;
                }
                Ok(())
            })
            .await;
        // The transaction was committed durably before `write` returned; an error here stops
        // the node (openraft treats a storage error as fatal).
        result?;
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<TypeConfig>>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        self.write(move |tx| {
            tx.open_table(ENTRIES).map_err(io_error)?.retain_in(from.., |_, _| false).map_err(io_error)?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogIdOf<TypeConfig>) -> Result<(), io::Error> {
        let bytes = encode(&log_id)?;
        let upto = log_id.index();
        // One transaction: the purge mark and the deletion land together.
        self.write(move |tx| {
            tx.open_table(META).map_err(io_error)?.insert(LAST_PURGED, bytes.as_slice()).map_err(io_error)?;
            tx.open_table(ENTRIES).map_err(io_error)?.retain_in(..=upto, |_, _| false).map_err(io_error)?;
            Ok(())
        })
        .await
    }
}
