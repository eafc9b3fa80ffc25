//! What both services of a node share: its Raft handle and settings, and how a request
//! reaches the quorum. A write is stamped and proposed, or forwarded to the leader (once); a
//! read waits behind a read barrier (the leader's read index, applied here). Either fails with
//! `UNAVAILABLE` once the write timeout passes without a quorum.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use openraft::ReadPolicy;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, ForwardToLeader, LinearizableReadError, RaftError};
use tessera_core::SiteId;
use tessera_proto::raft as pb;
use tessera_proto::raft::raft_transport_client::RaftTransportClient;
use tessera_tls::{ClientTls, Refusals};
use tonic::Request as GrpcRequest;

use super::authorize::{Action, Principal, authorize, on_behalf_of};
use super::error::ServiceError;
use super::wire::{decode, encode};
use crate::Raft;
use crate::network::{Partition, channel_to};
use crate::state_machine::RegistryView;
use crate::types::{Command, Member, NodeId, Outcome, Request, TypeConfig};

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
    /// The largest snapshot this node takes from a leader.
    pub(crate) max_snapshot_bytes: u64,
    /// The site this node runs at.
    pub(crate) site: String,
    /// A member unheard for this long counts as down (see `rebalance`).
    pub(crate) voter_down_after: Duration,
    /// Wakes the voter keeper for a look now (a member joined, the policy changed).
    pub(crate) rebalance_now: std::sync::Arc<tokio::sync::Notify>,
}

/// How often a node waiting for an election to finish looks again.
const LEADER_POLL: Duration = Duration::from_millis(20);

/// The site id in request field `field`.
pub(super) fn site_id(field: &'static str, s: &str) -> Result<SiteId, ServiceError> {
    SiteId::new(s).map_err(|e| ServiceError::invalid(field, e))
}

/// The motor ids of a request's `motors` field.
pub(super) fn motor_ids(motors: &[String]) -> Result<Vec<tessera_core::MotorId>, ServiceError> {
    motors
        .iter()
        .map(|m| tessera_core::MotorId::new(m.as_str()).map_err(|e| ServiceError::invalid("motors", e)))
        .collect()
}

impl Shared {
    /// This node, as the principal of what it writes on its own (a bootstrap's registrations).
    pub(crate) fn itself(&self) -> Principal {
        Principal::Node { id: self.me, site: self.site.clone() }
    }

    /// The current membership's entry for node `id`.
    pub(super) fn member(&self, id: NodeId) -> Option<Member> {
        self.raft.metrics().borrow_watched().membership_config.membership().get_node(&id).cloned()
    }

    /// Whether `who` may do `action` now (see [`authorize`]).
    pub(crate) fn allow(&self, who: &Principal, action: Action<'_>) -> Result<(), ServiceError> {
        authorize(who, action, |id| self.member(id))
    }

    /// `command` as proposed by `actor` now, checked.
    pub(crate) fn request(&self, actor: &str, command: Command) -> Result<Request, ServiceError> {
        let request = Request { actor: actor.to_string(), at_ms: tessera_core::now_ms(), command };
        request.check()?;
        Ok(request)
    }

    /// The registration of each of a new cluster's `members` (this node must be one).
    pub(crate) fn registrations(
        &self,
        actor: &str,
        members: &BTreeMap<NodeId, Member>,
    ) -> Result<Vec<Request>, ServiceError> {
        if !members.contains_key(&self.me) {
            return Err(ServiceError::invalid(
                "nodes",
                format!("the node asked to initialise (node {}) must be one of them", self.me),
            ));
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
    pub(super) fn leader(&self, hint: Option<&ForwardToLeader<TypeConfig>>) -> Result<(NodeId, Member), ServiceError> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let id = hint.and_then(|h| h.leader_id).or(metrics.current_leader);
        let Some(id) = id else {
            return Err(ServiceError::NoLeader { node: self.me });
        };
        if self.partition.blocks(id) {
            return Err(ServiceError::LeaderPartitioned { node: self.me, leader: id });
        }
        let member = hint
            .and_then(|h| h.leader_node.clone())
            .or_else(|| metrics.membership_config.membership().get_node(&id).cloned())
            .ok_or(ServiceError::LeaderWithoutAddress { leader: id })?;
        Ok((id, member))
    }

    /// A transport client of node `id`.
    fn transport_to(
        &self,
        id: NodeId,
        member: &Member,
    ) -> Result<RaftTransportClient<tonic::transport::Channel>, ServiceError> {
        channel_to(&self.client_tls, id, &member.addr).map(RaftTransportClient::new).map_err(ServiceError::Connect)
    }

    /// Why `what` failed once the write timeout passed.
    pub(super) fn no_quorum(&self, what: &'static str) -> ServiceError {
        ServiceError::NoQuorum { what, timeout: self.write_timeout, node: self.me }
    }

    /// Proposes `request`, made for `who` (already authorized); on a follower, forwards it to
    /// the leader (once), naming `who`, which the leader authorizes again. While no leader is
    /// known (an election is under way) it retries until the write timeout.
    pub(crate) async fn write(
        &self,
        request: Request,
        who: &Principal,
        forwarded: bool,
    ) -> Result<pb::WriteResponse, ServiceError> {
        let deadline = Instant::now() + self.write_timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = tokio::time::timeout(remaining, self.raft.client_write(request.clone()))
                .await
                .map_err(|_| self.no_quorum("the write was"))?;
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
                Err(e) => return Err(ServiceError::Write { node: self.me, source: Box::new(e) }),
            };
            match hint.leader_id {
                Some(leader) if leader != self.me && !forwarded => {
                    let (id, member) = self.leader(Some(&hint))?;
                    let mut client = self.transport_to(id, &member)?;
                    let mut call = GrpcRequest::new(encode(self.me, &request)?);
                    on_behalf_of(&mut call, who);
                    call.set_timeout(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
                    return Ok(client.forward_write(call).await?.into_inner());
                }
                Some(leader) if leader != self.me => {
                    return Err(ServiceError::NoLongerLeader { node: self.me, leader });
                }
                _ => self.wait_for_leader(deadline, "the write was").await?,
            }
        }
    }

    /// Sleeps a little while an election is under way; fails once `deadline` has passed.
    async fn wait_for_leader(&self, deadline: Instant, what: &'static str) -> Result<(), ServiceError> {
        if Instant::now() + LEADER_POLL >= deadline {
            return Err(self.no_quorum(what));
        }
        tokio::time::sleep(LEADER_POLL).await;
        Ok(())
    }

    /// Waits until a linearizable read may be served from this node's state machine.
    pub(super) async fn read_barrier(&self) -> Result<(), ServiceError> {
        let deadline = Instant::now() + self.write_timeout;
        let index = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = tokio::time::timeout(remaining, self.read_index())
                .await
                .map_err(|_| self.no_quorum("the read index was"))?;
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
                Err(e) => return Err(ServiceError::ReadIndex { node: self.me, source: Box::new(e) }),
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        self.raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|source| ServiceError::NotApplied { node: self.me, index, source })?;
        Ok(())
    }

    /// The leader's read index (only the leader can answer).
    pub(super) async fn read_index(&self) -> Result<u64, RaftError<TypeConfig, LinearizableReadError<TypeConfig>>> {
        let linearizer = self.raft.get_read_linearizer(ReadPolicy::ReadIndex).await?;
        Ok(linearizer.read_log_id().index())
    }
}
