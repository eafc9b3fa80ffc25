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

mod codec;
mod store;

pub use codec::{Checkpoint, SourceOffset};
pub use store::{CheckpointStore, Loaded, Sealer, Skipped, WriteStats};

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
