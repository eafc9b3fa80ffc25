//! A site of three nodes in one consumer group answers like one (issue 22, point 1): a query
//! at any node covers every partition of the site exactly once, through a rebalance and the
//! loss of a node; each node releases only its own part to an analyst.
//!
//! The nodes run in this process on the embedded Kafka (6 partitions), sharing one checkpoint
//! directory and one site store (each node a writer in it), each listing the other two in
//! `sql.site_nodes`. Node 0 starts alone and takes every partition; nodes 1 and 2 join and the
//! partitions spread; then node 2 stops and its partitions move back. After each step the same
//! queries are asked of every running node, and every motor's window history is whole (issue
//! 22, point 2): a window a motor closed at a node it has since left, or at a node that is
//! gone, is answered by the motor's partition's owner now, from the store.

use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use tessera_core::{Channel, now_ms};
use tessera_sql::Role;
use tessera_workload::producer::WireFormat;

use crate::support::sql::{FEDERATION_TOKEN, int, login, run, until, user};
use crate::support::{TestNode, cluster::free_port, reading};

const MOTORS: u32 = 30;

/// 4 s windows that count their readings.
const WINDOWS: &str = "CREATE CONTINUOUS QUERY win AS
  SELECT motor_id, window_start, count(*) AS readings, avg(vibration_x_rms) AS score
  FROM TUMBLE(telemetry, ts, INTERVAL '4 seconds') GROUP BY motor_id, window_start";

/// Every motor, one reading a second over `seconds` seconds from `from_s`.
fn send(brokers: &str, t0: i64, from_s: i64, seconds: i64) -> u64 {
    let mut readings = Vec::new();
    for s in from_s..from_s + seconds {
        for m in 1..=MOTORS {
            let mut r = reading(m, "site-a", t0 + s * 1000, s as u64);
            r.set(Channel::VibrationXRms, Some(1.0 + (s % 3) as f64 * 0.1));
            readings.push(r);
        }
    }
    let p = tessera_suite::producer(brokers, "telemetry", WireFormat::Protobuf).expect("producer");
    p.send_readings(&readings).expect("send");
    p.flush(Duration::from_secs(10)).expect("flush");
    readings.len() as u64
}

/// The checks every running node must pass: the site's motors, each window once and every
/// motor's windows from its first (at `first_window_ms`) on without a gap, as many windows as
/// `windows_at_least` at least, an analyst's aggregate per motor, and raw readings refused to
/// the analyst.
async fn site_answers_at(addr: &str, first_window_ms: i64, windows_at_least: i64) {
    let motors = "SELECT count(DISTINCT motor_id) FROM motor_windows";
    until(addr, "root", motors, Duration::from_secs(60), |b| int(b) == MOTORS as i64).await;
    let health = "SELECT count(*) FROM motor_health";
    until(addr, "root", health, Duration::from_secs(60), |b| int(b) == MOTORS as i64).await;
    let twice = "SELECT count(*) FROM (SELECT motor_id, window_start FROM motor_windows \
                 GROUP BY motor_id, window_start HAVING count(*) > 1)";
    let mut root = login(addr, "root").await;
    assert_eq!(int(&run(&mut root, twice).await.expect("duplicates")), 0, "a window answered twice at {addr}");
    let broken = format!(
        "SELECT count(*) FROM (SELECT motor_id, count(*) AS n, CAST(min(window_start) AS BIGINT) AS first, \
           (CAST(max(window_start) AS BIGINT) - CAST(min(window_start) AS BIGINT)) / 4000 + 1 AS span \
         FROM motor_windows GROUP BY motor_id) WHERE n <> span OR first <> {first_window_ms} OR n < {windows_at_least}"
    );
    let whole = until(addr, "root", &broken, Duration::from_secs(30), |b| int(b) == 0).await;
    assert_eq!(int(&whole), 0, "every motor's windows whole at {addr}");
    let per_motor = "SELECT motor_id, count(*) AS n, avg(vibration_x_rms) AS vib FROM telemetry GROUP BY motor_id";
    let answer = until(addr, "ana", per_motor, Duration::from_secs(30), |b| {
        b.iter().map(RecordBatch::num_rows).sum::<usize>() == MOTORS as usize
    })
    .await;
    assert_eq!(answer.iter().map(RecordBatch::num_rows).sum::<usize>(), MOTORS as usize);
    let mut ana = login(addr, "ana").await;
    let raw = run(&mut ana, "SELECT motor_id, vibration_x_rms FROM telemetry").await;
    let status = raw.expect_err("raw core readings refused to an analyst");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
}

#[test]
fn a_site_of_three_nodes_answers_for_every_partition_once() {
    let (kafka, brokers) = crate::embedded_kafka(1, 6);
    kafka.create_topic("alerts", 1).expect("topic");
    kafka.create_topic("late", 1).expect("topic");
    let t0 = (now_ms() - 300_000).div_euclid(1000) * 1000;
    let state = tempfile::tempdir().expect("tempdir");
    let kek_file = state.path().join("site.kek");
    tessera_node::store::new_kek(&kek_file, 1).expect("kek");
    // 4 s windows from the first reading's: 30 s of readings close at least 6 (2 s of lateness).
    let first_window = t0.div_euclid(4000) * 4000;
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let node = |i: usize| {
        TestNode::new("site-a", &brokers, "site-a", "telemetry")
            .queries([WINDOWS])
            .state(&state.path().join("checkpoints"), Duration::from_millis(500))
            .store(&state.path().join("store"), &kek_file, Duration::from_secs(1))
            .group_policy(3, Duration::from_secs(3))
            .sql_at(&addr(i), vec![user("root", Role::Admin, None), user("ana", Role::FleetAnalyst, None)])
            .with(|c| {
                c.sql.federation_token = Some(FEDERATION_TOKEN.to_string());
                c.sql.site_nodes = (0..3).filter(|&j| j != i).map(addr).collect();
                c.sql.fragment_timeout = Duration::from_secs(10);
                c.store.writer = Some(format!("node-{i}"));
            })
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");

    send(&brokers, t0, 0, 30);
    let first = node(0).start();
    rt.block_on(site_answers_at(&addr(0), first_window, 6));

    // Two more nodes join: the partitions spread over three.
    let second = node(1).start();
    let third = node(2).start();
    let spread = "SELECT count(*) FROM node.partitions WHERE owned <> ''";
    for i in 1..3 {
        rt.block_on(until(&addr(i), "root", spread, Duration::from_secs(60), |b| int(b) == 1));
    }
    // A moved motor's windows so far are in its old node's part of the store, answered by
    // its new node.
    for i in 0..3 {
        rt.block_on(site_answers_at(&addr(i), first_window, 6));
    }
    send(&brokers, t0, 30, 30);
    for i in 0..3 {
        rt.block_on(site_answers_at(&addr(i), first_window, 14));
    }

    // One node leaves: its partitions move to the two others, which still answer for all, its
    // stored history included.
    third.stop().expect("node 2 stops");
    send(&brokers, t0, 60, 30);
    for i in 0..2 {
        rt.block_on(site_answers_at(&addr(i), first_window, 21));
    }
    second.stop().expect("node 1 stops");
    first.stop().expect("node 0 stops");
}
