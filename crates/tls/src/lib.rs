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

use tessera_core::ConfigError;

mod identity;
mod incoming;
mod material;
pub mod pki;

pub use identity::{OperatorRole, PeerIdentity};
pub use incoming::{Refusals, ServerTls, TlsIncoming, serve};
pub use material::{ClientAuth, ClientTls, TlsFiles, TlsMaterial};
pub use tokio_rustls::server::TlsStream;

/// What can go wrong with certificates and TLS settings. The message says it all; the error
/// underneath (the file system's, the PEM reader's, rustls's, rcgen's, x509-parser's, tonic's),
/// where there is one, is also kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A `[tls]` setting is unusable; the field is named relative to `[tls]` (`cert`), see
    /// [`TlsError::within`].
    #[error("config: {config}")]
    Config {
        /// Which field, and what is wrong with it.
        config: ConfigError,
        /// What failed underneath, if anything did.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A certificate could not be issued.
    #[error("issuing a certificate: {step}: {source}")]
    Issue {
        /// What was being done (`generating a key`, `reading the CA key`, `signing`, ...).
        step: String,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A peer certificate's identity is missing or malformed.
    #[error("certificate identity: {reason}")]
    Identity {
        /// What is wrong.
        reason: String,
        /// x509-parser's error, when the certificate did not parse.
        #[source]
        source: Option<x509_parser::error::X509Error>,
    },
    /// A client endpoint could not be made.
    #[error("endpoint {addr}: {source}")]
    Endpoint {
        /// The address it was for.
        addr: String,
        /// tonic's error.
        #[source]
        source: tonic::transport::Error,
    },
}

impl TlsError {
    /// The same error, a config field's path now starting with `section` (`cert` within `tls`
    /// is `tls.cert`); other errors are returned unchanged.
    pub fn within(self, section: &str) -> Self {
        match self {
            TlsError::Config { config, source } => TlsError::Config { config: config.within(section), source },
            other => other,
        }
    }
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
        let node = issue(
            &ca,
            &Subject::Node { id: 7, site: "Werk Süd".into(), hosts: vec!["localhost".into(), "127.0.0.1".into()] },
            YEAR,
        )
        .unwrap();
        let material = TlsMaterial::from_pem(&ca.cert_pem, &node.cert_pem, &node.key_pem).unwrap();
        assert_eq!(material.identity(), &PeerIdentity::Node { id: 7, site: "Werk Süd".into() });
        let op = issue(&ca, &Subject::Operator { name: "alice".into(), role: OperatorRole::Admin }, YEAR).unwrap();
        let material = TlsMaterial::from_pem(&ca.cert_pem, &op.cert_pem, &op.key_pem).unwrap();
        assert_eq!(material.identity(), &PeerIdentity::Operator { name: "alice".into(), role: OperatorRole::Admin });
    }

    #[test]
    fn an_operator_without_a_role_is_a_viewer_and_an_unknown_role_is_refused() {
        use rcgen::{CertificateParams, KeyPair, SanType};
        let plain = |uris: &[&str]| {
            let mut params = CertificateParams::default();
            params.subject_alt_names = uris.iter().map(|u| SanType::URI((*u).try_into().unwrap())).collect();
            params.self_signed(&KeyPair::generate().unwrap()).unwrap().der().to_vec()
        };
        assert_eq!(
            PeerIdentity::from_der(&plain(&["tessera://operator/bob"])).unwrap(),
            PeerIdentity::Operator { name: "bob".into(), role: OperatorRole::Viewer }
        );
        assert!(PeerIdentity::from_der(&plain(&["tessera://operator/bob", "tessera://role/root"])).is_err());
        assert!(
            PeerIdentity::from_der(&plain(&["tessera://node/1", "tessera://site/a", "tessera://role/admin"])).is_err()
        );
    }

    #[test]
    fn bad_material_names_the_field() {
        let ca = new_ca("test CA", YEAR).unwrap();
        let node = issue(&ca, &Subject::Node { id: 1, site: "a".into(), hosts: vec![] }, YEAR).unwrap();
        let other = issue(&ca, &Subject::Node { id: 2, site: "a".into(), hosts: vec![] }, YEAR).unwrap();
        let field = |r: Result<TlsMaterial, TlsError>| match r.map_err(|e| e.within("tls")) {
            Err(TlsError::Config { config, .. }) => config.field,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert_eq!(field(TlsMaterial::from_pem("", &node.cert_pem, &node.key_pem)), "tls.ca");
        assert_eq!(field(TlsMaterial::from_pem(&ca.cert_pem, "", &node.key_pem)), "tls.cert");
        assert_eq!(field(TlsMaterial::from_pem(&ca.cert_pem, &node.cert_pem, "junk")), "tls.key");
        assert_eq!(field(TlsMaterial::from_pem(&ca.cert_pem, &node.cert_pem, &other.key_pem)), "tls.key");
        // A CA certificate has no Tessera identity: it cannot pose as a node.
        assert_eq!(field(TlsMaterial::from_pem(&ca.cert_pem, &ca.cert_pem, &ca.key_pem)), "tls.cert");
        // Without a section, the fields are `[tls]`'s own.
        let err = TlsMaterial::from_pem(&ca.cert_pem, &node.cert_pem, "junk").unwrap_err();
        assert!(err.to_string().starts_with("config: key: unreadable private key"), "{err}");
    }
}
