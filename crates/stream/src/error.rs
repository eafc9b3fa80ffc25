//! The stream stage's errors.

/// Why a query could not be registered or a batch could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The statement does not follow the continuous-query grammar.
    #[error("continuous query: {0}")]
    Grammar(String),
    /// DataFusion rejected the query at registration.
    #[error("continuous query {query}: {message}")]
    Sql {
        /// The query's name.
        query: String,
        /// DataFusion's message.
        message: String,
    },
    /// A query with this name is already registered.
    #[error("a continuous query named {0} is already registered")]
    Duplicate(String),
    /// No continuous query has this name.
    #[error("no continuous query named {0} is registered")]
    Unknown(String),
    /// A batch or a query output has the wrong columns.
    #[error("schema: {0}")]
    Schema(String),
    /// Running a registered query failed.
    #[error("running continuous query {query}: {source}")]
    Run {
        /// The query's name.
        query: String,
        /// DataFusion's error.
        source: datafusion::error::DataFusionError,
    },
    /// An ad-hoc query over the engine's tables failed.
    #[error("{0}")]
    Query(#[source] datafusion::error::DataFusionError),
    /// An Arrow kernel failed.
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// A checkpoint could not be taken or restored.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}
