//! The leader keeps the voter set bounded and spread over sites ([`crate::voters`]). Every
//! node runs [`keep_voters_balanced`]; while the node leads, it looks at the membership every
//! second (and at once when a member joins or the operator's policy changes), finds which
//! members answer, asks [`choose_voters`] for the voters there should be, and changes the
//! membership when that leaves the cluster no less able to survive failures.
//!
//! A change is openraft's joint consensus with `retain`: the joint configuration (old and new
//! voters both) commits first, then the new one, and a demoted voter stays a learner. A
//! precondition on the membership's log id keeps a change from overwriting one an operator
//! made in between. A new cluster starts the same way: its first voters are chosen, and its
//! other members join as learners ([`Shared::initialize_bounded`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::raft::Precondition;
use openraft::{ChangeMembers, Instant as _, RaftMetrics, ServerState};

use super::error::ServiceError;
use super::quorum::Shared;
use crate::types::{Member, NodeId, TypeConfig, VoterPolicy};
use crate::voters::{MIN_VOTERS, choose_voters};

/// How often the leader looks at the voter set.
pub(crate) const LOOK_EVERY: Duration = Duration::from_secs(1);

/// A voter change the leader made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VoterChange {
    pub(crate) from: BTreeSet<NodeId>,
    pub(crate) to: BTreeSet<NodeId>,
}

/// How many more failures `voters` survive while the members outside `healthy` are down (a
/// majority of the voters must answer); negative: no quorum now.
fn tolerance(voters: &BTreeSet<NodeId>, healthy: &BTreeSet<NodeId>) -> i64 {
    let down = voters.difference(healthy).count() as i64;
    (voters.len() as i64 - 1) / 2 - down
}

/// Whether moving the voters from `current` to `chosen` is worth a membership change: it
/// survives more failures; or as many, with no fewer voters (a better spread, a pin or an
/// exclusion honoured); or the operator lowered the target. A change that would leave fewer
/// voters without surviving more (three voters, one down, no learner: one voter) is not made.
pub(crate) fn worth_changing(
    current: &BTreeSet<NodeId>,
    chosen: &BTreeSet<NodeId>,
    healthy: &BTreeSet<NodeId>,
    policy: &VoterPolicy,
) -> bool {
    if chosen.is_empty() || chosen == current {
        return false;
    }
    let (now, then) = (tolerance(current, healthy), tolerance(chosen, healthy));
    then > now
        || (then == now && chosen.len() >= current.len())
        || (current.len() > policy.target && chosen.len() == policy.target)
}

/// The first voters of a new cluster of `members` (the initialising node `me` among them),
/// and the rest, its first learners.
pub(crate) fn first_voters(
    members: &BTreeMap<NodeId, Member>,
    me: NodeId,
) -> (BTreeMap<NodeId, Member>, BTreeMap<NodeId, Member>) {
    let all: BTreeSet<NodeId> = members.keys().copied().collect();
    // This node counts as a voter now, so that its site keeps it (openraft initialises only
    // from a member of the first voters).
    let voters = choose_voters(members, &BTreeSet::from([me]), &all, &VoterPolicy::default(), None);
    members.iter().map(|(id, m)| (*id, m.clone())).partition(|(id, _)| voters.contains(id))
}

/// What the voter rule reads, as the leader sees it now.
struct VoterInputs {
    members: BTreeMap<NodeId, Member>,
    current: BTreeSet<NodeId>,
    /// The members heard from within `voter_down_after`, and the leader itself.
    healthy: BTreeSet<NodeId>,
    policy: VoterPolicy,
}

impl Shared {
    /// The voter rule's inputs from `metrics`, with member `without` left out (one being
    /// removed).
    fn voter_inputs(&self, metrics: &RaftMetrics<TypeConfig>, without: Option<NodeId>) -> VoterInputs {
        let membership = metrics.membership_config.membership();
        let kept = |id: &NodeId| Some(*id) != without;
        let mut healthy: BTreeSet<NodeId> = metrics
            .heartbeat
            .iter()
            .flatten()
            .filter(|(id, at)| kept(id) && at.as_ref().is_some_and(|at| at.elapsed() < self.voter_down_after))
            .map(|(id, _)| *id)
            .collect();
        healthy.insert(self.me);
        VoterInputs {
            members: membership.nodes().filter(|(id, _)| kept(id)).map(|(id, m)| (*id, m.clone())).collect(),
            current: membership.voter_ids().filter(kept).collect(),
            healthy,
            policy: self.view.with(|a| a.registry.voter_policy.clone()),
        }
    }

    /// Makes `voters` the voters (joint consensus; a demoted voter stays a learner), if the
    /// membership is still the one at `unchanged`, when given.
    async fn replace_all_voters(
        &self,
        voters: BTreeSet<NodeId>,
        unchanged: Option<Precondition<TypeConfig>>,
    ) -> Result<(), ServiceError> {
        let change = ChangeMembers::ReplaceAllVoters(voters);
        tokio::time::timeout(self.write_timeout, self.raft.change_membership_if(change, true, unchanged))
            .await
            .map_err(|_| self.no_quorum("the voter change was"))?
            .map_err(|e| ServiceError::MembershipChange(Box::new(e)))?;
        Ok(())
    }

    /// One look at the voter set, on the leader: the change made, if any. Nothing while a
    /// membership change is under way (a joint configuration).
    pub(crate) async fn rebalance_voters(&self) -> Result<Option<VoterChange>, ServiceError> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        if metrics.state != ServerState::Leader || metrics.membership_config.membership().get_joint_config().len() > 1 {
            return Ok(None);
        }
        let VoterInputs { members, current, healthy, policy } = self.voter_inputs(&metrics, None);
        // Among its site's members, the leader first: demoting it would cost an election.
        let chosen = choose_voters(&members, &current, &healthy, &policy, Some(self.me));
        if !worth_changing(&current, &chosen, &healthy, &policy) {
            return Ok(None);
        }
        let unchanged =
            Precondition::LastMembershipLogId { last_membership_log_id: *metrics.membership_config.log_id() };
        self.replace_all_voters(chosen.clone(), Some(unchanged)).await?;
        Ok(Some(VoterChange { from: current, to: chosen }))
    }

    /// The voters left once voter `node` is removed, changed to them (joint consensus; a
    /// healthy learner replaces it where one is free). Refused when fewer than three voters
    /// (or fewer than the members left, if fewer) would remain.
    pub(crate) async fn replace_voter(&self, node: NodeId) -> Result<BTreeSet<NodeId>, ServiceError> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let VoterInputs { members, current, healthy, policy } = self.voter_inputs(&metrics, Some(node));
        let chosen = choose_voters(&members, &current, &healthy, &policy, Some(self.me));
        let needed = MIN_VOTERS.min(members.len());
        if chosen.len() < needed {
            return Err(ServiceError::TooFewVoters { node, left: chosen.len(), needed });
        }
        self.replace_all_voters(chosen.clone(), None).await?;
        Ok(chosen)
    }

    /// Initialises a new cluster: the first voters as openraft's initial membership, then, as
    /// soon as this node leads (the first leader is the initialising node: the others know no
    /// membership yet), the other members as learners, retrying until `deadline`.
    pub(crate) async fn initialize_bounded(
        &self,
        members: &BTreeMap<NodeId, Member>,
        deadline: Instant,
    ) -> Result<(), ServiceError> {
        let (voters, learners) = first_voters(members, self.me);
        self.raft
            .initialize(voters)
            .await
            .map_err(|e| ServiceError::Initialize { node: self.me, source: Box::new(e) })?;
        if learners.is_empty() {
            return Ok(());
        }
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let added = tokio::time::timeout(
                remaining,
                self.raft.change_membership(ChangeMembers::AddNodes(learners.clone()), false),
            )
            .await
            .map_err(|_| self.no_quorum("adding the first learners was"))?;
            match added {
                Ok(_) => return Ok(()),
                // No leader yet, or the first membership not committed yet: wait for the
                // first election (this node's).
                Err(e) if awaits_election(&e, self.me) || membership_change_in_progress(&e) => {
                    if Instant::now() >= deadline {
                        return Err(self.no_quorum("adding the first learners was"));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(ServiceError::MembershipChange(Box::new(e))),
            }
        }
    }
}

/// Whether `e` says no other leader is known than `me` (an election under way).
fn awaits_election(e: &RaftError<TypeConfig, ClientWriteError<TypeConfig>>, me: NodeId) -> bool {
    matches!(e, RaftError::APIError(ClientWriteError::ForwardToLeader(hint))
        if hint.leader_id.is_none() || hint.leader_id == Some(me))
}

/// Whether `e` refuses a membership change because another is being committed.
pub(crate) fn membership_change_in_progress(e: &RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> bool {
    matches!(e, RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(_))))
}

/// Every node's voter keeper: while this node leads (and has for `voter_down_after`, so that
/// every member had time to answer it), one [`Shared::rebalance_voters`] a second, or at once
/// when asked (`rebalance_now`). Ends when Raft shuts down.
pub(crate) async fn keep_voters_balanced(shared: Shared) {
    let mut leading: Option<(u64, Instant)> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(LOOK_EVERY) => {}
            () = shared.rebalance_now.notified() => {}
        }
        let (state, term) = {
            let metrics = shared.raft.metrics().borrow_watched().clone();
            (metrics.state, metrics.current_term)
        };
        match (state, leading) {
            (ServerState::Shutdown, _) => return,
            (ServerState::Leader, Some((t, since))) if t == term => {
                if since.elapsed() < shared.voter_down_after {
                    continue;
                }
            }
            (ServerState::Leader, _) => {
                leading = Some((term, Instant::now()));
                continue;
            }
            _ => {
                leading = None;
                continue;
            }
        }
        match shared.rebalance_voters().await {
            Ok(Some(change)) => tracing::info!(
                target: "tessera::audit",
                node = shared.me,
                from = ?change.from,
                to = ?change.to,
                "rebalanced the voters"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(node = shared.me, error = %e, "could not rebalance the voters"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[NodeId]) -> BTreeSet<NodeId> {
        list.iter().copied().collect()
    }

    #[test]
    fn a_change_is_made_only_when_it_leaves_the_cluster_no_weaker() {
        let policy = VoterPolicy::default();
        let all = ids(&[1, 2, 3, 4, 5, 6]);
        // Growth: one voter → three.
        assert!(worth_changing(&ids(&[1]), &ids(&[1, 2, 3]), &all, &policy));
        // A down voter replaced by a healthy learner.
        let healthy = ids(&[1, 2, 4]);
        assert!(worth_changing(&ids(&[1, 2, 3]), &ids(&[1, 2, 4]), &healthy, &policy));
        // The same tolerance, better spread (same size).
        assert!(worth_changing(&ids(&[1, 2, 3]), &ids(&[1, 2, 5]), &all, &policy));
        // Three voters, one down, nobody to promote: one voter would survive nothing more.
        assert!(!worth_changing(&ids(&[1, 2, 3]), &ids(&[1]), &ids(&[1, 2]), &policy));
        // The operator lowered the target: five healthy voters → three.
        let three = VoterPolicy { target: 3, ..VoterPolicy::default() };
        assert!(worth_changing(&ids(&[1, 2, 3, 4, 5]), &ids(&[1, 2, 3]), &all, &three));
        assert!(!worth_changing(&ids(&[1, 2, 3, 4, 5]), &ids(&[1, 2, 3]), &all, &policy));
        assert!(!worth_changing(&ids(&[1, 2, 3]), &ids(&[1, 2, 3]), &all, &policy));
    }

    #[test]
    fn a_new_cluster_starts_with_a_bounded_set_that_holds_the_initialising_node() {
        let members: BTreeMap<NodeId, Member> = (1..=30)
            .map(|id| (id, Member { site: format!("site-{}", (id - 1) / 3), addr: format!("10.0.0.{id}:7070") }))
            .collect();
        // Node 30 initialises: its site (site-9) is among the five.
        let (voters, learners) = first_voters(&members, 30);
        assert_eq!((voters.len(), learners.len()), (5, 25));
        assert!(voters.contains_key(&30), "{voters:?}");
        let sites: BTreeSet<&str> = voters.values().map(|m| m.site.as_str()).collect();
        assert_eq!(sites.len(), 5);
        let three: BTreeMap<NodeId, Member> = members.into_iter().take(3).collect();
        assert_eq!(first_voters(&three, 1).0.len(), 3, "three members of one site all vote");
    }
}
