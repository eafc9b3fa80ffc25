//! An error and its causes on one line (`starting the ingest: creating the consumer: …`), for
//! logs and for the reasons kept in tables. Errors keep their cause as `source()` rather than
//! in their message, so whoever prints one as text walks the chain here.

use std::error::Error;
use std::fmt::Write as _;

/// `err`'s message followed by each cause's, separated by `": "`; a cause whose message the
/// previous one already ends with is left out (some errors repeat their source).
pub fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let message = c.to_string();
        if !out.ends_with(&message) {
            let _ = write!(out, ": {message}");
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapped(&'static str, Option<Box<Wrapped>>);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn causes_follow_the_message_once_each() {
        let inner = Wrapped("disk full", None);
        let e = Wrapped("writing a segment", Some(Box::new(Wrapped("segment 7", Some(Box::new(inner))))));
        assert_eq!(error_chain(&e), "writing a segment: segment 7: disk full");
        let repeats = Wrapped("segment 7: disk full", Some(Box::new(Wrapped("disk full", None))));
        assert_eq!(error_chain(&repeats), "segment 7: disk full");
    }
}
