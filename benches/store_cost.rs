//! What encryption at rest costs: the same telemetry written and read back as a Tessera
//! segment (Parquet with modular encryption, one AES-GCM key per grade, keys sealed under the
//! KEK, fsync) and as plain Parquet (same writer settings, no encryption, fsync), side by side
//! in one run, alternating, `--rounds` times each; medians and the ratio.
//!
//! The data is the simulator's fleet (`--motors` motors at 10 Hz for `--seconds`), in
//! ingest-sized Arrow batches of the telemetry schema.
//!
//! `cargo bench --bench store_cost -- [--motors 1000] [--seconds 60] [--rounds 5]`

use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tessera_core::GradeMap;
use tessera_store::{Kek, SegmentStore};
use tessera_suite::{bench_arg as arg, median};
use tessera_workload::simulate::{FleetSpec, Simulator};

fn fleet(motors: u32, seconds: u64) -> Vec<RecordBatch> {
    let mut sim = Simulator::new(FleetSpec {
        motors,
        sites: 1,
        rate_hz: 10.0,
        steps: seconds * 10,
        start_ms: 1_700_000_000_000,
        fault_fraction: 0.05,
        seed: 5,
    });
    let mut batches = Vec::new();
    let mut builder = tessera_ingest::ShardBuilder::with_capacity(8192);
    while let Some(step) = sim.next_step() {
        step.iter().for_each(|r| builder.append(r));
        if builder.rows() >= 8192 {
            batches.push(builder.finish());
        }
    }
    if builder.rows() > 0 {
        batches.push(builder.finish());
    }
    batches
}

fn plain_write(path: &std::path::Path, batches: &[RecordBatch]) -> u64 {
    let file = std::fs::File::create(path).expect("create");
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut writer =
        ArrowWriter::try_new(file.try_clone().expect("clone"), batches[0].schema(), Some(props)).expect("writer");
    for b in batches {
        writer.write(b).expect("write");
    }
    writer.close().expect("close");
    file.sync_all().expect("fsync");
    std::fs::metadata(path).expect("size").len()
}

fn plain_read(path: &std::path::Path) -> usize {
    let file = std::fs::File::open(path).expect("open");
    ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("reader")
        .build()
        .expect("build")
        .map(|b| b.expect("batch").num_rows())
        .sum()
}

fn main() {
    let (motors, seconds, rounds) = (arg("--motors", 1000) as u32, arg("--seconds", 60), arg("--rounds", 5));
    let batches = fleet(motors, seconds);
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let grades = GradeMap::builtin();
    let (mut seg_w, mut seg_r, mut plain_w, mut plain_r) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut seg_bytes, mut plain_bytes) = (0, 0);
    for round in 0..rounds {
        let dir = tempfile::tempdir().expect("dir");
        let mut store = SegmentStore::open(dir.path().join("store"), Kek::generate(1).expect("kek")).expect("store");
        let t = Instant::now();
        let meta = store.write("telemetry", &batches, &grades, round as i64).expect("write").expect("segment");
        seg_w.push(t.elapsed());
        seg_bytes = meta.bytes;
        let t = Instant::now();
        let read: usize = store.read(&meta.id, None).expect("read").iter().map(RecordBatch::num_rows).sum();
        seg_r.push(t.elapsed());
        assert_eq!(read, rows);

        let path = dir.path().join("plain.parquet");
        let t = Instant::now();
        plain_bytes = plain_write(&path, &batches);
        plain_w.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(plain_read(&path), rows);
        plain_r.push(t.elapsed());
    }
    let rate = |d: Duration| rows as f64 / d.as_secs_f64() / 1e6;
    println!(
        "{rows} readings ({motors} motors x {seconds} s at 10 Hz), {} batches, {rounds} rounds, medians",
        batches.len()
    );
    println!("{:<10} {:>22} {:>22} {:>8}", "", "encrypted segment", "plain Parquet", "ratio");
    let (sw, pw, sr, pr) = (median(seg_w), median(plain_w), median(seg_r), median(plain_r));
    println!(
        "{:<10} {:>12.1} ms {:>5.2} M/s {:>12.1} ms {:>5.2} M/s {:>8.2}",
        "write",
        sw.as_secs_f64() * 1e3,
        rate(sw),
        pw.as_secs_f64() * 1e3,
        rate(pw),
        sw.as_secs_f64() / pw.as_secs_f64()
    );
    println!(
        "{:<10} {:>12.1} ms {:>5.2} M/s {:>12.1} ms {:>5.2} M/s {:>8.2}",
        "read",
        sr.as_secs_f64() * 1e3,
        rate(sr),
        pr.as_secs_f64() * 1e3,
        rate(pr),
        sr.as_secs_f64() / pr.as_secs_f64()
    );
    println!(
        "{:<10} {:>15.1} MiB {:>20.1} MiB {:>8.2}",
        "size",
        seg_bytes as f64 / 1048576.0,
        plain_bytes as f64 / 1048576.0,
        seg_bytes as f64 / plain_bytes as f64
    );
}
