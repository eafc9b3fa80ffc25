//! The SQL endpoint's errors, and the gRPC status each one becomes: the one place that maps
//! them, so every refusal or failure reaches the client with the same code and message.

use std::sync::Arc;

use tessera_core::ConfigError;
use tonic::Status;

/// A lower-level error kept as the cause of a [`SqlError`]; shared, so that `SqlError` stays
/// `Clone` (one raised inside DataFusion, by a `fleet` scan, comes back out of it by reference).
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Why a call to the SQL endpoint failed. The message is what the client reads; a cause, when
/// there is one, is kept as the error's source (and the status's) for the node's own logs.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SqlError {
    /// No or wrong credentials, or an unknown or expired token.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller's role may not do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The SQL does not parse or plan, or a request is malformed; carries DataFusion's message.
    #[error("{message}")]
    InvalidArgument {
        /// What is wrong.
        message: String,
        /// DataFusion's error, if it said so.
        #[source]
        source: Option<Cause>,
    },
    /// An unknown or closed prepared statement.
    #[error("{0}")]
    NotFound(String),
    /// A Flight SQL command the endpoint does not serve.
    #[error("unimplemented: {0}")]
    Unimplemented(String),
    /// A bad `[sql]` config entry; names the field (relative to `[sql]`).
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    /// Another site could not be reached.
    #[error("unavailable: {message}")]
    Unavailable {
        /// Which site, and what happened.
        message: String,
        /// The transport's error.
        #[source]
        source: Option<Cause>,
    },
    /// The query would take more of the node than its limits allow (memory, sign-ins).
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// The query ran past its deadline.
    #[error("deadline exceeded: {0}")]
    TimedOut(String),
    /// The data asked for was destroyed (crypto-shredded): it can never be read again.
    #[error("destroyed: {0}")]
    Destroyed(String),
    /// Running the query failed.
    #[error("internal: {message}")]
    Internal {
        /// What failed.
        message: String,
        /// The error underneath, if any.
        #[source]
        source: Option<Cause>,
    },
}

impl SqlError {
    /// A malformed request, saying `message`.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        SqlError::InvalidArgument { message: message.into(), source: None }
    }

    /// Another site could not be reached, saying `message`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        SqlError::Unavailable { message: message.into(), source: None }
    }

    /// An internal failure, saying `message`.
    pub fn internal(message: impl Into<String>) -> Self {
        SqlError::Internal { message: message.into(), source: None }
    }

    /// Maps DataFusion's error: what the user wrote wrong is an invalid argument (with
    /// DataFusion's message); anything else an internal error.
    pub fn from_datafusion(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as E;
        match e.find_root() {
            E::External(inner) if inner.downcast_ref::<SqlError>().is_some() => {
                inner.downcast_ref::<SqlError>().cloned().expect("checked")
            }
            E::SQL(..) | E::Plan(_) | E::SchemaError(..) | E::NotImplemented(_) => {
                SqlError::InvalidArgument { message: e.strip_backtrace(), source: Some(Arc::new(e)) }
            }
            E::ResourcesExhausted(m) => SqlError::ResourceExhausted(format!(
                "{m} (a query may hold sql.query_memory_bytes; narrow it or raise the limit)"
            )),
            _ => SqlError::Internal { message: e.strip_backtrace(), source: Some(Arc::new(e)) },
        }
    }

    /// What another site answered to a fragment, kept with its meaning and the site named.
    pub fn from_status(site: &str, status: Status) -> Self {
        let message = format!("site {site}: {}", status.message());
        match status.code() {
            tonic::Code::PermissionDenied => SqlError::PermissionDenied(message),
            tonic::Code::InvalidArgument => SqlError::invalid_argument(message),
            tonic::Code::NotFound => SqlError::NotFound(message),
            // (Cancelled: our own call's timeout, sql.fragment_timeout, expired.)
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                SqlError::unavailable(message)
            }
            tonic::Code::FailedPrecondition => SqlError::Destroyed(message),
            tonic::Code::ResourceExhausted => SqlError::ResourceExhausted(message),
            tonic::Code::Unauthenticated => {
                SqlError::internal(format!("{message} (the sites' federation tokens differ)"))
            }
            _ => SqlError::internal(message),
        }
    }
}

/// Arrow failing to encode a schema is an internal error.
impl From<arrow_schema::ArrowError> for SqlError {
    fn from(e: arrow_schema::ArrowError) -> Self {
        SqlError::Internal { message: e.to_string(), source: Some(Arc::new(e)) }
    }
}

/// arrow-flight failing to build the endpoint's own metadata is an internal error (a peer's
/// answer is mapped by [`SqlError::from_status`] instead).
impl From<arrow_flight::error::FlightError> for SqlError {
    fn from(e: arrow_flight::error::FlightError) -> Self {
        SqlError::Internal { message: e.to_string(), source: Some(Arc::new(e)) }
    }
}

impl From<SqlError> for Status {
    fn from(e: SqlError) -> Self {
        let with_source = |mut status: Status, source: Option<Cause>| {
            if let Some(source) = source {
                status.set_source(source);
            }
            status
        };
        match e {
            SqlError::Unauthenticated(m) => Status::unauthenticated(m),
            SqlError::PermissionDenied(m) => Status::permission_denied(m),
            SqlError::InvalidArgument { message, source } => with_source(Status::invalid_argument(message), source),
            SqlError::NotFound(m) => Status::not_found(m),
            SqlError::Unimplemented(m) => Status::unimplemented(m),
            SqlError::Config(c) => Status::failed_precondition(c.to_string()),
            SqlError::Unavailable { message, source } => with_source(Status::unavailable(message), source),
            SqlError::Destroyed(m) => Status::failed_precondition(m),
            SqlError::ResourceExhausted(m) => Status::resource_exhausted(m),
            SqlError::TimedOut(m) => Status::deadline_exceeded(m),
            SqlError::Internal { message, source } => with_source(Status::internal(message), source),
        }
    }
}
