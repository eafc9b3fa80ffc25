//! What one SQL caller can take from a node: a query that would hold more memory than
//! `sql.query_memory_bytes` fails with `RESOURCE_EXHAUSTED`, one that runs past
//! `sql.query_timeout` with `DEADLINE_EXCEEDED`, SQL text over `sql.query_max_sql_bytes` is
//! refused, and a flood of wrong-password sign-ins queues on the blocking pool — while the
//! ingest goes on taking readings and another caller's queries are answered. The slow query
//! here waits on a site that never answers (its fragment timeout is longer than the query's).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array as _, StringArray};
use tessera_core::{Channel, Reading, now_ms};
use tessera_sql::Role;
use tessera_workload::producer::WireFormat;
use tonic::Code;

use crate::support::TestNode;
use crate::support::sql::{client, int, login, run, user};

/// Readings of 20 motors, one a second for `seconds` seconds, ending now.
fn readings(seconds: i64) -> Vec<Reading> {
    let t0 = (now_ms() - seconds * 1000).div_euclid(1000) * 1000;
    let mut out = Vec::new();
    for s in 0..seconds {
        for m in 0..20 {
            let mut r = crate::support::reading(m, "site-a", t0 + s * 1000, s as u64);
            r.set(Channel::CurrentA, Some(10.0 + (s % 7) as f64));
            out.push(r);
        }
    }
    out
}

#[test]
fn one_caller_cannot_starve_the_node() {
    let (_kafka, brokers) = crate::embedded_kafka(1, 2);
    // A peer that takes connections and never answers (the backlog accepts them).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a silent peer");
    let silent_peer = tessera_sql::Peer {
        site: "site-z".into(),
        addr: silent.local_addr().expect("addr").to_string(),
        fallbacks: vec![],
    };
    let node = TestNode::new("site-a", &brokers, "sql-limits", "telemetry")
        .sql(vec![user("root", Role::Admin, None), user("ana", Role::FleetAnalyst, None)])
        .peers(vec![silent_peer], "a-federation-token-for-tests")
        .with(|c| {
            c.sql.fragment_timeout = Duration::from_secs(120);
            c.sql.query_memory_bytes = 4 << 20;
            c.sql.query_timeout = Duration::from_secs(3);
            c.sql.query_max_sql_bytes = 8 << 10;
            c.sql.sign_ins_at_once = 1;
        })
        .start();
    let producer = tessera_suite::producer(&brokers, "telemetry", WireFormat::Protobuf).expect("producer");
    let first = readings(60);
    producer.send_readings(&first).expect("send");
    producer.flush(Duration::from_secs(10)).expect("flush");
    let until = Instant::now() + Duration::from_secs(60);
    let taken_in =
        |node: &tessera_node::node::Node| node.detect_stats().engine.windows.first().map_or(0, |(_, w)| w.rows_in);
    while taken_in(&node) < first.len() as u64 {
        assert!(Instant::now() < until, "not taken in: {:?}", node.detect_stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    let addr = node.sql_addr().expect("sql").to_string();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut root = login(&addr, "root").await;
        // 1,200 rows crossed with themselves and sorted: ~1.4 M rows to hold, more than 4 MiB.
        let hungry = "SELECT a.ts, b.ts FROM telemetry a CROSS JOIN telemetry b ORDER BY a.ts DESC, b.ts DESC";
        let refused = run(&mut root, hungry).await.expect_err("more memory than a query may hold");
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(refused.message().contains("sql.query_memory_bytes"), "{}", refused.message());
        // Waits on site-z for 120 s, far past the 3 s the query may take.
        let stopped = run(&mut root, "SELECT count(*) FROM fleet.alerts").await.expect_err("past the deadline");
        assert_eq!(stopped.code(), Code::DeadlineExceeded, "{stopped:?}");
        assert!(stopped.message().contains("sql.query_timeout"), "{}", stopped.message());
        let long = format!("SELECT 1 /* {} */", "x".repeat(9 << 10));
        let refused = run(&mut root, &long).await.expect_err("SQL text over the limit");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains("sql.query_max_sql_bytes"), "{}", refused.message());
        let fits = format!("SELECT count(*) FROM telemetry /* {} */", "y".repeat(6 << 10));
        assert_eq!(int(&run(&mut root, &fits).await.expect("SQL text under the limit")), first.len() as i64);
        // The audit keeps the first 4 KiB of a long statement, and says how long it was.
        let audit = run(&mut root, "SELECT sql FROM query_audit WHERE sql LIKE 'SELECT count(*) FROM telemetry /*%'")
            .await
            .expect("audit");
        let kept: &StringArray = audit[0].column(0).as_any().downcast_ref().expect("text");
        assert!(
            kept.value(0).len() < 4200 && kept.value(0).ends_with(&format!("({} bytes)", fits.len())),
            "{}",
            kept.value(0)
        );

        // A flood of wrong-password sign-ins while the ingest takes readings and ana queries.
        let flooding = Arc::new(AtomicBool::new(true));
        let attempts = Arc::new(AtomicU64::new(0));
        let mut flood = Vec::new();
        for _ in 0..16 {
            let (flooding, attempts, addr) = (flooding.clone(), attempts.clone(), addr.clone());
            flood.push(tokio::spawn(async move {
                let mut c = client(&addr).await;
                let mut signed_in = 0;
                while flooding.load(Ordering::Relaxed) {
                    if c.handshake("ana", "wrong password").await.is_ok() {
                        signed_in += 1;
                    }
                    attempts.fetch_add(1, Ordering::Relaxed);
                }
                signed_in
            }));
        }
        let accepted_before = node.ingest_stats().readings_accepted;
        let more = readings(30);
        let sender = std::thread::spawn(move || {
            producer.send_readings(&more).expect("send");
            producer.flush(Duration::from_secs(30)).expect("flush");
            more.len() as u64
        });
        let mut ana = login(&addr, "ana").await;
        for _ in 0..5 {
            let answer = tokio::time::timeout(Duration::from_secs(30), run(&mut ana, "SELECT count(*) FROM telemetry"))
                .await
                .expect("a query answered during the flood")
                .expect("the query ran");
            assert!(int(&answer) >= first.len() as i64);
        }
        let sent = sender.join().expect("sender");
        let until = Instant::now() + Duration::from_secs(60);
        while node.ingest_stats().readings_accepted < accepted_before + sent {
            assert!(Instant::now() < until, "the ingest stalled during the flood: {:?}", node.ingest_stats());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        flooding.store(false, Ordering::Relaxed);
        let mut signed_in = 0;
        for f in flood {
            signed_in += f.await.expect("flooder");
        }
        assert_eq!(signed_in, 0, "a wrong password signed in");
        println!(
            "sql limits: {} wrong sign-ins during the flood; 5 queries answered and {sent} readings taken in meanwhile",
            attempts.load(Ordering::Relaxed)
        );
    });
    node.stop().expect("stops");
}
