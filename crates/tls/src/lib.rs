//! Transport security for every Tessera gRPC endpoint (Raft, federation, Flight SQL): mTLS
//! with rustls, through tonic.
//!
//! - [`pki`]: the cluster CA and the node and operator certificates it issues; a
//!   certificate's identity (`tessera://node/<id>`, `tessera://site/<site>`,
//!   `tessera://operator/<name>`) sits in its subject alternative names.
//! - [`TlsMaterial`]: a node's `[tls]` files, loaded and checked, and the server and client
//!   settings made from them.
//! - [`PeerIdentity`]: who a verified client certificate says its holder is; services bind
//!   claims to it (a Raft message's sender id must be the certificate's node).
//! - [`serve`]: a tonic router served over TLS, each refused handshake counted and audited.

mod identity;
mod incoming;
mod material;
pub mod pki;

pub use identity::PeerIdentity;
pub use incoming::{Refusals, ServerTls, serve};
pub use material::{ClientAuth, ClientTls, TlsFiles, TlsMaterial};

/// What can go wrong with certificates and TLS settings.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A `[tls]` setting is unusable; `field` names it as spelled in the config file.
    #[error("config: {field}: {problem}")]
    Config {
        /// e.g. `tls.cert`.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A certificate could not be issued.
    #[error("issuing a certificate: {0}")]
    Issue(String),
    /// A peer certificate's identity is missing or malformed.
    #[error("certificate identity: {0}")]
    Identity(String),
    /// A client endpoint could not be made.
    #[error("endpoint {0}")]
    Endpoint(String),
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use pki::{Subject, issue, new_ca};

    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

    #[test]
    fn issued_certificates_carry_their_identity_and_load() {
        let ca = new_ca("test CA", YEAR).unwrap();
        let node = issue(&ca, &Subject::Node { id: 7, site: "Werk Süd".into(), hosts: vec!["localhost".into(), "127.0.0.1".into()] }, YEAR).unwrap();
        let material = TlsMaterial::from_pem(&ca.cert_pem, &node.cert_pem, &node.key_pem).unwrap();
        assert_eq!(material.identity(), &PeerIdentity::Node { id: 7, site: "Werk Süd".into() });
        let op = issue(&ca, &Subject::Operator { name: "alice".into() }, YEAR).unwrap();
        let material = TlsMaterial::from_pem(&ca.cert_pem, &op.cert_pem, &op.key_pem).unwrap();
        assert_eq!(material.identity(), &PeerIdentity::Operator { name: "alice".into() });
    }

    #[test]
    fn bad_material_names_the_field() {
        let ca = new_ca("test CA", YEAR).unwrap();
        let node = issue(&ca, &Subject::Node { id: 1, site: "a".into(), hosts: vec![] }, YEAR).unwrap();
        let other = issue(&ca, &Subject::Node { id: 2, site: "a".into(), hosts: vec![] }, YEAR).unwrap();
        let field = |r: Result<TlsMaterial, TlsError>| match r {
            Err(TlsError::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert_eq!(field(TlsMaterial::from_pem("", &node.cert_pem, &node.key_pem)), "tls.ca");
        assert_eq!(field(TlsMaterial::from_pem(&ca.cert_pem, "", &node.key_pem)), "tls.cert");
        assert_eq!(field(TlsMaterial::from_pem(&ca.cert_pem, &node.cert_pem, "junk")), "tls.key");
        assert_eq!(field(TlsMaterial::from_pem(&ca.cert_pem, &node.cert_pem, &other.key_pem)), "tls.key");
        // A CA certificate has no Tessera identity: it cannot pose as a node.
        assert_eq!(field(TlsMaterial::from_pem(&ca.cert_pem, &ca.cert_pem, &ca.key_pem)), "tls.cert");
    }
}
