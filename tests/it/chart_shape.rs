//! The Helm chart's shape on one machine (issue 22, point 5): 3 sites × 3 node processes, each
//! site one consumer group over its own 6-partition topic, one checkpoint directory and one
//! store its nodes share (each node a writer in it), the sites federated; 1,000 motors.
//!
//! From any node, the fleet's motors, each site's motors, every motor's windows from its first
//! without a gap, and every reading stored once; then again after one node per site is killed
//! (SIGKILL) and the groups rebalance, and again after every node is restarted. Before the
//! groups notice a kill, and once a whole site is down, an exact answer is an error and a
//! caller who allows a partial one gets it marked with what is missing. The broker is
//! librdkafka's mock cluster served from this process on loopback (Tansu keeps a killed
//! member's partitions, see `fault::broker`).

use std::time::{Duration, Instant};

use tessera_core::{Channel, now_ms};
use tessera_node::config::NodeConfig;
use tessera_sql::{Peer, Role};
use tessera_workload::producer::WireFormat;

use crate::fault::{NodeProcess, node_processes};
use crate::support::sql::{FEDERATION_TOKEN, int, login, run, run_partial, until, user};
use crate::support::{TestNode, cluster::free_port, reading};

const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];
const NODES_PER_SITE: usize = 3;
const MOTORS: u32 = 1_000;
const PARTITIONS: i32 = 6;

/// 4 s windows that count their readings.
const WINDOWS: &str = "CREATE CONTINUOUS QUERY win AS
  SELECT motor_id, window_start, count(*) AS readings, avg(vibration_x_rms) AS score
  FROM TUMBLE(telemetry, ts, INTERVAL '4 seconds') GROUP BY motor_id, window_start";

/// The site of motor `m` (the simulator's assignment: round robin).
fn site_of(m: u32) -> usize {
    (m as usize - 1) % SITES.len()
}

/// Every motor, one reading a second over seconds `from_s..to_s` after `t0`, each to its
/// site's topic; how many each site got.
fn send(brokers: &str, t0: i64, from_s: i64, to_s: i64) -> [u64; 3] {
    let mut sent = [0; 3];
    for (s, site) in SITES.iter().enumerate() {
        let mut readings = Vec::new();
        for second in from_s..to_s {
            for m in (1..=MOTORS).filter(|m| site_of(*m) == s) {
                let mut r = reading(m, site, t0 + second * 1000, second as u64);
                r.set(Channel::VibrationXRms, Some(1.0 + (second % 3) as f64 * 0.1));
                readings.push(r);
            }
        }
        let p = tessera_suite::producer(brokers, &format!("telemetry.{site}"), WireFormat::Protobuf).expect("producer");
        p.send_readings(&readings).expect("send");
        p.flush(Duration::from_secs(30)).expect("flush");
        sent[s] = readings.len() as u64;
    }
    sent
}

/// The windows of 4 s that `seconds` of readings close at least (2 s of allowed lateness).
fn closed_at_least(seconds: i64) -> i64 {
    (seconds - 7) / 4 + 1
}

/// What every check asks, at `fleet` (any node) and at `at[s]` (a running node of site `s`).
async fn the_cluster_answers_exactly(fleet: &str, at: [&str; 3], t0: i64, seconds: i64, stored: [u64; 3]) {
    let long = Duration::from_secs(120);
    let motors = "SELECT count(DISTINCT motor_id) FROM fleet.motor_windows";
    until(fleet, "root", motors, long, |b| int(b) == MOTORS as i64).await;
    // One health row per motor, from whichever node holds it now.
    let healthy = "SELECT count(*) FROM fleet.motor_health WHERE status = 'healthy'";
    until(fleet, "root", healthy, long, |b| int(b) == MOTORS as i64).await;
    let first_window = t0.div_euclid(4000) * 4000;
    for (s, addr) in at.iter().enumerate() {
        let site_motors = (1..=MOTORS).filter(|m| site_of(*m) == s).count() as i64;
        let mine = "SELECT count(DISTINCT motor_id) FROM motor_windows";
        until(addr, "root", mine, long, |b| int(b) == site_motors).await;
        let broken = format!(
            "SELECT count(*) FROM (SELECT motor_id, count(*) AS n, CAST(min(window_start) AS BIGINT) AS first, \
               (CAST(max(window_start) AS BIGINT) - CAST(min(window_start) AS BIGINT)) / 4000 + 1 AS span \
             FROM motor_windows GROUP BY motor_id) \
             WHERE n <> span OR first <> {first_window} OR n < {}",
            closed_at_least(seconds)
        );
        until(addr, "root", &broken, long, |b| int(b) == 0).await;
        let count = "SELECT count(*) FROM telemetry";
        until(addr, "root", count, long, |b| int(b) == stored[s] as i64).await;
        let mut root = login(addr, "root").await;
        let twice = "SELECT count(*) FROM (SELECT motor_id, window_start FROM motor_windows \
                     GROUP BY motor_id, window_start HAVING count(*) > 1)";
        assert_eq!(int(&run(&mut root, twice).await.expect("windows")), 0, "{}: a window twice", SITES[s]);
        let twice =
            "SELECT count(*) FROM (SELECT motor_id, seq FROM telemetry GROUP BY motor_id, seq HAVING count(*) > 1)";
        assert_eq!(int(&run(&mut root, twice).await.expect("readings")), 0, "{}: a reading stored twice", SITES[s]);
    }
}

#[test]
fn nine_nodes_of_three_sites_answer_exactly_through_kills_and_restarts() {
    let _one_at_a_time = node_processes();
    let (kafka, brokers) = crate::embedded_kafka(1, 1);
    for site in SITES {
        kafka.create_topic(&format!("telemetry.{site}"), PARTITIONS).expect("topic");
    }
    for topic in ["alerts", "late"] {
        kafka.create_topic(topic, 1).expect("topic");
    }
    let work = tempfile::tempdir().expect("tempdir");
    let t0 = (now_ms() - 600_000).div_euclid(1000) * 1000;
    let ports: Vec<Vec<u16>> = SITES.iter().map(|_| (0..NODES_PER_SITE).map(|_| free_port()).collect()).collect();
    let addr = |s: usize, j: usize| format!("127.0.0.1:{}", ports[s][j]);
    let config = |s: usize, j: usize| -> NodeConfig {
        let site = SITES[s];
        let dir = work.path().join(site);
        let kek_file = dir.join("site.kek");
        if !kek_file.exists() {
            std::fs::create_dir_all(&dir).expect("site dir");
            tessera_node::store::new_kek(&kek_file, 1).expect("kek");
        }
        let peers = (0..SITES.len())
            .filter(|&o| o != s)
            .map(|o| Peer {
                site: SITES[o].into(),
                addr: addr(o, 0),
                fallbacks: (1..NODES_PER_SITE).map(|k| addr(o, k)).collect(),
            })
            .collect();
        TestNode::new(site, &brokers, &format!("tessera-{site}"), &format!("telemetry.{site}"))
            .queries([WINDOWS])
            .state(&dir.join("checkpoints"), Duration::from_millis(500))
            .store(&dir.join("store"), &kek_file, Duration::from_secs(1))
            .sql_at(&addr(s, j), vec![user("root", Role::Admin, None)])
            .peers(peers, FEDERATION_TOKEN)
            .with(|c| {
                c.store.writer = Some(format!("node-{j}"));
                c.sql.site_nodes = (0..NODES_PER_SITE).map(|k| addr(s, k)).collect();
                c.sql.advertise = Some(addr(s, j));
                c.sql.fragment_timeout = Duration::from_secs(6);
                // The group notices a killed node only after its session (12 s): time to see
                // the answers while its partitions have no live owner.
                c.ingest.kafka.insert("session.timeout.ms".into(), "12000".into());
            })
            .config()
    };
    let start = |round: usize| -> Vec<Vec<Option<NodeProcess>>> {
        (0..SITES.len())
            .map(|s| {
                (0..NODES_PER_SITE)
                    .map(|j| Some(NodeProcess::start(&config(s, j), None, work.path(), round * 100 + s * 10 + j)))
                    .collect()
            })
            .collect()
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");

    // The chart's shape: every node of every site up, 40 s of readings.
    let mut stored = send(&brokers, t0, 0, 40);
    let mut nodes = start(0);
    let started = Instant::now();
    let asked = [0, 1, 2].map(|s| addr(s, 2));
    rt.block_on(the_cluster_answers_exactly(&addr(0, 0), asked.each_ref().map(String::as_str), t0, 40, stored));
    let first = started.elapsed();

    // One node of each site killed (the one the other sites ask first): its partitions move to
    // its siblings, which restore their windows from the checkpoints and answer for its
    // stored history; 40 s more of readings.
    for site in &mut nodes {
        site[0].take().expect("running").kill();
    }
    let killed = Instant::now();
    rt.block_on(partial_answers_say_what_they_miss(&addr(0, 1), &addr(1, 1)));
    let more = send(&brokers, t0, 40, 80);
    stored = [0, 1, 2].map(|s| stored[s] + more[s]);
    let asked = [0, 1, 2].map(|s| addr(s, 1));
    rt.block_on(the_cluster_answers_exactly(&addr(1, 2), asked.each_ref().map(String::as_str), t0, 80, stored));
    let after_kills = killed.elapsed();

    // Every node restarted (the killed ones too): 40 s more.
    for site in &mut nodes {
        for node in site.iter_mut().filter_map(Option::take) {
            let (status, output) = node.stop(Duration::from_secs(90));
            assert!(status.success(), "a node did not stop cleanly: {status}\n{output}");
        }
    }
    let mut nodes = start(1);
    let restarted = Instant::now();
    let more = send(&brokers, t0, 80, 120);
    stored = [0, 1, 2].map(|s| stored[s] + more[s]);
    let asked = [0, 1, 2].map(|s| addr(s, 0));
    rt.block_on(the_cluster_answers_exactly(&addr(2, 1), asked.each_ref().map(String::as_str), t0, 120, stored));
    println!(
        "chart_shape: {} readings of {MOTORS} motors stored once; answered exactly {:.1} s after the start, \
         {:.1} s after the kills, {:.1} s after the restart",
        stored.iter().sum::<u64>(),
        first.as_secs_f64(),
        after_kills.as_secs_f64(),
        restarted.elapsed().as_secs_f64()
    );

    // A whole site down: the fleet answers without it only for a caller who allows that.
    for node in nodes[2].iter_mut().filter_map(Option::take) {
        assert!(node.stop(Duration::from_secs(90)).0.success());
    }
    rt.block_on(async {
        let fleet = "SELECT count(DISTINCT motor_id) FROM fleet.motor_windows";
        let refused = run(&mut login(&addr(0, 0), "root").await, fleet).await.expect_err("a site is down");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");
        let (answer, missing) = run_partial(&mut login(&addr(0, 0), "root").await, fleet).await.expect("partial");
        let a_and_b = (1..=MOTORS).filter(|m| site_of(*m) < 2).count() as i64;
        assert_eq!(int(&answer), a_and_b, "sites a and b answered");
        let missing = missing.expect("marked incomplete");
        assert!(missing.starts_with("site site-c: ") && !missing.contains("site-a"), "{missing}");
    });
    for site in &mut nodes {
        for node in site.iter_mut().filter_map(Option::take) {
            let (status, output) = node.stop(Duration::from_secs(90));
            assert!(status.success(), "a node did not stop cleanly: {status}\n{output}");
        }
    }
}

/// Right after one node per site was killed (the groups have not noticed yet): an exact answer
/// is refused, a caller who allows a partial one gets what the live nodes own, marked with the
/// partitions missing, at `site_a` (site-a's own tables) and at `fleet` (every site's).
async fn partial_answers_say_what_they_miss(site_a: &str, fleet: &str) {
    let mine = "SELECT count(DISTINCT motor_id) FROM motor_windows";
    let refused = run(&mut login(site_a, "root").await, mine).await.expect_err("partitions without a live owner");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");
    assert!(refused.message().contains("no node answered for telemetry.site-a/"), "{refused}");
    let (answer, missing) = run_partial(&mut login(site_a, "root").await, mine).await.expect("partial");
    let site_a_motors = (1..=MOTORS).filter(|m| site_of(*m) == 0).count() as i64;
    assert!((1..site_a_motors).contains(&int(&answer)), "some of site-a's motors: {}", int(&answer));
    let missing = missing.expect("marked incomplete");
    assert!(missing.starts_with("site site-a: no answer for telemetry.site-a/"), "{missing}");
    let (answer, missing) =
        run_partial(&mut login(fleet, "root").await, "SELECT count(DISTINCT motor_id) FROM fleet.motor_windows")
            .await
            .expect("partial");
    assert!((1..MOTORS as i64).contains(&int(&answer)), "some of the fleet's motors: {}", int(&answer));
    let missing = missing.expect("marked incomplete");
    for site in SITES {
        assert!(missing.contains(&format!("site {site}: no answer for telemetry.{site}/")), "{missing}");
    }
    println!("chart_shape: partial answers after the kills were marked: {missing}");
}
