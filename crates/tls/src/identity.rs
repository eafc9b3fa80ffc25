//! Who a verified peer certificate says its holder is.
//!
//! rustls has already checked the chain to the cluster CA when a request arrives; this reads
//! the identity URIs [`crate::pki`] wrote into it. A certificate with no Tessera identity, or
//! with two, is refused rather than guessed at.

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
    },
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerIdentity::Node { id, site } => write!(f, "node {id} of site {site}"),
            PeerIdentity::Operator { name } => write!(f, "operator {name}"),
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
        let (mut node, mut site, mut operator) = (None, None, None);
        for name in names {
            let GeneralName::URI(uri) = name else { continue };
            let Some(rest) = uri.strip_prefix(SCHEME) else { continue };
            let (kind, value) = rest.split_once('/').ok_or_else(|| bad(format!("malformed identity {uri}")))?;
            let slot = match kind {
                "node" => &mut node,
                "site" => &mut site,
                "operator" => &mut operator,
                _ => return Err(bad(format!("unknown identity kind in {uri}"))),
            };
            if slot.is_some() {
                return Err(bad(format!("two {kind} identities in one certificate")));
            }
            *slot = Some(decode_component(value).ok_or_else(|| bad(format!("malformed identity {uri}")))?);
        }
        match (node, site, operator) {
            (Some(id), Some(site), None) => {
                let id = id.parse().map_err(|_| bad(format!("node id {id:?} is not a number")))?;
                Ok(PeerIdentity::Node { id, site })
            }
            (None, None, Some(name)) => Ok(PeerIdentity::Operator { name }),
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
