//! The SQL endpoint's errors, and the gRPC status each one becomes.

use tonic::Status;

/// Why a call to the SQL endpoint failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SqlError {
    /// No or wrong credentials, or an unknown or expired token.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller's role may not do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The SQL does not parse or plan, or a request is malformed; carries DataFusion's message.
    #[error("{0}")]
    InvalidArgument(String),
    /// An unknown or closed prepared statement.
    #[error("{0}")]
    NotFound(String),
    /// A bad `[sql]` config entry; names the field.
    #[error("config: {0}")]
    Config(String),
    /// Another site could not be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The data asked for was destroyed (crypto-shredded): it can never be read again.
    #[error("destroyed: {0}")]
    Destroyed(String),
    /// Running the query failed.
    #[error("internal: {0}")]
    Internal(String),
}

impl SqlError {
    /// Maps DataFusion's error: what the user wrote wrong is an invalid argument (with
    /// DataFusion's message); anything else an internal error.
    pub fn from_datafusion(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as E;
        match e.find_root() {
            E::External(inner) if inner.downcast_ref::<SqlError>().is_some() => inner.downcast_ref::<SqlError>().cloned().expect("checked"),
            E::SQL(..) | E::Plan(_) | E::SchemaError(..) | E::NotImplemented(_) => SqlError::InvalidArgument(e.strip_backtrace()),
            _ => SqlError::Internal(e.strip_backtrace()),
        }
    }
}

impl SqlError {
    /// What another site answered to a fragment, kept with its meaning and the site named.
    pub fn from_status(site: &str, status: Status) -> Self {
        let message = format!("site {site}: {}", status.message());
        match status.code() {
            tonic::Code::PermissionDenied => SqlError::PermissionDenied(message),
            tonic::Code::InvalidArgument => SqlError::InvalidArgument(message),
            tonic::Code::NotFound => SqlError::NotFound(message),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => SqlError::Unavailable(message),
            tonic::Code::FailedPrecondition => SqlError::Destroyed(message),
            tonic::Code::Unauthenticated => SqlError::Internal(format!("{message} (the sites' federation tokens differ)")),
            _ => SqlError::Internal(message),
        }
    }
}

impl From<SqlError> for Status {
    fn from(e: SqlError) -> Self {
        match e {
            SqlError::Unauthenticated(m) => Status::unauthenticated(m),
            SqlError::PermissionDenied(m) => Status::permission_denied(m),
            SqlError::InvalidArgument(m) => Status::invalid_argument(m),
            SqlError::NotFound(m) => Status::not_found(m),
            SqlError::Config(m) => Status::failed_precondition(m),
            SqlError::Unavailable(m) => Status::unavailable(m),
            SqlError::Destroyed(m) => Status::failed_precondition(m),
            SqlError::Internal(m) => Status::internal(m),
        }
    }
}
