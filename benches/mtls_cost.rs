//! What mTLS costs the control plane and the SQL endpoint's clients, side by side in one run:
//! a three-node Raft cluster in the clear and one over mTLS (in process, loopback), each taking
//! the same sequential and concurrent metadata writes; and new connections per second (TCP vs
//! a full TLS 1.3 handshake with client certificates) to one node.
//!
//! `cargo bench --bench mtls_cost -- [--writes 300] [--writers 16] [--connections 200]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_consensus::{ConsensusNode, RaftSettings};
use tessera_proto::raft as pb;
use tessera_proto::raft::cluster_admin_client::ClusterAdminClient;
use tessera_tls::pki::{self, Issued, Subject};
use tessera_tls::{ClientTls, TlsMaterial};

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn material(ca: &Issued, subject: Subject) -> Arc<TlsMaterial> {
    let cert = pki::issue(ca, &subject, YEAR).expect("certificate");
    Arc::new(TlsMaterial::from_pem(&ca.cert_pem, &cert.cert_pem, &cert.key_pem).expect("material"))
}

struct Figures {
    sequential_per_s: f64,
    concurrent_per_s: f64,
    connects_per_s: f64,
}

async fn measure(dir: &std::path::Path, ca: Option<&Issued>, writes: u64, writers: u64, connections: u64) -> Figures {
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let settings = RaftSettings::new(
            id,
            format!("site-{id}"),
            "127.0.0.1:0".parse().expect("addr"),
            dir.join(format!("node-{id}")),
        );
        let tls = ca
            .map(|ca| material(ca, Subject::Node { id, site: format!("site-{id}"), hosts: vec!["127.0.0.1".into()] }));
        nodes.push(ConsensusNode::start_with_tls(settings, tls).await.expect("node"));
    }
    let client_tls = ClientTls::from_material(
        ca.map(|ca| material(ca, Subject::Operator { name: "bench".into(), role: tessera_tls::OperatorRole::Admin }))
            .as_ref(),
    );
    let addr = nodes[0].addr().to_string();
    let connect = || async {
        ClusterAdminClient::new(
            client_tls.endpoint(&addr, Duration::from_secs(3)).expect("endpoint").connect().await.expect("connect"),
        )
    };
    let mut admin = connect().await;
    let specs = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| pb::NodeSpec { id: i as u64 + 1, site: format!("site-{}", i + 1), addr: n.addr().to_string() })
        .collect();
    admin.init(pb::InitRequest { nodes: specs, actor: "bench".into() }).await.expect("init");
    let write = |mut c: ClusterAdminClient<tonic::transport::Channel>, i: u64| async move {
        let r = c
            .add_site(pb::AddSiteRequest { site: format!("s{i}"), name: "bench".into(), actor: "bench".into() })
            .await
            .expect("write");
        assert!(r.get_ref().rejected.is_empty());
    };
    write(admin.clone(), u64::MAX).await; // warm up: leader elected, connections up
    let start = Instant::now();
    for i in 0..writes {
        write(admin.clone(), i).await;
    }
    let sequential_per_s = writes as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let admin = admin.clone();
            tokio::spawn(async move {
                for i in 0..writes {
                    write(admin.clone(), writes * (w + 1) + i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    let concurrent_per_s = (writes * writers) as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for _ in 0..connections {
        let mut c = connect().await;
        c.status(pb::StatusRequest {}).await.expect("status");
    }
    let connects_per_s = connections as f64 / start.elapsed().as_secs_f64();
    for node in nodes {
        node.shutdown().await.expect("shutdown");
    }
    Figures { sequential_per_s, concurrent_per_s, connects_per_s }
}

fn main() {
    let (writes, writers, connections) = (arg("--writes", 300), arg("--writers", 16), arg("--connections", 200));
    let ca = pki::new_ca("bench CA", YEAR).expect("CA");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (plain, tls) = rt.block_on(async {
        let (a, b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
        let plain = measure(a.path(), None, writes, writers, connections).await;
        let tls = measure(b.path(), Some(&ca), writes, writers, connections).await;
        (plain, tls)
    });
    println!(
        "{writes} writes sequential, {writers} writers x {writes} concurrent, {connections} new connections (connect + one Status call)"
    );
    println!("{:<34} {:>12} {:>12} {:>8}", "", "plain", "mTLS", "mTLS/plain");
    for (name, p, t) in [
        ("sequential writes/s (3 nodes)", plain.sequential_per_s, tls.sequential_per_s),
        ("concurrent writes/s (3 nodes)", plain.concurrent_per_s, tls.concurrent_per_s),
        ("new connections/s", plain.connects_per_s, tls.connects_per_s),
    ] {
        println!("{name:<34} {p:>12.0} {t:>12.0} {:>8.2}", t / p);
    }
}
