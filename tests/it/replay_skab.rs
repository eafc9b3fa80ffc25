//! Replay of real data: two SKAB runs (read from `$TESSERA_DATA_DIR`, default ../shared/data,
//! never copied into the repo)
//! published as motors through the embedded Kafka and ingested; every row arrives, labels are
//! stripped into ground truth, and each file got its own time base.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tessera_suite::fleet_stats::FleetStats;
use tessera_suite::producer;
use tessera_workload::csv_replay::{self as replay, ReplayOptions};
use tessera_workload::producer::WireFormat;

use crate::{embedded_kafka, ingest_config, start_ingest};

fn skab(file: &str) -> PathBuf {
    tessera_suite::shared_data(&format!("skab/{file}"))
}

#[test]
fn a_missing_data_set_says_where_it_was_looked_for_and_how_to_get_it() {
    let missing = std::panic::catch_unwind(|| tessera_suite::shared_data("skab/no-such-run.csv")).unwrap_err();
    let message = missing.downcast_ref::<String>().expect("a formatted message");
    for part in ["skab/no-such-run.csv is missing", "TESSERA_DATA_DIR", "https://github.com/waico/SKAB", "NAB"] {
        assert!(message.contains(part), "{part:?} not in: {message}");
    }
    assert!(message.contains(&tessera_suite::shared_data_dir().display().to_string()), "names the folder: {message}");
}

#[test]
fn skab_runs_replay_as_motors_with_labels_stripped() {
    let files = [skab("valve1/0.csv"), skab("valve1/1.csv")];
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let opts = ReplayOptions::skab(now, 3_600_000, 11);
    let motors = replay::load(&files, &opts).unwrap();
    let rows: Vec<usize> = files.iter().map(|f| std::fs::read_to_string(f).unwrap().lines().count() - 1).collect();
    assert_eq!(motors.iter().map(|m| m.readings.len()).collect::<Vec<_>>(), rows);
    assert_eq!(motors[0].motor_id.as_str(), "skab-valve1-0");
    for m in &motors {
        let anomaly: Vec<_> = m.labels.iter().filter(|l| l.label == "anomaly").collect();
        assert_eq!(anomaly.len(), 1, "SKAB valve runs have one anomaly window each");
        assert!(m.readings.iter().all(|r| !r.extra.keys().any(|k| k.contains("anomaly") || k.contains("changepoint"))));
        assert!(m.readings.last().unwrap().event_time_ms <= now);
    }
    let last = |i: usize| motors[i].readings.last().unwrap().event_time_ms;
    assert_ne!(last(0), last(1), "each file ends at its own random offset");

    let (_kafka, brokers) = embedded_kafka(1, 3);
    let p = producer(&brokers, "telemetry", WireFormat::Protobuf).unwrap();
    let sent = replay::publish(&motors, &p, 0.0, false, &AtomicBool::new(false)).unwrap();
    p.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(sent as usize, rows.iter().sum::<usize>());

    let (ingest, batches) = start_ingest(ingest_config(&brokers, "replay", "telemetry", "dead-letters"));
    let mut stats = FleetStats::default();
    tessera_suite::collect_until(&batches, &mut stats, sent, Duration::from_secs(120));
    let report = ingest.stop().unwrap();
    assert_eq!(stats.unique_rows(), sent);
    assert_eq!(report.readings_rejected, 0, "real SKAB values pass validation");
    let checksum = motors.iter().flat_map(|m| &m.readings).fold(0u64, |a, r| a.wrapping_add(r.fingerprint()));
    assert_eq!(stats.unique_checksum, checksum);
}
