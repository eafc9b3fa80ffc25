//! Who a query runs for: the roles, an authenticated caller's identity, and the headers that
//! carry that identity on a fragment one site's node sends to another's; and whether the
//! caller takes an answer with parts missing ([`FanOut`]).

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

pub use crate::fanout::{ALLOW_PARTIAL, FanOut, INCOMPLETE_METADATA_KEY};

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
    /// Whether this call takes a partial answer, what its answer is missing, and how each
    /// site's fragment went.
    pub fanout: FanOut,
}
