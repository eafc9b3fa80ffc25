//! The admin API: initialising the cluster and changing its membership, the registry (sites,
//! motors, queries), data-grade policies, releases, the audit log, and fault injection for
//! tests. Writes go through the quorum (forwarded to the leader if need be); reads are
//! linearizable. Over mTLS the audit log records the actor the client certificate proves.

use std::collections::{BTreeMap, BTreeSet};

use openraft::async_runtime::WatchReceiver;
use openraft::errors::ForwardToLeader;
use openraft::{ChangeMembers, ServerState};
use tessera_core::{DataGrade, DataStage};
use tessera_proto::raft as pb;
use tessera_proto::raft::cluster_admin_client::ClusterAdminClient;
use tonic::{Request as GrpcRequest, Response, Status};

use super::authorize::{Action, Principal, on_behalf_of, principal_of};
use super::error::ServiceError;
use super::quorum::{Shared, motor_ids, site_id};
use super::rebalance::membership_change_in_progress;
use crate::network::channel_to;
use crate::types::{Command, Member, NodeId, TypeConfig, VoterPolicy};

/// How `status` names a Raft role.
fn role(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

/// A member as the admin API lists it.
fn spec(id: NodeId, member: &Member) -> pb::NodeSpec {
    pb::NodeSpec { id, site: member.site.clone(), addr: member.addr.clone() }
}

/// The request header that asks a read for this member's own state (`local`: may be stale,
/// any member answers without the leader) rather than a linearizable one (the default).
pub const READ_HEADER: &str = "x-tessera-read";
/// The reply header: the log index the answering member had applied.
pub const APPLIED_INDEX_HEADER: &str = "x-tessera-applied-index";

/// How a read was served.
struct Served {
    /// From this member's own state, as asked (else linearizable).
    local: bool,
    /// The log index this member had applied when it read.
    applied: u64,
}

impl Served {
    /// `body`, with headers saying how it was read.
    fn answer<T>(self, body: T) -> Response<T> {
        let mut response = Response::new(body);
        let how = if self.local { "local" } else { "linearizable" };
        response.metadata_mut().insert(READ_HEADER, tonic::metadata::MetadataValue::from_static(how));
        response.metadata_mut().insert(APPLIED_INDEX_HEADER, self.applied.into());
        response
    }
}

/// The admin API.
pub(crate) struct AdminService(pub(crate) Shared);

/// Who called, as [`AdminService::caller`] found them.
struct Caller {
    who: Principal,
    /// The name the audit log records.
    actor: String,
    peer: Option<std::net::SocketAddr>,
}

impl AdminService {
    /// Who asks (see [`super::authorize::principal_of`]) and the actor the audit log records
    /// for them: the identity their certificate proves, else (without TLS) the name they claim.
    fn caller<T>(&self, request: &GrpcRequest<T>, claimed: &str) -> Result<Caller, ServiceError> {
        let peer = request.remote_addr();
        let who = principal_of(request, self.0.tls_required).inspect_err(|e| {
            self.0.refusals.refuse_identity("raft-admin", peer, &e.to_string());
        })?;
        let actor = who.actor().unwrap_or_else(|| claimed.to_string());
        Ok(Caller { who, actor, peer })
    }

    /// Whether `caller` may do `action`; a refusal is counted and audited.
    fn may(&self, caller: &Caller, action: Action<'_>) -> Result<(), ServiceError> {
        self.0.allow(&caller.who, action).inspect_err(|e| {
            self.0.refusals.refuse_identity("raft-admin", caller.peer, &e.to_string());
        })
    }

    /// Proposes `command` for `caller`, if they may.
    async fn propose(&self, caller: &Caller, command: Command) -> Result<pb::WriteResponse, ServiceError> {
        self.may(caller, Action::Write(&command))?;
        self.0.write(self.0.request(&caller.actor, command)?, &caller.who, false).await
    }

    /// Checks that the caller may read, then waits behind a read barrier, unless the call asks
    /// for this member's own state (`x-tessera-read: local`).
    async fn read<T>(&self, request: &GrpcRequest<T>) -> Result<Served, ServiceError> {
        self.reader(request)?;
        let local = match request.metadata().get(READ_HEADER).map(|v| v.to_str()) {
            None | Some(Ok("linearizable")) => false,
            Some(Ok("local")) => true,
            Some(_) => return Err(ServiceError::invalid(READ_HEADER, "give 'local' or 'linearizable'")),
        };
        if !local {
            self.0.read_barrier().await?;
        }
        let applied = self.0.raft.metrics().borrow_watched().last_applied.as_ref().map_or(0, |id| id.index());
        Ok(Served { local, applied })
    }

    /// Whether the caller of a read may read (only a proven identity may, over mTLS).
    fn reader<T>(&self, request: &GrpcRequest<T>) -> Result<(), ServiceError> {
        let caller = self.caller(request, "")?;
        self.may(&caller, Action::Read)
    }

    /// Initialises the cluster with `members` (this node among them; a bounded set of them
    /// votes, the rest are learners), then records each member's registration under `actor`
    /// (the writes wait for the first election).
    async fn initialize(
        &self,
        caller: &Caller,
        members: BTreeMap<NodeId, Member>,
    ) -> Result<pb::MembershipResponse, ServiceError> {
        let registrations = self.0.registrations(&caller.actor, &members)?;
        let deadline = std::time::Instant::now() + self.0.write_timeout;
        self.0.initialize_bounded(&members, deadline).await?;
        for r in registrations {
            self.0.write(r, &caller.who, false).await?;
        }
        Ok(self.membership())
    }

    /// An admin client of the leader (`hint`: where openraft says it is).
    fn admin_of_leader(
        &self,
        hint: Option<&ForwardToLeader<TypeConfig>>,
    ) -> Result<ClusterAdminClient<tonic::transport::Channel>, ServiceError> {
        let (id, member) = self.0.leader(hint)?;
        channel_to(&self.0.client_tls, id, &member.addr).map(ClusterAdminClient::new).map_err(ServiceError::Connect)
    }

    /// The current membership, as this node knows it.
    fn membership(&self) -> pb::MembershipResponse {
        let metrics = self.0.raft.metrics().borrow_watched().clone();
        let stored = metrics.membership_config;
        let membership = stored.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let (mut v, mut l) = (Vec::new(), Vec::new());
        for (id, member) in membership.nodes() {
            if voters.contains(id) { v.push(spec(*id, member)) } else { l.push(spec(*id, member)) }
        }
        pb::MembershipResponse {
            voters: v,
            learners: l,
            log_index: stored.log_id().as_ref().map_or(0, |id| id.index()),
        }
    }
}

#[tonic::async_trait]
impl pb::cluster_admin_server::ClusterAdmin for AdminService {
    async fn init(&self, request: GrpcRequest<pb::InitRequest>) -> Result<Response<pb::MembershipResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().actor)?;
        self.may(&caller, Action::Membership)?;
        let req = request.into_inner();
        let mut members = BTreeMap::new();
        for node in &req.nodes {
            site_id("nodes.site", &node.site)?;
            if node.addr.trim().is_empty() {
                return Err(ServiceError::invalid("nodes.addr", format!("node {} has no address", node.id)).into());
            }
            members.insert(node.id, Member { site: node.site.clone(), addr: node.addr.clone() });
        }
        Ok(Response::new(self.initialize(&caller, members).await?))
    }

    async fn add_node(
        &self,
        request: GrpcRequest<pb::AddNodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().actor)?;
        self.may(&caller, Action::Membership)?;
        let s = &self.0;
        let req = request.into_inner();
        let node = req.node.clone().ok_or_else(|| ServiceError::invalid("node", "is missing"))?;
        let site = site_id("node.site", &node.site)?;
        let registration =
            s.request(&caller.actor, Command::RegisterNode { node: node.id, site, addr: node.addr.clone() })?;
        if !s.raft.is_leader() {
            let mut call = GrpcRequest::new(req);
            on_behalf_of(&mut call, &caller.who);
            return Ok(Response::new(self.admin_of_leader(None)?.add_node(call).await?.into_inner()));
        }
        let member = Member { site: node.site.clone(), addr: node.addr.clone() };
        // Blocking: returns once the learner has caught up with the leader's log. While the
        // voter keeper's change commits, openraft refuses another: wait for it.
        let deadline = std::time::Instant::now() + s.write_timeout;
        loop {
            match s.raft.add_learner(node.id, member.clone(), true).await {
                Ok(_) => break,
                Err(e) if membership_change_in_progress(&e) && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => return Err(ServiceError::MembershipChange(Box::new(e)).into()),
            }
        }
        if req.learner_only {
            // It never votes: the operator's policy excludes it.
            let mut policy = s.view.with(|a| a.registry.voter_policy.clone());
            policy.pinned.remove(&node.id);
            if policy.excluded.insert(node.id) {
                self.propose(&caller, Command::SetVoterPolicy { policy }).await?;
            }
        }
        s.write(registration, &caller.who, false).await?;
        // The voter keeper promotes it if the voter set needs it.
        s.rebalance_now.notify_one();
        Ok(Response::new(self.membership()))
    }

    async fn remove_node(
        &self,
        request: GrpcRequest<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().actor)?;
        self.may(&caller, Action::Membership)?;
        let s = &self.0;
        let req = request.into_inner();
        let removal = s.request(&caller.actor, Command::RemoveNode { node: req.id })?;
        if !s.raft.is_leader() {
            let mut call = GrpcRequest::new(req);
            on_behalf_of(&mut call, &caller.who);
            return Ok(Response::new(self.admin_of_leader(None)?.remove_node(call).await?.into_inner()));
        }
        if s.raft.voter_ids().any(|v| v == req.id) {
            // First out of the voters (a healthy learner takes its place where one is free),
            // refused if too few voters would remain.
            s.replace_voter(req.id).await?;
        }
        let change = ChangeMembers::RemoveNodes(BTreeSet::from([req.id]));
        s.raft.change_membership(change, false).await.map_err(|e| ServiceError::MembershipChange(Box::new(e)))?;
        s.write(removal, &caller.who, false).await?;
        Ok(Response::new(self.membership()))
    }

    async fn set_voter_policy(
        &self,
        request: GrpcRequest<pb::SetVoterPolicyRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().actor)?;
        let given = request.into_inner().policy.ok_or_else(|| ServiceError::invalid("policy", "is missing"))?;
        let policy = VoterPolicy {
            target: given.target as usize,
            pinned: given.pinned.into_iter().collect(),
            excluded: given.excluded.into_iter().collect(),
        };
        let written = self.propose(&caller, Command::SetVoterPolicy { policy }).await?;
        self.0.rebalance_now.notify_one();
        Ok(Response::new(written))
    }

    async fn get_voter_policy(
        &self,
        request: GrpcRequest<pb::GetVoterPolicyRequest>,
    ) -> Result<Response<pb::VoterPolicy>, Status> {
        let served = self.read(&request).await?;
        let policy = self.0.view.with(|a| a.registry.voter_policy.clone());
        Ok(served.answer(pb::VoterPolicy {
            target: policy.target as u32,
            pinned: policy.pinned.into_iter().collect(),
            excluded: policy.excluded.into_iter().collect(),
        }))
    }

    async fn status(&self, request: GrpcRequest<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        self.reader(&request)?;
        let s = &self.0;
        let m = s.raft.metrics().borrow_watched().clone();
        let membership = self.membership();
        let leader_addr = m
            .current_leader
            .and_then(|id| m.membership_config.membership().get_node(&id).map(|n| n.addr.clone()))
            .unwrap_or_default();
        let (sites, motors, queries) =
            s.view.with(|a| (a.registry.sites.len(), a.registry.motors.len(), a.registry.queries.len()));
        Ok(Response::new(pb::StatusResponse {
            node_id: s.me,
            role: role(m.state).into(),
            leader_id: m.current_leader,
            leader_addr,
            term: m.current_term,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.as_ref().map(|id| id.index()),
            snapshot_index: m.snapshot.as_ref().map(|id| id.index()),
            purged_index: m.purged.as_ref().map(|id| id.index()),
            voters: membership.voters,
            learners: membership.learners,
            sites: sites as u64,
            motors: motors as u64,
            queries: queries as u64,
            audit_records: s.view.audit_len().map_err(ServiceError::Audit)?,
        }))
    }

    async fn add_site(&self, request: GrpcRequest<pb::AddSiteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().actor)?;
        let req = request.into_inner();
        let command = Command::AddSite { site: site_id("site", &req.site)?, name: req.name };
        Ok(Response::new(self.propose(&caller, command).await?))
    }

    async fn assign_motors(
        &self,
        request: GrpcRequest<pb::AssignMotorsRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().actor)?;
        let req = request.into_inner();
        let command = Command::AssignMotors { site: site_id("site", &req.site)?, motors: motor_ids(&req.motors)? };
        Ok(Response::new(self.propose(&caller, command).await?))
    }

    async fn define_machine_class(
        &self,
        request: GrpcRequest<pb::DefineMachineClassRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().actor)?;
        let req = request.into_inner();
        let mm_s = tessera_core::zone_boundaries(&req.boundaries_mm_s)
            .map_err(|e| ServiceError::invalid("boundaries_mm_s", e))?;
        let command = Command::DefineMachineClass {
            class: req.class,
            boundaries_um_s: mm_s.map(|b| (b * 1000.0).round() as u32),
        };
        Ok(Response::new(self.propose(&caller, command).await?))
    }

    async fn set_machine_class(
        &self,
        request: GrpcRequest<pb::SetMachineClassRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().actor)?;
        let req = request.into_inner();
        let class = Some(req.class).filter(|c| !c.is_empty());
        let command = Command::SetMachineClass { motors: motor_ids(&req.motors)?, class };
        Ok(Response::new(self.propose(&caller, command).await?))
    }

    async fn set_grade(
        &self,
        request: GrpcRequest<pb::SetGradeRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().actor)?;
        let req = request.into_inner();
        let grade: DataGrade = req.grade.parse().map_err(|e| ServiceError::invalid("grade", e))?;
        let column = Some(req.column).filter(|c| !c.is_empty());
        let command = Command::SetGrade { stream: req.stream, column, grade };
        Ok(Response::new(self.propose(&caller, command).await?))
    }

    async fn list_grades(
        &self,
        request: GrpcRequest<pb::ListGradesRequest>,
    ) -> Result<Response<pb::ListGradesResponse>, Status> {
        let served = self.read(&request).await?;
        let grades = self.0.view.with(|a| {
            a.registry
                .grades
                .values()
                .map(|g| pb::GradeEntry {
                    stream: g.stream.clone(),
                    column: g.column.clone().unwrap_or_default(),
                    grade: g.grade.to_string(),
                    set_by: g.set_by.clone(),
                    set_at_ms: g.set_at_ms,
                })
                .collect()
        });
        Ok(served.answer(pb::ListGradesResponse { grades }))
    }

    async fn list_policies(
        &self,
        request: GrpcRequest<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        let served = self.read(&request).await?;
        let policies = self.0.view.with(|a| {
            a.registry
                .policies
                .values()
                .map(|p| pb::PolicyEntry {
                    grade: p.grade.to_string(),
                    stage: p.stage.to_string(),
                    rule: p.rule.clone(),
                    set_by: p.set_by.clone(),
                    set_at_ms: p.set_at_ms,
                })
                .collect()
        });
        Ok(served.answer(pb::ListPoliciesResponse { policies }))
    }

    async fn request_release(
        &self,
        request: GrpcRequest<pb::RequestReleaseRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().actor)?;
        let req = request.into_inner();
        let k = u8::try_from(req.k).map_err(|_| ServiceError::invalid("k", format!("{} is too large", req.k)))?;
        let custodians = req.custodians.iter().map(|c| site_id("custodians", c)).collect::<Result<Vec<_>, _>>()?;
        let command = Command::RequestRelease {
            bundle: req.bundle,
            source: site_id("source", &req.source)?,
            target: site_id("target", &req.target)?,
            k,
            custodians,
        };
        Ok(Response::new(self.propose(&caller, command).await?))
    }

    async fn approve_release(
        &self,
        request: GrpcRequest<pb::ApproveReleaseRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().actor)?;
        let site = site_id("site", &request.get_ref().site)?;
        let req = request.into_inner();
        let command = Command::ApproveRelease { bundle: req.bundle, site };
        Ok(Response::new(self.propose(&caller, command).await?))
    }

    async fn list_releases(
        &self,
        request: GrpcRequest<pb::ListReleasesRequest>,
    ) -> Result<Response<pb::ListReleasesResponse>, Status> {
        let served = self.read(&request).await?;
        let releases = self.0.view.with(|a| {
            a.registry
                .releases
                .iter()
                .map(|(bundle, r)| pb::Release {
                    bundle: bundle.clone(),
                    source: r.source.to_string(),
                    target: r.target.to_string(),
                    k: u32::from(r.k),
                    custodians: r.custodians.iter().map(ToString::to_string).collect(),
                    approvals: r.approvals.iter().map(ToString::to_string).collect(),
                    released: r.released(),
                    requested_by: r.requested_by.clone(),
                })
                .collect()
        });
        Ok(served.answer(pb::ListReleasesResponse { releases }))
    }

    async fn acknowledge_alert(
        &self,
        request: GrpcRequest<pb::AcknowledgeAlertRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let mut caller = self.caller(&request, &request.get_ref().actor)?;
        let site = site_id("site", &request.get_ref().site)?;
        let req = request.into_inner();
        let motor = tessera_core::MotorId::new(req.motor).map_err(|e| ServiceError::invalid("motor", e))?;
        if req.user.trim().is_empty() {
            return Err(ServiceError::invalid("user", "is empty").into());
        }
        caller.actor = format!("{} (at {})", req.user, caller.actor);
        let command = Command::AcknowledgeAlert {
            alert: req.alert,
            motor,
            site,
            note: req.note,
            silence_until_ms: req.silence_until_ms,
        };
        Ok(Response::new(self.propose(&caller, command).await?))
    }

    async fn list_acknowledgements(
        &self,
        request: GrpcRequest<pb::ListAcknowledgementsRequest>,
    ) -> Result<Response<pb::ListAcknowledgementsResponse>, Status> {
        let served = self.read(&request).await?;
        let acknowledgements = self.0.view.with(|a| {
            a.registry
                .acks
                .iter()
                .map(|(alert, r)| pb::Acknowledgement {
                    alert: alert.clone(),
                    motor: r.motor.to_string(),
                    site: r.site.to_string(),
                    by: r.by.clone(),
                    at_ms: r.at_ms,
                    note: r.note.clone(),
                    silence_until_ms: r.silence_until_ms,
                    log_index: r.index,
                })
                .collect()
        });
        Ok(served.answer(pb::ListAcknowledgementsResponse { acknowledgements }))
    }

    async fn set_policy(
        &self,
        request: GrpcRequest<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().actor)?;
        let req = request.into_inner();
        let grade: DataGrade = req.grade.parse().map_err(|e| ServiceError::invalid("grade", e))?;
        let stage: DataStage = req.stage.parse().map_err(|e| ServiceError::invalid("stage", e))?;
        let command = Command::SetPolicy { grade, stage, rule: req.rule };
        Ok(Response::new(self.propose(&caller, command).await?))
    }

    async fn register_query(
        &self,
        request: GrpcRequest<pb::RegisterQueryRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().actor)?;
        let req = request.into_inner();
        let command = Command::RegisterQuery { name: req.name, sql: req.sql };
        Ok(Response::new(self.propose(&caller, command).await?))
    }

    async fn drop_query(
        &self,
        request: GrpcRequest<pb::DropQueryRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().actor)?;
        let req = request.into_inner();
        let command = Command::DropQuery { name: req.name };
        Ok(Response::new(self.propose(&caller, command).await?))
    }

    async fn list_queries(
        &self,
        request: GrpcRequest<pb::ListQueriesRequest>,
    ) -> Result<Response<pb::ListQueriesResponse>, Status> {
        let served = self.read(&request).await?;
        let queries = self.0.view.with(|a| {
            a.registry
                .queries
                .iter()
                .map(|(name, q)| pb::Query {
                    name: name.clone(),
                    sql: q.sql.clone(),
                    registered_by: q.registered_by.clone(),
                    registered_at_ms: q.registered_at_ms,
                    version: q.version,
                })
                .collect()
        });
        Ok(served.answer(pb::ListQueriesResponse { queries }))
    }

    async fn list_sites(
        &self,
        request: GrpcRequest<pb::ListSitesRequest>,
    ) -> Result<Response<pb::ListSitesResponse>, Status> {
        let served = self.read(&request).await?;
        let sites = self.0.view.with(|a| {
            let r = &a.registry;
            r.sites
                .iter()
                .map(|(id, site)| pb::Site {
                    site: id.to_string(),
                    name: site.name.clone(),
                    motors: r.motors_of(id).count() as u64,
                    nodes: r.nodes.iter().filter(|(_, n)| &n.site == id).map(|(n, _)| *n).collect(),
                })
                .collect()
        });
        Ok(served.answer(pb::ListSitesResponse { sites }))
    }

    async fn list_motors(
        &self,
        request: GrpcRequest<pb::ListMotorsRequest>,
    ) -> Result<Response<pb::ListMotorsResponse>, Status> {
        let served = self.read(&request).await?;
        let site = request.into_inner().site;
        let motors = self.0.view.with(|a| {
            a.registry
                .motors
                .iter()
                .filter(|(_, s)| site.is_empty() || s.as_str() == site)
                .map(|(m, s)| {
                    let class = a.registry.motor_classes.get(m);
                    pb::MotorAssignment {
                        motor: m.to_string(),
                        site: s.to_string(),
                        machine_class: class.cloned().unwrap_or_default(),
                        zone_boundaries_mm_s: class
                            .and_then(|c| a.registry.zones_of(c))
                            .map(|z| z.to_vec())
                            .unwrap_or_default(),
                    }
                })
                .collect()
        });
        Ok(served.answer(pb::ListMotorsResponse { motors }))
    }

    async fn list_audit(
        &self,
        request: GrpcRequest<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let served = self.read(&request).await?;
        let req = request.into_inner();
        let limit = if req.limit == 0 { 1000 } else { req.limit as usize };
        let records = self.0.view.audit(req.from_index, limit).map_err(ServiceError::Audit)?;
        let entries = records
            .into_iter()
            .map(|r| pb::AuditEntry {
                index: r.index,
                actor: r.actor,
                at_ms: r.at_ms,
                action: r.action,
                rejected: r.rejected.unwrap_or_default(),
            })
            .collect();
        Ok(served.answer(pb::ListAuditResponse { entries }))
    }

    async fn set_partition(
        &self,
        request: GrpcRequest<pb::SetPartitionRequest>,
    ) -> Result<Response<pb::SetPartitionResponse>, Status> {
        if !self.0.fault_injection {
            return Err(ServiceError::NoFaultInjection { node: self.0.me }.into());
        }
        let caller = self.caller(&request, "")?;
        self.may(&caller, Action::Membership)?;
        let blocked = request.into_inner().blocked;
        tracing::warn!(node = self.0.me, ?blocked, "fault injection: partition set");
        self.0.partition.set(blocked);
        Ok(Response::new(pb::SetPartitionResponse {}))
    }
}
