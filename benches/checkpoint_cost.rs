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
//! `cargo bench --bench checkpoint_cost -- [--motors 1000] [--seconds 120] [--rounds 5] [--partitions 12]`

use std::time::{Duration, Instant};

use anyhow::Result;
use tessera_node::detect::{DetectConfig, build_engine};
use tessera_state::{Checkpoint, CheckpointStore};
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
