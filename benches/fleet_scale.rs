//! Fleet scale (issue 27): the fleet aggregate's latency against the number of sites and the
//! WAN latency between them, the control plane's write latency with 5 voters and 100+
//! learners, and memory per site, all simulated in one process ([`tessera_suite::fleet_sim`]).
//!
//! `cargo bench --bench fleet_scale -- [--sites 10,30,100] [--latency-ms 0,50] [--motors 10000] [--windows 3] [--runs 10] [--members 5,105] [--raft-sites 35] [--writes 100] [--raft-dir DIR] [--registry-motors 1000000]`
//!
//! Each site is a Flight SQL endpoint with its own catalog holding `motors` motors' newest
//! `windows` ten-minute windows (`motor_windows`), federated with every other site through a
//! link that delivers each byte `latency` after it was sent (both ways). A fleet analyst at
//! site 0 asks for the fleet aggregate (`fleet_sim::FLEET_AGGREGATE`): one partial aggregate
//! per site crosses the links. Latency is from the request to the last row, over `runs` runs
//! after a warm-up; the answer is checked (every site answered, every window counted).
//!
//! Then `members` control-plane members over `raft-sites` sites, every Raft message through a
//! link of the same latency: 5 voters (one per site on 5 sites), the rest learners; 5 members
//! alone first, the same machine's figure without learners. The members keep their data under
//! `--raft-dir` (default: the temp dir; /dev/shm takes the disk's fsyncs out). Writes
//! (query registrations) are sent one at a time to the leader; each waits for a majority of
//! the voters. Also the Raft log's bytes per write, for the capacity model.
//!
//! Last, the registry's size in every snapshot for `registry-motors` motors over 100 sites
//! (assigned in commands of at most 10,000 motors), and the log entry and audit record a
//! typical change adds: the figures of docs/SCALING.md's log and snapshot growth.
//!
//! Everything shares this machine's cores, so the figures are the protocol's cost (round trips,
//! the coordinator's merge of N partial aggregates), not N sites' compute in parallel.

use std::time::Duration;

use datafusion::arrow::array::{Array as _, Int64Array};
use tessera_suite::bench_history::{Better, record};
use tessera_suite::fleet_sim::{FLEET_AGGREGATE, RaftFleet, SqlFleet, admin_client, fleet_query, timed_write};
use tessera_suite::resident_bytes;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn list(name: &str, default: &[u64]) -> Vec<u64> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The registry of `motors` motors over `sites` sites, built by the commands the log would
/// carry: its JSON size (its share of every snapshot), and the log entry and audit record of
/// each kind of change.
fn registry_cost(motors: usize, sites: usize) {
    use tessera_consensus::registry::Registry;
    use tessera_consensus::types::{Command, MAX_MOTORS_PER_COMMAND, Request};
    use tessera_core::{MotorId, SiteId};
    let request = |command| Request { actor: "fleet-sim".into(), at_ms: 1_700_000_000_000, command };
    let mut registry = Registry::default();
    let mut index = 0;
    let started = std::time::Instant::now();
    let (mut assign_entries, mut assign_entry_bytes, mut assign_audit_bytes) = (0usize, 0usize, 0usize);
    for s in 0..sites {
        let site = SiteId::new(format!("site-{s:03}")).expect("a site id");
        index += 1;
        registry.apply(index, &request(Command::AddSite { site: site.clone(), name: format!("Plant {s}") }));
        let ids: Vec<usize> = (0..motors / sites).collect();
        for chunk in ids.chunks(MAX_MOTORS_PER_COMMAND) {
            let motors = chunk.iter().map(|m| MotorId::new(format!("S{s:03}-M{m:06}")).expect("a motor id")).collect();
            let r = request(Command::AssignMotors { site: site.clone(), motors });
            index += 1;
            let (_, audit) = registry.apply(index, &r);
            assign_entries += 1;
            assign_entry_bytes += serde_json::to_vec(&r).expect("json").len();
            assign_audit_bytes += serde_json::to_vec(&audit).expect("json").len();
        }
    }
    let built = started.elapsed();
    let registry_bytes = serde_json::to_vec(&registry).expect("json").len();
    // A typical small change: a query registration, an alert acknowledgement.
    let small = [
        request(Command::RegisterQuery {
            name: "hot".into(),
            sql: "CREATE CONTINUOUS QUERY hot AS SELECT motor_id, window_start, max(temperature_c) AS peak \
                  FROM TUMBLE(telemetry, ts, INTERVAL '10 minutes') GROUP BY motor_id, window_start"
                .into(),
        }),
        request(Command::AcknowledgeAlert {
            alert: "vib:S001-M000001:1700000000000".into(),
            motor: MotorId::new("S001-M000001").expect("id"),
            site: SiteId::new("site-001").expect("id"),
            note: "bearing ordered, replacing on Thursday".into(),
            silence_until_ms: Some(1_700_100_000_000),
        }),
    ];
    for r in &small {
        index += 1;
        let (_, audit) = registry.apply(index, r);
        println!(
            "registry change '{}': log entry {} B, audit record {} B",
            r.command,
            serde_json::to_vec(r).expect("json").len(),
            serde_json::to_vec(&audit).expect("json").len()
        );
    }
    println!(
        "registry of {motors} motors over {sites} sites: {:.1} MB as JSON ({:.0} B per motor) in every snapshot; \
         {assign_entries} assignment entries of {:.0} kB each (audit record {:.0} B each), built in {:.1} s",
        registry_bytes as f64 / 1e6,
        registry_bytes as f64 / motors as f64,
        assign_entry_bytes as f64 / assign_entries as f64 / 1e3,
        assign_audit_bytes as f64 / assign_entries as f64,
        built.as_secs_f64()
    );
    record(
        "fleet_scale",
        &format!("registry bytes per motor, {motors} motors"),
        registry_bytes as f64 / motors as f64,
        "bytes",
        Better::Lower,
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime")
}

fn main() {
    let (motors, windows, runs) = (arg("--motors", 10_000) as usize, arg("--windows", 3) as usize, arg("--runs", 10));
    let latencies = list("--latency-ms", &[0, 50]);
    let site_counts = list("--sites", &[10, 30, 100]);
    println!("# fleet aggregate: {motors} motors x {windows} windows per site, {runs} runs each");
    // Only the process's first fleet measures memory: later ones reuse what the allocator kept
    // from the earlier ones.
    let mut measure_memory = true;
    for &latency in &latencies {
        let one_way = Duration::from_millis(latency);
        for &sites in &site_counts {
            let runtime = runtime();
            let before = resident_bytes();
            let fleet = SqlFleet::start(&runtime, sites as usize, motors, windows, one_way, Duration::from_secs(60))
                .expect("the sites start");
            let per_site = resident_bytes().saturating_sub(before) as f64 / sites as f64;
            let first = std::mem::replace(&mut measure_memory, false);
            let mut took = runtime.block_on(async {
                let mut client = fleet.client(0).await.expect("a client at site 0");
                let warm = fleet_query(&mut client, FLEET_AGGREGATE).await.expect("the fleet aggregate");
                assert_eq!(warm.answered.len(), sites as usize, "every site answered: {:?}", warm.answered);
                let counted = warm.batches[0].column(1).as_any().downcast_ref::<Int64Array>().expect("count").value(0);
                assert_eq!(counted as usize, fleet.rows_per_site * sites as usize, "every window counted");
                let mut took = Vec::new();
                for _ in 0..runs {
                    let answer = fleet_query(&mut client, FLEET_AGGREGATE).await.expect("the fleet aggregate");
                    took.push(answer.took.as_secs_f64() * 1e3);
                }
                took
            });
            took.sort_by(f64::total_cmp);
            let (p50, p99) = (percentile(&took, 50.0), percentile(&took, 99.0));
            let memory = if first { format!("  resident per site {:.1} MB", per_site / 1e6) } else { String::new() };
            println!(
                "fleet aggregate, {sites:>3} sites, {latency:>3} ms one-way: p50 {p50:>8.1} ms  p99 {p99:>8.1} ms  \
                 max {:>8.1} ms{memory}",
                took[took.len() - 1]
            );
            let figure = format!("fleet aggregate p50, {sites} sites, {latency} ms");
            record("fleet_scale", &figure, p50, "ms", Better::Lower);
            if first {
                record("fleet_scale", &format!("resident per site, {sites} sites"), per_site, "bytes", Better::Lower);
            }
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }

    registry_cost(arg("--registry-motors", 1_000_000) as usize, 100);

    let (raft_sites, writes) = (arg("--raft-sites", 35) as usize, arg("--writes", 100));
    let raft_dir = std::env::args()
        .skip_while(|a| a != "--raft-dir")
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    println!("# control plane: the members' data under {}", raft_dir.display());
    for &latency in &latencies {
        for members in list("--members", &[5, 105]).into_iter().map(|m| m as usize) {
            control_plane_writes(&raft_dir, members, raft_sites.min(members), latency, writes);
        }
    }
}

/// Sequential writes through the leader of `members` members over `sites` sites behind links
/// of `latency` ms: their p50 and p99, and the Raft log's size.
fn control_plane_writes(raft_dir: &std::path::Path, members: usize, sites: usize, latency: u64, writes: u64) {
    let one_way = Duration::from_millis(latency);
    let runtime = runtime();
    let before = resident_bytes();
    let fleet = RaftFleet::start_in(raft_dir, &runtime, members, sites, one_way).expect("the members start");
    let per_member = resident_bytes().saturating_sub(before) as f64 / members as f64;
    let leader = fleet.leader(Duration::from_secs(60)).expect("a leader");
    assert_eq!(fleet.nodes[leader].status().voters, members.min(5), "a bounded voter set");
    let addr = fleet.nodes[leader].addr();
    let mut took = runtime.block_on(async {
        let mut admin = admin_client(addr).await.expect("an admin client");
        timed_write(&mut admin, "warm-up").await.expect("a write");
        let mut took = Vec::new();
        for i in 0..writes {
            took.push(timed_write(&mut admin, &format!("q{i}")).await.expect("a write").as_secs_f64() * 1e3);
        }
        took
    });
    took.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&took, 50.0), percentile(&took, 99.0));
    let log_bytes = std::fs::metadata(fleet.data_dir(leader).join("raft-log.redb")).map_or(0, |m| m.len());
    let applied = fleet.nodes[leader].status().applied_index.unwrap_or(0).max(1);
    println!(
        "control-plane write, {} voters + {} learners over {sites} sites, {latency:>3} ms one-way: p50 {p50:>7.1} ms  \
         p99 {p99:>7.1} ms  (p99 = {:.1} x one-way)  raft log {log_bytes} B for {applied} entries  \
         resident per member {:.1} MB",
        members.min(5),
        members.saturating_sub(5),
        if latency > 0 { p99 / latency as f64 } else { f64::NAN },
        per_member / 1e6
    );
    let figure = format!("control-plane write p99, {members} members, {latency} ms");
    record("fleet_scale", &figure, p99, "ms", Better::Lower);
    fleet.shutdown(&runtime).expect("the members stop");
    runtime.shutdown_timeout(Duration::from_secs(5));
}
