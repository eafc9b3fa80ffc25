//! Who may do what on the control plane. One function, [`authorize`], decides every Raft
//! message and every admin request, on the path a client calls directly and on the path a
//! follower forwards to its leader:
//!
//! - a **node** speaks Raft only as itself, reads, gives its own site's approval of a release,
//!   acknowledges its own site's alerts (for a user who signed in at it), and records a member's registration only as the membership already has it (what a
//!   bootstrap writes); nothing else — a node acts for its own site, never for another;
//! - an **operator** reads; an `admin` operator also changes membership, the registry, grades,
//!   policies and queries, and asks for releases; no operator approves for a site, and none
//!   speaks Raft;
//! - a client of a node **without TLS** is trusted like an admin operator and a node at once:
//!   nothing proves who it is, which is why a node listens in plaintext only on a loopback
//!   address unless its config says `insecure_plaintext = true`.
//!
//! A follower forwards a write or a membership change under its own certificate and names the
//! principal it forwards for in the `tessera-on-behalf-of` header ([`on_behalf_of`]). The
//! leader believes a forwarded operator (the follower checked that certificate), but a node
//! may only forward for itself: a site-A node cannot speak for site B, whatever it claims.

use tessera_tls::{OperatorRole, PeerIdentity};
use tonic::metadata::MetadataValue;

use super::error::ServiceError;
use crate::types::{Command, Member, NodeId};

/// The header a forwarding node names its principal in.
pub(crate) const ON_BEHALF_OF: &str = "tessera-on-behalf-of";

/// Who is asking, as far as the transport proves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principal {
    /// A client of a node that runs without TLS: unproven.
    Plaintext,
    /// A cluster node, by its certificate.
    Node { id: NodeId, site: String },
    /// A person, by their certificate.
    Operator { name: String, role: OperatorRole },
}

/// What is asked.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Action<'a> {
    /// A Raft message (append, vote, pre-vote, snapshot, read index) from node `from`.
    Raft { from: NodeId },
    /// A read of the status, the registry or the audit log.
    Read,
    /// Initialising the cluster, or adding or removing a member.
    Membership,
    /// A change to the registry.
    Write(&'a Command),
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Plaintext => f.write_str("an unauthenticated client (no TLS)"),
            Principal::Node { id, site } => write!(f, "node {id} of site {site}"),
            Principal::Operator { name, role } => write!(f, "operator {name} ({role})"),
        }
    }
}

impl Principal {
    /// The principal a verified certificate names.
    pub(crate) fn of_identity(identity: PeerIdentity) -> Self {
        match identity {
            PeerIdentity::Node { id, site } => Principal::Node { id, site },
            PeerIdentity::Operator { name, role } => Principal::Operator { name, role },
        }
    }

    /// The name the audit log records for this principal (`None` without TLS: the name the
    /// client claims stands).
    pub(crate) fn actor(&self) -> Option<String> {
        match self {
            Principal::Plaintext => None,
            Principal::Operator { name, .. } => Some(name.clone()),
            node @ Principal::Node { .. } => Some(node.to_string()),
        }
    }

    /// The header value that names this principal when a node forwards for it.
    fn encode(&self) -> String {
        use tessera_tls::pki::encode_component as e;
        match self {
            Principal::Plaintext => "plaintext".into(),
            Principal::Node { id, site } => format!("node/{id}/{}", e(site)),
            Principal::Operator { name, role } => format!("operator/{role}/{}", e(name)),
        }
    }

    fn decode(value: &str) -> Option<Self> {
        use tessera_tls::pki::decode_component as d;
        let mut parts = value.splitn(3, '/');
        match (parts.next()?, parts.next(), parts.next()) {
            ("plaintext", None, None) => Some(Principal::Plaintext),
            ("node", Some(id), Some(site)) => Some(Principal::Node { id: id.parse().ok()?, site: d(site)? }),
            ("operator", Some(role), Some(name)) => {
                Some(Principal::Operator { name: d(name)?, role: role.parse().ok()? })
            }
            _ => None,
        }
    }
}

/// Adds the header naming `principal` to a call this node forwards.
pub(crate) fn on_behalf_of<T>(call: &mut tonic::Request<T>, principal: &Principal) {
    if let Ok(value) = MetadataValue::try_from(principal.encode()) {
        call.metadata_mut().insert(ON_BEHALF_OF, value);
    }
}

/// The principal `request` acts for: without TLS, [`Principal::Plaintext`]; with it, the
/// holder of the client certificate, or, for a node's certificate with the forwarding header,
/// the principal the node forwards for (a node only for itself; never an unproven client).
pub(crate) fn principal_of<T>(request: &tonic::Request<T>, tls_required: bool) -> Result<Principal, ServiceError> {
    if !tls_required {
        return Ok(Principal::Plaintext);
    }
    let proven = match PeerIdentity::of_request(request) {
        None => return Err(ServiceError::NoClientCertificate),
        Some(Err(e)) => return Err(ServiceError::UnprovenIdentity(e)),
        Some(Ok(identity)) => Principal::of_identity(identity),
    };
    let Some(header) = request.metadata().get(ON_BEHALF_OF) else { return Ok(proven) };
    let claimed = header.to_str().ok().and_then(Principal::decode).ok_or_else(|| ServiceError::NotAllowed {
        why: format!("{proven} sent an unreadable {ON_BEHALF_OF} header"),
    })?;
    match (&proven, &claimed) {
        (Principal::Node { .. }, Principal::Operator { .. }) => Ok(claimed),
        (Principal::Node { .. }, Principal::Node { .. }) if claimed == proven => Ok(claimed),
        _ => Err(ServiceError::NotAllowed { why: format!("{proven} may not act on behalf of {claimed}") }),
    }
}

/// Whether `who` may do `action`; `member` is the current membership's entry for a node id.
/// The refusal says who asked for what, and why not.
pub(crate) fn authorize(
    who: &Principal,
    action: Action<'_>,
    member: impl Fn(NodeId) -> Option<Member>,
) -> Result<(), ServiceError> {
    let refuse =
        |why: String| Err(ServiceError::NotAllowed { why: format!("{who} may not {}: {why}", describe(action)) });
    match (who, action) {
        (Principal::Plaintext, _) => Ok(()),
        (_, Action::Read) => Ok(()),
        (Principal::Node { id, .. }, Action::Raft { from }) if *id == from => Ok(()),
        (Principal::Node { id, .. }, Action::Raft { from }) => {
            refuse(format!("the certificate is node {id}'s, the message claims node {from}"))
        }
        (Principal::Operator { .. }, Action::Raft { .. }) => refuse("only nodes speak Raft".into()),
        (Principal::Node { site, .. }, Action::Write(Command::ApproveRelease { site: approving, .. })) => {
            if approving.as_str() == site {
                Ok(())
            } else {
                refuse(format!("only a node of site {approving} approves for it"))
            }
        }
        (Principal::Node { site, .. }, Action::Write(Command::AcknowledgeAlert { site: alerting, .. })) => {
            if alerting.as_str() == site {
                Ok(())
            } else {
                refuse(format!("only a node of site {alerting} acknowledges its alerts"))
            }
        }
        (Principal::Node { .. }, Action::Write(Command::RegisterNode { node, site, addr })) => match member(*node) {
            Some(m) if m.site == site.as_str() && m.addr == *addr => Ok(()),
            _ => refuse("a node records only a registration the membership already holds".into()),
        },
        (Principal::Node { .. }, _) => refuse("changes to the cluster are an admin operator's".into()),
        (Principal::Operator { .. }, Action::Write(Command::ApproveRelease { site, .. })) => {
            refuse(format!("only a node of site {site} approves for it"))
        }
        (Principal::Operator { role: OperatorRole::Admin, .. }, _) => Ok(()),
        (Principal::Operator { role: OperatorRole::Viewer, .. }, _) => {
            refuse("a viewer's certificate reads only".into())
        }
    }
}

fn describe(action: Action<'_>) -> String {
    match action {
        Action::Raft { from } => format!("send a Raft message as node {from}"),
        Action::Read => "read".into(),
        Action::Membership => "change the membership".into(),
        Action::Write(command) => command.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::SiteId;

    fn node(id: NodeId, site: &str) -> Principal {
        Principal::Node { id, site: site.into() }
    }

    fn operator(role: OperatorRole) -> Principal {
        Principal::Operator { name: "alice".into(), role }
    }

    fn approve(site: &str) -> Command {
        Command::ApproveRelease { bundle: "b".into(), site: SiteId::new(site).unwrap() }
    }

    fn none(_: NodeId) -> Option<Member> {
        None
    }

    #[test]
    fn a_node_acts_only_for_its_own_site() {
        let a = node(1, "site-a");
        assert!(authorize(&a, Action::Write(&approve("site-a")), none).is_ok());
        let forged = authorize(&a, Action::Write(&approve("site-b")), none).unwrap_err().to_string();
        assert!(forged.contains("only a node of site site-b approves for it"), "{forged}");
        assert!(authorize(&a, Action::Raft { from: 1 }, none).is_ok());
        assert!(authorize(&a, Action::Raft { from: 2 }, none).is_err());
        assert!(authorize(&a, Action::Membership, none).is_err());
        let policy = Command::DropQuery { name: "q".into() };
        assert!(authorize(&a, Action::Write(&policy), none).is_err());
        assert!(authorize(&a, Action::Read, none).is_ok());
        let ack = |site: &str| Command::AcknowledgeAlert {
            alert: "x".into(),
            motor: tessera_core::MotorId::new("M1").unwrap(),
            site: SiteId::new(site).unwrap(),
            note: "on it".into(),
            silence_until_ms: None,
        };
        assert!(authorize(&a, Action::Write(&ack("site-a")), none).is_ok());
        let forged = authorize(&a, Action::Write(&ack("site-b")), none).unwrap_err().to_string();
        assert!(forged.contains("only a node of site site-b acknowledges its alerts"), "{forged}");
    }

    #[test]
    fn a_node_records_only_registrations_the_membership_holds() {
        let a = node(1, "site-a");
        let register = |site: &str, addr: &str| Command::RegisterNode {
            node: 2,
            site: SiteId::new(site).unwrap(),
            addr: addr.into(),
        };
        let member = |id: NodeId| (id == 2).then(|| Member { site: "site-b".into(), addr: "h:1".into() });
        assert!(authorize(&a, Action::Write(&register("site-b", "h:1")), member).is_ok());
        assert!(authorize(&a, Action::Write(&register("site-a", "h:1")), member).is_err());
        assert!(authorize(&a, Action::Write(&register("site-b", "evil:1")), member).is_err());
    }

    #[test]
    fn operators_by_role_and_never_for_a_site() {
        let admin = operator(OperatorRole::Admin);
        let viewer = operator(OperatorRole::Viewer);
        let drop = Command::DropQuery { name: "q".into() };
        assert!(authorize(&admin, Action::Write(&drop), none).is_ok());
        assert!(authorize(&admin, Action::Membership, none).is_ok());
        assert!(authorize(&admin, Action::Write(&approve("site-a")), none).is_err());
        assert!(authorize(&admin, Action::Raft { from: 1 }, none).is_err());
        assert!(authorize(&viewer, Action::Write(&drop), none).is_err());
        assert!(authorize(&viewer, Action::Membership, none).is_err());
        assert!(authorize(&viewer, Action::Read, none).is_ok());
        // Who votes is an admin's say: a viewer or a node may not change the voter policy.
        let voters = Command::SetVoterPolicy { policy: crate::types::VoterPolicy::default() };
        assert!(authorize(&admin, Action::Write(&voters), none).is_ok());
        assert!(authorize(&viewer, Action::Write(&voters), none).is_err());
        assert!(authorize(&node(1, "site-a"), Action::Write(&voters), none).is_err());
    }

    #[test]
    fn principals_read_back_from_the_forwarding_header() {
        for p in
            [Principal::Plaintext, node(7, "Werk Süd/2"), operator(OperatorRole::Viewer), operator(OperatorRole::Admin)]
        {
            assert_eq!(Principal::decode(&p.encode()), Some(p.clone()), "{p}");
        }
        assert_eq!(Principal::decode("operator/superuser/x"), None);
        assert_eq!(Principal::decode("node/x/site"), None);
    }
}
