//! The node's side of the control plane: reaching a control-plane node's admin API
//! ([`admin_client`]), the `[control]` section, node specs (`ID=SITE@HOST:PORT`), checking a
//! continuous query before it is registered, keeping the cluster-wide queries in step
//! ([`watcher`]) and running a Raft member inside the node ([`member`]).
//!
//! Any control-plane node answers: writes and linearizable reads are forwarded to the leader,
//! so a node needs only one reachable address.

pub mod desk;
pub mod member;
pub mod watcher;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_proto::raft as pb;
use tessera_proto::raft::cluster_admin_client::ClusterAdminClient;
use tessera_tls::ClientTls;
use tonic::transport::Channel;

use crate::error::NodeError;

pub use watcher::{QueryWatcher, RegistryRows, add_registered_queries, query_changes, registered_queries};

/// The `[control]` section: where the cluster's control plane answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// `host:port` of any control-plane node; unset: this node runs only its own `[detect]`
    /// queries.
    pub admin: Option<String>,
    /// How long to wait for the control plane at start (and for each later read).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How often a running node reads the registered queries again, to start the ones
    /// registered and stop the ones dropped since.
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self { admin: None, timeout: Duration::from_secs(10), poll: Duration::from_secs(2) }
    }
}

impl ControlConfig {
    /// Checks the fields; the error names the field (relative to `[control]`).
    pub fn validate(&self) -> Result<(), tessera_core::ConfigError> {
        tessera_core::ensure(!self.timeout.is_zero(), "timeout", "must be longer than 0")?;
        tessera_core::ensure(self.poll >= Duration::from_millis(100), "poll", "must be at least 100ms")?;
        if let Some(admin) = &self.admin {
            tessera_core::ensure(admin.contains(':'), "admin", &format!("'{admin}' is not host:port"))?;
        }
        Ok(())
    }
}

/// A gRPC channel to `at` (host:port), over `tls`, whose calls time out after `timeout`;
/// errors name `what` is there (the CLI's `--at`).
pub async fn grpc_channel(
    at: &str,
    tls: &ClientTls,
    timeout: Duration,
    what: &'static str,
) -> Result<Channel, NodeError> {
    tls.endpoint(at, Duration::from_secs(3))?
        .timeout(timeout)
        .connect()
        .await
        .map_err(|source| NodeError::Unreachable { what, at: at.to_string(), source })
}

/// A client of the admin API of the control-plane node at `admin`.
pub async fn admin_client(
    admin: &str,
    tls: &ClientTls,
    timeout: Duration,
) -> Result<ClusterAdminClient<Channel>, NodeError> {
    Ok(ClusterAdminClient::new(grpc_channel(admin, tls, timeout, "node").await?))
}

/// Checks that `sql` is a `CREATE CONTINUOUS QUERY` named `name`, before it is registered.
pub fn check_query(name: &str, sql: &str) -> Result<(), NodeError> {
    let def = tessera_stream::grammar::parse(sql).map_err(|source| NodeError::Query { name: name.into(), source })?;
    if def.name != name {
        return Err(NodeError::QueryName { name: name.into(), created: def.name });
    }
    Ok(())
}

/// Parses `ID=SITE@HOST:PORT`.
pub fn parse_node_spec(s: &str) -> Result<pb::NodeSpec, NodeError> {
    let err = || NodeError::NodeSpec(s.to_string());
    let (id, rest) = s.split_once('=').ok_or_else(err)?;
    let (site, addr) = rest.split_once('@').ok_or_else(err)?;
    let id = id.trim().parse().map_err(|_| err())?;
    if site.is_empty() || !addr.contains(':') {
        return Err(err());
    }
    Ok(pb::NodeSpec { id, site: site.into(), addr: addr.into() })
}

/// A refusal from the node at `at`, as an error saying who refused.
pub fn status_error(at: &str, status: tonic::Status) -> NodeError {
    NodeError::Refused { at: at.to_string(), status: Box::new(status) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_specs_parse_and_bad_ones_say_the_format() {
        let n = parse_node_spec("3=site-c@127.0.0.1:7003").unwrap();
        assert_eq!((n.id, n.site.as_str(), n.addr.as_str()), (3, "site-c", "127.0.0.1:7003"));
        for bad in ["3", "x=site@h:1", "3=site", "3=@h:1", "3=site@host"] {
            let err = parse_node_spec(bad).unwrap_err().to_string();
            assert!(err.contains("ID=SITE@HOST:PORT"), "{bad}: {err}");
        }
    }
}
