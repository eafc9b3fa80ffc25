//! Identifiers of motors and sites: short, printable, non-empty strings.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest identifier we accept, in bytes. Ids are Kafka keys and Arrow strings; a longer one
/// is almost always a gateway bug (a whole payload in the key field).
pub const MAX_ID_BYTES: usize = 128;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is empty (or absent on the wire, which decodes to empty).
    #[error("{kind} is empty")]
    Empty {
        /// "motor_id" or "site_id".
        kind: &'static str,
    },
    /// The id is longer than [`MAX_ID_BYTES`].
    #[error("{kind} is {len} bytes long, the limit is {MAX_ID_BYTES}")]
    TooLong {
        /// "motor_id" or "site_id".
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The id contains a control character or white space.
    #[error("{kind} contains a control or white-space character")]
    BadCharacter {
        /// "motor_id" or "site_id".
        kind: &'static str,
    },
}

fn check_id(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong { kind, len: s.len() });
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(IdError::BadCharacter { kind });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks and wraps an id.
            pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
                let id = id.into();
                check_id($kind, &id)?;
                Ok(Self(id))
            }

            /// Checks an id without taking it (the borrowed decoding path).
            pub fn check(id: &str) -> Result<(), IdError> {
                check_id($kind, id)
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(id: String) -> Result<Self, IdError> {
                Self::new(id)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A motor's id, unique across the whole cluster (e.g. `M0042` or `plantA-pump-7`). It is
    /// the Kafka message key and the unit of partitioning, ordering and windowing.
    MotorId,
    "motor_id"
);
string_id!(
    /// A site's (plant's) id, e.g. `site-a`. A motor belongs to exactly one site.
    SiteId,
    "site_id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_long_and_blank_ids() {
        assert_eq!(MotorId::new(""), Err(IdError::Empty { kind: "motor_id" }));
        assert!(matches!(MotorId::new("x".repeat(129)), Err(IdError::TooLong { len: 129, .. })));
        assert_eq!(SiteId::new("a b"), Err(IdError::BadCharacter { kind: "site_id" }));
        assert_eq!(MotorId::new("M0001").unwrap().as_str(), "M0001");
    }
}
