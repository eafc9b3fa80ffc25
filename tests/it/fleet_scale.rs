//! The fleet simulation's short version (issue 27; `benches/fleet_scale.rs` runs 10, 30 and 100
//! sites and measures): 10 sites whose links deliver every byte 50 ms late answer the fleet
//! aggregate whole, its result naming every site; and 30 control-plane members over 10 sites
//! behind the same links keep 5 voters and commit writes through the delayed links.

use std::time::Duration;

use datafusion::arrow::array::{Array as _, Int64Array};
use tessera_suite::fleet_sim::{FLEET_AGGREGATE, RaftFleet, SqlFleet, admin_client, fleet_query, timed_write};

#[test]
fn ten_sites_behind_wan_links_answer_the_fleet_aggregate_and_commit_writes() {
    let _one = crate::fault::node_processes();
    let one_way = Duration::from_millis(50);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (motors, windows) = (1000, 2);
    let fleet = SqlFleet::start(&runtime, 10, motors, windows, one_way, Duration::from_secs(30)).expect("sites");
    runtime.block_on(async {
        let mut client = fleet.client(3).await.expect("a client at site 3");
        let answer = fleet_query(&mut client, FLEET_AGGREGATE).await.expect("the fleet aggregate");
        let mut answered = answer.answered.clone();
        answered.sort();
        let all: Vec<String> = (0..10).map(|s| format!("site-{s:03}")).collect();
        assert_eq!(answered, all, "every site answered");
        let windows_counted =
            answer.batches[0].column(1).as_any().downcast_ref::<Int64Array>().expect("a count").value(0);
        assert_eq!(windows_counted, 10 * motors as i64 * windows as i64, "every window");
        // Through links 50 ms each way, a fragment takes at least a round trip.
        assert!(answer.took >= 2 * one_way, "{:?}", answer.took);
    });

    let members = RaftFleet::start(&runtime, 30, 10, one_way).expect("members");
    let leader = members.leader(Duration::from_secs(60)).expect("a leader");
    assert_eq!(members.nodes[leader].status().voters, 5, "five voters, 25 learners");
    let addr = members.nodes[leader].addr();
    runtime.block_on(async {
        let mut admin = admin_client(addr).await.expect("admin");
        for i in 0..5 {
            let took = timed_write(&mut admin, &format!("q{i}")).await.expect("a write commits");
            assert!(took >= 2 * one_way, "a majority of the voters answered through their links: {took:?}");
        }
        // A learner at another site has applied them (a local read there).
        let learner =
            members.nodes.iter().position(|n| n.status().voters == 5 && !n.status().is_leader).expect("a member");
        let mut other = admin_client(members.nodes[learner].addr()).await.expect("admin");
        let listed = other.list_queries(tessera_proto::raft::ListQueriesRequest {}).await.expect("list").into_inner();
        assert_eq!(listed.queries.len(), 5, "{listed:?}");
    });
    members.shutdown(&runtime).expect("members stop");
    runtime.shutdown_timeout(Duration::from_secs(5));
}
