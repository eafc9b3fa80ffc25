//! What can go wrong in the segment store.
//!
//! Each message says it all (logs and the SQL endpoint show only the message); the error
//! underneath, where there is a typed one (the file system's, serde's, parquet's, arrow's), is
//! also kept as the source. ring and blahaj give no typed cause worth keeping (ring's error is
//! deliberately opaque, blahaj's are static strings): their variants carry our own reason.

use std::path::PathBuf;

use tessera_core::{ConfigError, DataGrade};

/// Errors of the segment store and its keys.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("segment store: {op} {path}: {cause}")]
    Io {
        /// The operation (`create`, `write`, `read`, `rename`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        cause: std::io::Error,
    },
    /// A key-encryption key file could not be read.
    #[error("key-encryption key: reading {path}: {cause}")]
    KekFile {
        /// The KEK file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        cause: std::io::Error,
    },
    /// A key-encryption key is malformed or of the wrong version (or no key could be made).
    #[error("key-encryption key: {0}")]
    Kek(String),
    /// A data key could not be unwrapped (wrong key-encryption key, or a tampered key ring).
    #[error("data key {id}: {reason}")]
    Key {
        /// The key's id.
        id: String,
        /// Why.
        reason: String,
    },
    /// The data was destroyed by crypto-shredding: its key is gone.
    #[error(
        "segment {segment}: the {grade} columns were shredded at {at_ms} ms ({reason}); they can no longer be read"
    )]
    Shredded {
        /// The segment.
        segment: String,
        /// The grade whose key was destroyed.
        grade: DataGrade,
        /// When.
        at_ms: i64,
        /// Why (retention, an operator's request).
        reason: String,
    },
    /// No such segment.
    #[error("no segment {0}")]
    UnknownSegment(String),
    /// A Parquet encode or decode error (a wrong key shows up here too).
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// An Arrow error.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A manifest, key ring or bundle description that does not decode.
    #[error("{what} {path}: {cause}")]
    Corrupt {
        /// What it is.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// What is wrong, as serde read it.
        #[source]
        cause: serde_json::Error,
    },
    /// Key custody: shares missing, inconsistent or refused.
    #[error("key custody: {0}")]
    Custody(String),
    /// An export into a directory that already holds something.
    #[error("bundle directory {} is not empty", .0.display())]
    BundleNotEmpty(PathBuf),
    /// A configuration value that cannot work; names the field relative to the store's
    /// section (`retention.core`).
    #[error("store config: {0}")]
    Config(#[from] ConfigError),
}

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An [`StoreError::Io`] builder for `map_err`.
pub(crate) fn io<'a>(op: &'static str, path: &'a std::path::Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |cause| StoreError::Io { op, path: path.to_path_buf(), cause }
}
