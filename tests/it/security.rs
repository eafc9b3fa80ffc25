//! Data-lifecycle security, end to end on a node: raw readings are stored encrypted per grade
//! (no important or core value is in the clear in any file the node writes), a time range is
//! crypto-shredded on request, after which reads of it fail and no copy of its key remains.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datafusion::arrow::array::Float64Array;
use tessera_core::now_ms;
use tessera_core::{Channel, DataGrade, Reading};
use tessera_node::node::Node;
use tessera_sql::Role;
use tessera_store::{Kek, Keyring, to_hex};
use tessera_workload::producer::WireFormat;

use crate::support::TestNode;
use crate::support::sql::{int, login, run, user};

/// Marker values no encoder produces by chance: a core and an important channel.
const CORE_MARKER: f64 = 424.2424242;
const IMPORTANT_MARKER: f64 = 3131.313131;

fn readings(t0: i64, seconds: std::ops::Range<i64>) -> Vec<Reading> {
    let mut out = Vec::new();
    for s in seconds {
        for m in 1..=3 {
            let mut r = crate::support::reading(m, "site-a", t0 + s * 1000, s as u64);
            r.set(Channel::VibrationXRms, Some(CORE_MARKER));
            r.set(Channel::CurrentA, Some(IMPORTANT_MARKER));
            out.push(r);
        }
    }
    out
}

fn every_file(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(every_file(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn stored_readings_are_encrypted_and_a_shredded_range_is_gone_for_good() {
    let (kafka, brokers) = crate::embedded_kafka(1, 2);
    kafka.create_topic("alerts", 1).expect("topic");
    kafka.create_topic("late", 1).expect("topic");
    let data = tempfile::tempdir().expect("tmp");
    let secrets = tempfile::tempdir().expect("tmp");
    let kek_file = secrets.path().join("site-a.kek");
    tessera_node::store::new_kek(&kek_file, 1).expect("kek");
    let (store_dir, state_dir) = (data.path().join("store"), data.path().join("state"));

    let t0 = (now_ms() - 300_000).div_euclid(1000) * 1000;
    let p = tessera_suite::producer(&brokers, "telemetry", WireFormat::Protobuf).expect("producer");
    let first = readings(t0, 0..20);
    p.send_readings(&first).expect("send");
    p.flush(Duration::from_secs(10)).expect("flush");

    let config = TestNode::new("site-a", &brokers, "security", "telemetry")
        .state(&state_dir, Duration::from_millis(500))
        .store(&store_dir, &kek_file, Duration::from_millis(300))
        .sql(vec![user("root", Role::Admin, None), user("opa", Role::SiteOperator, Some("site-a"))])
        .config();
    crate::init_logging();
    let node = Node::start(&config).expect("the node starts");
    let stored = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while node.store_stats().expect("store").rows_written < n as u64 {
            assert!(Instant::now() < deadline, "not stored: {:?}", node.store_stats());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    stored(first.len());
    let second = readings(t0, 20..40);
    p.send_readings(&second).expect("send");
    p.flush(Duration::from_secs(10)).expect("flush");
    stored(first.len() + second.len());

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let addr = node.sql_addr().expect("sql").to_string();
    let split = t0 + 20_000;
    rt.block_on(async {
        let mut op = login(&addr, "opa").await;
        let all = run(
            &mut op,
            "SELECT count(*) FROM telemetry WHERE vibration_x_rms = 424.2424242 AND current_a = 3131.313131",
        )
        .await
        .expect("stored rows read back");
        assert_eq!(int(&all), 120);
    });

    // Nothing important or core in the clear in any file the node wrote: segments, manifest,
    // key ring, checkpoints.
    let files = every_file(data.path());
    assert!(files.iter().any(|(p, _)| p.extension().is_some_and(|e| e == "parquet")), "segments were written");
    for (path, bytes) in &files {
        for marker in [CORE_MARKER, IMPORTANT_MARKER] {
            assert!(!contains(bytes, &marker.to_le_bytes()), "{marker} in the clear in {}", path.display());
            assert!(!contains(bytes, &marker.to_be_bytes()), "{marker} (big-endian) in {}", path.display());
            assert!(!contains(bytes, marker.to_string().as_bytes()), "{marker} as text in {}", path.display());
        }
    }

    // Shred the core columns of the first range.
    let store = node.store().expect("store");
    let segments_before = {
        let ring = Keyring::open(store_dir.join("keys.json"), Kek::read(&kek_file).expect("kek")).expect("ring");
        ring.ids().map(str::to_string).collect::<Vec<_>>()
    };
    let ring = Keyring::open(store_dir.join("keys.json"), Kek::read(&kek_file).expect("kek")).expect("ring");
    let core_keys: Vec<(String, Vec<u8>)> = segments_before
        .iter()
        .filter(|id| id.ends_with("/core"))
        .map(|id| (id.clone(), ring.get(id).expect("key").expect("present").bytes().to_vec()))
        .collect();
    let sealed_before = std::fs::read_to_string(store_dir.join("keys.json")).expect("ring file");
    let events = store.shred(t0 - 1_000, split - 1, &[DataGrade::Core], "customer request 17", "root").expect("shred");
    assert!(!events.is_empty(), "the first range's segments are shredded");
    assert!(events.iter().all(|e| e.grade == DataGrade::Core && e.max_ts_ms < split));
    let shredded: Vec<&str> = events.iter().map(|e| e.key_id.as_str()).collect();

    rt.block_on(async {
        let mut op = login(&addr, "opa").await;
        let err = run(
            &mut op,
            &format!("SELECT max(vibration_x_rms) FROM telemetry WHERE ts < to_timestamp_millis({split})"),
        )
        .await
        .expect_err("a shredded range cannot be read");
        assert!(err.message().contains("shredded") && err.message().contains("customer request 17"), "{err:?}");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        let later = run(
            &mut op,
            &format!("SELECT max(vibration_x_rms) FROM telemetry WHERE ts >= to_timestamp_millis({split})"),
        )
        .await
        .expect("the later range is intact");
        assert_eq!(later[0].column(0).as_any().downcast_ref::<Float64Array>().expect("avg").value(0), CORE_MARKER);
        let general = run(&mut op, "SELECT count(*) FROM telemetry WHERE current_a = 3131.313131")
            .await
            .expect("other grades of the range are intact");
        assert_eq!(int(&general), 120);
        let mut admin = login(&addr, "root").await;
        let listed =
            run(&mut admin, "SELECT count(*) FROM segments WHERE core_key LIKE 'shredded%customer request 17%'")
                .await
                .expect("segments table");
        assert_eq!(int(&listed) as usize, events.len());
    });

    // No copy of a destroyed key anywhere the node writes, sealed or not.
    let files = every_file(data.path()).into_iter().chain(every_file(secrets.path()));
    let sealed_of = |id: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(&sealed_before).expect("json");
        v["keys"][id]["sealed"].as_str().expect("sealed").to_string()
    };
    let destroyed: Vec<&(String, Vec<u8>)> =
        core_keys.iter().filter(|(id, _)| shredded.contains(&id.as_str())).collect();
    assert_eq!(destroyed.len(), events.len());
    for (path, bytes) in files {
        for (id, key) in &destroyed {
            assert!(!contains(&bytes, key), "key {id} in {}", path.display());
            assert!(!contains(&bytes, to_hex(key).as_bytes()), "key {id} (hex) in {}", path.display());
            assert!(!contains(&bytes, sealed_of(id).as_bytes()), "sealed key {id} in {}", path.display());
        }
    }
    drop(rt);
    node.stop().expect("the node stops cleanly");
}
