//! Who a verified peer certificate says its holder is.
//!
//! rustls has already checked the chain to the cluster CA when a request arrives; this reads
//! the identity URIs [`crate::pki`] wrote into it. A certificate with no Tessera identity, or
//! with two, is refused rather than guessed at. An operator's certificate carries a role; one
//! without is a [`OperatorRole::Viewer`] (deny by default).

use x509_parser::error::X509Error;
use x509_parser::extensions::GeneralName;

use crate::TlsError;
use crate::pki::{SCHEME, decode_component};

/// The holder of a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    /// A cluster node.
    Node {
        /// Its Raft id.
        id: u64,
        /// Its site.
        site: String,
    },
    /// A person's command-line client.
    Operator {
        /// The operator's name.
        name: String,
        /// What the operator may do on the control plane.
        role: OperatorRole,
    },
}

/// What an operator's certificate lets its holder do on the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperatorRole {
    /// Reads only (status, registry, audit): the role of a certificate that names none.
    Viewer,
    /// Every change to the cluster (membership, registry, grades, policies, queries, releases
    /// asked for), but not a site's approval: only a node of that site gives it.
    Admin,
}

impl OperatorRole {
    /// As written in a certificate and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorRole::Viewer => "viewer",
            OperatorRole::Admin => "admin",
        }
    }
}

impl std::fmt::Display for OperatorRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for OperatorRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(OperatorRole::Viewer),
            "admin" => Ok(OperatorRole::Admin),
            other => Err(format!("unknown operator role {other:?} (viewer or admin)")),
        }
    }
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerIdentity::Node { id, site } => write!(f, "node {id} of site {site}"),
            PeerIdentity::Operator { name, role } => write!(f, "operator {name} ({role})"),
        }
    }
}

impl PeerIdentity {
    /// Reads the identity out of a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, TlsError> {
        let bad = |reason: String| TlsError::Identity { reason, source: None };
        let unreadable =
            |what: &str, e: X509Error| TlsError::Identity { reason: format!("{what}: {e}"), source: Some(e) };
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| unreadable("unparsable certificate", e.into()))?;
        let names = cert
            .subject_alternative_name()
            .map_err(|e| unreadable("unreadable subject alternative names", e))?
            .map(|ext| ext.value.general_names.clone())
            .unwrap_or_default();
        let (mut node, mut site, mut operator, mut role) = (None, None, None, None);
        for name in names {
            let GeneralName::URI(uri) = name else { continue };
            let Some(rest) = uri.strip_prefix(SCHEME) else { continue };
            let (kind, value) = rest.split_once('/').ok_or_else(|| bad(format!("malformed identity {uri}")))?;
            let slot = match kind {
                "node" => &mut node,
                "site" => &mut site,
                "operator" => &mut operator,
                "role" => &mut role,
                _ => return Err(bad(format!("unknown identity kind in {uri}"))),
            };
            if slot.is_some() {
                return Err(bad(format!("two {kind} identities in one certificate")));
            }
            *slot = Some(decode_component(value).ok_or_else(|| bad(format!("malformed identity {uri}")))?);
        }
        match (node, site, operator) {
            (Some(_), Some(_), None) if role.is_some() => Err(bad("a node certificate carries no operator role".into())),
            (Some(id), Some(site), None) => {
                let id = id.parse().map_err(|_| bad(format!("node id {id:?} is not a number")))?;
                Ok(PeerIdentity::Node { id, site })
            }
            (None, None, Some(name)) => {
                let role = match role {
                    Some(role) => role.parse().map_err(bad)?,
                    None => OperatorRole::Viewer,
                };
                Ok(PeerIdentity::Operator { name, role })
            }
            (None, None, None) => Err(bad("the certificate names no Tessera identity".into())),
            _ => Err(bad("the certificate's identities contradict each other (a node needs an id and a site, an operator only a name)".into())),
        }
    }

    /// The identity proven by the client certificate of `request`: `None` when the endpoint
    /// runs without TLS or the client sent no certificate.
    pub fn of_request<T>(request: &tonic::Request<T>) -> Option<Result<Self, TlsError>> {
        let certs = request.peer_certs()?;
        let leaf = certs.first()?;
        Some(Self::from_der(leaf.as_ref()))
    }

    /// The node's Raft id, if a node.
    pub fn node_id(&self) -> Option<u64> {
        match self {
            PeerIdentity::Node { id, .. } => Some(*id),
            PeerIdentity::Operator { .. } => None,
        }
    }
}
