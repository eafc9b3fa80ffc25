//! How a node reaches the other sites for cross-site queries: the `fleet` schema's name, the
//! peers' SQL endpoints, the token nodes present to each other, and the TLS to use. The
//! queries themselves are in [`crate::fleet`] and [`crate::pushdown`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::identity::{AS_ROLE, AS_SITE, AS_USER};

/// The schema of cross-site tables.
pub const FLEET: &str = "fleet";

/// Another site's SQL endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// The site's id.
    pub site: String,
    /// Its Flight SQL endpoint, host:port.
    pub addr: String,
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
