//! The cluster registry: what every site agrees on, and how a request changes it.
//!
//! [`Registry::apply`] is pure and deterministic (the request carries its own time), so every
//! node that applies the same log ends with the same registry. Each applied request also
//! yields an [`AuditRecord`]: who asked for what, when, at which log index, and whether it was
//! done or refused (and why).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tessera_core::{DataGrade, DataStage, GradeMap, MotorId, SiteId};

use crate::types::{Command, NodeId, Outcome, Request};

/// A site (plant) of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRecord {
    /// Its human-readable name.
    pub name: String,
    /// When it was added (ms since the Unix epoch).
    pub added_at_ms: i64,
}

/// A node's registration: which site it runs at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its site.
    pub site: SiteId,
    /// Its gRPC address.
    pub addr: String,
}

/// A continuous query every site runs on its own motors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryRecord {
    /// The SQL text.
    pub sql: String,
    /// Who registered it.
    pub registered_by: String,
    /// When (ms since the Unix epoch).
    pub registered_at_ms: i64,
    /// The log index of the registration: a version number, higher is newer.
    pub version: u64,
}

/// The rule a data grade follows at one stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// The grade.
    pub grade: DataGrade,
    /// The stage.
    pub stage: DataStage,
    /// The rule text.
    pub rule: String,
    /// Who set it.
    pub set_by: String,
    /// When (ms since the Unix epoch).
    pub set_at_ms: i64,
}

/// A grade the cluster set for a stream's default or one column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GradeRecord {
    /// The stream.
    pub stream: String,
    /// The column (`None`: the stream's default).
    pub column: Option<String>,
    /// The grade.
    pub grade: DataGrade,
    /// Who set it.
    pub set_by: String,
    /// When (ms since the Unix epoch).
    pub set_at_ms: i64,
}

/// A request to release an export bundle's key, and the custodian sites that approved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// The site whose data the bundle holds.
    pub source: SiteId,
    /// The site that will import it.
    pub target: SiteId,
    /// Approvals needed.
    pub k: u8,
    /// The sites holding a share each.
    pub custodians: BTreeSet<SiteId>,
    /// The custodians that approved, each counted once.
    pub approvals: BTreeSet<SiteId>,
    /// Who asked.
    pub requested_by: String,
    /// When (ms since the Unix epoch).
    pub requested_at_ms: i64,
}

impl ReleaseRecord {
    /// Whether `k` custodians approved.
    pub fn released(&self) -> bool {
        self.approvals.len() >= usize::from(self.k)
    }
}

/// A person's acknowledgement of an alert (and its silence, if any).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckRecord {
    /// The alert's motor.
    pub motor: MotorId,
    /// The alert's site.
    pub site: SiteId,
    /// Who (the request's actor: the user and the node they signed in at).
    pub by: String,
    /// When (ms since the Unix epoch).
    pub at_ms: i64,
    /// Why.
    pub note: String,
    /// Silenced until then (ms since the Unix epoch), if silenced.
    pub silence_until_ms: Option<i64>,
    /// The log index of the acknowledgement (the newest are kept, see [`MAX_ACKS`]).
    pub index: u64,
}

/// Most acknowledgements the registry keeps; beyond it the oldest is forgotten (the audit log
/// keeps every one).
pub const MAX_ACKS: usize = 10_000;

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The Raft log index of the request: the audit log's order.
    pub index: u64,
    /// Who asked.
    pub actor: String,
    /// When (ms since the Unix epoch, by the proposer's clock).
    pub at_ms: i64,
    /// What was asked, in words.
    pub action: String,
    /// `None` when it was done; the reason when it was refused.
    pub rejected: Option<String>,
}

/// Everything the cluster agrees on (the audit log is kept beside it, see [`AuditRecord`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// Sites by id.
    pub sites: BTreeMap<SiteId, SiteRecord>,
    /// Node registrations by Raft id.
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// The owning site of each motor.
    pub motors: BTreeMap<MotorId, SiteId>,
    /// Continuous queries by name.
    pub queries: BTreeMap<String, QueryRecord>,
    /// Policies, keyed `grade/stage`.
    pub policies: BTreeMap<String, PolicyRecord>,
    /// Grades set cluster-wide, keyed `stream` or `stream.column` (see [`Self::grade_policy`]).
    #[serde(default)]
    pub grades: BTreeMap<String, GradeRecord>,
    /// Key releases of export bundles, by bundle id.
    #[serde(default)]
    pub releases: BTreeMap<String, ReleaseRecord>,
    /// Plants' own machine classes: vibration zone boundaries A/B, B/C, C/D in µm/s.
    #[serde(default)]
    pub machine_classes: BTreeMap<String, [u32; 3]>,
    /// Motors given a machine class (an ISO class I–IV or one of `machine_classes`).
    #[serde(default)]
    pub motor_classes: BTreeMap<MotorId, String>,
    /// Acknowledged alerts by alert id, the newest [`MAX_ACKS`].
    #[serde(default)]
    pub acks: BTreeMap<String, AckRecord>,
    /// The operator's say over which members vote; the leader rebalances the voters to it.
    #[serde(default)]
    pub voter_policy: crate::types::VoterPolicy,
}

impl Registry {
    /// Applies `request`, found at log `index`, and returns its outcome and audit record.
    pub fn apply(&mut self, index: u64, request: &Request) -> (Outcome, AuditRecord) {
        let result = self.change(index, request);
        let audit = AuditRecord {
            index,
            actor: request.actor.clone(),
            at_ms: request.at_ms,
            action: request.command.to_string(),
            rejected: result.clone().err(),
        };
        let outcome = match result {
            Ok(()) => Outcome::Applied,
            Err(reason) => Outcome::Rejected(reason),
        };
        (outcome, audit)
    }

    fn change(&mut self, index: u64, request: &Request) -> Result<(), String> {
        // The proposer checked the request; a log written by an older or buggy proposer is
        // checked again here so that the registry never holds an unbounded value.
        request.check().map_err(|e| e.to_string())?;
        match &request.command {
            Command::AddSite { site, name } => {
                let added_at_ms = self.sites.get(site).map_or(request.at_ms, |s| s.added_at_ms);
                self.sites.insert(site.clone(), SiteRecord { name: name.clone(), added_at_ms });
            }
            Command::RegisterNode { node, site, addr } => {
                // A node names its site when it joins; a site seen first this way is added
                // under its id (`AddSite` can name it later).
                let at = request.at_ms;
                self.sites
                    .entry(site.clone())
                    .or_insert_with(|| SiteRecord { name: site.to_string(), added_at_ms: at });
                self.nodes.insert(*node, NodeRecord { site: site.clone(), addr: addr.clone() });
            }
            Command::RemoveNode { node } => {
                self.nodes.remove(node).ok_or_else(|| format!("node {node} is not registered"))?;
            }
            Command::AssignMotors { site, motors } => {
                self.require_site(site)?;
                for motor in motors {
                    self.motors.insert(motor.clone(), site.clone());
                }
            }
            Command::RegisterQuery { name, sql } => {
                let record = QueryRecord {
                    sql: sql.clone(),
                    registered_by: request.actor.clone(),
                    registered_at_ms: request.at_ms,
                    version: index,
                };
                self.queries.insert(name.clone(), record);
            }
            Command::DropQuery { name } => {
                self.queries.remove(name).ok_or_else(|| format!("no query named '{name}'"))?;
            }
            Command::SetPolicy { grade, stage, rule } => {
                let record = PolicyRecord {
                    grade: *grade,
                    stage: *stage,
                    rule: rule.clone(),
                    set_by: request.actor.clone(),
                    set_at_ms: request.at_ms,
                };
                self.policies.insert(format!("{grade}/{stage}"), record);
            }
            Command::SetGrade { stream, column, grade } => {
                let key = column.as_ref().map_or_else(|| stream.clone(), |c| format!("{stream}.{c}"));
                let record = GradeRecord {
                    stream: stream.clone(),
                    column: column.clone(),
                    grade: *grade,
                    set_by: request.actor.clone(),
                    set_at_ms: request.at_ms,
                };
                self.grades.insert(key, record);
            }
            Command::RequestRelease { bundle, source, target, k, custodians } => {
                if self.releases.contains_key(bundle) {
                    return Err(format!("bundle {bundle} already has a release request"));
                }
                for site in custodians.iter().chain([source, target]) {
                    if !self.sites.contains_key(site) {
                        return Err(format!("site {site} is not in the registry"));
                    }
                }
                let custodians: BTreeSet<SiteId> = custodians.iter().cloned().collect();
                if usize::from(*k) > custodians.len() {
                    return Err(format!("k = {k} but only {} distinct custodians", custodians.len()));
                }
                let record = ReleaseRecord {
                    source: source.clone(),
                    target: target.clone(),
                    k: *k,
                    custodians,
                    approvals: BTreeSet::new(),
                    requested_by: request.actor.clone(),
                    requested_at_ms: request.at_ms,
                };
                self.releases.insert(bundle.clone(), record);
            }
            Command::DefineMachineClass { class, boundaries_um_s } => {
                self.machine_classes.insert(class.clone(), *boundaries_um_s);
            }
            Command::SetMachineClass { motors, class } => {
                if let Some(c) = class
                    && self.zones_of(c).is_none()
                {
                    return Err(format!("no machine class {c} (I, II, III, IV, or define it first)"));
                }
                if let Some(m) = motors.iter().find(|m| !self.motors.contains_key(*m)) {
                    return Err(format!("motor {m} is not assigned to a site (assign it first)"));
                }
                for motor in motors {
                    match class {
                        Some(c) => self.motor_classes.insert(motor.clone(), c.clone()),
                        None => self.motor_classes.remove(motor),
                    };
                }
            }
            Command::AcknowledgeAlert { alert, motor, site, note, silence_until_ms } => {
                self.require_site(site)?;
                if self.motors.get(motor).is_some_and(|owner| owner != site) {
                    return Err(format!("motor {motor} belongs to another site than {site}"));
                }
                let record = AckRecord {
                    motor: motor.clone(),
                    site: site.clone(),
                    by: request.actor.clone(),
                    at_ms: request.at_ms,
                    note: note.clone(),
                    silence_until_ms: *silence_until_ms,
                    index,
                };
                self.acks.insert(alert.clone(), record);
                if self.acks.len() > MAX_ACKS
                    && let Some(oldest) = self.acks.iter().min_by_key(|(_, a)| a.index).map(|(k, _)| k.clone())
                {
                    self.acks.remove(&oldest);
                }
            }
            Command::SetVoterPolicy { policy } => self.voter_policy = policy.clone(),
            Command::ApproveRelease { bundle, site } => {
                let release =
                    self.releases.get_mut(bundle).ok_or_else(|| format!("bundle {bundle} has no release request"))?;
                if !release.custodians.contains(site) {
                    return Err(format!("site {site} holds no share of bundle {bundle}"));
                }
                if !release.approvals.insert(site.clone()) {
                    return Err(format!("site {site} already approved bundle {bundle}"));
                }
            }
        }
        Ok(())
    }

    /// The cluster's grades as a [`GradeMap`] naming only what was set (nodes raise their
    /// config's grades with it).
    pub fn grade_policy(&self) -> GradeMap {
        let mut map = GradeMap::empty();
        for g in self.grades.values() {
            map.set(&g.stream, g.column.as_deref(), g.grade);
        }
        map
    }

    /// A machine class's vibration zone boundaries A/B, B/C, C/D in mm/s: an ISO class (I–IV)
    /// or one the cluster defined.
    pub fn zones_of(&self, class: &str) -> Option<[f64; 3]> {
        if let Ok(iso) = class.parse::<tessera_core::MachineClass>() {
            return Some(iso.boundaries());
        }
        self.machine_classes.get(class).map(|b| b.map(|um| f64::from(um) / 1000.0))
    }

    fn require_site(&self, site: &SiteId) -> Result<(), String> {
        if self.sites.contains_key(site) { Ok(()) } else { Err(format!("site {site} does not exist (add it first)")) }
    }

    /// The motors a site owns, in id order.
    pub fn motors_of<'a>(&'a self, site: &'a SiteId) -> impl Iterator<Item = &'a MotorId> + 'a {
        self.motors.iter().filter(move |(_, s)| *s == site).map(|(m, _)| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(command: Command) -> Request {
        Request { actor: "alice".into(), at_ms: 1_000, command }
    }

    fn site(s: &str) -> SiteId {
        SiteId::new(s).unwrap()
    }

    #[test]
    fn motors_get_a_machine_class_that_exists_and_back_the_default() {
        let mut reg = Registry::default();
        let motors = |ids: &[&str]| ids.iter().map(|m| MotorId::new(*m).unwrap()).collect::<Vec<_>>();
        reg.apply(1, &req(Command::AddSite { site: site("a"), name: "Plant A".into() }));
        reg.apply(2, &req(Command::AssignMotors { site: site("a"), motors: motors(&["M1", "M2"]) }));
        let set = |ids: &[&str], class: Option<&str>| Command::SetMachineClass {
            motors: motors(ids),
            class: class.map(str::to_string),
        };
        let (outcome, audit) = reg.apply(3, &req(set(&["M1"], Some("III"))));
        assert_eq!((outcome, audit.action.as_str()), (Outcome::Applied, "give motor M1 class III"));
        assert_eq!(reg.zones_of(&reg.motor_classes[&MotorId::new("M1").unwrap()]), Some([1.8, 4.5, 11.2]));
        let (outcome, _) = reg.apply(4, &req(set(&["M2"], Some("pump-75"))));
        assert_eq!(outcome, Outcome::Rejected("no machine class pump-75 (I, II, III, IV, or define it first)".into()));
        let define = Command::DefineMachineClass { class: "pump-75".into(), boundaries_um_s: [1400, 3500, 9000] };
        let (outcome, audit) = reg.apply(5, &req(define));
        assert_eq!(outcome, Outcome::Applied);
        assert_eq!(audit.action, "define machine class pump-75 (zones A/B 1.4, B/C 3.5, C/D 9 mm/s)");
        reg.apply(6, &req(set(&["M2"], Some("pump-75"))));
        assert_eq!(reg.zones_of("pump-75"), Some([1.4, 3.5, 9.0]));
        let (outcome, _) = reg.apply(7, &req(set(&["M3"], Some("II"))));
        assert_eq!(outcome, Outcome::Rejected("motor M3 is not assigned to a site (assign it first)".into()));
        reg.apply(8, &req(set(&["M1"], None)));
        assert_eq!(reg.motor_classes.keys().map(|m| m.as_str()).collect::<Vec<_>>(), ["M2"]);
        // An ISO class is built in; a plant's class must rise within bounds.
        let redefine = req(Command::DefineMachineClass { class: "ii".into(), boundaries_um_s: [1, 2, 3] });
        assert_eq!(redefine.check().unwrap_err().field, "command.class");
        let falling = req(Command::DefineMachineClass { class: "fan".into(), boundaries_um_s: [3000, 2000, 9000] });
        assert_eq!(falling.check().unwrap_err().field, "command.boundaries");
    }

    #[test]
    fn an_acknowledgement_is_kept_with_who_when_why_and_the_newest_win() {
        let mut reg = Registry::default();
        let ack = |alert: &str, motor: &str, s: &str, until: Option<i64>| {
            req(Command::AcknowledgeAlert {
                alert: alert.into(),
                motor: MotorId::new(motor).unwrap(),
                site: site(s),
                note: "bearing ordered".into(),
                silence_until_ms: until,
            })
        };
        let (outcome, _) = reg.apply(1, &ack("q:M1:0", "M1", "a", None));
        assert_eq!(outcome, Outcome::Rejected("site a does not exist (add it first)".into()));
        reg.apply(2, &req(Command::AddSite { site: site("a"), name: "Plant A".into() }));
        reg.apply(3, &req(Command::AddSite { site: site("b"), name: "Plant B".into() }));
        reg.apply(4, &req(Command::AssignMotors { site: site("a"), motors: vec![MotorId::new("M1").unwrap()] }));
        let (outcome, _) = reg.apply(5, &ack("q:M1:0", "M1", "b", None));
        assert_eq!(outcome, Outcome::Rejected("motor M1 belongs to another site than b".into()));
        let (outcome, audit) = reg.apply(6, &ack("q:M1:0", "M1", "a", Some(5_000)));
        assert_eq!(outcome, Outcome::Applied);
        assert_eq!(audit.action, "acknowledge alert q:M1:0 of motor M1 at a, silenced until 5000: bearing ordered");
        let record = &reg.acks["q:M1:0"];
        assert_eq!((record.by.as_str(), record.at_ms, record.silence_until_ms), ("alice", 1_000, Some(5_000)));
        let empty = Command::AcknowledgeAlert {
            alert: "x".into(),
            motor: MotorId::new("M1").unwrap(),
            site: site("a"),
            note: " ".into(),
            silence_until_ms: None,
        };
        assert_eq!(req(empty).check().unwrap_err().field, "command.note");
        for i in 1..=MAX_ACKS as u64 {
            reg.apply(10 + i, &ack(&format!("q:M1:{i}"), "M1", "a", None));
        }
        assert_eq!(reg.acks.len(), MAX_ACKS);
        assert!(!reg.acks.contains_key("q:M1:0"), "the oldest acknowledgement goes first");
    }

    #[test]
    fn applies_changes_refuses_bad_ones_and_audits_both() {
        let mut reg = Registry::default();
        let (outcome, audit) =
            reg.apply(1, &req(Command::AssignMotors { site: site("a"), motors: vec![MotorId::new("M1").unwrap()] }));
        assert_eq!(outcome, Outcome::Rejected("site a does not exist (add it first)".into()));
        assert_eq!(audit.rejected.as_deref(), Some("site a does not exist (add it first)"));
        assert!(reg.motors.is_empty());

        reg.apply(2, &req(Command::AddSite { site: site("a"), name: "Plant A".into() }));
        reg.apply(3, &req(Command::AddSite { site: site("b"), name: "Plant B".into() }));
        let motors = |ids: &[&str]| ids.iter().map(|m| MotorId::new(*m).unwrap()).collect::<Vec<_>>();
        let (outcome, audit) =
            reg.apply(4, &req(Command::AssignMotors { site: site("a"), motors: motors(&["M1", "M2"]) }));
        assert_eq!(outcome, Outcome::Applied);
        assert_eq!(audit.action, "assign 2 motors (M1 … M2) to a");
        reg.apply(5, &req(Command::AssignMotors { site: site("b"), motors: motors(&["M2"]) }));
        assert_eq!(reg.motors_of(&site("a")).map(|m| m.as_str()).collect::<Vec<_>>(), ["M1"]);
        assert_eq!(reg.motors_of(&site("b")).map(|m| m.as_str()).collect::<Vec<_>>(), ["M2"]);

        reg.apply(6, &req(Command::RegisterQuery { name: "hot".into(), sql: "SELECT 1".into() }));
        assert_eq!(reg.queries["hot"].version, 6);
        let (outcome, _) = reg.apply(7, &req(Command::DropQuery { name: "cold".into() }));
        assert_eq!(outcome, Outcome::Rejected("no query named 'cold'".into()));
        reg.apply(8, &req(Command::DropQuery { name: "hot".into() }));
        assert!(reg.queries.is_empty());

        reg.apply(
            9,
            &req(Command::SetPolicy { grade: DataGrade::Core, stage: DataStage::Transmission, rule: "deny".into() }),
        );
        assert_eq!(reg.policies["core/transmission"].rule, "deny");
        reg.apply(
            10,
            &req(Command::SetGrade {
                stream: "telemetry".into(),
                column: Some("temperature_c".into()),
                grade: DataGrade::Core,
            }),
        );
        reg.apply(
            11,
            &req(Command::SetGrade {
                stream: "telemetry".into(),
                column: Some("temperature_c".into()),
                grade: DataGrade::Important,
            }),
        );
        reg.apply(
            12,
            &req(Command::SetGrade { stream: "late_events".into(), column: None, grade: DataGrade::Important }),
        );
        let policy = reg.grade_policy();
        assert_eq!(policy.grade("telemetry", "temperature_c"), DataGrade::Important, "the last setting holds");
        assert_eq!(policy.grade("late_events", "anything"), DataGrade::Important);
    }

    #[test]
    fn a_release_needs_k_distinct_custodians() {
        let mut reg = Registry::default();
        for s in ["a", "b", "c"] {
            reg.apply(1, &req(Command::AddSite { site: site(s), name: s.into() }));
        }
        let custodians = vec![site("a"), site("b"), site("c")];
        let ask = |bundle: &str, k| {
            req(Command::RequestRelease {
                bundle: bundle.into(),
                source: site("a"),
                target: site("b"),
                k,
                custodians: custodians.clone(),
            })
        };
        assert!(matches!(reg.apply(2, &ask("x", 1)).0, Outcome::Rejected(_)), "k = 1 lets one site decide");
        assert!(matches!(reg.apply(3, &ask("x", 4)).0, Outcome::Rejected(_)), "more approvals than custodians");
        assert_eq!(reg.apply(4, &ask("x", 2)).0, Outcome::Applied);
        assert!(matches!(reg.apply(5, &ask("x", 2)).0, Outcome::Rejected(_)), "asked twice");
        let approve = |s: &str| req(Command::ApproveRelease { bundle: "x".into(), site: site(s) });
        reg.apply(6, &req(Command::AddSite { site: site("d"), name: "d".into() }));
        assert!(matches!(reg.apply(7, &approve("d")).0, Outcome::Rejected(_)), "not a custodian");
        assert_eq!(reg.apply(8, &approve("a")).0, Outcome::Applied);
        assert!(matches!(reg.apply(9, &approve("a")).0, Outcome::Rejected(_)), "counted once");
        assert!(!reg.releases["x"].released());
        assert_eq!(reg.apply(10, &approve("c")).0, Outcome::Applied);
        assert!(reg.releases["x"].released());
    }

    #[test]
    fn the_same_log_gives_the_same_registry() {
        let log = [
            req(Command::AddSite { site: site("a"), name: "A".into() }),
            req(Command::RegisterNode { node: 1, site: site("a"), addr: "127.0.0.1:1".into() }),
            req(Command::RegisterQuery { name: "q".into(), sql: "SELECT 1".into() }),
        ];
        let run = || {
            let mut reg = Registry::default();
            for (i, r) in log.iter().enumerate() {
                reg.apply(i as u64 + 1, r);
            }
            reg
        };
        assert_eq!(run(), run());
    }
}
