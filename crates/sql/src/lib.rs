//! SQL over gRPC: an Arrow Flight SQL endpoint over DataFusion.
//!
//! - [`fanout`]: one query's fan-out (partial answers allowed or not, what is missing, how
//!   each site answered) and per-site fragment statistics;
//! - [`identity`]: roles, the caller's identity, and the headers that carry it between sites;
//! - [`auth`]: users, Basic credentials and bearer tokens;
//! - [`federation`]: the `fleet` and `node` schemas' names, how to reach the other sites and
//!   the site's other nodes, and how a scan answered by fragments is recognised;
//! - [`catalog`]: the served tables, read-only planning, and who may read which table;
//! - [`limits`]: what one query and sign-ins may take (memory, time, text size);
//! - [`release`]: what may leave a site's tables for one caller (open queries, and
//!   aggregation-constrained ones rewritten to drop small groups as they run);
//! - [`sql_text`]: SQL text of the fragments sent to the sites;
//! - `remote`: calling another node's endpoint with fragments, as the caller;
//! - [`fleet`]: tables answered by fragments: the `fleet` tables, one fragment per site, and a
//!   site's tables spread over its nodes;
//! - [`site`]: one fragment per node of the site, counted only when the nodes' answers tile the
//!   site's Kafka partitions exactly once;
//! - [`pushdown`]: aggregates over spread tables computed partially at each site or node;
//! - `session`: a caller's context (site tables, `fleet` schema, pushdown; [`Catalog::context`]);
//! - [`service`]: the Flight SQL service (handshake, statements, prepared statements,
//!   metadata), auditing every query;
//! - [`error`]: typed errors and their gRPC codes.
//!
//! Layering (each module uses only those before it): `error`, `fanout` → `identity`, `trace` → `auth`,
//! `federation`, `limits`, `sql_text`, `remote` → `release` → `catalog` (a site's own tables, planning, access checks) →
//! `fleet` (scans that run a fragment at every site through `catalog`) → `site` (the same at
//! every node of this site) → `pushdown` (an
//! optimizer rule over `fleet` scans) → `session` (puts `fleet` and `pushdown` into a caller's
//! context) → `service`. No module imports one after it.

pub mod auth;
pub mod catalog;
pub mod error;
pub mod fanout;
pub mod federation;
pub mod fleet;
pub mod identity;
pub mod limits;
pub mod pushdown;
pub mod release;
mod remote;
pub mod service;
mod session;
pub mod site;
pub mod sql_text;
mod trace;

pub use auth::{Authenticator, ConfigUsers, IdentityProvider, TokenConfig, UserConfig};
pub use catalog::{Catalog, ServedTable, SnapshotTable, TableKind};
pub use error::SqlError;
pub use federation::{Federation, Peer};
pub use identity::{Identity, Role};
pub use limits::QueryLimits;
pub use release::{GroupPolicy, LiveGroupPolicy};
pub use service::{AuditSink, FlightSqlEndpoint, LogAudit, QueryAudit};
