//! What a checkpoint costs a node, next to the work it protects.
//!
//! A fleet of `--motors` motors at 10 Hz runs through the engine for `--seconds` of event time
//! (pushed as ingest-sized batches, one thread); then, `--rounds` times: the engine state is
//! encoded (`StreamEngine::checkpoint`), written durably to a checkpoint store in a temporary
//! directory (temp file, fsync, rename, directory fsync), and restored into a fresh engine. The
//! figures are medians, printed next to the time the engine took for one checkpoint interval
//! (5 s) of input, and as the share of the interval the detection thread pauses for them (a
//! node encodes on the detection thread and writes on its checkpoint writer thread).
//!
//! A node checkpoints per Kafka partition (`StreamEngine::checkpoint_motors` of each partition's
//! motors, `StreamEngine::adopt` on the new owner): the same state is also encoded split over
//! `--partitions` partitions (motors spread by hash, as a keyed producer does), and adopted back
//! partition by partition, to show what the split adds.
//!
//! Two rule sets: the shipped default (`motor_health`, 10 s windows; its `extra[...]` channels
//! make it keep raw rows) and the fault tests' pair (1 s tumbling running aggregates, and 3 s
//! hopping windows with raw rows).
//!
//! Where the partitions' checkpoints are kept, side by side in one run: the same per-partition
//! checkpoints written (one barrier: every partition) and then read back as a new owner does
//! (claim and load), to a directory on this disk (fsync), to an object store on local files,
//! and, with `TESSERA_PYTHON` naming a Python with moto (scripts/setup.sh), to moto's
//! S3-compatible server on loopback; each as a ratio to the directory.
//!
//! `cargo bench --bench checkpoint_cost -- [--motors 1000] [--seconds 120] [--rounds 5] [--partitions 12]`

use std::time::{Duration, Instant};

use anyhow::Result;
use std::sync::Arc;
use tessera_node::detect::{DetectConfig, build_engine};

use object_store::ObjectStore;
use tessera_state::{Checkpoint, CheckpointStore, ObjectCheckpointStore, PartitionStore};
use tessera_stream::StreamEngine;
use tessera_suite::{bench_arg as arg, median};
use tessera_workload::simulate::{FleetSpec, Simulator};

const RAW_ROW_QUERIES: &[&str] = &[
    "CREATE CONTINUOUS QUERY health WITH (open_above = 4, close_below = 2, open_windows = 2, close_windows = 2) AS
     SELECT motor_id, window_start, count(*) AS n, avg(current_a) AS current_a,
            greatest(abs(zscore(motor_id, window_start, avg(current_a), 10, 5)),
                     abs(zscore(motor_id, window_start, avg(vibration_x_rms), 10, 5)),
                     abs(zscore(motor_id, window_start, avg(temperature_c), 10, 5))) AS score
     FROM TUMBLE(telemetry, ts, INTERVAL '1 second') GROUP BY motor_id, window_start",
    "CREATE CONTINUOUS QUERY spikes WITH (open_above = 5, close_below = 2, open_windows = 1, close_windows = 3) AS
     SELECT motor_id, window_start, count(DISTINCT seq) AS n, spike(motor_id, window_start, max(current_a), 8) AS score
     FROM HOP(telemetry, ts, INTERVAL '1 second', INTERVAL '3 seconds') WHERE current_a > 0 GROUP BY motor_id, window_start",
];

fn run(
    name: &str,
    detect: &DetectConfig,
    motors: u32,
    seconds: u64,
    rounds: u64,
    interval_s: u64,
    partitions: u64,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let mut engine = build_engine(detect)?;
    let steps = seconds * 10;
    let mut sim = Simulator::new(FleetSpec {
        motors,
        sites: 3,
        rate_hz: 10.0,
        steps,
        start_ms: 1_700_000_000_000,
        fault_fraction: 0.05,
        seed: 3,
    });
    let rows_per_batch = 8192 / motors as usize;
    let mut pushed = Duration::ZERO;
    let mut batch_steps = Vec::new();
    loop {
        let step = sim.next_step();
        let done = step.is_none();
        batch_steps.extend(step);
        if batch_steps.len() >= rows_per_batch.max(1) || (done && !batch_steps.is_empty()) {
            let mut builder = tessera_ingest::ShardBuilder::with_capacity(8192);
            batch_steps.iter().flatten().for_each(|r| builder.append(r));
            let batch = builder.finish();
            batch_steps.clear();
            let t = Instant::now();
            rt.block_on(engine.push(&batch, 0))?;
            pushed += t.elapsed();
        }
        if done {
            break;
        }
    }
    let per_interval = pushed.mul_f64(interval_s as f64 / seconds as f64);
    let dir = tempfile::tempdir()?;
    let mut store = CheckpointStore::open(dir.path(), 3)?;
    let (mut encode, mut write, mut restore) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0;
    for id in 1..=rounds {
        let t = Instant::now();
        let state = engine.checkpoint()?;
        encode.push(t.elapsed());
        let written = store.write(&Checkpoint {
            id,
            created_ms: 0,
            offsets: Vec::new(),
            sections: vec![("engine".into(), state.clone())],
        })?;
        write.push(written.elapsed);
        bytes = written.bytes;
        let mut fresh: StreamEngine = build_engine(detect)?;
        let t = Instant::now();
        fresh.restore(&state)?;
        restore.push(t.elapsed());
    }
    // Split per partition, as the node writes it, and adopted back partition by partition.
    let partition_of: std::collections::HashMap<String, u64> = engine
        .motor_ids()
        .into_iter()
        .map(|m| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            m.hash(&mut h);
            (m, h.finish() % partitions)
        })
        .collect();
    let (mut split_encode, mut adopt) = (Vec::new(), Vec::new());
    let mut last_parts = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let parts: Vec<Vec<u8>> = (0..partitions)
            .map(|p| engine.checkpoint_motors(&|m| partition_of.get(m) == Some(&p)))
            .collect::<Result<_, _>>()?;
        split_encode.push(t.elapsed());
        let mut fresh: StreamEngine = build_engine(detect)?;
        let t = Instant::now();
        for part in &parts {
            fresh.adopt(part)?;
        }
        adopt.push(t.elapsed());
        assert_eq!(fresh.state_digest()?, engine.state_digest()?, "the partitions add up to the whole state");
        last_parts = parts;
    }
    let (split_encode, adopt) = (median(split_encode), median(adopt));
    let (encode, write, restore) = (median(encode), median(write), median(restore));
    let open = engine.stats().windows.iter().map(|(_, w)| w.windows_open).sum::<u64>();
    println!(
        "{name}: {motors} motors, {open} open windows: checkpoint {:.2} MB; encode {:.1} ms (split over {partitions} partitions {:.1} ms), \
         durable write {:.1} ms, restore {:.1} ms (adopting the {partitions} partitions {:.1} ms); \
         one {interval_s} s interval of input took {:.1} ms to process ({:.0} readings/s); the detection thread pauses {:.2} % of the interval \
         for the split encode (the write is on the checkpoint writer thread; encode + write on one thread would be {:.2} %)",
        bytes as f64 / 1e6,
        encode.as_secs_f64() * 1e3,
        split_encode.as_secs_f64() * 1e3,
        write.as_secs_f64() * 1e3,
        restore.as_secs_f64() * 1e3,
        adopt.as_secs_f64() * 1e3,
        per_interval.as_secs_f64() * 1e3,
        (motors as u64 * steps) as f64 / pushed.as_secs_f64(),
        100.0 * split_encode.as_secs_f64() / interval_s as f64,
        100.0 * (split_encode + write).as_secs_f64() / interval_s as f64,
    );
    compare_stores(name, &last_parts, rounds)
}

/// Opens (claims) partition `p`'s store of one kind.
type OpenStore = Box<dyn Fn(usize) -> Result<Box<dyn PartitionStore>>>;

/// Where the checkpoints go: a barrier's writes (every partition) and a new owner's reads
/// (claim and load every partition), per kind of store, medians over `rounds`, interleaved.
fn compare_stores(name: &str, parts: &[Vec<u8>], rounds: u64) -> Result<()> {
    let runtime = Arc::new(tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?);
    let dir = tempfile::tempdir()?;
    let objects_dir = tempfile::tempdir()?;
    let s3 = match std::env::var("TESSERA_PYTHON") {
        Ok(python) => Some(tessera_suite::s3::S3Server::start(&python, "bench")?),
        Err(_) => None,
    };
    let mut kinds: Vec<(&str, OpenStore)> = Vec::new();
    let root = dir.path().to_path_buf();
    kinds.push((
        "directory (fsync)",
        Box::new(move |p| Ok(Box::new(CheckpointStore::open(root.join(p.to_string()), 3)?))),
    ));
    let local: Arc<dyn ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(objects_dir.path())?);
    let rt = runtime.clone();
    kinds.push((
        "object store, local files",
        Box::new(move |p| {
            Ok(Box::new(ObjectCheckpointStore::claim(local.clone(), p.to_string().into(), 3, rt.clone())?))
        }),
    ));
    if let Some(s3) = &s3 {
        let options: Vec<(String, String)> = s3.options().into_iter().collect();
        let (store, _) = object_store::parse_url_opts(&url::Url::parse("s3://bench/checkpoints")?, options)?;
        let store: Arc<dyn ObjectStore> = Arc::from(store);
        let rt = runtime.clone();
        kinds.push((
            "S3 (moto, loopback)",
            Box::new(move |p| {
                Ok(Box::new(ObjectCheckpointStore::claim(
                    store.clone(),
                    format!("checkpoints/{p}").into(),
                    3,
                    rt.clone(),
                )?))
            }),
        ));
    }
    let mut writes = vec![Vec::new(); kinds.len()];
    let mut reads = vec![Vec::new(); kinds.len()];
    for next_id in 1..=rounds {
        for (k, (_, open)) in kinds.iter().enumerate() {
            let mut stores = (0..parts.len()).map(open).collect::<Result<Vec<_>>>()?;
            let t = Instant::now();
            for (p, store) in stores.iter_mut().enumerate() {
                store.write(&Checkpoint {
                    id: next_id,
                    created_ms: 0,
                    offsets: Vec::new(),
                    sections: vec![("engine".into(), parts[p].clone())],
                })?;
            }
            writes[k].push(t.elapsed());
            let t = Instant::now();
            for (p, part) in parts.iter().enumerate() {
                let loaded = open(p)?.latest()?.expect("just written");
                assert_eq!(&loaded.checkpoint.sections[0].1, part);
            }
            reads[k].push(t.elapsed());
        }
    }
    let (base_write, base_read) = (median(writes[0].clone()), median(reads[0].clone()));
    for (k, (kind, _)) in kinds.iter().enumerate() {
        let (write, read) = (median(writes[k].clone()), median(reads[k].clone()));
        println!(
            "{name}: {} partitions, {:.2} MB: {kind}: a barrier's writes {:.1} ms ({:.2}x the directory), a new owner's claim and load {:.1} ms ({:.2}x)",
            parts.len(),
            parts.iter().map(Vec::len).sum::<usize>() as f64 / 1e6,
            write.as_secs_f64() * 1e3,
            write.as_secs_f64() / base_write.as_secs_f64(),
            read.as_secs_f64() * 1e3,
            read.as_secs_f64() / base_read.as_secs_f64(),
        );
    }
    if s3.is_none() {
        println!("{name}: S3 not measured: set TESSERA_PYTHON to a Python with moto (scripts/setup.sh)");
    }
    Ok(())
}

fn main() -> Result<()> {
    let (motors, seconds, rounds, partitions) =
        (arg("--motors", 1000) as u32, arg("--seconds", 120), arg("--rounds", 5), arg("--partitions", 12).max(1));
    let interval_s = 5;
    let long_idle =
        |queries: Vec<String>| DetectConfig { queries, idle_timeout: Duration::from_secs(3600), ..Default::default() };
    run(
        "default rules (motor_health; its extra[...] channels keep raw rows)",
        &long_idle(Vec::new()),
        motors,
        seconds,
        rounds,
        interval_s,
        partitions,
    )?;
    run(
        "raw-row queries (fault tests)",
        &long_idle(RAW_ROW_QUERIES.iter().map(|s| s.to_string()).collect()),
        motors,
        seconds,
        rounds,
        interval_s,
        partitions,
    )?;
    Ok(())
}
