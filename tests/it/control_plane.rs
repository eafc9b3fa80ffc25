//! The control plane as separate processes on loopback: three nodes elect a leader, replicate,
//! survive the leader's SIGKILL, let a killed node catch up through a snapshot after its log
//! was purged, and refuse writes (and linearizable reads; a local read still answers) on the
//! minority side of a partition.
//!
//! Partitions use the nodes' fault-injecting transport (`cluster partition`, enabled by
//! `--fault-injection`): the cut-off nodes neither send nor answer each other's Raft RPCs or
//! forwarded admin calls. Network namespaces would need a veth pair per node pair and root in
//! each namespace to move a running process; the transport switch cuts exactly the same
//! traffic and can be flipped while the nodes run.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tessera_proto::raft as pb;

use crate::support::cluster::{
    self as control_cluster, Launcher, NodeProc, leader, query_names, register, start_cluster,
};

fn launcher() -> Launcher {
    Launcher {
        prefix: ["--exact", "control_plane::control_node_process", "--ignored", "--nocapture", "--test-threads=1"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    }
}

/// A control-plane node process of these tests; does nothing unless started by one of them.
#[test]
#[ignore = "a node process the control-plane tests start themselves"]
fn control_node_process() {
    control_cluster::run_node_if_asked();
}

/// Small snapshots, so that a few dozen writes purge the log; quick elections.
const TUNING: &[&str] = &[
    "--snapshot-every-entries",
    "20",
    "--keep-entries-after-snapshot",
    "0",
    "--heartbeat",
    "100ms",
    "--election-timeout-min",
    "300ms",
    "--election-timeout-max",
    "500ms",
    "--write-timeout",
    "3s",
    "--voter-down-after",
    "2s",
];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

#[test]
fn a_killed_leader_is_replaced_and_a_killed_node_catches_up_through_a_snapshot() {
    let _one = crate::fault::node_processes();
    let work = tempfile::tempdir().expect("work dir");
    runtime().block_on(async {
        let mut nodes = start_cluster(&launcher(), 3, work.path(), TUNING).await;
        let (first, status) = leader(&nodes, Duration::from_secs(10)).await.expect("a leader after init");
        println!("control plane: node {} leads term {}", status.node_id, status.term);

        // Acknowledged writes, through every node (followers forward to the leader).
        let mut acked = BTreeSet::new();
        for i in 0..30 {
            let name = format!("before-{i}");
            register(&nodes[i % 3], &name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
            acked.insert(name);
        }

        // SIGKILL the leader; time until a survivor leads and until a write commits.
        let killed_last_index = nodes[first].status().await.and_then(|s| s.last_log_index).expect("leader's log");
        let killed_at = Instant::now();
        nodes[first].kill();
        let survivors: Vec<usize> = (0..3).filter(|i| *i != first).collect();
        let (new, _) = loop {
            if let Some(found) = leader(&nodes, Duration::from_millis(50)).await {
                break found;
            }
            assert!(killed_at.elapsed() < Duration::from_secs(10), "no new leader within 10 s");
        };
        let elected = killed_at.elapsed();
        let mut first_write = None;
        for i in 0..60 {
            let name = format!("after-{i}");
            let via = &nodes[survivors[i % 2]];
            // A refused write is not acknowledged; it is tried again (a busy machine can make
            // one miss the write timeout), and counts only once it is.
            for attempt in 1.. {
                match register(via, &name).await {
                    Ok(_) => {
                        first_write.get_or_insert(killed_at.elapsed());
                        acked.insert(name);
                        break;
                    }
                    Err(e) if first_write.is_none() || attempt < 3 => println!("control plane: write refused, tried again: {}", e.message()),
                    Err(e) => panic!("{name} via node {}: {e}", via.id),
                }
                assert!(killed_at.elapsed() < Duration::from_secs(60), "no write committed within 60 s of the kill");
            }
        }
        println!(
            "control plane: leader {} killed; node {} elected after {} ms; first write committed after {} ms",
            first + 1,
            new + 1,
            elected.as_millis(),
            first_write.expect("writes after failover").as_millis()
        );

        // Every acknowledged write is there, read linearizably through each survivor.
        for i in &survivors {
            let names: BTreeSet<String> = query_names(&nodes[*i]).await.expect("list").into_iter().collect();
            let missing: Vec<_> = acked.difference(&names).collect();
            assert!(missing.is_empty(), "node {} lacks acknowledged writes {missing:?}", i + 1);
        }

        // The leader has purged its log past what the killed node holds: the killed node can
        // only catch up from a snapshot.
        let lead = nodes[new].status().await.expect("leader status");
        let purged = lead.purged_index.expect("the leader purged its log");
        assert!(purged > killed_last_index, "leader purged up to {purged}, the killed node has up to {killed_last_index}");
        nodes[first].restart();
        let target = lead.last_log_index.expect("leader log");
        let caught_up = Instant::now();
        loop {
            let s = nodes[first].status().await;
            if s.as_ref().and_then(|s| s.applied_index).is_some_and(|a| a >= target) {
                let s = s.expect("status");
                assert!(s.snapshot_index.is_some_and(|i| i > killed_last_index), "caught up without a snapshot? {s:?}");
                break;
            }
            assert!(caught_up.elapsed() < Duration::from_secs(20), "node {} did not catch up:\n{}", first + 1, nodes[first].output());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "control plane: node {} restarted, caught up to index {target} through a snapshot (leader purged up to {purged}) in {} ms",
            first + 1,
            caught_up.elapsed().as_millis()
        );
        let names: BTreeSet<String> = query_names(&nodes[first]).await.expect("list").into_iter().collect();
        assert_eq!(names, acked, "the restarted node reads every acknowledged write");

        // The audit log says who did what.
        let audit = nodes[first].client().await.list_audit(pb::ListAuditRequest { from_index: 0, limit: 1000 }).await.expect("audit");
        let entries = audit.into_inner().entries;
        assert!(entries.iter().any(|e| e.actor == "harness" && e.action == "register query after-59"), "{entries:?}");
        assert!(entries.iter().any(|e| e.action.starts_with("register node 3 at site-3")), "{entries:?}");

        for n in &mut nodes {
            n.kill();
        }
        assert_log_holds_only_metadata(&nodes).await;
    });
}

#[test]
fn the_minority_side_of_a_partition_refuses_writes() {
    let _one = crate::fault::node_processes();
    let work = tempfile::tempdir().expect("work dir");
    let mut tuning = TUNING.to_vec();
    tuning.push("--fault-injection");
    runtime().block_on(async {
        let nodes = start_cluster(&launcher(), 3, work.path(), &tuning).await;
        let (old, _) = leader(&nodes, Duration::from_secs(10)).await.expect("a leader");
        register(&nodes[old], "before").await.expect("write before the partition");

        // Cut the leader off from both others, both ways.
        let others: Vec<u64> = nodes.iter().filter(|n| n.id != nodes[old].id).map(|n| n.id).collect();
        let cut = |n: &NodeProc, blocked: Vec<u64>| {
            let n = n.addr.clone();
            async move {
                let node = tonic::transport::Endpoint::from_shared(format!("http://{n}")).expect("uri").connect_lazy();
                pb::cluster_admin_client::ClusterAdminClient::new(node)
                    .set_partition(pb::SetPartitionRequest { blocked })
                    .await
                    .expect("partition")
            }
        };
        cut(&nodes[old], others.clone()).await;
        for n in nodes.iter().filter(|n| n.id != nodes[old].id) {
            cut(n, vec![nodes[old].id]).await;
        }
        let started = Instant::now();

        // The minority (the old leader alone) cannot commit.
        let refused = register(&nodes[old], "minority").await.expect_err("the minority side accepted a write");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        println!(
            "control plane: minority node {} refused the write after {} ms: {}",
            old + 1,
            started.elapsed().as_millis(),
            refused.message()
        );

        // A linearizable read there fails too; a local read (said per call) answers from the
        // node's own state, saying how far it had applied.
        let mut client = nodes[old].client().await;
        let refused =
            client.list_queries(pb::ListQueriesRequest {}).await.expect_err("a linearizable read on the minority side");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        let mut local = tonic::Request::new(pb::ListQueriesRequest {});
        local.metadata_mut().insert(tessera_consensus::READ_HEADER, "local".parse().expect("header"));
        let reply = client.list_queries(local).await.expect("a local read on the minority side");
        let applied = reply
            .metadata()
            .get(tessera_consensus::APPLIED_INDEX_HEADER)
            .expect("the applied index")
            .to_str()
            .expect("text");
        assert!(applied.parse::<u64>().expect("a number") > 0, "{applied}");
        assert!(
            reply.into_inner().queries.iter().any(|q| q.name == "before"),
            "the write before the partition is there"
        );

        // The majority elects a leader among itself and goes on.
        let majority: Vec<&NodeProc> = nodes.iter().filter(|n| n.id != nodes[old].id).collect();
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if register(majority[0], "majority").await.is_ok() {
                break;
            }
            assert!(Instant::now() < until, "the majority did not accept a write within 10 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("control plane: majority accepted writes {} ms after the partition", started.elapsed().as_millis());

        // Heal: the old leader rejoins as a follower; its uncommitted write is gone.
        for n in &nodes {
            cut(n, Vec::new()).await;
        }
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let names = query_names(&nodes[old]).await;
            if let Ok(names) = names {
                assert!(names.contains(&"majority".to_string()) && names.contains(&"before".to_string()), "{names:?}");
                assert!(
                    !names.contains(&"minority".to_string()),
                    "a write refused on the minority side was applied: {names:?}"
                );
                break;
            }
            assert!(Instant::now() < until, "the old leader did not rejoin within 10 s:\n{}", nodes[old].output());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// Opens each stopped node's Raft log and checks every entry: a registry request (or Raft's own
/// blank and membership entries) within the request bounds, nothing else. With `Command`
/// having no variant that can hold a reading, this is the invariant "raw telemetry never
/// enters the Raft log" checked on real logs.
pub(crate) async fn assert_log_holds_only_metadata(nodes: &[NodeProc]) {
    use openraft::RaftLogReader as _;
    use openraft::storage::RaftLogStorage as _;
    for node in nodes {
        let mut log =
            tessera_consensus::log_store::LogStore::open(&node.dir().join("raft-log.redb")).expect("the log opens");
        let state = log.get_log_state().await.expect("log state");
        let entries = log.try_get_log_entries(..).await.expect("entries");
        for entry in &entries {
            if let openraft::EntryPayload::Normal(request) = &entry.payload {
                request.check().unwrap_or_else(|e| panic!("node {}: entry {}: {e}", node.id, entry.log_id));
            }
        }
        println!(
            "control plane: node {} log holds {} entries (purged up to {:?}), all registry metadata",
            node.id,
            entries.len(),
            state.last_purged_log_id.map(|id| id.index())
        );
    }
}

/// Runs `tessera <args>` (a control-plane subcommand) in this process, as the binary would.
fn tessera(args: &[&str]) -> anyhow::Result<()> {
    tessera_cli::run_in_process(
        std::iter::once("tessera").chain(args.iter().copied()),
        &std::sync::atomic::AtomicBool::new(false),
    )
}

#[test]
fn the_cli_grows_and_shrinks_the_cluster_and_edits_the_registry() {
    let _one = crate::fault::node_processes();
    let work = tempfile::tempdir().expect("work dir");
    let nodes: Vec<NodeProc> = (1..=4)
        .map(|id| NodeProc::start(&launcher(), id, &format!("site-{}", id.min(3)), work.path(), TUNING))
        .collect();
    let at = |i: usize| nodes[i].addr.clone();
    let (a1, a2, a3) = (at(0), at(1), at(2));
    tessera(&[
        "cluster",
        "init",
        "--at",
        &a1,
        "--node",
        &nodes[0].spec(),
        "--node",
        &nodes[1].spec(),
        "--node",
        &nodes[2].spec(),
    ])
    .expect("init");

    // Registry edits through different nodes; refusals and bad input are errors that say why.
    tessera(&["cluster", "add-site", "--at", &a2, "site-1", "Plant One"]).expect("add-site");
    tessera(&["cluster", "assign-motors", "--at", &a3, "site-1", "M1", "M2", "M3"]).expect("assign");
    tessera(&["cluster", "set-policy", "--at", &a1, "core", "transmission", "deny"]).expect("policy");
    let hot = "CREATE CONTINUOUS QUERY hot AS SELECT motor_id, window_start, max(temperature_c) AS peak \
               FROM TUMBLE(telemetry, ts, INTERVAL '10 seconds') GROUP BY motor_id, window_start";
    tessera(&["query", "register", "--at", &a2, "--actor", "alice", "hot", hot]).expect("register");
    tessera(&["query", "list", "--at", &a3]).expect("list");
    let err = tessera(&["query", "register", "--at", &a2, "cold", hot]).map_err(|e| format!("{e:#}")).unwrap_err();
    assert!(err.contains("the statement creates 'hot'"), "{err}");
    let err =
        tessera(&["query", "register", "--at", &a2, "cold", "SELECT 1"]).map_err(|e| format!("{e:#}")).unwrap_err();
    assert!(err.starts_with("query cold:"), "{err}");

    // A node with `[control] admin` runs the registered query besides its own rules, and skips
    // (and reports) a registration its engine cannot run.
    runtime().block_on(register(&nodes[0], "broken")).expect("a raw registration, bypassing the CLI's check");
    let registered = runtime()
        .block_on(tessera_node::control::registered_queries(
            &a3,
            &tessera_tls::ClientTls::Plain,
            Duration::from_secs(10),
        ))
        .expect("registered queries");
    let mut engine = tessera_node::detect::build_engine(&Default::default()).expect("the default rules");
    let own = engine.queries().count();
    let refused = tessera_node::control::add_registered_queries(&mut engine, &registered).expect("added");
    assert_eq!(engine.queries().count(), own + 1);
    assert!(engine.queries().any(|q| q.name == "hot"));
    assert_eq!(refused.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["broken"], "{refused:?}");
    let err = tessera(&["cluster", "set-policy", "--at", &a1, "secret", "use", "deny"])
        .map_err(|e| format!("{e:#}"))
        .unwrap_err();
    assert!(err.contains("grade: unknown data grade 'secret'"), "{err}");
    let err = tessera(&["query", "drop", "--at", &a1, "cold"]).map_err(|e| format!("{e:#}")).unwrap_err();
    assert!(err.contains("refused by the registry") && err.contains("no query named 'cold'"), "{err}");
    let err =
        tessera(&["cluster", "assign-motors", "--at", &a1, "site-9", "M4"]).map_err(|e| format!("{e:#}")).unwrap_err();
    assert!(err.contains("site site-9 does not exist"), "{err}");
    let err = tessera(&["cluster", "add-node", "--at", &a1, "4-site-1"]).map_err(|e| format!("{e:#}")).unwrap_err();
    assert!(err.contains("ID=SITE@HOST:PORT"), "{err}");

    // Node 4 joins as a learner: three voters on three sites need no fourth. Pinned, it takes
    // site-3's vote from node 3 (joint consensus; node 3 stays a learner). Removed, node 3
    // takes it back. Removing node 1 would then leave too few voters.
    tessera(&["cluster", "add-node", "--at", &a2, &nodes[3].spec()]).expect("add-node");
    tessera(&["cluster", "status", "--at", &at(3)]).expect("status");
    // As node `ask` sees it (node 4 learns the final membership from the leader's next append).
    let membership = |ask: usize, voters: &'static [u64], learners: &'static [u64]| {
        let nodes = &nodes;
        async move {
            let until = Instant::now() + Duration::from_secs(15);
            loop {
                let status = nodes[ask].client().await.status(pb::StatusRequest {}).await.expect("status").into_inner();
                if status.voters.iter().map(|n| n.id).eq(voters.iter().copied())
                    && status.learners.iter().map(|n| n.id).eq(learners.iter().copied())
                {
                    break;
                }
                assert!(Instant::now() < until, "voters {voters:?}, learners {learners:?} expected: {status:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    runtime().block_on(async {
        membership(3, &[1, 2, 3], &[4]).await;
        let queries = query_names(&nodes[3]).await.expect("list on the new node");
        assert_eq!(queries, ["broken", "hot"]);
    });
    tessera(&["cluster", "set-voters", "--at", &a1, "--target", "3", "--pin", "4"]).expect("set-voters");
    runtime().block_on(membership(3, &[1, 2, 4], &[3]));
    let err =
        tessera(&["cluster", "set-voters", "--at", &a1, "--target", "4"]).map_err(|e| format!("{e:#}")).unwrap_err();
    assert!(err.contains("command.policy: target 4: give an odd number from 3 to 7"), "{err}");
    tessera(&["cluster", "set-voters", "--at", &a1]).expect("back to the default policy");
    tessera(&["cluster", "remove-node", "--at", &a3, "4"]).expect("remove-node (node 3 takes site-3's vote)");
    runtime().block_on(membership(0, &[1, 2, 3], &[]));
    let err = tessera(&["cluster", "remove-node", "--at", &a3, "1"]).map_err(|e| format!("{e:#}")).unwrap_err();
    assert!(err.contains("removing node 1 would leave 1 voter(s), and at least 2 must remain"), "{err}");
    tessera(&["cluster", "sites", "--at", &a1]).expect("sites");
    tessera(&["cluster", "audit", "--at", &a1]).expect("audit");
    // Machine-readable answers, as a script gets them from the tessera process.
    let json = |args: &[&str]| {
        let out = crate::cli_process::command(args).output().expect("tessera runs");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        crate::cli_sql::json_array(&String::from_utf8_lossy(&out.stdout))
    };
    let sites = json(&["cluster", "sites", "--at", &a1, "--output", "json"]);
    let site_1 = sites.as_array().expect("rows").iter().find(|s| s["site"] == "site-1").expect("site-1");
    assert_eq!(site_1["nodes"], "1", "{sites}");
    let voters = json(&["cluster", "voters", "--at", &a2, "--local", "-o", "json"]);
    let roles: Vec<(u64, &str)> = voters
        .as_array()
        .expect("rows")
        .iter()
        .map(|m| (m["node_id"].as_u64().expect("id"), m["role"].as_str().expect("role")))
        .collect();
    assert_eq!(roles, [(1, "voter"), (2, "voter"), (3, "voter")], "{voters}");
    let status = json(&["cluster", "status", "--at", &a1, "-o", "json"]);
    assert!(status[0]["term"].as_u64().is_some_and(|t| t > 0) && status[0]["voters"].is_string(), "{status}");
    let audit = json(&["cluster", "audit", "--at", &a1, "-o", "json"]);
    assert!(audit.as_array().expect("rows").iter().any(|e| e["refused"].is_string()), "a refusal is audited: {audit}");
    runtime().block_on(async {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let status = nodes[0].client().await.status(pb::StatusRequest {}).await.expect("status").into_inner();
            if status.voters.iter().map(|n| n.id).eq([1, 2, 3]) && status.learners.is_empty() {
                break;
            }
            assert!(Instant::now() < until, "node 4 is still a member: {status:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let sites =
            nodes[0].client().await.list_sites(pb::ListSitesRequest {}).await.expect("sites").into_inner().sites;
        let one = sites.iter().find(|s| s.site == "site-1").expect("site-1");
        assert_eq!((one.name.as_str(), one.motors, one.nodes.as_slice()), ("Plant One", 3, &[1u64][..]));
        let audit =
            nodes[0].client().await.list_audit(pb::ListAuditRequest { from_index: 0, limit: 0 }).await.expect("audit");
        let entries = audit.into_inner().entries;
        let hot = entries.iter().find(|e| e.action == "register query hot").expect("audited");
        assert_eq!(hot.actor, "alice");
        assert!(
            entries.iter().any(|e| e.action == "drop query cold" && e.rejected == "no query named 'cold'"),
            "{entries:?}"
        );
        assert!(entries.iter().any(|e| e.action == "remove node 4"), "{entries:?}");
    });
}

/// A query registered while two sites' ingest nodes run starts on both without a restart, each
/// running it on the readings of its own site; dropped, it stops on both. A registration whose
/// statement does not create the query it is registered under is skipped; the nodes go on.
#[test]
fn a_query_registered_or_dropped_while_nodes_run_starts_and_stops_on_every_site() {
    use tessera_core::{Channel, MotorId, Reading, SiteId};

    use tessera_node::node::Node;

    use crate::support::{TestCluster, TestNode};

    let _one = crate::fault::node_processes();
    crate::init_logging();
    let work = tempfile::tempdir().expect("work dir");
    let nodes = runtime().block_on(start_cluster(&launcher(), 3, work.path(), TUNING));
    let (kafka, brokers) = crate::embedded_kafka(1, 1);
    let sites = [("site-a", "telemetry-a"), ("site-b", "telemetry-b")];
    let cluster = TestCluster::start(sites.iter().enumerate().map(|(i, (site, topic))| {
        kafka.create_topic(topic, 2).expect("topic");
        let base = "CREATE CONTINUOUS QUERY base AS SELECT motor_id, window_start, avg(current_a) AS a \
                        FROM TUMBLE(telemetry, ts, INTERVAL '10 seconds') GROUP BY motor_id, window_start";
        // (The detect topics as the detect defaults name them, as before.)
        TestNode::new(site, &brokers, site, topic)
            .with(|c| {
                c.detect = tessera_node::detect::DetectConfig {
                    queries: vec![base.into()],
                    idle_timeout: Duration::from_secs(3600),
                    ..Default::default()
                }
            })
            .control(&nodes[i].addr, Duration::from_millis(100))
            .sql(vec![
                tessera_sql::UserConfig {
                    name: "root".into(),
                    password_hash: password_hash(),
                    role: tessera_sql::Role::Admin,
                    site: None,
                },
                tessera_sql::UserConfig {
                    name: "ana".into(),
                    password_hash: password_hash(),
                    role: tessera_sql::Role::FleetAnalyst,
                    site: None,
                },
            ])
    }));
    let running = &cluster.nodes;
    let wait_for =
        |what: &str, done: &dyn Fn(&Node) -> bool| cluster.wait_until(what, Duration::from_secs(30), |_, n| done(n));
    let running_query = |name: &'static str| move |n: &Node| n.detect_stats().queries.iter().any(|q| q == name);

    // Each site's motors, 1 reading/s; phase 1 is t0..t0+60 s, phase 2 the next minute.
    let t0 = (tessera_core::now_ms() - 300_000).div_euclid(10_000) * 10_000;
    let send = |site: &str, topic: &str, from_s: i64, to_s: i64| {
        let p = tessera_suite::producer(&brokers, topic, tessera_workload::producer::WireFormat::Protobuf)
            .expect("producer");
        let mut readings = Vec::new();
        for s in from_s..to_s {
            for m in 0..4 {
                let mut r = Reading {
                    motor_id: MotorId::new(format!("{site}-m{m}")).expect("id"),
                    site_id: SiteId::new(site).expect("id"),
                    event_time_ms: t0 + s * 1000,
                    sequence: s as u64,
                    channels: [None; 7],
                    extra: Default::default(),
                };
                r.set(Channel::CurrentA, Some(10.0 + m as f64));
                readings.push(r);
            }
        }
        p.send_readings(&readings).expect("send");
        p.flush(Duration::from_secs(10)).expect("flush");
    };
    let taken_in = |n: &Node| n.detect_stats().engine.windows.first().map_or(0, |(_, w)| w.rows_in);

    let hot = "CREATE CONTINUOUS QUERY hot AS SELECT motor_id, window_start, max(current_a) AS peak \
               FROM TUMBLE(telemetry, ts, INTERVAL '10 seconds') GROUP BY motor_id, window_start";
    tessera(&["query", "register", "--at", &nodes[2].addr, "hot", hot]).expect("register");
    wait_for("hot starts on every node", &running_query("hot"));
    runtime().block_on(register(&nodes[2], "broken")).expect("a registration the nodes cannot run");
    for (site, topic) in sites {
        send(site, topic, 0, 60);
    }
    wait_for("phase 1 taken in", &|n| taken_in(n) >= 240);
    tessera(&["query", "drop", "--at", &nodes[1].addr, "hot"]).expect("drop");
    wait_for("hot stops on every node", &|n| !running_query("hot")(n));
    for (site, topic) in sites {
        send(site, topic, 60, 120);
    }
    wait_for("phase 2 taken in", &|n| taken_in(n) >= 480);

    // The registry's sites and motors are SQL tables on every node, kept current.
    tessera(&["cluster", "add-site", "--at", &nodes[0].addr, "site-a", "Plant A"]).expect("add-site");
    tessera(&["cluster", "assign-motors", "--at", &nodes[1].addr, "site-a", "site-a-m0", "site-a-m1"]).expect("assign");
    // A query's answer as `tessera sql` prints it, asked of `node` as the admin.
    let sql_table = |node: &Node, query: &str| {
        let connection = tessera_cli::commands::sql::SqlConnection {
            allow_partial: false,
            at: node.sql_addr().expect("endpoint").to_string(),
            user: Some("root".into()),
            password: Some("pw".into()),
            token: None,
            timeout: Duration::from_secs(10),
            tls: Default::default(),
        };
        tessera_cli::commands::sql::query_table(&connection, query).expect("sql")
    };
    for node in running {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let table =
                sql_table(node, "SELECT m.motor_id, s.name FROM motors m JOIN sites s USING (site_id) ORDER BY 1");
            if table.contains("| site-a-m0 | Plant A |") && table.contains("| site-a-m1 | Plant A |") {
                break;
            }
            assert!(Instant::now() < until, "{table}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // A machine class set in the registry reaches every node's wear judge (the zones it judges
    // a motor's vibration by) and the `motors` table; an unknown class is refused.
    tessera(&["cluster", "define-machine-class", "--at", &nodes[0].addr, "pump-75", "1.4", "3.5", "9"])
        .expect("define-machine-class");
    tessera(&["cluster", "set-machine-class", "--at", &nodes[1].addr, "pump-75", "site-a-m0"]).expect("set pump-75");
    tessera(&["cluster", "set-machine-class", "--at", &nodes[2].addr, "III", "site-a-m1"]).expect("set III");
    let refused =
        tessera(&["cluster", "set-machine-class", "--at", &nodes[0].addr, "V", "site-a-m1"]).expect_err("no class V");
    assert!(format!("{refused:#}").contains("no machine class V"), "{refused:#}");
    for node in running {
        let classes = node.machine_classes().expect("wear is on");
        let until = Instant::now() + Duration::from_secs(30);
        while classes.get("site-a-m0") != Some([1.4, 3.5, 9.0]) || classes.get("site-a-m1") != Some([1.8, 4.5, 11.2]) {
            assert!(
                Instant::now() < until,
                "the registry's classes did not reach the wear judge of {:?}",
                node.sql_addr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(classes.get("site-a-m2"), None, "a motor without a class keeps the node's default");
        let table = sql_table(node, "SELECT motor_id, machine_class FROM motors ORDER BY 1");
        assert!(table.contains("| site-a-m0 | pump-75") && table.contains("| site-a-m1 | III"), "{table}");
    }
    tessera(&["cluster", "set-machine-class", "--at", &nodes[2].addr, "default", "site-a-m1"]).expect("back");
    for node in running {
        let classes = node.machine_classes().expect("wear is on");
        let until = Instant::now() + Duration::from_secs(30);
        while classes.get("site-a-m1").is_some() {
            assert!(Instant::now() < until, "site-a-m1 kept its class at {:?}", node.sql_addr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // A grade set cluster-wide reaches every node: `motors.motor_id` is general by config,
    // the cluster raises it to important, and every node's results say so.
    tessera(&["cluster", "set-grade", "--at", &nodes[2].addr, "motors", "important", "--column", "motor_id"])
        .expect("set-grade");
    let rt = runtime();
    for node in running {
        let addr = node.sql_addr().expect("endpoint").to_string();
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let grade = rt.block_on(async {
                let mut c = crate::support::sql::client(&addr).await;
                c.handshake("root", "pw").await.expect("handshake");
                let batches = crate::support::sql::run(&mut c, "SELECT motor_id FROM motors").await.expect("sql");
                batches.first().and_then(|b| b.schema().metadata().get(tessera_core::GRADE_METADATA_KEY).cloned())
            });
            if grade.as_deref() == Some("important") {
                break;
            }
            assert!(Instant::now() < until, "the cluster's grade did not reach {addr}: {grade:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // A group rule set cluster-wide (`use` stage) raises every node's group policy: an
    // analyst's per-motor average of current (important, above their grade; 120 readings over
    // 2 min per motor) is released under the default policy, and dropped at the sites once the
    // cluster asks for 1,000 readings. A rule no node could enforce is refused.
    let per_motor = |node: &Node| -> usize {
        let addr = node.sql_addr().expect("endpoint").to_string();
        rt.block_on(async {
            let mut c = crate::support::sql::client(&addr).await;
            c.handshake("ana", "pw").await.expect("handshake");
            let sql = "SELECT motor_id, avg(current_a) AS a FROM telemetry GROUP BY motor_id";
            let batches = crate::support::sql::run(&mut c, sql).await.expect("an allowed aggregate");
            batches.iter().map(|b| b.num_rows()).sum()
        })
    };
    for node in running {
        assert_eq!(per_motor(node), 4, "the default policy releases 120-reading groups");
    }
    let refused = tessera(&["cluster", "set-policy", "--at", &nodes[0].addr, "important", "use", "min_group_rows=1"])
        .expect_err("a group rule no node could enforce");
    assert!(format!("{refused:#}").contains("command.rule"), "{refused:#}");
    let rule = "aggregates only: min_group_rows=1000 min_group_span=10m";
    tessera(&["cluster", "set-policy", "--at", &nodes[0].addr, "important", "use", rule]).expect("set-policy");
    for node in running {
        let until = Instant::now() + Duration::from_secs(30);
        while per_motor(node) != 0 {
            assert!(Instant::now() < until, "the cluster's group rule did not reach {:?}", node.sql_addr());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    for (node, (site, _)) in cluster.nodes.into_iter().zip(sites) {
        let stats = node.detect_stats();
        assert_eq!(stats.queries, ["base"], "{site}");
        assert_eq!(stats.query_changes, 2, "{site}: hot registered, then dropped; broken skipped: {stats:?}");
        let (_, engine) = node.stop().expect("the node stops");
        let sql = "SELECT query, min(motor_id) AS first_motor, max(motor_id) AS last_motor, count(DISTINCT motor_id) AS motors, \
                   CAST(max(window_start) AS BIGINT) AS last_window FROM motor_windows GROUP BY query ORDER BY query";
        let batches = rt.block_on(engine.sql(sql)).expect("sql");
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches).expect("text").to_string();
        let b = &batches[0];
        let column = |i: usize| b.column(i).clone();
        let strings = |i: usize| {
            column(i)
                .as_any()
                .downcast_ref::<arrow_array::StringArray>()
                .expect("strings")
                .iter()
                .map(|s| s.unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        };
        let ints =
            |i: usize| column(i).as_any().downcast_ref::<arrow_array::Int64Array>().expect("ints").values().to_vec();
        assert_eq!(strings(0), ["base", "hot"], "{site}:\n{text}");
        assert_eq!(strings(1), [format!("{site}-m0"), format!("{site}-m0")], "{site}: its own motors only:\n{text}");
        assert_eq!(strings(2), [format!("{site}-m3"), format!("{site}-m3")], "{site}:\n{text}");
        assert_eq!(ints(3), [4, 4], "{site}:\n{text}");
        let last = ints(4);
        assert!(last[0] >= t0 + 60_000, "{site}: base ran on phase 2:\n{text}");
        assert!(last[1] < t0 + 60_000, "{site}: hot ran on phase 1 only:\n{text}");
    }
}

fn password_hash() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| tessera_sql::auth::hash_password("pw").expect("hash")).clone()
}

/// The fleet's shape: 30 control-plane members over 10 sites (3 pods each) keep 5 voters on 5
/// sites, the other 25 learners. Killing two voters' sites (all their pods, the leader's among
/// them) leaves 3 of 5 voters, a quorum: writes go on, and the leader promotes learners on
/// other sites until 5 voters on 5 live sites vote again; then writes still commit with a
/// further voter site lost.
#[test]
fn thirty_members_over_ten_sites_keep_five_voters_and_survive_two_lost_sites() {
    let _one = crate::fault::node_processes();
    let work = tempfile::tempdir().expect("work dir");
    let site_of = |id: u64| format!("site-{:02}", (id - 1) / 3);
    let mut nodes: Vec<NodeProc> =
        (1..=30).map(|id| NodeProc::start(&launcher(), id, &site_of(id), work.path(), TUNING)).collect();
    runtime().block_on(async {
        let specs =
            nodes.iter().map(|n| pb::NodeSpec { id: n.id, site: n.site.clone(), addr: n.addr.clone() }).collect();
        let reply = nodes[0].client().await.init(pb::InitRequest { nodes: specs, actor: "harness".into() }).await;
        let reply = reply.unwrap_or_else(|e| panic!("init: {e}\n{}", nodes[0].output())).into_inner();
        assert_eq!((reply.voters.len(), reply.learners.len()), (5, 25), "{reply:?}");

        // Five voters on five sites, as every member sees it once the leader replicated.
        let sites = |specs: &[pb::NodeSpec]| specs.iter().map(|n| n.site.clone()).collect::<BTreeSet<_>>();
        let (_, status) = leader(&nodes, Duration::from_secs(10)).await.expect("a leader");
        assert_eq!(sites(&status.voters).len(), 5, "{status:?}");
        let last = nodes[29].client().await.status(pb::StatusRequest {}).await.expect("status").into_inner();
        assert_eq!(last.role, "learner", "{last:?}");
        register(&nodes[29], "before").await.expect("a write through a learner");

        // Kill every pod of the leader's site and of one more voter's site.
        let leader_site = status.voters.iter().find(|n| Some(n.id) == status.leader_id).expect("leader").site.clone();
        let other_site =
            status.voters.iter().map(|n| n.site.clone()).find(|s| *s != leader_site).expect("a voter site");
        let lost: BTreeSet<String> = [leader_site, other_site].into();
        for node in nodes.iter_mut().filter(|n| lost.contains(&n.site)) {
            node.kill();
        }
        let alive: Vec<&NodeProc> = nodes.iter().filter(|n| n.running()).collect();
        assert_eq!(alive.len(), 24);

        // Writes go on (3 of 5 voters answer) and the voters are rebalanced onto live sites.
        let until = Instant::now() + Duration::from_secs(60);
        let mut wrote = false;
        let healed = loop {
            if !wrote {
                wrote = register(alive[0], "during").await.is_ok();
            }
            if let Some(s) = alive[0].status().await
                && s.voters.len() == 5
                && sites(&s.voters).len() == 5
                && sites(&s.voters).is_disjoint(&lost)
                && s.leader_id.is_some()
            {
                break s;
            }
            assert!(Instant::now() < until, "voters not rebalanced within 60 s: {:?}", alive[0].status().await);
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(wrote, "no write committed after two voter sites were lost");
        let promoted: Vec<u64> =
            healed.voters.iter().map(|n| n.id).filter(|id| !status.voters.iter().any(|v| v.id == *id)).collect();
        assert_eq!(promoted.len(), 2, "two learners promoted: {healed:?}");

        // With five live voters again, a third voter site may go too.
        let third =
            healed.voters.iter().find(|n| Some(n.id) != healed.leader_id).expect("a follower voter").site.clone();
        for node in nodes.iter_mut().filter(|n| n.site == third) {
            node.kill();
        }
        let alive: Vec<&NodeProc> = nodes.iter().filter(|n| n.running()).collect();
        let until = Instant::now() + Duration::from_secs(20);
        while let Err(e) = register(alive[0], "after").await {
            assert!(Instant::now() < until, "no write after a third site was lost: {e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(query_names(alive[alive.len() - 1]).await.expect("list"), ["after", "before", "during"]);
    });
}
