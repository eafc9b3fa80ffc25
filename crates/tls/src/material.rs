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

use tessera_core::ConfigError;

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

/// A problem with the `[tls]` field `field` (relative to `[tls]`), nothing failing underneath.
fn bad(field: &str, problem: &str) -> TlsError {
    TlsError::Config { config: ConfigError::new(field, problem), source: None }
}

/// A [`TlsError::Config`] builder for `map_err`: reading or using the `[tls]` field `field`
/// failed with `source`; the problem says `what`, then the source's message.
fn failed<E: std::error::Error + Send + Sync + 'static>(
    field: &'static str,
    what: String,
) -> impl FnOnce(E) -> TlsError {
    move |source| {
        let problem = if what.is_empty() { source.to_string() } else { format!("{what}: {source}") };
        TlsError::Config { config: ConfigError::new(field, problem), source: Some(Box::new(source)) }
    }
}

fn read(field: &'static str, path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(failed(field, path.display().to_string()))
}

impl TlsMaterial {
    /// Reads and checks the files: errors name the field at fault, relative to `[tls]`
    /// (`cert`; [`TlsError::within`] puts the section in front).
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        Self::from_pem(&read("ca", &files.ca)?, &read("cert", &files.cert)?, &read("key", &files.key)?)
    }

    /// Checks PEM text: the CA bundle parses, the certificate names a Tessera identity, and the
    /// key parses. (Whether the key matches the certificate shows when a config is built.)
    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let cert = cert.map_err(failed("ca", "unreadable PEM".into()))?;
            roots.add(cert).map_err(failed("ca", "not a usable CA certificate".into()))?;
        }
        if roots.is_empty() {
            return Err(bad("ca", "holds no certificate"));
        }
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed("cert", "unreadable PEM".into()))?;
        let leaf = chain.first().ok_or_else(|| bad("cert", "holds no certificate"))?;
        let identity = PeerIdentity::from_der(leaf.as_ref()).map_err(failed("cert", String::new()))?;
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(failed("key", "unreadable private key".into()))?;
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
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(failed("key", "unreadable private key".into()))
    }

    /// A rustls server configuration presenting this certificate, speaking HTTP/2 (gRPC).
    pub fn server_config(&self, client_auth: ClientAuth) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider());
        let verifier = match client_auth {
            ClientAuth::Required => verifier,
            ClientAuth::Optional => verifier.allow_unauthenticated(),
        }
        .build()
        .map_err(failed("ca", String::new()))?;
        // No field of its own: the section as a whole (`tls` once within it).
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(failed("", String::new()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key()?)
            .map_err(failed("key", "does not fit the certificate (cert)".into()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// A rustls server configuration for HTTPS to browsers and HTTP clients (the web console
    /// and the JSON API): this certificate, no client certificate asked for (users sign in
    /// with their passwords), HTTP/2 (a browser keeps every console tab on one connection) or
    /// HTTP/1.1.
    pub fn https_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(failed("", String::new()))?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key()?)
            .map_err(failed("key", "does not fit the certificate (cert)".into()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
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
        let bad = |source| TlsError::Endpoint { addr: addr.to_string(), source };
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
