//! `tessera demo`: the whole system on one machine with nothing installed.
//!
//! - An embedded Kafka (librdkafka's mock cluster, the real protocol), or `--brokers`.
//! - Three sites, each a full [`Node`] as `tessera node` runs it: its own topic
//!   (`telemetry.<site>`: raw data stays home), ingest, the default and demo continuous
//!   queries, a Raft member (the three form the control plane, bootstrapped from
//!   `raft.initial_members`), a Flight SQL endpoint on 127.0.0.1 federating with the other two,
//!   and `/metrics` plus health checks.
//! - The simulator publishing a 1,000-motor fleet in real time with injected faults and a
//!   trickle of bad messages (dead-lettered).
//!
//! It prints a fleet summary every 5 s and each alert as it opens or closes (read back from
//! the alerts topic). When the simulated span ends the cluster keeps serving SQL until
//! Ctrl-C; then every node stops cleanly and the alerts are set beside the injected faults.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{ClientConfig, Message as _};
use tessera_ingest::{IngestConfig, TopicConfig};
use tessera_sql::{Peer, Role, UserConfig};

use crate::bad_input::BadInput;
use crate::embedded::EmbeddedKafka;
use crate::producer::{TelemetryProducer, WireFormat};
use crate::simulate::{FleetSpec, Simulator, site_name};
use tessera_core::now_ms;
use tessera_node::config::NodeConfig;
use tessera_node::control::member::RaftConfig;
use tessera_node::detect::DetectConfig;
use tessera_node::node::Node;
use tessera_node::observe::HttpConfig;
use tessera_node::sql::SqlConfig;

use crate::error::{WorkloadError, io, kafka};

type Result<T, E = WorkloadError> = std::result::Result<T, E>;

/// The demo's SQL users' password (printed in the banner; a demo on loopback only).
pub const DEMO_PASSWORD: &str = "tessera-demo";

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Motors in the fleet.
    pub motors: u32,
    /// Sites: each one a node (3 form a Raft group with a quorum of 2).
    pub sites: u32,
    /// Readings per second per motor.
    pub rate_hz: f64,
    /// The simulated span; afterwards the cluster keeps serving until Ctrl-C.
    pub duration: Duration,
    /// Share of motors with an injected fault.
    pub fault_fraction: f64,
    /// Seed of the simulator.
    pub seed: u64,
    /// Message encoding.
    pub format: WireFormat,
    /// One bad message per this many good ones (0: none).
    pub bad_every: u64,
    /// A real Kafka instead of the embedded one.
    pub brokers: Option<String>,
    /// Site i's Flight SQL port is this plus i (0: any free port).
    pub sql_port: u16,
    /// Site i's metrics/health port is this plus i (0: any free port).
    pub http_port: u16,
    /// Stop once the simulated span has ended instead of serving until Ctrl-C.
    pub exit_when_done: bool,
    /// How long a SQL or console session lasts.
    pub session_ttl: Duration,
    /// Nodes per site, in one consumer group per site (the Helm chart's shape is 3): each site
    /// then checkpoints per partition in a directory its nodes share, and a query at any of
    /// its nodes answers for the whole site.
    pub nodes_per_site: u32,
}

/// What the demo saw.
#[derive(Debug)]
pub struct DemoReport {
    /// Good readings published.
    pub published: u64,
    /// Bad messages published.
    pub bad_published: u64,
    /// Readings the sites took in.
    pub ingested: u64,
    /// Messages the sites dead-lettered.
    pub dead_lettered: u64,
    /// Alert events the sites wrote.
    pub alert_events: u64,
    /// Motors alerted, and how many of them had an injected fault.
    pub motors_alerted: usize,
    /// Motors with an injected fault that were alerted.
    pub faulty_alerted: usize,
}

/// One site of the demo cluster: its first node (a Raft member) and its other nodes.
struct Site {
    name: String,
    node: Node,
    sql: SocketAddr,
    others: Vec<(Node, SocketAddr)>,
}

impl Site {
    /// Every node of the site, the first one first.
    fn nodes(&self) -> impl Iterator<Item = &Node> {
        std::iter::once(&self.node).chain(self.others.iter().map(|(n, _)| n))
    }
}

/// Runs the demo until `stop` is set (or, with `exit_when_done`, the simulated span ends).
pub fn run(opts: &DemoOptions, stop: &AtomicBool) -> Result<DemoReport> {
    tessera_core::ensure(opts.sites >= 1, "--sites", "must be at least 1")?;
    tessera_core::ensure(opts.rate_hz > 0.0, "--rate", "must be positive")?;
    tessera_core::ensure(opts.nodes_per_site >= 1, "--nodes-per-site", "must be at least 1")?;
    let embedded = match &opts.brokers {
        Some(_) => None,
        None => Some(EmbeddedKafka::start(3)?),
    };
    let brokers = match (&opts.brokers, &embedded) {
        (Some(b), _) => b.clone(),
        (None, Some(k)) => k.bootstrap_servers(),
        (None, None) => unreachable!("one of the two is set"),
    };
    let sites: Vec<String> = (0..opts.sites).map(site_name).collect();
    let detect = DetectConfig::demo();
    // Enough partitions for every node of a site to own some.
    let partitions = 3.max(2 * opts.nodes_per_site as i32);
    let mut topics: Vec<(String, i32)> =
        sites.iter().flat_map(|s| [(telemetry_topic(s), partitions), (dead_letter_topic(s), 1)]).collect();
    topics.extend([
        (detect.alerts_topic.clone(), 3),
        (detect.late_topic.clone(), 1),
        (detect.dead_letter_topic.clone(), 1),
    ]);
    // Printed after the console's address, which comes first.
    let kafka_line = match &embedded {
        Some(k) => {
            for (topic, partitions) in &topics {
                k.create_topic(topic, *partitions)?;
            }
            format!("embedded Kafka: librdkafka mock cluster, 3 brokers at {brokers}")
        }
        None => {
            let refs: Vec<(&str, i32)> = topics.iter().map(|(t, p)| (t.as_str(), *p)).collect();
            tessera_node::topics::ensure_topics(&brokers, &refs)?;
            format!("Kafka at {brokers}")
        }
    };

    let data_dir = std::env::temp_dir().join(format!("tessera-demo-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(data_dir.clone());
    let cluster = start_sites(opts, &sites, &brokers, &detect, &data_dir)?;
    let alerts = AlertPrinter::start(&brokers, &detect.alerts_topic)?;
    wait_for_leader(&cluster, stop)?;
    print_banner(&cluster, &kafka_line, &sites);

    let mut producers = BTreeMap::new();
    for site in &sites {
        producers.insert(
            site.clone(),
            TelemetryProducer::new(&brokers, &telemetry_topic(site), opts.format, &Default::default())?,
        );
    }
    let steps = (opts.duration.as_secs_f64() * opts.rate_hz).ceil().max(1.0) as u64;
    let start_ms = now_ms();
    let mut sim = Simulator::new(FleetSpec {
        motors: opts.motors,
        sites: opts.sites,
        rate_hz: opts.rate_hz,
        steps,
        start_ms,
        fault_fraction: opts.fault_fraction,
        seed: opts.seed,
    });
    register_motors(&cluster, &sim)?;
    let faults = sim.ground_truth();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for f in &faults {
        *kinds.entry(format!("{:?}", f.fault)).or_default() += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!(
        "simulating {} motors on {} sites at {} Hz for {:?}; {} injected faults ({}); the first to start:",
        opts.motors,
        opts.sites,
        opts.rate_hz,
        opts.duration,
        faults.len(),
        kinds.join(", ")
    );
    // Skewed clocks last the whole run; the list shows the faults that start later.
    let mut by_start: Vec<_> = faults.iter().filter(|f| f.start_ms > start_ms).collect();
    by_start.sort_by_key(|f| f.start_ms);
    for f in by_start.iter().take(8) {
        println!(
            "  {} {:<8} {:?} from +{}s to +{}s",
            f.motor_id,
            f.site_id,
            f.fault,
            (f.start_ms - start_ms) / 1000,
            (f.end_ms - start_ms) / 1000
        );
    }

    let started = Instant::now();
    let mut last_print = Instant::now();
    let (mut published, mut bad_published, mut step) = (0u64, 0u64, 0u64);
    let bad_kinds = BadInput::all(600_000);
    let mut simulating = true;
    while !stop.load(Ordering::Relaxed) {
        if let Some(s) = cluster.iter().find(|s| s.nodes().any(Node::failed)) {
            return Err(WorkloadError::Stalled(format!("site {} stopped unexpectedly", s.name)));
        }
        if simulating {
            let due = Duration::from_secs_f64(step as f64 / opts.rate_hz);
            match due.checked_sub(started.elapsed()) {
                Some(wait) => std::thread::sleep(wait.min(Duration::from_millis(100))),
                None => match sim.next_step() {
                    Some(readings) => {
                        for r in &readings {
                            let producer = &producers[r.site_id.as_str()];
                            producer.send_readings(std::slice::from_ref(r))?;
                            published += 1;
                            if opts.bad_every > 0 && published % opts.bad_every == 0 {
                                // Bad input goes round the sites' topics.
                                let kind = bad_kinds[(bad_published % bad_kinds.len() as u64) as usize];
                                let (payload, content_type) = kind.encode(r, now_ms());
                                let target = &producers[&sites[(bad_published % sites.len() as u64) as usize]];
                                target.send_raw(Some(r.motor_id.as_str().as_bytes()), &payload, Some(content_type))?;
                                bad_published += 1;
                            }
                        }
                        step += 1;
                    }
                    None => {
                        simulating = false;
                        for p in producers.values() {
                            p.flush(Duration::from_secs(30))?;
                        }
                        if opts.exit_when_done {
                            // Let the sites take in the last readings and close what they can.
                            std::thread::sleep(Duration::from_secs(3));
                            break;
                        }
                        println!(
                            "\nthe simulated span has ended; the cluster keeps serving SQL until Ctrl-C (try the query above)\n"
                        );
                    }
                },
            }
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
        alerts.print_new();
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            print_summary(started, &cluster, &alerts);
        }
    }
    for p in producers.values() {
        p.flush(Duration::from_secs(30))?;
    }
    alerts.print_new();
    print_summary(started, &cluster, &alerts);
    println!("\nstopping the sites...");
    // Every node at once, as Kubernetes stops a release's pods: one after the other, each
    // leaving node would start a rebalance its siblings must finish before they can leave in
    // turn (a consumer's close waits for its group's join in flight).
    let nodes: Vec<(String, Node)> = cluster
        .into_iter()
        .flat_map(|site| {
            let name = site.name;
            std::iter::once(site.node).chain(site.others.into_iter().map(|(n, _)| n)).map(move |n| (name.clone(), n))
        })
        .collect();
    let alert_events: u64 = nodes.iter().map(|(_, node)| node.detect_stats().alerts_sent).sum();
    let stopped = std::thread::scope(|scope| {
        let stopping: Vec<_> = nodes
            .into_iter()
            .map(|(site, node)| {
                scope.spawn(move || {
                    node.stop().map_err(|e| WorkloadError::from(e).during(format!("stopping site {site}")))
                })
            })
            .collect();
        stopping.into_iter().map(|s| s.join().expect("a node's stop panicked")).collect::<Vec<_>>()
    });
    let (mut ingested, mut dead_lettered) = (0, 0);
    for result in stopped {
        let (stats, _) = result?;
        ingested += stats.readings_accepted;
        dead_lettered += stats.dead_letters_sent;
    }
    let alerted = alerts.alerted_motors();
    drop(alerts);
    let faulty: BTreeSet<&str> = faults.iter().map(|f| f.motor_id.as_str()).collect();
    let faulty_alerted = alerted.iter().filter(|m| faulty.contains(m.as_str())).count();
    println!(
        "published {published} readings + {bad_published} bad messages; the sites took in {ingested} readings and dead-lettered {dead_lettered} messages"
    );
    println!(
        "{} motors alerted: {faulty_alerted} of the {} with an injected fault, {} without one",
        alerted.len(),
        faulty.len(),
        alerted.len() - faulty_alerted
    );
    drop(producers);
    drop(embedded);
    println!("demo stopped cleanly");
    Ok(DemoReport {
        published,
        bad_published,
        ingested,
        dead_lettered,
        alert_events,
        motors_alerted: alerted.len(),
        faulty_alerted,
    })
}

/// `127.0.0.1:port`.
fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A site's own telemetry topic.
pub fn telemetry_topic(site: &str) -> String {
    format!("telemetry.{site}")
}

fn dead_letter_topic(site: &str) -> String {
    format!("telemetry-dead-letter.{site}")
}

/// A spare loopback port ([`crate::ports`]), or `base + i` when `base` is set.
fn port(base: u16, i: usize) -> Result<u16> {
    if base != 0 {
        return Ok(base + i as u16);
    }
    crate::ports::spare_loopback_port().map_err(io("finding a spare loopback port"))
}

fn start_sites(
    opts: &DemoOptions,
    sites: &[String],
    brokers: &str,
    detect: &DetectConfig,
    data_dir: &std::path::Path,
) -> Result<Vec<Site>> {
    let (n, per_site) = (sites.len(), opts.nodes_per_site as usize);
    let raft_ports: Vec<u16> = (0..n).map(|i| port(0, i)).collect::<Result<_>>()?;
    // Node j of site i: port base + i + j * sites (the sites' first nodes at base + i).
    let sql_ports: Vec<u16> = (0..n * per_site).map(|k| port(opts.sql_port, k)).collect::<Result<_>>()?;
    let http_ports: Vec<u16> = (0..n * per_site).map(|k| port(opts.http_port, k)).collect::<Result<_>>()?;
    let members: Vec<String> =
        sites.iter().zip(&raft_ports).enumerate().map(|(i, (s, p))| format!("{}={s}@127.0.0.1:{p}", i + 1)).collect();
    // A site of several nodes keeps its readings, windows, alerts and late readings in one
    // store its nodes share, sealed under the site's key: a motor whose partition moves (or
    // whose node dies) keeps its history, answered by the partition's new owner.
    let kek_of = |site: &str| data_dir.join(site).join("site.kek");
    if per_site > 1 {
        for site in sites {
            std::fs::create_dir_all(data_dir.join(site)).map_err(|source| WorkloadError::Io {
                what: format!("creating {}", data_dir.join(site).display()),
                source,
            })?;
            tessera_node::store::new_kek(&kek_of(site), 1)?;
        }
    }
    let hash = tessera_sql::auth::hash_password(DEMO_PASSWORD)?;
    let mut users = vec![
        UserConfig { name: "analyst".into(), password_hash: hash.clone(), role: Role::FleetAnalyst, site: None },
        UserConfig { name: "admin".into(), password_hash: hash.clone(), role: Role::Admin, site: None },
    ];
    // Each site's operator (`operator-site-a`, ...): everything of their own site.
    users.extend(sites.iter().map(|site| UserConfig {
        name: format!("operator-{site}"),
        password_hash: hash.clone(),
        role: Role::SiteOperator,
        site: Some(site.clone()),
    }));
    let federation_token: String = format!("demo-{:032x}", rand::random::<u128>());
    // librdkafka's mock coordinator ends a rebalance only when every member has rejoined or
    // its session timed out: with several nodes per site leaving at once (the demo's stop),
    // short sessions keep each wait short. A real broker keeps the client's defaults.
    let consumer_settings: std::collections::BTreeMap<String, String> = match &opts.brokers {
        None => [("session.timeout.ms", "10000"), ("heartbeat.interval.ms", "1000")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        Some(_) => Default::default(),
    };
    let config = |i: usize, j: usize| {
        let site = &sites[i];
        // Another site: its first node, then its others (when a node is down).
        let peers = sites
            .iter()
            .enumerate()
            .filter(|(_, s)| *s != site)
            .map(|(k, s)| Peer {
                site: s.clone(),
                addr: format!("127.0.0.1:{}", sql_ports[k]),
                fallbacks: (1..per_site).map(|j| format!("127.0.0.1:{}", sql_ports[k + j * n])).collect(),
            })
            .collect::<Vec<_>>();
        let mut config = NodeConfig {
            site_id: site.clone(),
            ingest: IngestConfig {
                brokers: brokers.to_string(),
                group_id: format!("tessera-{site}"),
                topics: vec![TopicConfig {
                    name: telemetry_topic(site),
                    encoding: tessera_ingest::Encoding::ProtobufReading,
                }],
                dead_letter_topic: dead_letter_topic(site),
                batch_max_age: Duration::from_millis(500),
                kafka: consumer_settings.clone(),
                ..Default::default()
            },
            detect: detect.clone(),
            sql: SqlConfig {
                listen: Some(loopback(sql_ports[i + j * n])),
                users: users.clone(),
                peers,
                federation_token: Some(federation_token.clone()),
                session_ttl: opts.session_ttl,
                ..Default::default()
            },
            http: HttpConfig { listen: Some(loopback(http_ports[i + j * n])) },
            ..Default::default()
        };
        if j == 0 {
            config.raft = Some(RaftConfig {
                node_id: Some(i as u64 + 1),
                listen: loopback(raft_ports[i]),
                data_dir: data_dir.join(site).join("raft"),
                initial_members: members.clone(),
                ..Default::default()
            });
        } else {
            // The site's other nodes take the cluster's queries and registry from its member.
            config.control.admin = Some(format!("127.0.0.1:{}", raft_ports[i]));
        }
        if per_site > 1 {
            // The site's nodes share its partitions: per-partition checkpoints in one
            // directory, one store (each node a writer in it, answering for the partitions it
            // owns), and every query asks them all.
            let site_sql: Vec<String> = (0..per_site).map(|j| format!("127.0.0.1:{}", sql_ports[i + j * n])).collect();
            config.state.dir = Some(data_dir.join(site).join("state"));
            config.store.dir = Some(data_dir.join(site).join("store"));
            config.store.writer = Some(format!("node-{j}"));
            config.store.kek_file = Some(kek_of(site));
            config.store.segment_interval = Duration::from_secs(5);
            config.sql.advertise = Some(site_sql[j].clone());
            config.sql.site_nodes = site_sql;
        }
        config
    };
    let start = |i: usize, j: usize| -> Result<(Node, SocketAddr)> {
        let node = Node::start(&config(i, j))
            .map_err(|e| WorkloadError::from(e).during(format!("starting node {j} of site {}", sites[i])))?;
        let sql = node.sql_addr().unwrap_or(loopback(sql_ports[i + j * n]));
        Ok((node, sql))
    };
    let mut cluster = Vec::new();
    for (i, site) in sites.iter().enumerate() {
        let (node, sql) = start(i, 0)?;
        cluster.push(Site { name: site.clone(), node, sql, others: Vec::new() });
    }
    if per_site > 1 {
        // The other nodes read the control plane as they start: once it has a leader.
        wait_for_leader(&cluster, &AtomicBool::new(false))?;
        for j in 1..per_site {
            for (i, site) in cluster.iter_mut().enumerate() {
                site.others.push(start(i, j)?);
            }
        }
    }
    Ok(cluster)
}

/// Waits until the sites' Raft members agree on a leader (the first election).
fn wait_for_leader(cluster: &[Site], stop: &AtomicBool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let leaders: BTreeSet<Option<u64>> =
            cluster.iter().map(|s| s.node.raft_status().and_then(|r| r.leader)).collect();
        if leaders.len() == 1 && leaders.iter().next().is_some_and(Option::is_some) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(WorkloadError::Stalled("the sites' Raft members elected no leader in 60 s".into()));
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Records which site owns which motor in the control plane (the `motors` and `sites` tables),
/// as an operator would with `tessera cluster assign-motors`.
fn register_motors(cluster: &[Site], sim: &Simulator) -> Result<()> {
    let Some(admin) = cluster.iter().find_map(|s| s.node.raft_addr()) else { return Ok(()) };
    let mut by_site: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (motor, site) in sim.motors() {
        by_site.entry(site.to_string()).or_default().push(motor.to_string());
    }
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(io("building a runtime"))?;
    runtime.block_on(async {
        let admin = admin.to_string();
        let mut client =
            tessera_node::control::admin_client(&admin, &tessera_tls::ClientTls::Plain, Duration::from_secs(10))
                .await?;
        for (site, motors) in by_site {
            let n = motors.len();
            let request =
                tessera_proto::raft::AssignMotorsRequest { site: site.clone(), motors, actor: "tessera-demo".into() };
            client.assign_motors(request).await.map_err(|s| tessera_node::control::status_error(&admin, s))?;
            println!("control plane: {n} motors assigned to {site}");
        }
        Ok(())
    })
}

fn print_banner(cluster: &[Site], kafka_line: &str, sites: &[String]) {
    let console = cluster[0].node.http_addr().map_or("-".into(), |a| a.to_string());
    println!("Web console: http://{console}/console (every node serves one; the sites' nodes are listed below)");
    let operators: Vec<String> = sites.iter().map(|s| format!("operator-{s}")).collect();
    println!(
        "  users: analyst (fleet-analyst), admin, {} (site operators); password {DEMO_PASSWORD}",
        operators.join(", ")
    );
    println!("{kafka_line}");
    println!("\n{} sites, one Raft group:", cluster.len());
    for s in cluster {
        for (node, sql) in &s.others {
            println!(
                "  {}  Flight SQL {sql}  console http://{}/console  (another node of the site, answering for all of it)",
                s.name,
                node.http_addr().map_or("-".into(), |a| a.to_string()),
            );
        }
        let raft = s.node.raft_status();
        println!(
            "  {}  Flight SQL {}  console http://{}/console  Raft node {} at {}",
            s.name,
            s.sql,
            s.node.http_addr().map_or("-".into(), |a| a.to_string()),
            raft.as_ref().map_or(0, |r| r.node_id),
            s.node.raft_addr().map_or("-".into(), |a| a.to_string()),
        );
    }
    let first = &cluster[0];
    println!("SQL: the same users. In another terminal:");
    println!(
        "  cargo run -q -p tessera-cli --bin tessera -- sql --at {} --user analyst --password {DEMO_PASSWORD} \\\n    \"SELECT site_id, count(DISTINCT motor_id) AS motors_alerted, round(max(peak_score), 1) AS worst FROM fleet.alerts GROUP BY site_id ORDER BY site_id\"\n",
        first.sql
    );
}

fn print_summary(started: Instant, cluster: &[Site], alerts: &AlertPrinter) {
    let raft = cluster.iter().find_map(|s| s.node.raft_status());
    println!(
        "[{:>5.0}s] Raft term {} leader {} | alerts open {} | events: {} open, {} update, {} close",
        started.elapsed().as_secs_f64(),
        raft.as_ref().map_or(0, |r| r.term),
        raft.as_ref().and_then(|r| r.leader).map_or("none".into(), |l| format!("node {l}")),
        cluster.iter().flat_map(Site::nodes).map(|n| n.detect_stats().engine.alerts_open).sum::<u64>(),
        alerts.count("open"),
        alerts.count("update"),
        alerts.count("close"),
    );
    for s in cluster {
        let (ingest, detect): (Vec<_>, Vec<_>) = s.nodes().map(|n| (n.ingest_stats(), n.detect_stats())).unzip();
        let sum = |f: &dyn Fn(&tessera_ingest::IngestStats) -> u64| ingest.iter().map(f).sum::<u64>();
        let windows: u64 = detect.iter().flat_map(|d| d.engine.windows.iter()).map(|w| w.1.windows_closed).sum();
        println!(
            "         {:<7} {:>8} readings | lag {:>5} | windows closed {:>6} | dead letters {:>3} | late {:>3} | alert events {:>4}{}",
            s.name,
            sum(&|i| i.readings_accepted),
            sum(&|i| i.consumer_lag),
            windows,
            sum(&|i| i.dead_letters_sent),
            detect.iter().map(|d| d.late_sent).sum::<u64>(),
            detect.iter().map(|d| d.alerts_sent).sum::<u64>(),
            if s.others.is_empty() { String::new() } else { format!(" | {} nodes", s.others.len() + 1) },
        );
    }
}

/// Reads the alerts topic (what a downstream system would see) and prints each alert as it
/// opens or closes.
struct AlertPrinter {
    consumer: BaseConsumer,
    counts: Mutex<BTreeMap<String, u64>>,
    motors: Mutex<BTreeSet<String>>,
}

impl AlertPrinter {
    fn start(brokers: &str, topic: &str) -> Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("tessera-demo-console-{}", std::process::id()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .map_err(kafka("creating the alerts reader"))?;
        consumer.subscribe(&[topic]).map_err(kafka(format!("subscribing to {topic}")))?;
        Ok(Self { consumer, counts: Mutex::default(), motors: Mutex::default() })
    }

    /// Prints the alert events that arrived since the last call.
    fn print_new(&self) {
        while let Some(Ok(message)) = self.consumer.poll(Duration::ZERO) {
            let Some(Ok(event)) = message.payload().map(serde_json::from_slice::<serde_json::Value>) else { continue };
            let field = |k: &str| event.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
            let state = field("state");
            *self.counts.lock().expect("not poisoned").entry(state.clone()).or_default() += 1;
            let motor = field("motor_id");
            self.motors.lock().expect("not poisoned").insert(motor.clone());
            if state == "update" {
                continue;
            }
            let at = event.get("window_end_ms").and_then(serde_json::Value::as_i64).unwrap_or(0);
            let at = chrono::DateTime::from_timestamp_millis(at)
                .map_or_else(String::new, |t| t.format("%H:%M:%S").to_string());
            println!(
                "ALERT {:<5} {:<8} {} {:<6} {:<12} score {:>5.1} (window ending {at} UTC)",
                state,
                field("severity"),
                field("site_id"),
                motor,
                field("query"),
                event.get("peak_score").and_then(serde_json::Value::as_f64).unwrap_or(f64::NAN),
            );
        }
    }

    fn count(&self, state: &str) -> u64 {
        self.counts.lock().expect("not poisoned").get(state).copied().unwrap_or(0)
    }

    fn alerted_motors(&self) -> BTreeSet<String> {
        self.motors.lock().expect("not poisoned").clone()
    }
}

/// Removes the demo's scratch directory (Raft logs) at the end.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
