//! What one query, and sign-ins, may take from a node ([`QueryLimits`]): every query plans and
//! runs in a context of its own whose memory pool is capped (an operator that would exceed it
//! fails with `RESOURCE_EXHAUSTED` instead of growing the node), its SQL text and parameters
//! are bounded, and it stops with `DEADLINE_EXCEEDED` once it has run for `timeout`, its
//! result stream included. Sign-ins (Argon2id) run on the blocking pool, at most
//! `sign_ins_at_once` together.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use futures::{Stream, StreamExt as _};

use crate::error::SqlError;

/// Per-query bounds of a SQL endpoint (the `[sql]` section's `query_*` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryLimits {
    /// Memory one query's operators may hold (hash tables, sorts, buffered batches).
    pub memory_bytes: usize,
    /// How long a query may run, from its arrival to its last row.
    pub timeout: Duration,
    /// The longest SQL text taken.
    pub max_sql_bytes: usize,
    /// The most bytes of parameters bound to a prepared statement.
    pub max_param_bytes: usize,
    /// How many sign-ins (password checks) run at once; others wait.
    pub sign_ins_at_once: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            memory_bytes: 256 << 20,
            timeout: Duration::from_secs(60),
            max_sql_bytes: 64 << 10,
            max_param_bytes: 1 << 20,
            // Leave a core to ingest and queries whatever a flood of sign-ins does.
            sign_ins_at_once: cores.saturating_sub(1).max(1),
        }
    }
}

impl QueryLimits {
    /// A runtime whose memory pool holds `memory_bytes`: one per query. Nothing spills to
    /// disk (a query that needs more memory fails rather than fill the node's disk).
    pub fn runtime(&self) -> Result<Arc<RuntimeEnv>, SqlError> {
        RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(self.memory_bytes)))
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
            .build_arc()
            .map_err(SqlError::from_datafusion)
    }

    /// Refuses SQL text longer than `max_sql_bytes`.
    pub fn check_sql(&self, sql: &str) -> Result<(), SqlError> {
        if sql.len() > self.max_sql_bytes {
            return Err(SqlError::invalid_argument(format!(
                "the statement is {} bytes long; the limit is {} (sql.query_max_sql_bytes)",
                sql.len(),
                self.max_sql_bytes
            )));
        }
        Ok(())
    }

    /// The error of a query stopped at its deadline.
    pub fn timed_out(&self) -> SqlError {
        SqlError::TimedOut(format!("the query ran longer than {:?} (sql.query_timeout)", self.timeout))
    }
}

/// `stream`, ending with the limits' timeout error if it has not ended by `deadline`.
pub fn until_deadline<T: Send + 'static, E: From<SqlError> + Send + 'static>(
    stream: impl Stream<Item = Result<T, E>> + Send + 'static,
    deadline: tokio::time::Instant,
    limits: &QueryLimits,
) -> Pin<Box<dyn Stream<Item = Result<T, E>> + Send>> {
    let timed_out = limits.timed_out();
    let state = (Box::pin(stream), Some(timed_out));
    Box::pin(futures::stream::unfold(state, move |(mut stream, timed_out)| async move {
        let timed_out = timed_out?;
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(item)) => Some((item, (stream, Some(timed_out)))),
            Ok(None) => None,
            Err(_) => Some((Err(timed_out.into()), (stream, None))),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_past_its_deadline_ends_with_the_timeout() {
        let limits = QueryLimits { timeout: Duration::from_millis(50), ..Default::default() };
        let slow = futures::stream::iter(0..3).then(|i| async move {
            if i == 1 {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Ok::<_, SqlError>(i)
        });
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let items: Vec<_> = until_deadline(slow, deadline, &limits).collect().await;
        assert_eq!(items.len(), 2);
        assert_eq!(*items[0].as_ref().unwrap(), 0);
        assert!(matches!(&items[1], Err(SqlError::TimedOut(_))), "{:?}", items[1]);
    }

    #[test]
    fn long_sql_is_refused_naming_the_limit() {
        let limits = QueryLimits { max_sql_bytes: 10, ..Default::default() };
        assert!(limits.check_sql("SELECT 1").is_ok());
        let e = limits.check_sql("SELECT 1 + 1 + 1").unwrap_err().to_string();
        assert!(e.contains("sql.query_max_sql_bytes"), "{e}");
    }
}
