//! Site-local storage of raw data, protected per data grade (`tessera-store`).
//!
//! - [`SegmentStore`]: rows of a stream as Parquet segments with modular encryption, one data
//!   key per grade per segment, a manifest of time ranges ([`SegmentMeta`]), retention per
//!   grade ([`Retention`]) and crypto-shredding (destroying a time range's keys).
//! - [`Keyring`] and [`Kek`]: envelope encryption — data keys sealed under the site's
//!   key-encryption key, which is kept apart from the data and can be rotated.
//! - [`KekSealer`]: seals other site-local files (checkpoints) under a key derived from the KEK.
//! - [`custody`]: moving segments to another site (re-encrypted, under an export key split
//!   k-of-n across sites with Shamir secret sharing).
//!
//! The store knows nothing of queries or networks; the server wires it to the stream and to
//! SQL, and writes its [`ShredEvent`]s and custody events to the audit log.

pub mod custody;
mod error;
mod keys;
mod manifest;
mod retention;
mod sealer;
mod segment;

pub use error::{Result, StoreError};
pub use keys::{KEY_LEN, Kek, Keyring, SealedKey, SecretKey, from_hex, to_hex};
pub use manifest::{GradeKey, SegmentMeta, Shred, ShredEvent};
pub use retention::Retention;
pub use sealer::KekSealer;
pub use segment::{EVENT_TIME_COLUMNS, OpenSegment, SegmentStore};
