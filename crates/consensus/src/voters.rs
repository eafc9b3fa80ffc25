//! Which members vote: a bounded voter set spread over sites. Raft needs a majority of its
//! voters for every write, so a group whose every member votes (3 pods × 30 plants = 90
//! voters) waits for 46 acknowledgements across WAN links on each write. The control plane
//! instead keeps a few voters (3–7, an odd number), at most one per site until every site
//! with a healthy member has one, and every other member a learner.
//!
//! [`choose_voters`] is the pure rule: given the members with their sites, the voters now,
//! which members are healthy and the operator's policy, the voters there should be. It keeps
//! healthy voters where it can (each change is a joint-consensus membership change), replaces
//! voters that are unhealthy or whose site already has one, and never chooses an unhealthy
//! member. The leader applies its answer; this module does no I/O.

use std::collections::{BTreeMap, BTreeSet};

pub use crate::types::{MAX_VOTERS, MIN_VOTERS, VoterPolicy};
use crate::types::{Member, NodeId};

/// The voters there should be: up to `policy.target` healthy members (odd: an even count
/// tolerates no more failures than one fewer), the healthy pinned ones first, then one per
/// site (sites with a healthy voter now keep it), then more per site, spreading them.
/// Among a site's members, a voter now comes first, `prefer` (the leader: demoting it would
/// cost an election) before the other voters, then the lowest id.
pub fn choose_voters(
    members: &BTreeMap<NodeId, Member>,
    current: &BTreeSet<NodeId>,
    healthy: &BTreeSet<NodeId>,
    policy: &VoterPolicy,
    prefer: Option<NodeId>,
) -> BTreeSet<NodeId> {
    let eligible: Vec<NodeId> =
        members.keys().copied().filter(|id| healthy.contains(id) && !policy.excluded.contains(id)).collect();
    let mut target = policy.target.min(eligible.len());
    if target > 1 && target.is_multiple_of(2) {
        target -= 1;
    }
    let mut chosen: BTreeSet<NodeId> = policy.pinned.iter().copied().filter(|id| eligible.contains(id)).collect();
    // Each site's eligible members, voters now first, then by id.
    let mut by_site: BTreeMap<&str, Vec<NodeId>> = BTreeMap::new();
    for id in &eligible {
        by_site.entry(members[id].site.as_str()).or_default().push(*id);
    }
    for ids in by_site.values_mut() {
        ids.sort_by_key(|id| (!current.contains(id), Some(*id) != prefer, *id));
    }
    let voters_at =
        |chosen: &BTreeSet<NodeId>, site: &str| chosen.iter().filter(|id| members[*id].site == site).count();
    // Rounds: in round r every site gets its (r+1)-th voter, sites with a voter now first
    // (so that a healthy set stays as it is), until the target is reached.
    let mut round = 0;
    while chosen.len() < target {
        let mut sites: Vec<&str> = by_site.keys().copied().filter(|s| voters_at(&chosen, s) <= round).collect();
        if sites.is_empty() {
            round += 1;
            continue;
        }
        sites.sort_by_key(|s| (!by_site[s].iter().any(|id| current.contains(id)), *s));
        let mut added = false;
        for site in sites {
            if chosen.len() >= target {
                break;
            }
            if let Some(id) = by_site[site].iter().find(|id| !chosen.contains(id)) {
                chosen.insert(*id);
                added = true;
            }
        }
        if !added && by_site.keys().all(|s| by_site[s].iter().all(|id| chosen.contains(id))) {
            break; // every eligible member votes
        }
        round += 1;
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sites` sites of `per_site` members each: ids site × 10 + 1.., sites `site-00`….
    fn fleet(sites: u64, per_site: u64) -> BTreeMap<NodeId, Member> {
        (0..sites)
            .flat_map(|s| {
                (1..=per_site).map(move |i| {
                    (s * 10 + i, Member { site: format!("site-{s:02}"), addr: format!("10.0.{s}.{i}:7070") })
                })
            })
            .collect()
    }

    fn sites_of(members: &BTreeMap<NodeId, Member>, voters: &BTreeSet<NodeId>) -> BTreeSet<String> {
        voters.iter().map(|id| members[id].site.clone()).collect()
    }

    #[test]
    fn thirty_members_over_ten_sites_get_five_voters_on_five_sites() {
        let members = fleet(10, 3);
        let all: BTreeSet<NodeId> = members.keys().copied().collect();
        let voters = choose_voters(&members, &BTreeSet::new(), &all, &VoterPolicy::default(), None);
        assert_eq!(voters.len(), 5);
        assert_eq!(sites_of(&members, &voters).len(), 5, "one voter per site: {voters:?}");
        // Asked again with those voters, nothing changes.
        assert_eq!(choose_voters(&members, &voters, &all, &VoterPolicy::default(), None), voters);
    }

    #[test]
    fn losing_two_voters_sites_promotes_members_elsewhere_and_keeps_the_healthy_voters() {
        let members = fleet(10, 3);
        let all: BTreeSet<NodeId> = members.keys().copied().collect();
        let policy = VoterPolicy::default();
        let before = choose_voters(&members, &BTreeSet::new(), &all, &policy, None);
        let lost: BTreeSet<String> = sites_of(&members, &before).into_iter().take(2).collect();
        let healthy: BTreeSet<NodeId> = all.iter().copied().filter(|id| !lost.contains(&members[id].site)).collect();
        let after = choose_voters(&members, &before, &healthy, &policy, None);
        assert_eq!(after.len(), 5);
        assert_eq!(sites_of(&members, &after).len(), 5);
        assert!(sites_of(&members, &after).is_disjoint(&lost), "no voter on a lost site: {after:?}");
        let kept: BTreeSet<NodeId> = before.iter().copied().filter(|id| healthy.contains(id)).collect();
        assert!(kept.is_subset(&after), "the three healthy voters stay: {before:?} → {after:?}");
    }

    #[test]
    fn fewer_sites_than_voters_spread_them_and_small_groups_stay_odd() {
        let members = fleet(2, 3);
        let all: BTreeSet<NodeId> = members.keys().copied().collect();
        let voters = choose_voters(&members, &BTreeSet::new(), &all, &VoterPolicy::default(), None);
        assert_eq!(voters.len(), 5);
        let per_site: Vec<usize> =
            ["site-00", "site-01"].iter().map(|s| voters.iter().filter(|id| members[*id].site == *s).count()).collect();
        assert_eq!(per_site.iter().sum::<usize>(), 5);
        assert!(per_site.iter().all(|n| *n >= 2), "spread over both sites: {per_site:?}");
        // Two healthy members: one voter (two would tolerate no more failures than one).
        let two: BTreeSet<NodeId> = [1, 11].into();
        assert_eq!(choose_voters(&members, &BTreeSet::new(), &two, &VoterPolicy::default(), None).len(), 1);
        let one: BTreeSet<NodeId> = [1].into();
        assert_eq!(choose_voters(&members, &BTreeSet::new(), &one, &VoterPolicy::default(), None), one);
    }

    #[test]
    fn a_site_with_a_voter_too_many_keeps_the_leader() {
        let members = fleet(3, 2); // sites 00, 01, 02: ids 1, 2 / 11, 12 / 21, 22
        let all: BTreeSet<NodeId> = members.keys().copied().collect();
        let policy = VoterPolicy { target: 3, ..Default::default() };
        let now: BTreeSet<NodeId> = [1, 2, 11].into();
        assert_eq!(choose_voters(&members, &now, &all, &policy, None), [1, 11, 21].into());
        assert_eq!(choose_voters(&members, &now, &all, &policy, Some(2)), [2, 11, 21].into());
    }

    #[test]
    fn the_operator_pins_and_excludes_members() {
        let members = fleet(10, 3);
        let all: BTreeSet<NodeId> = members.keys().copied().collect();
        let policy = VoterPolicy {
            target: 3,
            pinned: [92, 93].into(),    // two members of site-09
            excluded: [1, 2, 3].into(), // site-00 never votes
        };
        policy.validate().expect("valid");
        let voters = choose_voters(&members, &BTreeSet::new(), &all, &policy, None);
        assert_eq!(voters.len(), 3);
        assert!(voters.contains(&92) && voters.contains(&93), "{voters:?}");
        assert!(voters.iter().all(|id| members[id].site != "site-00"), "{voters:?}");
        // A pinned member that is down does not vote.
        let healthy: BTreeSet<NodeId> = all.iter().copied().filter(|id| *id != 92).collect();
        assert!(!choose_voters(&members, &voters, &healthy, &policy, None).contains(&92));
        assert!(VoterPolicy { target: 4, ..Default::default() }.validate().unwrap_err().contains("odd"));
        let both = VoterPolicy { pinned: [1].into(), excluded: [1].into(), ..Default::default() };
        assert!(both.validate().unwrap_err().contains("both pinned and excluded"));
    }
}
