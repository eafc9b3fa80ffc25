//! A node's TLS material (`[tls]`: the cluster CA bundle, its certificate and key) and the
//! rustls and tonic settings made from it.
//!
//! Servers take a rustls `ServerConfig` that verifies client certificates against the CA
//! bundle: required on the Raft port, optional on the SQL port (people log in with passwords
//! or tokens; other sites' nodes must show their certificate, which the SQL service checks).
//! Clients take a tonic `ClientTlsConfig` that presents this certificate and verifies the
//! server's against the same bundle. TLS 1.2 and 1.3 only, ring's cipher suites.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::{PeerIdentity, TlsError};

/// Where the PEM files are (`[tls]` in a node's config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The CA bundle every peer certificate must chain to (one or more CA certificates).
    pub ca: PathBuf,
    /// This node's (or operator's) certificate.
    pub cert: PathBuf,
    /// Its private key (PKCS#8 PEM); keep it readable by the node's user only.
    pub key: PathBuf,
}

/// Whether a server asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client must present a certificate chaining to the CA (the Raft port).
    Required,
    /// A client may present one; one that does must chain to the CA (the SQL port).
    Optional,
}

/// Loaded, checked TLS material.
pub struct TlsMaterial {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    roots: Arc<rustls::RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    identity: PeerIdentity,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").field("identity", &self.identity).finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(field: &'static str, path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| TlsError::Config { field, problem: format!("{}: {e}", path.display()) })
}

impl TlsMaterial {
    /// Reads and checks the files: errors name the `tls.*` field at fault.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        Self::from_pem(&read("tls.ca", &files.ca)?, &read("tls.cert", &files.cert)?, &read("tls.key", &files.key)?)
    }

    /// Checks PEM text: the CA bundle parses, the certificate names a Tessera identity, and the
    /// key parses. (Whether the key matches the certificate shows when a config is built.)
    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let config = |field: &'static str, problem: String| TlsError::Config { field, problem };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| config("tls.ca", format!("unreadable PEM: {e}")))?;
            roots.add(cert).map_err(|e| config("tls.ca", format!("not a usable CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(config("tls.ca", "holds no certificate".into()));
        }
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| config("tls.cert", format!("unreadable PEM: {e}")))?;
        let leaf = chain.first().ok_or_else(|| config("tls.cert", "holds no certificate".into()))?;
        let identity = PeerIdentity::from_der(leaf.as_ref()).map_err(|e| config("tls.cert", e.to_string()))?;
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| config("tls.key", format!("unreadable private key: {e}")))?;
        let material = Self {
            ca_pem: ca_pem.to_string(),
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            roots: Arc::new(roots),
            chain,
            identity,
        };
        material.server_config(ClientAuth::Required)?; // the key must match the certificate
        Ok(material)
    }

    /// Who this certificate says we are.
    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| TlsError::Config { field: "tls.key", problem: format!("unreadable private key: {e}") })
    }

    /// A rustls server configuration presenting this certificate, speaking HTTP/2 (gRPC).
    pub fn server_config(&self, client_auth: ClientAuth) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider());
        let verifier = match client_auth {
            ClientAuth::Required => verifier,
            ClientAuth::Optional => verifier.allow_unauthenticated(),
        }
        .build()
        .map_err(|e| TlsError::Config { field: "tls.ca", problem: e.to_string() })?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config { field: "tls", problem: e.to_string() })?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key()?)
            .map_err(|e| TlsError::Config { field: "tls.key", problem: format!("does not fit tls.cert: {e}") })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// tonic client settings: present this certificate, trust the CA bundle, and verify the
    /// server's certificate for `server_name` (`None`: the host the address names).
    pub fn client_config(&self, server_name: Option<&str>) -> ClientTlsConfig {
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        match server_name {
            Some(name) => config.domain_name(name),
            None => config,
        }
    }
}

/// How a client reaches a server: in the clear, or over TLS with `material`.
#[derive(Debug, Clone, Default)]
pub enum ClientTls {
    /// No TLS (a cluster configured without `[tls]`).
    #[default]
    Plain,
    /// mTLS with this material; the server must prove `server_name` (or the address's host).
    Mutual {
        /// This side's material.
        material: Arc<TlsMaterial>,
        /// The name the server's certificate must hold.
        server_name: Option<String>,
    },
}

impl ClientTls {
    /// mTLS with `material` (if any), verifying the server against the address's host.
    pub fn from_material(material: Option<&Arc<TlsMaterial>>) -> Self {
        material.map_or(ClientTls::Plain, |m| ClientTls::Mutual { material: m.clone(), server_name: None })
    }

    /// The same, but the server must prove `name` instead of the address's host.
    pub fn expecting(self, name: String) -> Self {
        match self {
            ClientTls::Plain => ClientTls::Plain,
            ClientTls::Mutual { material, .. } => ClientTls::Mutual { material, server_name: Some(name) },
        }
    }

    /// A gRPC endpoint for `addr` (host:port): `http://` in the clear, `https://` with TLS.
    pub fn endpoint(&self, addr: &str, connect_timeout: Duration) -> Result<Endpoint, TlsError> {
        let bad = |e: tonic::transport::Error| TlsError::Endpoint(format!("{addr}: {e}"));
        let endpoint = match self {
            ClientTls::Plain => Endpoint::from_shared(format!("http://{addr}")).map_err(bad)?,
            ClientTls::Mutual { material, server_name } => Endpoint::from_shared(format!("https://{addr}"))
                .map_err(bad)?
                .tls_config(material.client_config(server_name.as_deref()))
                .map_err(bad)?,
        };
        Ok(endpoint.connect_timeout(connect_timeout).tcp_nodelay(true))
    }
}
