//! A configuration value that cannot work, with the field's path kept as data.
//!
//! Each feature validates its own config section and names the field relative to it
//! (`shards`); the node's config, which assembles the sections, puts the section in front
//! ([`ConfigError::within`]: `ingest.shards`). Nobody parses an error message to find a field.

use std::fmt;

/// A bad configuration value: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field's path as spelled in the config file, e.g. `ingest.shards` or `topics[0].name`.
    pub field: String,
    /// What is wrong with it, e.g. `must be at least 1`.
    pub problem: String,
}

impl ConfigError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { field: field.into(), problem: problem.into() }
    }

    /// The same problem, the field's path now starting with `section` (`shards` within
    /// `ingest` is `ingest.shards`).
    pub fn within(mut self, section: &str) -> Self {
        self.field = if self.field.is_empty() {
            section.to_string()
        } else if self.field.starts_with('[') {
            format!("{section}{}", self.field)
        } else {
            format!("{section}.{}", self.field)
        };
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// `Err(ConfigError)` unless `ok`: `ensure(x > 0, "shards", "must be at least 1")?`.
pub fn ensure(ok: bool, field: &str, problem: &str) -> Result<(), ConfigError> {
    if ok { Ok(()) } else { Err(ConfigError::new(field, problem)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_prefix_the_path() {
        let e = ConfigError::new("shards", "must be at least 1").within("ingest");
        assert_eq!(e.field, "ingest.shards");
        assert_eq!(e.to_string(), "ingest.shards: must be at least 1");
        assert_eq!(ConfigError::new("[2].name", "empty").within("topics").field, "topics[2].name");
        assert!(ensure(true, "a", "b").is_ok());
        assert_eq!(ensure(false, "a", "b").unwrap_err().field, "a");
    }
}
