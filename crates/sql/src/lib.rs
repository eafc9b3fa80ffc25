//! SQL over gRPC: an Arrow Flight SQL endpoint over DataFusion.
//!
//! - [`auth`]: users, roles, Basic credentials and bearer tokens;
//! - [`catalog`]: the served tables, read-only planning, and who may read which table;
//! - [`federation`]: the `fleet` schema, one fragment per site;
//! - [`pushdown`]: aggregates over `fleet` tables computed partially at each site;
//! - [`service`]: the Flight SQL service (handshake, statements, prepared statements,
//!   metadata), auditing every query;
//! - [`error`]: typed errors and their gRPC codes.

pub mod auth;
pub mod catalog;
pub mod error;
pub mod federation;
pub mod pushdown;
pub mod service;
mod trace;

pub use auth::{Authenticator, ConfigUsers, Identity, IdentityProvider, Role, TokenConfig, UserConfig};
pub use catalog::{Catalog, ServedTable, SnapshotTable, TableKind};
pub use error::SqlError;
pub use federation::{Federation, Peer};
pub use service::{AuditSink, FlightSqlEndpoint, LogAudit, QueryAudit};
