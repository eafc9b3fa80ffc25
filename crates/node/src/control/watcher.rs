//! Keeping a running node's cluster-wide continuous queries, the registry tables (`sites`,
//! `motors`) and the grade policy in step with the control plane: read once at start
//! ([`registered_queries`], [`add_registered_queries`]), then polled by a [`QueryWatcher`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use tessera_proto::raft as pb;
use tessera_proto::raft::cluster_admin_client::ClusterAdminClient;
use tessera_tls::ClientTls;
use tonic::transport::Channel;

use super::{ControlConfig, admin_client, check_query, status_error};
use crate::detect::QueryChange;
use crate::error::NodeError;

type Result<T, E = NodeError> = std::result::Result<T, E>;
use crate::lifecycle::Shutdown;

/// The continuous queries registered cluster-wide, as `(name, sql)`, read linearizably from the
/// control-plane node at `admin`.
pub async fn registered_queries(admin: &str, tls: &ClientTls, timeout: Duration) -> Result<Vec<(String, String)>> {
    list_queries(&mut admin_client(admin, tls, timeout).await?, admin).await
}

async fn list_queries(client: &mut ClusterAdminClient<Channel>, admin: &str) -> Result<Vec<(String, String)>> {
    let reply = client.list_queries(pb::ListQueriesRequest {}).await.map_err(|s| status_error(admin, s))?;
    Ok(reply.into_inner().queries.into_iter().map(|q| (q.name, q.sql)).collect())
}

/// Adds the cluster's registered queries to `engine`, each on windows of its own (so that it
/// can be dropped later without touching the others, see
/// [`tessera_stream::StreamEngine::register_standalone`]). A query the node already runs under
/// the same name wins: a site may override a cluster-wide rule. A registered query that does
/// not parse or plan here is not run; it is returned with the reason, so that one bad
/// registration cannot stop every node of the cluster.
pub fn add_registered_queries(
    engine: &mut tessera_stream::StreamEngine,
    registered: &[(String, String)],
) -> Result<Vec<(String, String)>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|source| NodeError::Io { what: "building a runtime to plan the queries", source })?;
    let mut refused = Vec::new();
    for (name, sql) in registered {
        if engine.queries().any(|q| &q.name == name) {
            continue;
        }
        if let Err(e) = check_query(name, sql) {
            refused.push((name.clone(), tessera_core::error_chain(&e)));
            continue;
        }
        if let Err(e) = runtime.block_on(engine.register_standalone(sql)) {
            refused.push((name.clone(), tessera_core::error_chain(&e)));
        }
    }
    Ok(refused)
}

/// What turns the cluster-wide queries a node runs, `running` (name → statement), into
/// `registered`, leaving out the names in `local` (the node's own queries win): drops first,
/// then registrations; a changed statement is a drop and a registration.
pub fn query_changes(
    running: &BTreeMap<String, String>,
    registered: &[(String, String)],
    local: &BTreeSet<String>,
) -> Vec<QueryChange> {
    let wanted: BTreeMap<&str, &str> =
        registered.iter().filter(|(n, _)| !local.contains(n)).map(|(n, s)| (n.as_str(), s.as_str())).collect();
    let drops = running
        .iter()
        .filter(|(name, sql)| wanted.get(name.as_str()) != Some(&sql.as_str()))
        .map(|(name, _)| QueryChange::Drop { name: name.clone() });
    let registers = wanted
        .iter()
        .filter(|(name, sql)| running.get(**name).map(String::as_str) != Some(**sql))
        .map(|(name, sql)| QueryChange::Register { name: name.to_string(), sql: sql.to_string() });
    drops.chain(registers).collect()
}

/// The registry's sites and motors as a node last read them (for the `sites` and `motors`
/// SQL tables), kept current by the [`QueryWatcher`].
#[derive(Debug, Clone, Default)]
pub struct RegistryRows(Arc<std::sync::Mutex<(Vec<pb::Site>, Vec<pb::MotorAssignment>)>>);

impl RegistryRows {
    /// The sites and the motor → site assignments.
    pub fn get(&self) -> (Vec<pb::Site>, Vec<pb::MotorAssignment>) {
        self.0.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn set(&self, sites: Vec<pb::Site>, motors: Vec<pb::MotorAssignment>) {
        if let Ok(mut r) = self.0.lock() {
            *r = (sites, motors);
        }
    }
}

/// Keeps a running node's cluster-wide queries in step with the registry: every `poll` it
/// reads the registered queries (linearizably) and sends the detection stage what changed
/// (see [`query_changes`]). A registration whose statement does not create the query it is
/// registered under is logged and skipped. While the control plane cannot be read, the node
/// goes on with the queries it has, and says so once.
pub struct QueryWatcher {
    watch: Watch,
}

impl QueryWatcher {
    /// A watcher of the control plane at `admin` (over `tls`). `running` is what the node runs
    /// of the cluster's queries already; `local` the names of its own queries. It also keeps
    /// `registry` (sites and motors) current, `grades` raised to the cluster's grade policy,
    /// `group_policy` to the group terms of its `use` rules, and `classes` (the wear judge's
    /// motors with a machine class of their own) to the registry's.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        control: &ControlConfig,
        admin: &str,
        tls: ClientTls,
        local: BTreeSet<String>,
        running: BTreeMap<String, String>,
        changes: Sender<QueryChange>,
        registry: RegistryRows,
        grades: tessera_core::LiveGrades,
        group_policy: tessera_sql::LiveGroupPolicy,
        classes: Option<tessera_stream::wear::MotorClasses>,
    ) -> Self {
        Self {
            watch: Watch {
                admin: admin.to_string(),
                tls,
                timeout: control.timeout,
                poll: control.poll,
                local,
                running,
                changes,
                registry,
                grades,
                group_policy,
                classes,
            },
        }
    }

    /// Watches until `shutdown` (or until the detection stage is gone).
    pub async fn run(self, shutdown: Shutdown) -> Result<()> {
        tokio::select! {
            () = self.watch.run() => {}
            () = shutdown.wait() => {}
        }
        Ok(())
    }
}

struct Watch {
    admin: String,
    tls: ClientTls,
    timeout: Duration,
    poll: Duration,
    local: BTreeSet<String>,
    running: BTreeMap<String, String>,
    changes: Sender<QueryChange>,
    registry: RegistryRows,
    grades: tessera_core::LiveGrades,
    group_policy: tessera_sql::LiveGroupPolicy,
    classes: Option<tessera_stream::wear::MotorClasses>,
}

impl Watch {
    async fn run(mut self) {
        let mut client = None;
        let mut unreachable = false;
        let mut first = true;
        loop {
            // The first read at once (the registry tables start filled), then every poll.
            let next = tokio::time::Instant::now() + if first { Duration::ZERO } else { self.poll };
            first = false;
            tokio::time::sleep_until(next).await;
            let read = async {
                if client.is_none() {
                    client = Some(admin_client(&self.admin, &self.tls, self.timeout).await?);
                }
                let c = client.as_mut().expect("connected");
                let queries = list_queries(c, &self.admin).await?;
                let sites = c
                    .list_sites(pb::ListSitesRequest {})
                    .await
                    .map_err(|s| status_error(&self.admin, s))?
                    .into_inner()
                    .sites;
                let motors = c
                    .list_motors(pb::ListMotorsRequest { site: String::new() })
                    .await
                    .map_err(|s| status_error(&self.admin, s))?
                    .into_inner()
                    .motors;
                if let Some(classes) = &self.classes {
                    classes.set(machine_classes(&motors));
                }
                self.registry.set(sites, motors);
                let policy = c
                    .list_grades(pb::ListGradesRequest {})
                    .await
                    .map_err(|s| status_error(&self.admin, s))?
                    .into_inner()
                    .grades;
                if self.grades.apply_policy(&grade_policy(&policy)?) {
                    tracing::info!(target: "tessera::audit", admin = %self.admin, grades = policy.len(), "the cluster's grade policy is applied");
                }
                let rules = c
                    .list_policies(pb::ListPoliciesRequest {})
                    .await
                    .map_err(|s| status_error(&self.admin, s))?
                    .into_inner()
                    .policies;
                if self.group_policy.apply(group_rules(&rules)?) {
                    tracing::info!(target: "tessera::audit", admin = %self.admin, rules = rules.len(), "the cluster's group policy is applied");
                }
                Ok::<_, NodeError>(queries)
            };
            let registered = match tokio::time::timeout(self.timeout, read)
                .await
                .unwrap_or_else(|_| Err(NodeError::NoAnswer { at: self.admin.clone(), timeout: self.timeout }))
            {
                Ok(registered) => registered,
                Err(e) => {
                    client = None;
                    if !unreachable {
                        tracing::warn!(admin = %self.admin, error = %tessera_core::error_chain(&e), "cannot read the cluster's queries; running the ones we have");
                        unreachable = true;
                    }
                    continue;
                }
            };
            if unreachable {
                tracing::info!(admin = %self.admin, "the cluster's queries can be read again");
                unreachable = false;
            }
            for change in query_changes(&self.running, &registered, &self.local) {
                match &change {
                    QueryChange::Drop { name } => {
                        self.running.remove(name);
                    }
                    QueryChange::Register { name, sql } => {
                        self.running.insert(name.clone(), sql.clone());
                        if let Err(e) = check_query(name, sql) {
                            tracing::error!(query = %name, error = %tessera_core::error_chain(&e), "a query registered cluster-wide is not run on this node");
                            continue;
                        }
                    }
                }
                if self.changes.send(change).is_err() {
                    return; // the detection stage has stopped
                }
            }
        }
    }
}

/// The motors the registry gives a machine class, with its zone boundaries (a motor whose
/// entry does not carry three is left to the node's default).
fn machine_classes(motors: &[pb::MotorAssignment]) -> std::collections::HashMap<String, [f64; 3]> {
    motors
        .iter()
        .filter_map(|m| {
            let zones = tessera_core::zone_boundaries(&m.zone_boundaries_mm_s).ok()?;
            Some((m.motor.clone(), zones))
        })
        .collect()
}

/// The cluster's grade settings as a map of just what they name.
fn grade_policy(entries: &[pb::GradeEntry]) -> Result<tessera_core::GradeMap> {
    let mut policy = tessera_core::GradeMap::empty();
    for g in entries {
        let grade = g
            .grade
            .parse()
            .map_err(|e| NodeError::BadAnswer(format!("the cluster's grade of {}.{}: {e}", g.stream, g.column)))?;
        policy.set(&g.stream, Some(g.column.as_str()).filter(|c| !c.is_empty()), grade);
    }
    Ok(policy)
}

/// The group terms of the cluster's `use` rules, by grade (other stages and terms are not
/// this node's to enforce here).
fn group_rules(entries: &[pb::PolicyEntry]) -> Result<BTreeMap<tessera_core::DataGrade, tessera_core::GroupRule>> {
    let mut rules = BTreeMap::new();
    for p in entries.iter().filter(|p| p.stage == tessera_core::DataStage::Use.to_string()) {
        let bad = |e: String| NodeError::BadAnswer(format!("the cluster's {} use rule {:?}: {e}", p.grade, p.rule));
        let grade: tessera_core::DataGrade = p.grade.parse().map_err(|e| bad(format!("{e}")))?;
        if let Some(rule) = tessera_core::GroupRule::parse(&p.rule).map_err(bad)? {
            rules.insert(grade, rule);
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_changes_drop_before_register_and_leave_local_queries_alone() {
        let pairs = |v: &[(&str, &str)]| v.iter().map(|(n, s)| (n.to_string(), s.to_string())).collect::<Vec<_>>();
        let running: BTreeMap<String, String> =
            pairs(&[("kept", "K"), ("gone", "G"), ("edited", "E1")]).into_iter().collect();
        let registered = pairs(&[("kept", "K"), ("edited", "E2"), ("new", "N"), ("mine", "M")]);
        let local = BTreeSet::from(["mine".to_string()]);
        let drop = |n: &str| QueryChange::Drop { name: n.into() };
        let register = |n: &str, s: &str| QueryChange::Register { name: n.into(), sql: s.into() };
        assert_eq!(
            query_changes(&running, &registered, &local),
            [drop("edited"), drop("gone"), register("edited", "E2"), register("new", "N")]
        );
        let after: BTreeMap<String, String> =
            pairs(&[("kept", "K"), ("edited", "E2"), ("new", "N")]).into_iter().collect();
        assert!(query_changes(&after, &registered, &local).is_empty(), "nothing changes twice");
    }
}
