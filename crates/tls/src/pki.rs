//! Issuing certificates: the cluster CA, node certificates and operator certificates
//! (`tessera cert ca|node|operator`).
//!
//! A certificate says who holds it in URI subject alternative names, which
//! [`crate::PeerIdentity`] reads back: `tessera://node/<raft id>` and `tessera://site/<site>`
//! for a node, `tessera://operator/<name>` for a person's command-line client. A node
//! certificate also carries the DNS name [`node_server_name`] (`node-<id>.tessera`), which Raft
//! clients ask for when they connect, so a peer's server is verified to be the node the
//! membership names, plus the host names and addresses the node is reached at.
//!
//! Keys are ECDSA P-256. The CA key signs; keep it offline, next to no node.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::TlsError;

/// URI scheme of the identities in certificates.
pub(crate) const SCHEME: &str = "tessera://";

/// The DNS name in node `id`'s certificate that Raft clients verify the server against.
pub fn node_server_name(id: u64) -> String {
    format!("node-{id}.tessera")
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

/// Who a certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A cluster node: its Raft id and site, and the hosts (DNS names or IP addresses) it is
    /// reached at.
    Node {
        /// Raft id.
        id: u64,
        /// Site.
        site: String,
        /// Host names and addresses clients connect to.
        hosts: Vec<String>,
    },
    /// A person's command-line client (cluster admin API, SQL).
    Operator {
        /// The operator's name.
        name: String,
        /// What they may do on the control plane.
        role: crate::OperatorRole,
    },
}

/// Percent-encodes everything but unreserved URI characters, so any site or operator name
/// fits an IA5 URI and reads back unchanged.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`encode_component`].
pub fn decode_component(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn now_offset(plus: Duration, minus: Duration) -> time::OffsetDateTime {
    let now = time::OffsetDateTime::now_utc();
    now + plus - minus
}

fn ia5(s: String) -> Result<rcgen::string::Ia5String, TlsError> {
    rcgen::string::Ia5String::try_from(s.clone()).map_err(failed(&format!("naming {s}")))
}

/// A [`TlsError::Issue`] builder for `map_err`: rcgen failed at `step`.
fn failed(step: &str) -> impl FnOnce(rcgen::Error) -> TlsError + '_ {
    move |source| TlsError::Issue { step: step.to_string(), source }
}

/// Generates a self-signed CA named `name`, valid for `valid_for`.
pub fn new_ca(name: &str, valid_for: Duration) -> Result<Issued, TlsError> {
    let key = KeyPair::generate().map_err(failed("generating the CA key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.distinguished_name.push(DnType::OrganizationName, "Tessera");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = now_offset(Duration::ZERO, Duration::from_secs(3600));
    params.not_after = now_offset(valid_for, Duration::ZERO);
    let key_pem = key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(params, key).map_err(failed("self-signing the CA"))?;
    Ok(Issued { cert_pem: ca.pem(), key_pem })
}

/// Issues a certificate for `subject`, signed by `ca`, valid for `valid_for`. Every
/// certificate may serve and may connect (nodes do both; an operator only connects).
pub fn issue(ca: &Issued, subject: &Subject, valid_for: Duration) -> Result<Issued, TlsError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(failed("reading the CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(failed("reading the CA certificate"))?;
    let key = KeyPair::generate().map_err(failed("generating a key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let mut sans = Vec::new();
    match subject {
        Subject::Node { id, site, hosts } => {
            params.distinguished_name.push(DnType::CommonName, format!("tessera node {id} ({site})"));
            sans.push(SanType::URI(ia5(format!("{SCHEME}node/{id}"))?));
            sans.push(SanType::URI(ia5(format!("{SCHEME}site/{}", encode_component(site)))?));
            sans.push(SanType::DnsName(ia5(node_server_name(*id))?));
            for host in hosts {
                sans.push(match host.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(ia5(host.clone())?),
                });
            }
        }
        Subject::Operator { name, role } => {
            params.distinguished_name.push(DnType::CommonName, format!("tessera operator {name}"));
            sans.push(SanType::URI(ia5(format!("{SCHEME}operator/{}", encode_component(name)))?));
            sans.push(SanType::URI(ia5(format!("{SCHEME}role/{role}"))?));
        }
    }
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now_offset(Duration::ZERO, Duration::from_secs(3600));
    params.not_after = now_offset(valid_for, Duration::ZERO);
    let cert = params.signed_by(&key, &issuer).map_err(failed("signing"))?;
    Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_survive_encoding() {
        for s in ["plant-a", "Werk Süd/2", "a%b", ""] {
            assert_eq!(decode_component(&encode_component(s)).as_deref(), Some(s));
        }
        assert_eq!(encode_component("a b"), "a%20b");
        assert_eq!(decode_component("%4"), None);
    }
}
