//! Data grades and the lifecycle stages a grade's policy governs.
//!
//! Every piece of data Tessera handles is graded `general`, `important` or `core`; each grade
//! has a rule for each stage of the data's life (generation, transmission, storage, use,
//! migration, destruction). The rules themselves live in the cluster's replicated registry;
//! this module only names the grades and stages, so every crate spells them the same way.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How sensitive a piece of data is, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataGrade {
    /// May leave the site under the general rules (e.g. fleet-wide aggregates).
    General,
    /// Leaves the site only as policy allows (e.g. per-motor summaries).
    Important,
    /// Never leaves the site in raw form (e.g. raw telemetry).
    Core,
}

/// A stage of the data's life that a grade's policy has a rule for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataStage {
    /// When the data is produced (by a motor, or derived by a query).
    Generation,
    /// When it moves between processes or sites.
    Transmission,
    /// While it is kept on disk.
    Storage,
    /// When a query or a person reads it.
    Use,
    /// When it is moved to another store or site for good.
    Migration,
    /// When it is deleted (or crypto-shredded).
    Destruction,
}

/// A string that names no grade or no stage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} '{given}'; expected one of: {expected}")]
pub struct UnknownName {
    /// "data grade" or "data stage".
    pub kind: &'static str,
    /// What was given.
    pub given: String,
    /// The accepted names, comma-separated.
    pub expected: &'static str,
}

macro_rules! named_enum {
    ($ty:ident, $kind:literal, $( $variant:ident = $name:literal ),+ ) => {
        impl $ty {
            /// Every value, in order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The lower-case name used in config, SQL and the CLI.
            pub fn name(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(UnknownName {
                        kind: $kind,
                        given: s.to_string(),
                        expected: concat!($($name, " "),+),
                    }),
                }
            }
        }
    };
}

named_enum!(DataGrade, "data grade", General = "general", Important = "important", Core = "core");
named_enum!(
    DataStage,
    "data stage",
    Generation = "generation",
    Transmission = "transmission",
    Storage = "storage",
    Use = "use",
    Migration = "migration",
    Destruction = "destruction"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_explained() {
        for g in DataGrade::ALL {
            assert_eq!(g.name().parse::<DataGrade>(), Ok(*g));
        }
        for s in DataStage::ALL {
            assert_eq!(s.to_string().parse::<DataStage>(), Ok(*s));
        }
        assert_eq!(" Core ".parse::<DataGrade>(), Ok(DataGrade::Core));
        let err = "secret".parse::<DataGrade>().unwrap_err().to_string();
        assert!(err.contains("unknown data grade 'secret'") && err.contains("important"), "{err}");
        assert!(DataGrade::General < DataGrade::Core);
    }
}
