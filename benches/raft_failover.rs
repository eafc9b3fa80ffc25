//! Control-plane benchmark: leader failover time over repeated SIGKILLs, and metadata write
//! latency and throughput, on a three-process cluster on loopback.
//!
//! `cargo bench --bench raft_failover -- [--kills 20] [--writes 500] [--writers 16] [--seconds 5]`
//!
//! Failover is timed from the SIGKILL of the leader to (a) a surviving node reporting itself
//! leader and (b) the first write committed through a survivor (polled every 10 ms). The killed
//! node is restarted and caught up before the next kill, so every round starts from three
//! healthy nodes.

#[path = "../tests/it/support/cluster.rs"]
mod control_cluster;

use std::time::{Duration, Instant};

use control_cluster::{Launcher, leader, register, start_cluster};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(name: &str, mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    format!(
        "{name:<34} n={:<5} p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms",
        values.len(),
        percentile(&values, 50.0),
        percentile(&values, 99.0),
        values.last().copied().unwrap_or(f64::NAN)
    )
}

fn main() {
    if control_cluster::run_node_if_asked() {
        return;
    }
    let kills = arg("--kills", 20);
    let writes = arg("--writes", 500);
    let writers = arg("--writers", 16);
    let seconds = arg("--seconds", 5);
    let work = tempfile::tempdir().expect("work dir");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let launcher = Launcher { prefix: Vec::new() };
        let mut nodes = start_cluster(&launcher, 3, work.path(), &[]).await;
        leader(&nodes, Duration::from_secs(10)).await.expect("a leader after init");

        // Sequential write latency.
        let mut latencies = Vec::new();
        for i in 0..writes {
            let started = Instant::now();
            register(&nodes[(i % 3) as usize], &format!("latency-{i}")).await.expect("write");
            latencies.push(started.elapsed().as_secs_f64() * 1e3);
        }

        // Throughput: concurrent writers through all three nodes.
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for w in 0..writers {
            let addr = nodes[(w % 3) as usize].addr.clone();
            tasks.push(tokio::spawn(async move {
                let channel =
                    tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("uri").connect_lazy();
                let mut client = tessera_proto::raft::cluster_admin_client::ClusterAdminClient::new(channel);
                let mut done = 0u64;
                while Instant::now() < deadline {
                    let req = tessera_proto::raft::RegisterQueryRequest {
                        name: format!("tp-{w}-{done}"),
                        sql: "SELECT 1".into(),
                        actor: "bench".into(),
                    };
                    client.register_query(req).await.expect("write");
                    done += 1;
                }
                done
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.expect("writer");
        }
        let throughput = total as f64 / seconds as f64;

        // Failover.
        let (mut elected, mut first_write) = (Vec::new(), Vec::new());
        for round in 0..kills {
            let (old, _) = leader(&nodes, Duration::from_secs(10)).await.expect("a leader");
            let killed_at = Instant::now();
            nodes[old].kill();
            let (_, _) = loop {
                if let Some(found) = leader(&nodes, Duration::from_millis(1)).await {
                    break found;
                }
                assert!(killed_at.elapsed() < Duration::from_secs(20), "round {round}: no leader within 20 s");
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            elected.push(killed_at.elapsed().as_secs_f64() * 1e3);
            let survivor = (0..3).find(|i| *i != old).expect("a survivor");
            loop {
                if register(&nodes[survivor], &format!("failover-{round}")).await.is_ok() {
                    break;
                }
                assert!(killed_at.elapsed() < Duration::from_secs(20), "round {round}: no write within 20 s");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            first_write.push(killed_at.elapsed().as_secs_f64() * 1e3);
            eprintln!(
                "round {round}: node {} killed; leader after {:.0} ms, write after {:.0} ms",
                old + 1,
                elected[elected.len() - 1],
                first_write[first_write.len() - 1]
            );
            nodes[old].restart();
            // Wait until the restarted node has caught up, so the next round starts healthy.
            let target = nodes[survivor].status().await.and_then(|s| s.last_log_index);
            let until = Instant::now() + Duration::from_secs(30);
            while nodes[old].status().await.and_then(|s| s.applied_index) < target {
                assert!(Instant::now() < until, "round {round}: node {} did not catch up", old + 1);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        println!("control plane, 3 node processes on loopback (heartbeat 100 ms, election timeout 300–500 ms)");
        println!("{}", summary("failover: SIGKILL → new leader", elected));
        println!("{}", summary("failover: SIGKILL → write committed", first_write));
        println!("{}", summary("write latency (sequential)", latencies));
        println!("write throughput ({writers} writers, {seconds} s): {throughput:.0} writes/s ({total} writes)");
    });
}
