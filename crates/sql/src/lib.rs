//! SQL over gRPC: an Arrow Flight SQL endpoint over DataFusion.
//!
//! - [`auth`]: users, roles, Basic credentials and bearer tokens;
//! - [`catalog`]: the served tables, read-only planning, and who may read which table;
//! - [`service`]: the Flight SQL service (handshake, statements, prepared statements,
//!   metadata), auditing every query;
//! - [`error`]: typed errors and their gRPC codes.

pub mod auth;
pub mod catalog;
pub mod error;
pub mod service;

pub use auth::{Authenticator, ConfigUsers, Identity, IdentityProvider, Role, TokenConfig, UserConfig};
pub use catalog::{Catalog, ServedTable, SnapshotTable, TableKind};
pub use error::SqlError;
pub use service::{AuditSink, FlightSqlEndpoint, LogAudit, QueryAudit};
