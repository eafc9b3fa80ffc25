//! `tessera simulate`: publishes a simulated fleet's telemetry to Kafka (see
//! [`tessera_workload::simulate`]), with injected faults and their ground truth, in real time
//! or as fast as possible.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use tessera_core::now_ms;
use tessera_workload::simulate::{FleetSpec, Simulator, site_name};

use crate::args::{FleetArgs, TopicArgs};

/// The flags of `tessera simulate`.
#[derive(clap::Args)]
pub struct SimulateArgs {
    /// Where to publish.
    #[command(flatten)]
    pub target: TopicArgs,
    /// The simulated fleet.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Publish as fast as possible (event times end now) instead of in real time.
    #[arg(long)]
    pub fast: bool,
    /// Write the injected faults here, one JSON object per line.
    #[arg(long)]
    pub ground_truth: Option<PathBuf>,
    /// Publish each site's readings to its own topic, `<topic>.<site>` (raw data stays
    /// at its site: each site's nodes consume only theirs).
    #[arg(long)]
    pub per_site_topics: bool,
}

/// Publishes the fleet's readings until the simulated span ends or `stop`.
pub fn run(args: SimulateArgs, stop: &AtomicBool) -> Result<()> {
    let SimulateArgs { target, fleet, fast, ground_truth, per_site_topics } = args;
    let FleetArgs { motors, sites, rate, duration, fault_fraction, seed, format } = fleet;
    let duration = duration.unwrap_or(Duration::from_secs(60));
    anyhow::ensure!(rate > 0.0, "--rate must be positive");
    let steps = (duration.as_secs_f64() * rate).ceil() as u64;
    let start_ms = now_ms() - if fast { duration.as_millis() as i64 } else { 0 };
    let mut sim = Simulator::new(FleetSpec { motors, sites, rate_hz: rate, steps, start_ms, fault_fraction, seed });
    if let Some(path) = ground_truth {
        crate::files::write_jsonl(&path, &sim.ground_truth())?;
    }
    let mut producers = BTreeMap::new();
    match per_site_topics {
        true => {
            for site in (0..sites).map(site_name) {
                let topic = TopicArgs {
                    topic: format!("{}.{site}", target.topic),
                    brokers: target.brokers.clone(),
                    partitions: target.partitions,
                };
                producers.insert(site, topic.producer(format)?);
            }
        }
        false => {
            producers.insert(String::new(), target.producer(format)?);
        }
    }
    let started = Instant::now();
    let mut step = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if !fast {
            let due = Duration::from_secs_f64(step as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let Some(readings) = sim.next_step() else { break };
        match per_site_topics {
            true => {
                for r in &readings {
                    producers[r.site_id.as_str()].send_readings(std::slice::from_ref(r))?;
                }
            }
            false => producers[""].send_readings(&readings)?,
        }
        step += 1;
    }
    let mut delivered = 0;
    for producer in producers.values() {
        delivered += producer.flush(Duration::from_secs(60))?.delivered;
    }
    println!(
        "published {delivered} messages ({} readings) in {:.1}s",
        step * u64::from(motors),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
