//! What the control plane's Raft log carries: the type configuration, a cluster member's
//! address, and the registry commands with their outcomes.
//!
//! Only metadata is ever proposed: sites, nodes, which site owns which motor, continuous query
//! definitions, data-grade policies. No variant of [`Command`] can hold a reading, and
//! [`Request::check`] bounds every field, so raw telemetry cannot enter the log by accident
//! (ARCHITECTURE.md, invariant "raw telemetry never enters the Raft log").

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use tessera_core::{DataGrade, DataStage, MotorId, SiteId};

openraft::declare_raft_types!(
    /// Tessera's control-plane Raft types: registry commands in, outcomes out, `u64` node ids
    /// and [`Member`] addresses.
    pub TypeConfig:
        D = Request,
        R = Outcome,
        NodeId = u64,
        Node = Member,
);

/// A Raft node's id, unique in the cluster.
pub type NodeId = u64;

/// Where a cluster member lives: its site and the address of its gRPC endpoint (Raft
/// transport and admin API share it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The site (plant) the node runs at.
    pub site: String,
    /// `host:port` of the node's gRPC endpoint.
    pub addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.site, self.addr)
    }
}

/// Most motors one command may assign; a plant's whole fleet fits in one.
pub const MAX_MOTORS_PER_COMMAND: usize = 10_000;
/// Longest continuous query text accepted, in bytes.
pub const MAX_SQL_BYTES: usize = 16 * 1024;
/// Longest policy rule text accepted, in bytes.
pub const MAX_RULE_BYTES: usize = 4 * 1024;
/// Longest free-text field (actor, site name, query name, address), in bytes.
pub const MAX_TEXT_BYTES: usize = 256;
/// Most custodian sites of one release.
pub const MAX_CUSTODIANS: usize = 32;
/// Longest note on an alert's acknowledgement, in bytes.
pub const MAX_NOTE_BYTES: usize = 1024;

/// One change to the registry as proposed to Raft: who asked for it, when, and what. The
/// proposer stamps the time, so applying the entry is deterministic on every node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Who asked (the admin API's authenticated principal, or the CLI's `--actor`).
    pub actor: String,
    /// When, in milliseconds since the Unix epoch, by the proposing node's clock.
    pub at_ms: i64,
    /// What to change.
    pub command: Command,
}

/// A change to the cluster registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Adds a site (plant), or renames an existing one.
    AddSite {
        /// Its id.
        site: SiteId,
        /// A human-readable name.
        name: String,
    },
    /// Records which site a Raft node belongs to (membership itself is Raft's own).
    RegisterNode {
        /// The node's Raft id.
        node: NodeId,
        /// Its site (added if new).
        site: SiteId,
        /// Its gRPC address.
        addr: String,
    },
    /// Forgets a node's registration.
    RemoveNode {
        /// The node's Raft id.
        node: NodeId,
    },
    /// Makes `site` the owner of these motors (moving them from another site if needed).
    AssignMotors {
        /// The owning site; it must exist.
        site: SiteId,
        /// The motors.
        motors: Vec<MotorId>,
    },
    /// Registers (or replaces) a continuous query every site runs on its own motors.
    RegisterQuery {
        /// Its name, unique in the cluster.
        name: String,
        /// The SQL text.
        sql: String,
    },
    /// Drops a continuous query.
    DropQuery {
        /// Its name.
        name: String,
    },
    /// Sets the rule a data grade follows at one stage of the data's life.
    SetPolicy {
        /// The grade.
        grade: DataGrade,
        /// The stage.
        stage: DataStage,
        /// The rule, as text the enforcing component parses.
        rule: String,
    },
    /// Grades a stream's default (`column` `None`) or one of its columns, cluster-wide: every
    /// node raises its config's grades to at least this (never lowers them).
    SetGrade {
        /// The stream (`telemetry`, `motor_windows`, ...).
        stream: String,
        /// The column, or `None` for the stream's default.
        column: Option<String>,
        /// The grade.
        grade: DataGrade,
    },
    /// Asks to release an export bundle's key to `target`: its shares are held by
    /// `custodians`, and `k` of them must approve (k ≥ 2, so no single site decides).
    RequestRelease {
        /// The export's id.
        bundle: String,
        /// The site whose data the bundle holds.
        source: SiteId,
        /// The site that will import it.
        target: SiteId,
        /// Approvals needed.
        k: u8,
        /// The sites holding a share each.
        custodians: Vec<SiteId>,
    },
    /// A custodian site approves a release (over mTLS, only a node of that site may say so).
    ApproveRelease {
        /// The export's id.
        bundle: String,
        /// The approving site.
        site: SiteId,
    },
    /// Defines (or redefines) a plant's own machine class by its vibration zone boundaries
    /// (ISO 20816's idea; the ISO classes I–IV are built in and cannot be redefined).
    DefineMachineClass {
        /// Its name.
        class: String,
        /// The A/B, B/C and C/D boundaries, velocity RMS in µm/s (integers keep the registry
        /// exact).
        boundaries_um_s: [u32; 3],
    },
    /// Gives motors a machine class (I–IV or a defined one) whose vibration zones the wear
    /// judge uses for them; `None`: back to the node's configured class.
    SetMachineClass {
        /// The motors; each must be assigned to a site.
        motors: Vec<MotorId>,
        /// The class.
        class: Option<String>,
    },
    /// A person acknowledges an open alert (someone is on it), and may silence it until a
    /// time: its notifications stop until then. Proposed by a node of the alert's site for a
    /// user who signed in there (the actor names both).
    AcknowledgeAlert {
        /// The alert's id (as in the `alerts` table).
        alert: String,
        /// The alert's motor.
        motor: MotorId,
        /// The alert's site.
        site: SiteId,
        /// Why, in the person's words.
        note: String,
        /// Silenced until then (ms since the Unix epoch); `None`: acknowledged only.
        silence_until_ms: Option<i64>,
    },
    /// Sets the operator's say over which members vote (see [`VoterPolicy`]); the leader
    /// rebalances the voters to it.
    SetVoterPolicy {
        /// The whole policy (it replaces the one before).
        policy: VoterPolicy,
    },
}

/// The fewest voters a bounded voter set aims for (tolerates one failure).
pub const MIN_VOTERS: usize = 3;
/// The most voters a bounded voter set has (tolerates three failures).
pub const MAX_VOTERS: usize = 7;

/// The operator's say over the voter set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterPolicy {
    /// How many voters to keep, odd, [`MIN_VOTERS`]..=[`MAX_VOTERS`] (fewer while fewer
    /// members are healthy).
    pub target: usize,
    /// Members that vote whenever they are healthy, whatever their site.
    pub pinned: BTreeSet<NodeId>,
    /// Members that never vote (e.g. a site on a slow link).
    pub excluded: BTreeSet<NodeId>,
}

impl Default for VoterPolicy {
    fn default() -> Self {
        Self { target: 5, pinned: BTreeSet::new(), excluded: BTreeSet::new() }
    }
}

impl fmt::Display for VoterPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids = |set: &BTreeSet<NodeId>| set.iter().map(|id| id.to_string()).collect::<Vec<_>>().join(", ");
        write!(f, "{} voters", self.target)?;
        if !self.pinned.is_empty() {
            write!(f, ", pinned {}", ids(&self.pinned))?;
        }
        if !self.excluded.is_empty() {
            write!(f, ", excluded {}", ids(&self.excluded))?;
        }
        Ok(())
    }
}

impl VoterPolicy {
    /// Checks the policy; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !(MIN_VOTERS..=MAX_VOTERS).contains(&self.target) || self.target.is_multiple_of(2) {
            return Err(format!("target {}: give an odd number from {MIN_VOTERS} to {MAX_VOTERS}", self.target));
        }
        if let Some(id) = self.pinned.intersection(&self.excluded).next() {
            return Err(format!("node {id} is both pinned and excluded"));
        }
        if self.pinned.len() > self.target {
            return Err(format!("{} pinned voters exceed the target of {}", self.pinned.len(), self.target));
        }
        Ok(())
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::AddSite { site, name } => write!(f, "add site {site} ({name})"),
            Command::RegisterNode { node, site, addr } => write!(f, "register node {node} at {site} ({addr})"),
            Command::RemoveNode { node } => write!(f, "remove node {node}"),
            Command::AssignMotors { site, motors } => match motors.as_slice() {
                [one] => write!(f, "assign motor {one} to {site}"),
                [first, .., last] => write!(f, "assign {} motors ({first} … {last}) to {site}", motors.len()),
                [] => write!(f, "assign no motors to {site}"),
            },
            Command::RegisterQuery { name, .. } => write!(f, "register query {name}"),
            Command::DropQuery { name } => write!(f, "drop query {name}"),
            Command::SetPolicy { grade, stage, rule } => write!(f, "set policy {grade}/{stage}: {rule}"),
            Command::SetGrade { stream, column: Some(column), grade } => write!(f, "grade {stream}.{column} {grade}"),
            Command::SetGrade { stream, column: None, grade } => write!(f, "grade stream {stream} {grade} by default"),
            Command::RequestRelease { bundle, source, target, k, custodians } => {
                write!(
                    f,
                    "request release of bundle {bundle} ({source} → {target}), {k} of {} custodians",
                    custodians.len()
                )
            }
            Command::ApproveRelease { bundle, site } => write!(f, "approve release of bundle {bundle} by {site}"),
            Command::DefineMachineClass { class, boundaries_um_s: [ab, bc, cd] } => write!(
                f,
                "define machine class {class} (zones A/B {}, B/C {}, C/D {} mm/s)",
                f64::from(*ab) / 1000.0,
                f64::from(*bc) / 1000.0,
                f64::from(*cd) / 1000.0
            ),
            Command::AcknowledgeAlert { alert, motor, site, note, silence_until_ms } => {
                write!(f, "acknowledge alert {alert} of motor {motor} at {site}")?;
                if let Some(until) = silence_until_ms {
                    write!(f, ", silenced until {until}")?;
                }
                write!(f, ": {note}")
            }
            Command::SetVoterPolicy { policy } => write!(f, "set voter policy: {policy}"),
            Command::SetMachineClass { motors, class } => {
                let class = class.as_deref().map_or("the default class".to_string(), |c| format!("class {c}"));
                match motors.as_slice() {
                    [one] => write!(f, "give motor {one} {class}"),
                    [first, .., last] => write!(f, "give {} motors ({first} … {last}) {class}", motors.len()),
                    [] => write!(f, "give no motors {class}"),
                }
            }
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} by {} at {}", self.command, self.actor, self.at_ms)
    }
}

/// Why a request was refused before it was proposed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct RequestError {
    /// The offending field, e.g. `command.sql`.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

fn text(field: &'static str, value: &str, max: usize) -> Result<(), RequestError> {
    if value.trim().is_empty() {
        return Err(RequestError { field, problem: "is empty".into() });
    }
    if value.len() > max {
        return Err(RequestError { field, problem: format!("is {} bytes long, the limit is {max}", value.len()) });
    }
    Ok(())
}

fn motor_list(motors: &[MotorId]) -> Result<(), RequestError> {
    if motors.is_empty() {
        return Err(RequestError { field: "command.motors", problem: "is empty".into() });
    }
    if motors.len() > MAX_MOTORS_PER_COMMAND {
        return Err(RequestError {
            field: "command.motors",
            problem: format!("holds {} motors, the limit is {MAX_MOTORS_PER_COMMAND}", motors.len()),
        });
    }
    Ok(())
}

impl Request {
    /// Checks every field's size and shape, so that nothing unbounded (and nothing that is not
    /// metadata) is proposed. The state machine checks the request against the registry again
    /// when it applies it.
    pub fn check(&self) -> Result<(), RequestError> {
        text("actor", &self.actor, MAX_TEXT_BYTES)?;
        match &self.command {
            Command::AddSite { name, .. } => text("command.name", name, MAX_TEXT_BYTES),
            Command::RegisterNode { addr, .. } => text("command.addr", addr, MAX_TEXT_BYTES),
            Command::RemoveNode { .. } => Ok(()),
            Command::AssignMotors { motors, .. } => motor_list(motors),
            Command::DefineMachineClass { class, boundaries_um_s } => {
                text("command.class", class, MAX_TEXT_BYTES)?;
                if class.parse::<tessera_core::MachineClass>().is_ok() {
                    return Err(RequestError {
                        field: "command.class",
                        problem: format!("{class} is an ISO class, built in: define a class of another name"),
                    });
                }
                let mm_s: Vec<f64> = boundaries_um_s.iter().map(|b| f64::from(*b) / 1000.0).collect();
                tessera_core::zone_boundaries(&mm_s)
                    .map(|_| ())
                    .map_err(|problem| RequestError { field: "command.boundaries", problem })
            }
            Command::SetMachineClass { motors, class } => {
                motor_list(motors)?;
                class.as_deref().map_or(Ok(()), |c| text("command.class", c, MAX_TEXT_BYTES))
            }
            Command::RegisterQuery { name, sql } => {
                text("command.name", name, MAX_TEXT_BYTES)?;
                text("command.sql", sql, MAX_SQL_BYTES)
            }
            Command::DropQuery { name } => text("command.name", name, MAX_TEXT_BYTES),
            Command::SetPolicy { stage, rule, .. } => {
                text("command.rule", rule, MAX_RULE_BYTES)?;
                // The group terms of a `use` rule are enforced by every node: they must parse.
                if *stage == DataStage::Use {
                    tessera_core::GroupRule::parse(rule)
                        .map_err(|problem| RequestError { field: "command.rule", problem })?;
                }
                Ok(())
            }
            Command::SetGrade { stream, column, .. } => {
                text("command.stream", stream, MAX_TEXT_BYTES)?;
                column.as_deref().map_or(Ok(()), |c| text("command.column", c, MAX_TEXT_BYTES))
            }
            Command::RequestRelease { bundle, k, custodians, .. } => {
                text("command.bundle", bundle, MAX_TEXT_BYTES)?;
                if *k < 2 || usize::from(*k) > custodians.len() || custodians.len() > MAX_CUSTODIANS {
                    return Err(RequestError {
                        field: "command.k",
                        problem: format!(
                            "needs 2 ≤ k ≤ custodians ≤ {MAX_CUSTODIANS}; got k = {k} of {}",
                            custodians.len()
                        ),
                    });
                }
                Ok(())
            }
            Command::ApproveRelease { bundle, .. } => text("command.bundle", bundle, MAX_TEXT_BYTES),
            Command::AcknowledgeAlert { alert, note, .. } => {
                text("command.alert", alert, MAX_TEXT_BYTES)?;
                text("command.note", note, MAX_NOTE_BYTES)
            }
            Command::SetVoterPolicy { policy } => {
                policy.validate().map_err(|problem| RequestError { field: "command.policy", problem })
            }
        }
    }
}

/// What applying a request did. A request the registry refuses (a query that does not exist,
/// a site nobody added) is still in the log, applied as a no-op and audited as rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The entry carried no request (a blank or membership entry).
    Nothing,
    /// The change was made.
    Applied,
    /// The registry refused the change, for this reason.
    Rejected(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(command: Command) -> Request {
        Request { actor: "ops".into(), at_ms: 1, command }
    }

    #[test]
    fn check_bounds_every_field_and_names_it() {
        let long_sql = "x".repeat(MAX_SQL_BYTES + 1);
        let err = request(Command::RegisterQuery { name: "q".into(), sql: long_sql }).check().unwrap_err();
        assert_eq!(err.field, "command.sql");
        let motors = (0..=MAX_MOTORS_PER_COMMAND).map(|i| MotorId::new(format!("M{i}")).unwrap()).collect();
        let site = SiteId::new("a").unwrap();
        let err = request(Command::AssignMotors { site, motors }).check().unwrap_err();
        assert_eq!(err.field, "command.motors");
        let err =
            Request { actor: " ".into(), ..request(Command::DropQuery { name: "q".into() }) }.check().unwrap_err();
        assert_eq!(err.to_string(), "actor: is empty");
        assert!(request(Command::DropQuery { name: "q".into() }).check().is_ok());
    }
}
