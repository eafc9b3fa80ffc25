//! How a node reaches the other sites for cross-site queries, and the other nodes of its own
//! site: the `fleet` and `node` schemas' names, the peers' and the site's nodes' SQL
//! endpoints, the token nodes present to each other, and the TLS to use; and how a scan
//! answered by fragments is recognised. The queries themselves are in [`crate::fleet`],
//! [`crate::site`] and [`crate::pushdown`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::identity::{AS_ROLE, AS_SITE, AS_USER, WITHIN_SITE};

/// The schema of cross-site tables.
pub const FLEET: &str = "fleet";

/// The schema of a node's own rows (its partitions'), which the site's other nodes query.
pub const NODE: &str = "node";

/// Schema metadata marking a table whose scans are answered by fragments (at the sites, or at
/// the site's nodes): each of them checks its own fragment for the caller.
pub const SPREAD_METADATA_KEY: &str = "tessera.spread";

/// Whether what `scan` returns is decided elsewhere, each site or node checking its own
/// fragment: a `fleet` scan, or a scan of a table spread over the site's nodes.
pub fn answered_by_fragments(scan: &datafusion::logical_expr::TableScan) -> bool {
    scan.table_name.schema() == Some(FLEET) || scan.source.schema().metadata().contains_key(SPREAD_METADATA_KEY)
}

/// Another site's SQL endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// The site's id.
    pub site: String,
    /// Its Flight SQL endpoint, host:port.
    pub addr: String,
    /// More endpoints of the same site (its other nodes), tried in turn while the ones before
    /// cannot answer. Behind one Service address (Kubernetes) none are needed.
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

/// How a node reaches the other sites.
#[derive(Debug, Clone)]
pub struct Federation {
    /// The other sites.
    pub peers: Vec<Peer>,
    /// The token nodes present to each other (shared by the sites' nodes).
    pub token: String,
    /// How long a peer may take to answer a fragment.
    pub timeout: Duration,
    /// How to connect: mTLS with this node's certificate when the node has `[tls]`.
    pub tls: tessera_tls::ClientTls,
}

/// The other nodes of this site, and how to reach them (see [`crate::site`]).
#[derive(Debug, Clone)]
pub struct SiteNodes {
    /// Their Flight SQL endpoints, host:port (`sql.site_nodes`).
    pub addrs: Vec<String>,
    /// The token nodes present to each other.
    pub token: String,
    /// How long the whole site may take to answer (retries included).
    pub timeout: Duration,
    /// How to connect: mTLS with this node's certificate when the node has `[tls]`.
    pub tls: tessera_tls::ClientTls,
}
