//! Site-local durable checkpoints (`tessera-state`).
//!
//! A [`Checkpoint`] holds a node's operator state (opaque, named sections: window state,
//! detector state, alert state) together with the Kafka offsets that state covers, so the two
//! always agree: after a crash the node restores the state and resumes reading at exactly those
//! offsets. The [`CheckpointStore`] keeps them as files in one directory on the node's own disk
//! (raw data never leaves the site).
//!
//! Durability, in order: the checkpoint is written to a temporary file, `fsync`ed, renamed to
//! its final name, and the directory is `fsync`ed. Only when [`CheckpointStore::write`] has
//! returned may the caller commit the offsets to Kafka. A crash at any point leaves either the
//! previous checkpoint or the new one; a torn or corrupted file (detected by its checksum) is
//! skipped on load and reported, and the newest valid one is used. Write errors (a full disk,
//! say) come back as [`StateError::Io`] naming the operation and the file, and leave the
//! previous checkpoints untouched.
//!
//! Checkpoints hold raw state (open windows' readings among it), so a site that keeps its raw
//! data encrypted gives the store a [`Sealer`]: every file is then sealed (authenticated
//! encryption) before it touches the disk, and opened on load.
//!
//! Where the site's nodes share no volume, a partition's checkpoints live in an object store
//! instead ([`ObjectCheckpointStore`], S3 or a compatible service), claimed by epochs so that
//! an owner that lost the partition cannot overwrite its new owner's state. Both stores are
//! [`PartitionStore`]s.

mod codec;
mod object;
mod store;

pub use codec::{Checkpoint, SourceOffset};
pub use object::ObjectCheckpointStore;
pub use store::{CheckpointStore, Loaded, Sealer, Skipped, WriteStats};

/// One partition's checkpoints, wherever they are kept: written by the partition's owner,
/// read back by whoever owns it next.
pub trait PartitionStore: Send + std::fmt::Debug {
    /// The newest id stored: the next write needs a higher one.
    fn newest(&self) -> Option<u64>;
    /// Writes `checkpoint` durably: once this returns `Ok`, the offsets it names may be
    /// committed. On error the previous checkpoints are intact and the caller must not commit.
    fn write(&mut self, checkpoint: &Checkpoint) -> Result<WriteStats>;
    /// The newest checkpoint that decodes (`None`: never checkpointed); an error if none does.
    fn latest(&self) -> Result<Option<Loaded>>;
}

use std::path::PathBuf;

/// What can go wrong with checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file operation failed (e.g. the disk is full); nothing was committed.
    #[error("checkpoint store: {op} {path}: {cause}")]
    Io {
        /// The operation (`create`, `write`, `sync`, `rename`, `read`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error (in the message too, which logs show alone).
        #[source]
        cause: std::io::Error,
    },
    /// A checkpoint file does not decode (torn write, bit rot, another program's file).
    #[error("checkpoint {path} is unreadable: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A call to the object store failed; nothing was committed.
    #[error("checkpoint store: {op} {name}: {cause}")]
    Remote {
        /// The operation (`put`, `get`, `list`, `delete`).
        op: &'static str,
        /// The object (or prefix), with the store's name.
        name: PathBuf,
        /// The object store's error (boxed: it is large).
        #[source]
        cause: Box<object_store::Error>,
    },
    /// The partition has a newer owner: this one may not write its checkpoints any more.
    #[error(
        "checkpoints of {prefix}: a newer owner (epoch {newer}) has claimed the partition; this owner's epoch {epoch} may not write"
    )]
    Fenced {
        /// The partition's prefix in the store.
        prefix: String,
        /// This owner's epoch.
        epoch: u64,
        /// The newer owner's.
        newer: u64,
    },
    /// Checkpoint ids must grow, so that the newest file is the newest state.
    #[error("checkpoint id {id} is not above the newest stored one ({newest})")]
    NotNewer {
        /// The id given.
        id: u64,
        /// The newest stored id.
        newest: u64,
    },
}

/// Result with [`StateError`].
pub type Result<T, E = StateError> = std::result::Result<T, E>;
