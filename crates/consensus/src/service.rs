//! The node's gRPC services: the Raft transport's server side and the admin API.
//!
//! Any node answers the admin API. A write is checked, stamped (actor, time) and proposed; on
//! a follower it is forwarded to the leader. A read is linearizable: the leader confirms its
//! leadership with a quorum (read index) and the answering node waits until its state machine
//! has applied that far before reading. A write that is not committed within the configured
//! time (no quorum reachable, e.g. on the minority side of a partition) fails with
//! `UNAVAILABLE` and says so.
//!
//! Over mTLS, a Raft message must come from the node its certificate names (the sender id in
//! the message, and the node id in the vote it carries), or it is refused with
//! `PERMISSION_DENIED`, counted and audited; and the audit log records the actor the client
//! certificate proves, not the name the request claims.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::errors::{ClientWriteError, ForwardToLeader, LinearizableReadError, RaftError};
use openraft::async_runtime::WatchReceiver;
use openraft::{ChangeMembers, ReadPolicy, ServerState};
use tessera_core::{DataGrade, DataStage, MotorId, SiteId};
use tessera_proto::raft as pb;
use tessera_proto::raft::cluster_admin_client::ClusterAdminClient;
use tessera_proto::raft::raft_transport_client::RaftTransportClient;
use tessera_tls::{ClientTls, PeerIdentity, Refusals};
use tonic::{Request as GrpcRequest, Response, Status, Streaming};

use crate::network::{Partition, channel_to};
use crate::state_machine::RegistryView;
use crate::types::{Command, Member, NodeId, Outcome, Request, TypeConfig};
use crate::Raft;

/// Shared by the two services of one node.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) raft: Raft,
    pub(crate) view: RegistryView,
    pub(crate) partition: Partition,
    pub(crate) me: NodeId,
    pub(crate) fault_injection: bool,
    pub(crate) write_timeout: Duration,
    /// How this node connects to its peers.
    pub(crate) client_tls: ClientTls,
    /// Whether clients must prove who they are with a certificate.
    pub(crate) tls_required: bool,
    pub(crate) refusals: std::sync::Arc<Refusals>,
}

/// How often a node waiting for an election to finish looks again.
const LEADER_POLL: Duration = Duration::from_millis(20);

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn invalid(field: &str, e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {e}"))
}

fn decode<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(json).map_err(|e| Status::invalid_argument(format!("undecodable Raft message: {e}")))
}

fn encode<T: serde::Serialize>(from: NodeId, value: &T) -> Result<pb::RaftMessage, Status> {
    let json = serde_json::to_vec(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(pb::RaftMessage { from, json })
}

fn role(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

fn spec(id: NodeId, member: &Member) -> pb::NodeSpec {
    pb::NodeSpec { id, site: member.site.clone(), addr: member.addr.clone() }
}

/// The node id in the vote a Raft message carries (`vote.leader_id.node_id`: the candidate
/// of a vote request, the leader of an append), if it carries one.
fn vote_node(json: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    value.pointer("/vote/leader_id/node_id")?.as_u64()
}

impl Shared {
    /// Over mTLS, checks that the message from `claimed` (and, if given, the vote it carries)
    /// comes from the node the client certificate names.
    fn check_sender<T>(&self, request: &GrpcRequest<T>, claimed: NodeId, json: Option<&[u8]>) -> Result<(), Status> {
        if !self.tls_required {
            return Ok(());
        }
        let refuse = |why: String| {
            self.refusals.refuse_identity("raft", request.remote_addr(), &why);
            Status::permission_denied(format!("node {} refuses the message: {why}", self.me))
        };
        let proven = match PeerIdentity::of_request(request) {
            None => return Err(refuse("no client certificate".into())),
            Some(Err(e)) => return Err(refuse(e.to_string())),
            Some(Ok(PeerIdentity::Node { id, .. })) => id,
            Some(Ok(other)) => return Err(refuse(format!("{other} is not a node; only nodes speak Raft"))),
        };
        if proven != claimed {
            return Err(refuse(format!("the certificate is node {proven}'s, the message claims node {claimed}")));
        }
        if let Some(voter) = json.and_then(vote_node)
            && voter != proven
        {
            return Err(refuse(format!("node {proven} sent a vote of node {voter}")));
        }
        Ok(())
    }

    /// The actor an admin request is recorded under: the identity its client certificate
    /// proves (over mTLS), else the name it claims.
    fn actor<T>(&self, request: &GrpcRequest<T>, claimed: &str) -> Result<String, Status> {
        if !self.tls_required {
            return Ok(claimed.to_string());
        }
        match PeerIdentity::of_request(request) {
            Some(Ok(PeerIdentity::Operator { name })) => Ok(name),
            Some(Ok(node @ PeerIdentity::Node { .. })) => Ok(node.to_string()),
            Some(Err(e)) => {
                self.refusals.refuse_identity("raft-admin", request.remote_addr(), &e.to_string());
                Err(Status::permission_denied(e.to_string()))
            }
            None => {
                self.refusals.refuse_identity("raft-admin", request.remote_addr(), "no client certificate");
                Err(Status::permission_denied("the admin API needs a client certificate"))
            }
        }
    }

    fn refuse_partitioned(&self, from: NodeId) -> Result<(), Status> {
        if self.partition.blocks(from) {
            Err(Status::unavailable(format!("node {} is partitioned from node {from} (fault injection)", self.me)))
        } else {
            Ok(())
        }
    }

    fn request(&self, actor: &str, command: Command) -> Result<Request, Status> {
        let request = Request { actor: actor.to_string(), at_ms: now_ms(), command };
        request.check().map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(request)
    }

    /// Initialises the cluster with `members` (this node among them), then records each
    /// member's registration under `actor` (the writes wait for the first election).
    pub(crate) async fn initialize(&self, actor: &str, members: BTreeMap<NodeId, Member>) -> Result<pb::MembershipResponse, Status> {
        let registrations = self.registrations(actor, &members)?;
        self.raft.initialize(members).await.map_err(|e| Status::failed_precondition(format!("node {}: {e}", self.me)))?;
        for r in registrations {
            self.write(r, false).await?;
        }
        Ok(self.membership())
    }

    /// The registration of each of a new cluster's `members` (this node must be one).
    pub(crate) fn registrations(&self, actor: &str, members: &BTreeMap<NodeId, Member>) -> Result<Vec<Request>, Status> {
        if !members.contains_key(&self.me) {
            return Err(invalid("nodes", format!("the node asked to initialise (node {}) must be one of them", self.me)));
        }
        members
            .iter()
            .map(|(id, m)| {
                let site = site_id("nodes.site", &m.site)?;
                self.request(actor, Command::RegisterNode { node: *id, site, addr: m.addr.clone() })
            })
            .collect()
    }

    /// The leader's node id and address, as this node knows them.
    fn leader(&self, hint: Option<&ForwardToLeader<TypeConfig>>) -> Result<(NodeId, Member), Status> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let id = hint.and_then(|h| h.leader_id).or(metrics.current_leader);
        let Some(id) = id else {
            return Err(Status::unavailable(format!("node {} knows no leader (election under way, or no quorum reachable)", self.me)));
        };
        if self.partition.blocks(id) {
            return Err(Status::unavailable(format!("node {} is partitioned from the leader {id} (fault injection)", self.me)));
        }
        let member = hint
            .and_then(|h| h.leader_node.clone())
            .or_else(|| metrics.membership_config.membership().get_node(&id).cloned())
            .ok_or_else(|| Status::unavailable(format!("leader {id} has no known address")))?;
        Ok((id, member))
    }

    fn transport_to(&self, id: NodeId, member: &Member) -> Result<RaftTransportClient<tonic::transport::Channel>, Status> {
        channel_to(&self.client_tls, id, &member.addr).map(RaftTransportClient::new).map_err(|e| Status::unavailable(e.to_string()))
    }

    fn admin_of_leader(&self, hint: Option<&ForwardToLeader<TypeConfig>>) -> Result<ClusterAdminClient<tonic::transport::Channel>, Status> {
        let (id, member) = self.leader(hint)?;
        channel_to(&self.client_tls, id, &member.addr).map(ClusterAdminClient::new).map_err(|e| Status::unavailable(e.to_string()))
    }

    fn unavailable_after_timeout(&self, what: &str) -> Status {
        Status::unavailable(format!(
            "{what} not committed within {:?} by node {}: no quorum reachable (is this node on the minority side of a partition?)",
            self.write_timeout, self.me
        ))
    }

    /// Proposes `request`; on a follower, forwards it to the leader (once). While no leader is
    /// known (an election is under way) it retries until the write timeout.
    pub(crate) async fn write(&self, request: Request, forwarded: bool) -> Result<pb::WriteResponse, Status> {
        let deadline = Instant::now() + self.write_timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = tokio::time::timeout(remaining, self.raft.client_write(request.clone()))
                .await
                .map_err(|_| self.unavailable_after_timeout("the write was"))?;
            let hint = match result {
                Ok(reply) => {
                    return Ok(pb::WriteResponse {
                        log_index: reply.log_id.index(),
                        rejected: match reply.data {
                            Outcome::Rejected(why) => why,
                            Outcome::Applied | Outcome::Nothing => String::new(),
                        },
                    });
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(hint))) => hint,
                Err(e) => return Err(Status::unavailable(format!("node {}: {e}", self.me))),
            };
            match hint.leader_id {
                Some(leader) if leader != self.me && !forwarded => {
                    let (id, member) = self.leader(Some(&hint))?;
                    let mut client = self.transport_to(id, &member)?;
                    let mut call = GrpcRequest::new(encode(self.me, &request)?);
                    call.set_timeout(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
                    return Ok(client.forward_write(call).await?.into_inner());
                }
                Some(leader) if leader != self.me => {
                    return Err(Status::unavailable(format!("node {} is no longer the leader (node {leader} is); retry", self.me)));
                }
                _ => self.wait_for_leader(deadline, "the write was").await?,
            }
        }
    }

    /// Sleeps a little while an election is under way; fails once `deadline` has passed.
    async fn wait_for_leader(&self, deadline: Instant, what: &str) -> Result<(), Status> {
        if Instant::now() + LEADER_POLL >= deadline {
            return Err(self.unavailable_after_timeout(what));
        }
        tokio::time::sleep(LEADER_POLL).await;
        Ok(())
    }

    /// Waits until a linearizable read may be served from this node's state machine.
    async fn read_barrier(&self) -> Result<(), Status> {
        let deadline = Instant::now() + self.write_timeout;
        let index = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = tokio::time::timeout(remaining, self.read_index())
                .await
                .map_err(|_| self.unavailable_after_timeout("the read index was"))?;
            match result {
                Ok(index) => break index,
                Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(hint))) => match hint.leader_id {
                    Some(leader) if leader != self.me => {
                        let (id, member) = self.leader(Some(&hint))?;
                        let mut client = self.transport_to(id, &member)?;
                        let mut call = GrpcRequest::new(pb::RaftMessage { from: self.me, json: Vec::new() });
                        call.set_timeout(remaining.max(Duration::from_millis(1)));
                        break decode::<u64>(&client.read_index(call).await?.into_inner().json)?;
                    }
                    _ => self.wait_for_leader(deadline, "the read index was").await?,
                },
                Err(e) => return Err(Status::unavailable(format!("node {}: {e}", self.me))),
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        self.raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|e| Status::unavailable(format!("node {} did not apply up to index {index}: {e}", self.me)))?;
        Ok(())
    }

    /// The leader's read index (only the leader can answer).
    async fn read_index(&self) -> Result<u64, RaftError<TypeConfig, LinearizableReadError<TypeConfig>>> {
        let linearizer = self.raft.get_read_linearizer(ReadPolicy::ReadIndex).await?;
        Ok(linearizer.read_log_id().index())
    }

    fn membership(&self) -> pb::MembershipResponse {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let stored = metrics.membership_config;
        let membership = stored.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let (mut v, mut l) = (Vec::new(), Vec::new());
        for (id, member) in membership.nodes() {
            if voters.contains(id) { v.push(spec(*id, member)) } else { l.push(spec(*id, member)) }
        }
        pb::MembershipResponse { voters: v, learners: l, log_index: stored.log_id().as_ref().map_or(0, |id| id.index()) }
    }
}

/// The Raft transport's server side.
pub(crate) struct TransportService(pub(crate) Shared);

#[tonic::async_trait]
impl pb::raft_transport_server::RaftTransport for TransportService {
    async fn append_entries(&self, request: GrpcRequest<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
        self.0.check_sender(&request, request.get_ref().from, Some(&request.get_ref().json))?;
        let message = request.into_inner();
        self.0.refuse_partitioned(message.from)?;
        let reply = self.0.raft.append_entries(decode(&message.json)?).await.map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(encode(self.0.me, &reply)?))
    }

    async fn vote(&self, request: GrpcRequest<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
        self.0.check_sender(&request, request.get_ref().from, Some(&request.get_ref().json))?;
        let message = request.into_inner();
        self.0.refuse_partitioned(message.from)?;
        let reply = self.0.raft.vote(decode(&message.json)?).await.map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(encode(self.0.me, &reply)?))
    }

    async fn pre_vote(&self, request: GrpcRequest<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
        self.0.check_sender(&request, request.get_ref().from, Some(&request.get_ref().json))?;
        let message = request.into_inner();
        self.0.refuse_partitioned(message.from)?;
        let reply = self.0.raft.pre_vote(decode(&message.json)?).await.map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(encode(self.0.me, &reply)?))
    }

    async fn install_snapshot(&self, request: GrpcRequest<Streaming<pb::SnapshotChunk>>) -> Result<Response<pb::RaftMessage>, Status> {
        let proven = if self.0.tls_required { Some((PeerIdentity::of_request(&request), request.remote_addr())) } else { None };
        let mut chunks = request.into_inner();
        let mut header: Option<(VoteOf<TypeConfig>, SnapshotMetaOf<TypeConfig>)> = None;
        let mut data = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            if let Some((identity, peer)) = &proven {
                let ok = matches!(identity, Some(Ok(PeerIdentity::Node { id, .. })) if *id == chunk.from);
                if !ok {
                    let why = format!("a snapshot chunk claiming node {} from a client whose certificate is not that node's", chunk.from);
                    self.0.refusals.refuse_identity("raft", *peer, &why);
                    return Err(Status::permission_denied(why));
                }
            }
            self.0.refuse_partitioned(chunk.from)?;
            if header.is_none() {
                header = Some(decode(&chunk.header)?);
            }
            data.extend_from_slice(&chunk.data);
        }
        let (vote, meta) = header.ok_or_else(|| Status::invalid_argument("snapshot stream without a header"))?;
        let snapshot = SnapshotOf::<TypeConfig, Vec<u8>> { meta, snapshot: data };
        let reply = self.0.raft.install_full_snapshot(vote, snapshot).await.map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(encode(self.0.me, &reply)?))
    }

    async fn forward_write(&self, request: GrpcRequest<pb::RaftMessage>) -> Result<Response<pb::WriteResponse>, Status> {
        self.0.check_sender(&request, request.get_ref().from, None)?;
        let message = request.into_inner();
        self.0.refuse_partitioned(message.from)?;
        let request: Request = decode(&message.json)?;
        request.check().map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(self.0.write(request, true).await?))
    }

    async fn read_index(&self, request: GrpcRequest<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
        self.0.check_sender(&request, request.get_ref().from, None)?;
        self.0.refuse_partitioned(request.get_ref().from)?;
        let index = tokio::time::timeout(self.0.write_timeout, self.0.read_index())
            .await
            .map_err(|_| self.0.unavailable_after_timeout("the read index was"))?
            .map_err(|e| Status::unavailable(format!("node {}: {e}", self.0.me)))?;
        Ok(Response::new(encode(self.0.me, &index)?))
    }
}

/// The admin API.
pub(crate) struct AdminService(pub(crate) Shared);

fn site_id(field: &str, s: &str) -> Result<SiteId, Status> {
    SiteId::new(s).map_err(|e| invalid(field, e))
}

#[tonic::async_trait]
impl pb::cluster_admin_server::ClusterAdmin for AdminService {
    async fn init(&self, request: GrpcRequest<pb::InitRequest>) -> Result<Response<pb::MembershipResponse>, Status> {
        let actor = self.0.actor(&request, &request.get_ref().actor)?;
        let req = request.into_inner();
        let mut members = BTreeMap::new();
        for node in &req.nodes {
            site_id("nodes.site", &node.site)?;
            if node.addr.trim().is_empty() {
                return Err(invalid("nodes.addr", format!("node {} has no address", node.id)));
            }
            members.insert(node.id, Member { site: node.site.clone(), addr: node.addr.clone() });
        }
        Ok(Response::new(self.0.initialize(&actor, members).await?))
    }

    async fn add_node(&self, request: GrpcRequest<pb::AddNodeRequest>) -> Result<Response<pb::MembershipResponse>, Status> {
        let actor = self.0.actor(&request, &request.get_ref().actor)?;
        let s = &self.0;
        let req = request.into_inner();
        let node = req.node.clone().ok_or_else(|| invalid("node", "is missing"))?;
        let site = site_id("node.site", &node.site)?;
        let registration = s.request(&actor, Command::RegisterNode { node: node.id, site, addr: node.addr.clone() })?;
        if !s.raft.is_leader() {
            return Ok(Response::new(s.admin_of_leader(None)?.add_node(req).await?.into_inner()));
        }
        let member = Member { site: node.site.clone(), addr: node.addr.clone() };
        // Blocking: returns once the learner has caught up with the leader's log.
        s.raft.add_learner(node.id, member, true).await.map_err(|e| Status::failed_precondition(e.to_string()))?;
        if !req.learner_only {
            // Joint consensus: openraft commits the joint config, then the new one.
            let add = ChangeMembers::AddVoterIds(BTreeSet::from([node.id]));
            s.raft.change_membership(add, false).await.map_err(|e| Status::failed_precondition(e.to_string()))?;
        }
        s.write(registration, false).await?;
        Ok(Response::new(s.membership()))
    }

    async fn remove_node(&self, request: GrpcRequest<pb::RemoveNodeRequest>) -> Result<Response<pb::MembershipResponse>, Status> {
        let actor = self.0.actor(&request, &request.get_ref().actor)?;
        let s = &self.0;
        let req = request.into_inner();
        let removal = s.request(&actor, Command::RemoveNode { node: req.id })?;
        if !s.raft.is_leader() {
            return Ok(Response::new(s.admin_of_leader(None)?.remove_node(req).await?.into_inner()));
        }
        let ids = BTreeSet::from([req.id]);
        let is_voter = s.raft.voter_ids().any(|v| v == req.id);
        if is_voter {
            // Every site keeps a vote: a site whose last voter left would depend on the others
            // for its own metadata writes.
            let metrics = s.raft.metrics().borrow_watched().clone();
            let membership = metrics.membership_config.membership();
            let site_of = |id: &NodeId| membership.get_node(id).map(|m| m.site.clone());
            let site = site_of(&req.id);
            let voters_there = membership.voter_ids().filter(|v| site_of(v) == site).count();
            if voters_there <= 1 {
                return Err(Status::failed_precondition(format!(
                    "node {} is the last voter of site {}; add another voter there first",
                    req.id,
                    site.unwrap_or_default()
                )));
            }
        }
        let change = if is_voter { ChangeMembers::RemoveVoters(ids) } else { ChangeMembers::RemoveNodes(ids) };
        s.raft.change_membership(change, false).await.map_err(|e| Status::failed_precondition(e.to_string()))?;
        s.write(removal, false).await?;
        Ok(Response::new(s.membership()))
    }

    async fn status(&self, _: GrpcRequest<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let s = &self.0;
        let m = s.raft.metrics().borrow_watched().clone();
        let membership = s.membership();
        let leader_addr = m
            .current_leader
            .and_then(|id| m.membership_config.membership().get_node(&id).map(|n| n.addr.clone()))
            .unwrap_or_default();
        let (sites, motors, queries) = s.view.with(|a| (a.registry.sites.len(), a.registry.motors.len(), a.registry.queries.len()));
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
            audit_records: s.view.audit_len().map_err(|e| Status::internal(e.to_string()))?,
        }))
    }

    async fn add_site(&self, request: GrpcRequest<pb::AddSiteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let actor = self.0.actor(&request, &request.get_ref().actor)?;
        let req = request.into_inner();
        let command = Command::AddSite { site: site_id("site", &req.site)?, name: req.name };
        Ok(Response::new(self.0.write(self.0.request(&actor, command)?, false).await?))
    }

    async fn assign_motors(&self, request: GrpcRequest<pb::AssignMotorsRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let actor = self.0.actor(&request, &request.get_ref().actor)?;
        let req = request.into_inner();
        let motors = req.motors.iter().map(|m| MotorId::new(m.as_str()).map_err(|e| invalid("motors", e))).collect::<Result<_, _>>()?;
        let command = Command::AssignMotors { site: site_id("site", &req.site)?, motors };
        Ok(Response::new(self.0.write(self.0.request(&actor, command)?, false).await?))
    }

    async fn set_grade(&self, request: GrpcRequest<pb::SetGradeRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let actor = self.0.actor(&request, &request.get_ref().actor)?;
        let req = request.into_inner();
        let grade: DataGrade = req.grade.parse().map_err(|e| invalid("grade", e))?;
        let column = Some(req.column).filter(|c| !c.is_empty());
        let command = Command::SetGrade { stream: req.stream, column, grade };
        Ok(Response::new(self.0.write(self.0.request(&actor, command)?, false).await?))
    }

    async fn list_grades(&self, _: GrpcRequest<pb::ListGradesRequest>) -> Result<Response<pb::ListGradesResponse>, Status> {
        self.0.read_barrier().await?;
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
        Ok(Response::new(pb::ListGradesResponse { grades }))
    }

    async fn request_release(&self, request: GrpcRequest<pb::RequestReleaseRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let actor = self.0.actor(&request, &request.get_ref().actor)?;
        let req = request.into_inner();
        let k = u8::try_from(req.k).map_err(|_| invalid("k", format!("{} is too large", req.k)))?;
        let custodians = req.custodians.iter().map(|c| site_id("custodians", c)).collect::<Result<Vec<_>, _>>()?;
        let command = Command::RequestRelease { bundle: req.bundle, source: site_id("source", &req.source)?, target: site_id("target", &req.target)?, k, custodians };
        Ok(Response::new(self.0.write(self.0.request(&actor, command)?, false).await?))
    }

    async fn approve_release(&self, request: GrpcRequest<pb::ApproveReleaseRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let actor = self.0.actor(&request, &request.get_ref().actor)?;
        let site = site_id("site", &request.get_ref().site)?;
        if self.0.tls_required {
            // A site's approval is given by that site: the caller must hold a node
            // certificate of it (an operator's or another site's certificate cannot).
            match PeerIdentity::of_request(&request) {
                Some(Ok(PeerIdentity::Node { site: proven, .. })) if proven == site.as_str() => {}
                other => {
                    let who = match other {
                        Some(Ok(identity)) => identity.to_string(),
                        _ => "no valid certificate".to_string(),
                    };
                    let why = format!("only a node of site {site} approves for it; the caller is {who}");
                    self.0.refusals.refuse_identity("raft-admin", request.remote_addr(), &why);
                    return Err(Status::permission_denied(why));
                }
            }
        }
        let req = request.into_inner();
        let command = Command::ApproveRelease { bundle: req.bundle, site };
        Ok(Response::new(self.0.write(self.0.request(&actor, command)?, false).await?))
    }

    async fn list_releases(&self, _: GrpcRequest<pb::ListReleasesRequest>) -> Result<Response<pb::ListReleasesResponse>, Status> {
        self.0.read_barrier().await?;
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
        Ok(Response::new(pb::ListReleasesResponse { releases }))
    }

    async fn set_policy(&self, request: GrpcRequest<pb::SetPolicyRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let actor = self.0.actor(&request, &request.get_ref().actor)?;
        let req = request.into_inner();
        let grade: DataGrade = req.grade.parse().map_err(|e| invalid("grade", e))?;
        let stage: DataStage = req.stage.parse().map_err(|e| invalid("stage", e))?;
        let command = Command::SetPolicy { grade, stage, rule: req.rule };
        Ok(Response::new(self.0.write(self.0.request(&actor, command)?, false).await?))
    }

    async fn register_query(&self, request: GrpcRequest<pb::RegisterQueryRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let actor = self.0.actor(&request, &request.get_ref().actor)?;
        let req = request.into_inner();
        let command = Command::RegisterQuery { name: req.name, sql: req.sql };
        Ok(Response::new(self.0.write(self.0.request(&actor, command)?, false).await?))
    }

    async fn drop_query(&self, request: GrpcRequest<pb::DropQueryRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let actor = self.0.actor(&request, &request.get_ref().actor)?;
        let req = request.into_inner();
        let command = Command::DropQuery { name: req.name };
        Ok(Response::new(self.0.write(self.0.request(&actor, command)?, false).await?))
    }

    async fn list_queries(&self, _: GrpcRequest<pb::ListQueriesRequest>) -> Result<Response<pb::ListQueriesResponse>, Status> {
        self.0.read_barrier().await?;
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
        Ok(Response::new(pb::ListQueriesResponse { queries }))
    }

    async fn list_sites(&self, _: GrpcRequest<pb::ListSitesRequest>) -> Result<Response<pb::ListSitesResponse>, Status> {
        self.0.read_barrier().await?;
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
        Ok(Response::new(pb::ListSitesResponse { sites }))
    }

    async fn list_motors(&self, request: GrpcRequest<pb::ListMotorsRequest>) -> Result<Response<pb::ListMotorsResponse>, Status> {
        let site = request.into_inner().site;
        self.0.read_barrier().await?;
        let motors = self.0.view.with(|a| {
            a.registry
                .motors
                .iter()
                .filter(|(_, s)| site.is_empty() || s.as_str() == site)
                .map(|(m, s)| pb::MotorAssignment { motor: m.to_string(), site: s.to_string() })
                .collect()
        });
        Ok(Response::new(pb::ListMotorsResponse { motors }))
    }

    async fn list_audit(&self, request: GrpcRequest<pb::ListAuditRequest>) -> Result<Response<pb::ListAuditResponse>, Status> {
        let req = request.into_inner();
        self.0.read_barrier().await?;
        let limit = if req.limit == 0 { 1000 } else { req.limit as usize };
        let records = self.0.view.audit(req.from_index, limit).map_err(|e| Status::internal(e.to_string()))?;
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
        Ok(Response::new(pb::ListAuditResponse { entries }))
    }

    async fn set_partition(&self, request: GrpcRequest<pb::SetPartitionRequest>) -> Result<Response<pb::SetPartitionResponse>, Status> {
        if !self.0.fault_injection {
            return Err(Status::failed_precondition(format!(
                "node {} was started without fault injection (raft.fault_injection = true enables it)",
                self.0.me
            )));
        }
        let blocked = request.into_inner().blocked;
        tracing::warn!(node = self.0.me, ?blocked, "fault injection: partition set");
        self.0.partition.set(blocked);
        Ok(Response::new(pb::SetPartitionResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vote_a_raft_message_carries_names_its_node() {
        let vote = VoteOf::<TypeConfig>::new(3, 2);
        let request = openraft::raft::VoteRequest::<TypeConfig>::new(vote, None);
        assert_eq!(vote_node(&serde_json::to_vec(&request).unwrap()), Some(2));
        assert_eq!(vote_node(b"{\"vote\":{}}"), None);
    }
}
