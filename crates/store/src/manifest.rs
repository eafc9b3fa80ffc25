//! What the manifest (`manifest.json`) records: each segment's stream, time range and size,
//! and per grade its columns, its key's id and whether that key was shredded; and what a shred
//! reports to the audit log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tessera_core::DataGrade;

/// The end of one grade's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shred {
    /// When (ms since the Unix epoch).
    pub at_ms: i64,
    /// Why: `retention` or the operator's reason.
    pub reason: String,
}

/// One grade's columns and key in a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GradeKey {
    /// The data key's id in the key ring.
    pub key_id: String,
    /// The top-level columns of this grade.
    pub columns: Vec<String>,
    /// Set once the key was destroyed.
    pub shredded: Option<Shred>,
}

/// A segment in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// Its id (also its file name, with `.parquet`).
    pub id: String,
    /// The stream its rows belong to.
    pub stream: String,
    /// The Kafka partition (`topic/number`) all its rows came from, when the writer knew it.
    #[serde(default)]
    pub partition: Option<String>,
    /// The oldest row's event time (ms).
    pub min_ts_ms: i64,
    /// The newest row's event time (ms).
    pub max_ts_ms: i64,
    /// Rows.
    pub rows: u64,
    /// File size.
    pub bytes: u64,
    /// When it was written (ms since the Unix epoch).
    pub written_at_ms: i64,
    /// Where it came from: `None` if written here, else the source site and segment.
    #[serde(default)]
    pub imported_from: Option<String>,
    /// Each grade present, with its key.
    pub grades: BTreeMap<DataGrade, GradeKey>,
}

impl SegmentMeta {
    /// Whether the whole file is gone (its footer key destroyed).
    pub fn destroyed(&self) -> bool {
        self.grades.get(&DataGrade::General).is_some_and(|g| g.shredded.is_some())
    }
}

/// What a shred did, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShredEvent {
    /// The segment.
    pub segment: String,
    /// Its time range.
    pub min_ts_ms: i64,
    /// Its time range.
    pub max_ts_ms: i64,
    /// The grade whose key was destroyed.
    pub grade: DataGrade,
    /// The destroyed key's id.
    pub key_id: String,
    /// Why.
    pub reason: String,
    /// Whether the file was deleted (its footer key went).
    pub file_deleted: bool,
}

/// The manifest file's content: every segment, and the number the next one takes.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) next_id: u64,
    pub(crate) segments: Vec<SegmentMeta>,
}
