//! How long a site keeps each grade of its raw rows, and the rule that a more sensitive grade
//! never outlives a less sensitive one ([`Retention::check`]). The store applies it
//! ([`crate::SegmentStore::apply_retention`]).

use serde::{Deserialize, Serialize};
use tessera_core::{ConfigError, DataGrade, ensure};

/// How long each grade is kept, in milliseconds of event time (`None`: for ever).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// `general` columns (and the segment file itself).
    pub general_ms: Option<i64>,
    /// `important` columns.
    pub important_ms: Option<i64>,
    /// `core` columns.
    pub core_ms: Option<i64>,
}

impl Retention {
    /// The retention of `grade`.
    pub fn of(&self, grade: DataGrade) -> Option<i64> {
        match grade {
            DataGrade::General => self.general_ms,
            DataGrade::Important => self.important_ms,
            DataGrade::Core => self.core_ms,
        }
    }

    /// Refuses retentions that keep a more sensitive grade longer than a less sensitive one
    /// (the footer key is the `general` one, so nothing can outlive it). The field is named
    /// relative to the store's section (`retention.core`).
    pub fn check(&self) -> Result<(), ConfigError> {
        let order = [
            (DataGrade::Core, self.core_ms),
            (DataGrade::Important, self.important_ms),
            (DataGrade::General, self.general_ms),
        ];
        for pair in order.windows(2) {
            let ((hi, a), (lo, b)) = (pair[0], pair[1]);
            let longer = match (a, b) {
                (None, Some(_)) => true,
                (Some(a), Some(b)) => a > b,
                _ => false,
            };
            ensure(!longer, &format!("retention.{hi}"), &format!("must not be longer than retention.{lo}"))?;
            ensure(a.is_none_or(|a| a > 0), &format!("retention.{hi}"), "must be positive")?;
        }
        Ok(())
    }
}
