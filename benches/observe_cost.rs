//! What observability costs the pipeline. The same readings go through a whole node (ingest →
//! detection with the default rules), in one run, alternating three modes, each in a fresh
//! process (a process has one global tracing subscriber):
//!
//! - `off`: logs only, no exporter (the default);
//! - `otlp`: every span (`ingest.batch`, `detect.step`, `alert.emit`) exported over OTLP/gRPC
//!   to a receiver this bench hosts, sampling 1.0;
//! - `otlp+scrape`: as `otlp`, and `/metrics` scraped every 100 ms (Prometheus scrapes every
//!   15–30 s: an upper bound).
//!
//! Each child configures its node as an operator would, with a `node.toml` read by the same
//! loader as `tessera node` (defaults everywhere else), and prints its rate from the first
//! consumed message to the last reading taken in by the detection stage; the parent prints
//! rates and ratios to `off`.
//!
//! `cargo bench --bench observe_cost -- [--readings 600000] [--rounds 2]`

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use tessera_node::config::{NodeConfig, TelemetryConfig};
use tessera_node::node::Node;
use tessera_node::topics::ensure_topics;
use tessera_suite::{TansuBroker, producer, publish, test_fleet};
use tessera_workload::producer::WireFormat;

const TOPIC: &str = "observe-telemetry";
const CHILD: &str = "OBSERVE_COST_CHILD";

/// Counts the spans it is sent.
#[derive(Clone, Default)]
struct Receiver(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize =
            request.into_inner().resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn main() -> Result<()> {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let (mut readings, mut rounds) = (600_000u64, 2u32);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--readings" => readings = it.next().context("--readings N")?.parse()?,
            "--rounds" => rounds = it.next().context("--rounds N")?.parse()?,
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    let broker = TansuBroker::start()?;
    let brokers = broker.bootstrap_servers();
    ensure_topics(
        &brokers,
        &[
            (TOPIC, 6),
            ("observe-dead-letters", 1),
            ("observe-alerts", 3),
            ("observe-late", 1),
            ("observe-detect-dlq", 1),
        ],
    )?;
    let motors = 1000;
    let mut sim = test_fleet(motors, readings / u64::from(motors), 11);
    let published = publish(&mut sim, &producer(&brokers, TOPIC, WireFormat::Protobuf)?, None)?;
    eprintln!("published {} readings", published.readings);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let receiver = Receiver::default();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let otlp = format!("http://{}", listener.local_addr()?);
    let incoming = futures::stream::unfold(listener, |l| async move { Some((l.accept().await.map(|(s, _)| s), l)) });
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(incoming),
    );

    let modes = ["off", "otlp", "otlp+scrape"];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for round in 0..rounds {
        for (m, mode) in modes.iter().enumerate() {
            let before = receiver.0.load(Ordering::Relaxed);
            let spec = format!("{mode}|{brokers}|{otlp}|{}|observe-{round}-{m}", published.readings);
            let out = Command::new(std::env::current_exe()?).env(CHILD, &spec).output()?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                bail!("{mode}: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
            }
            let rate: f64 =
                stdout.lines().find_map(|l| l.strip_prefix("RATE ")).context("no RATE line")?.trim().parse()?;
            std::thread::sleep(Duration::from_millis(500)); // the last export batch
            let spans = receiver.0.load(Ordering::Relaxed) - before;
            println!("round {round} {mode:<12} {rate:>10.0} readings/s  ({spans} spans received)");
            rates[m].push(rate);
        }
    }
    let best = |v: &Vec<f64>| v.iter().copied().fold(0.0, f64::max);
    let off = best(&rates[0]);
    for (m, mode) in modes.iter().enumerate() {
        println!("best {mode:<12} {:>10.0} readings/s  ratio to off {:.3}", best(&rates[m]), best(&rates[m]) / off);
    }
    Ok(())
}

/// One measured run in this process: `mode|brokers|otlp|readings|group`.
fn child(spec: &str) -> Result<()> {
    let parts: Vec<&str> = spec.split('|').collect();
    let [mode, brokers, otlp, readings, group] = parts[..] else { bail!("bad spec {spec}") };
    let readings: u64 = readings.parse()?;
    let exporting = mode != "off";
    let telemetry = TelemetryConfig { otlp_endpoint: exporting.then(|| otlp.to_string()), ..Default::default() };
    let guard = tessera_node::telemetry::init(&telemetry, &Default::default(), "warn")?;
    let http = if mode == "otlp+scrape" { "[http]\nlisten = \"127.0.0.1:0\"\n" } else { "" };
    let toml = format!(
        r#"site_id = "site-a"

[ingest]
brokers = "{brokers}"
group_id = "{group}"
topics = [{{ name = "{TOPIC}", encoding = "protobuf_reading" }}]
dead_letter_topic = "observe-dead-letters"

[detect]
alerts_topic = "observe-alerts"
late_topic = "observe-late"
dead_letter_topic = "observe-detect-dlq"
{http}"#
    );
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("node.toml");
    std::fs::write(&file, toml)?;
    let node = Node::start(&NodeConfig::load(Some(&file))?)?;
    let scraper = node.http_addr().map(|addr| {
        std::thread::spawn(move || {
            let mut scrapes = 0u64;
            while let Ok(mut s) = std::net::TcpStream::connect(addr) {
                use std::io::{Read as _, Write as _};
                if write!(s, "GET /metrics HTTP/1.0\r\n\r\n").is_err() {
                    break;
                }
                let mut body = String::new();
                let _ = s.read_to_string(&mut body);
                scrapes += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            scrapes
        })
    });
    let taken_in = || node.detect_stats().engine.windows.first().map_or(0, |(_, w)| w.rows_in);
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut first = None;
    while taken_in() < readings {
        anyhow::ensure!(Instant::now() < deadline && !node.failed(), "took in {} of {readings}", taken_in());
        if first.is_none() && node.ingest_stats().messages > 0 {
            first = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = first.context("consumed nothing")?.elapsed().as_secs_f64();
    println!("RATE {}", readings as f64 / secs);
    node.stop()?;
    if let Some(scraper) = scraper {
        let scrapes = scraper.join().map_err(|_| anyhow::anyhow!("scraper panicked"))?;
        eprintln!("{scrapes} scrapes");
    }
    drop(guard);
    Ok(())
}
