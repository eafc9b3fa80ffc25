//! What can go wrong in the segment store.

use std::path::PathBuf;

use tessera_core::DataGrade;

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
        cause: std::io::Error,
    },
    /// A key-encryption key file is missing, malformed or of the wrong version.
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
    #[error("segment {segment}: the {grade} columns were shredded at {at_ms} ms ({reason}); they can no longer be read")]
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
    /// A manifest, key ring or bundle that does not decode.
    #[error("{what} {path}: {reason}")]
    Corrupt {
        /// What it is.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Key custody: shares missing, inconsistent or refused.
    #[error("key custody: {0}")]
    Custody(String),
    /// A configuration value that cannot work; names the field.
    #[error("store config: {0}")]
    Config(String),
}

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An [`StoreError::Io`] builder for `map_err`.
pub(crate) fn io<'a>(op: &'static str, path: &'a std::path::Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |cause| StoreError::Io { op, path: path.to_path_buf(), cause }
}
