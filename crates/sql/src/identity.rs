//! Who a query runs for: the roles, an authenticated caller's identity, and the headers that
//! carry that identity on a fragment one site's node sends to another's; and whether the
//! caller takes an answer with parts missing ([`Gaps`]).

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Header naming the caller on a fragment sent to a peer.
pub const AS_USER: &str = "x-tessera-as-user";
/// The caller's role (its config name).
pub const AS_ROLE: &str = "x-tessera-as-role";
/// The caller's site, if any.
pub const AS_SITE: &str = "x-tessera-as-site";
/// Set on a fragment one node of a site sends to another of the same site for a caller whose
/// answer stays in the site: the receiver answers as for a caller signed in at it (with mTLS,
/// only when the sender's certificate is a node of the receiver's site).
pub const WITHIN_SITE: &str = "x-tessera-within-site";

/// Sent by a caller (and passed on with every fragment) who takes an answer without the parts
/// that cannot answer in time (a site, or a node's partitions): `true`. Without it such an
/// answer is an error, never a silent partial.
pub const ALLOW_PARTIAL: &str = "x-tessera-allow-partial";
/// The key, in the schema metadata of a result, that lists what it is missing ("; "-separated).
pub const INCOMPLETE_METADATA_KEY: &str = "tessera.incomplete";

/// With the caller's leave ([`ALLOW_PARTIAL`]), what one query's answer is missing, noted by
/// the fragments as they run; without it, nothing may be missing. Every clone of a caller's
/// identity for one query shares the list.
#[derive(Debug, Clone, Default)]
pub struct Gaps(Option<Arc<Mutex<Vec<String>>>>);

impl Gaps {
    /// A query whose caller takes a partial answer.
    pub fn allowing() -> Self {
        Self(Some(Arc::default()))
    }

    /// Whether the caller takes a partial answer.
    pub fn allowed(&self) -> bool {
        self.0.is_some()
    }

    /// Notes a part missing from the answer (only when allowed).
    pub fn note(&self, gap: String) {
        if let Some(list) = &self.0 {
            tracing::warn!(%gap, "a partial answer: the caller allowed it");
            list.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(gap);
        }
    }

    /// What is missing so far, in the order noted.
    pub fn list(&self) -> Vec<String> {
        self.0.as_ref().map(|l| l.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()).unwrap_or_default()
    }
}

/// Two callers' requests are alike if both take partial answers or neither does.
impl PartialEq for Gaps {
    fn eq(&self, other: &Self) -> bool {
        self.allowed() == other.allowed()
    }
}

impl Eq for Gaps {}

/// What a user may see (see ARCHITECTURE.md, "SQL endpoint").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything of their own site, raw telemetry included.
    SiteOperator,
    /// Windows, alerts and aggregates across sites; no raw telemetry.
    FleetAnalyst,
    /// Everything of their own site (the one configured, else the site whose node they signed
    /// in at), the audit tables, and of other sites what a fleet analyst sees.
    Admin,
}

impl Role {
    /// The role's name as written in config, e.g. `fleet-analyst`.
    pub fn name(self) -> &'static str {
        match self {
            Role::SiteOperator => "site-operator",
            Role::FleetAnalyst => "fleet-analyst",
            Role::Admin => "admin",
        }
    }
}

impl Identity {
    /// This caller with their home site filled in: an admin configured without a site is an
    /// admin of `site`, the site whose node they signed in at (so another site answers them as
    /// it answers a fleet analyst). Others are returned unchanged.
    pub fn at_home(&self, site: &str) -> Identity {
        let mut who = self.clone();
        if who.role == Role::Admin && who.site.is_none() && !who.via_peer {
            who.site = Some(site.to_string());
        }
        who
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name.
    pub user: String,
    /// What they may see.
    pub role: Role,
    /// Their site (site operators; admins, see [`Identity::at_home`]).
    pub site: Option<String>,
    /// True when another site's node asks on their behalf (a fragment of a cross-site
    /// query): what this site answers then leaves the site.
    pub via_peer: bool,
    /// Whether this call takes a partial answer, and what its answer is missing.
    pub gaps: Gaps,
}
