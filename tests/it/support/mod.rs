//! What the integration tests share: the embedded Kafka and the test ingest settings, logging,
//! the SQL client helpers ([`sql`]), processes of the test executable and the control-plane
//! cluster made of them ([`cluster`]), and [`TestNode`], the one way a test makes a node's
//! config (in process with [`TestNode::start`], or as JSON for a node process).

pub(crate) mod cluster;
pub(crate) mod demo_process;
pub(crate) mod sql;

use std::path::Path;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::Duration;

use tessera_ingest::{Encoding, Ingest, IngestConfig, ShardBatch, TopicConfig};
use tessera_node::config::{ControlConfig, NodeConfig, StateConfig, StoreConfig};
use tessera_node::detect::{DataQualityConfig, DetectConfig};
use tessera_node::node::Node;
use tessera_node::sql::SqlConfig;
use tessera_sql::{Peer, UserConfig};
use tessera_tls::TlsFiles;
use tessera_workload::embedded::EmbeddedKafka;

/// An embedded Kafka with `brokers` brokers, a `telemetry` topic of `partitions` partitions
/// and a one-partition `dead-letters` topic; returns it and its bootstrap servers.
pub fn embedded_kafka(brokers: i32, partitions: i32) -> (EmbeddedKafka, String) {
    let kafka = EmbeddedKafka::start(brokers).expect("the embedded Kafka starts");
    kafka.create_topic("telemetry", partitions).expect("topic");
    kafka.create_topic("dead-letters", 1).expect("topic");
    let bootstrap = kafka.bootstrap_servers();
    (kafka, bootstrap)
}

/// An ingest config for tests: small batches, quick commits.
pub fn ingest_config(brokers: &str, group: &str, topic: &str, dead_letters: &str) -> IngestConfig {
    IngestConfig {
        brokers: brokers.to_string(),
        group_id: group.to_string(),
        topics: vec![TopicConfig { name: topic.to_string(), encoding: Encoding::ProtobufReading }],
        dead_letter_topic: dead_letters.to_string(),
        shards: 4,
        batch_max_rows: 2048,
        batch_max_age: Duration::from_millis(100),
        commit_interval: Duration::from_millis(200),
        // librdkafka's mock coordinator finishes a rebalance only when every member has
        // rejoined or timed out: short heartbeats and sessions keep group changes quick.
        kafka: [("session.timeout.ms", "6000"), ("heartbeat.interval.ms", "500")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// An empty reading of motor `M{motor}` at `site`, at `event_time_ms`, numbered `sequence`
/// (channels unset: the test sets what it needs).
pub(crate) fn reading(motor: u32, site: &str, event_time_ms: i64, sequence: u64) -> tessera_core::Reading {
    tessera_core::Reading {
        motor_id: tessera_core::MotorId::new(format!("M{motor}")).expect("id"),
        site_id: tessera_core::SiteId::new(site).expect("id"),
        event_time_ms,
        sequence,
        channels: [None; 7],
        extra: Default::default(),
    }
}

/// A plain HTTP/1.1 GET of `path` at `addr`: the whole response, status line first.
pub(crate) fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("write");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read");
    body
}

/// Logs to the test output, filtered by `RUST_LOG` (default: warnings).
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

/// Starts an ingest whose batches arrive on the returned receiver.
pub fn start_ingest(config: IngestConfig) -> (Ingest, Receiver<ShardBatch>) {
    init_logging();
    let (tx, rx) = sync_channel(32);
    (Ingest::start(config, tx).expect("ingest starts"), rx)
}

/// A node's config as tests want it, built up from the telemetry defaults: a site reading one
/// topic of the embedded (or a real) Kafka in its own consumer group, with the test ingest
/// settings ([`ingest_config`]), dead letters to `dead-letters`, alerts to `alerts`, late
/// readings to `late`, and no processing-time idle closes (results depend on the input alone).
#[derive(Debug, Clone)]
pub(crate) struct TestNode {
    config: NodeConfig,
}

impl TestNode {
    /// Site `site` reading `topic` from `brokers` in consumer group `group`.
    pub(crate) fn new(site: &str, brokers: &str, group: &str, topic: &str) -> Self {
        let config = NodeConfig {
            site_id: site.to_string(),
            ingest: ingest_config(brokers, group, topic, "dead-letters"),
            detect: DetectConfig {
                alerts_topic: "alerts".into(),
                late_topic: "late".into(),
                idle_timeout: Duration::from_secs(3600),
                // Judged by processing time: off, so results depend on the input alone.
                data_quality: DataQualityConfig { enabled: false, ..Default::default() },
                wear: tessera_node::detect::WearConfig { enabled: false, ..Default::default() },
                ..Default::default()
            },
            ..Default::default()
        };
        Self { config }
    }

    /// Runs these continuous queries (instead of the default rules).
    pub(crate) fn queries<S: Into<String>>(mut self, queries: impl IntoIterator<Item = S>) -> Self {
        self.config.detect.queries = queries.into_iter().map(Into::into).collect();
        self
    }

    /// Checkpoints into `dir` every `interval`.
    pub(crate) fn state(mut self, dir: &Path, interval: Duration) -> Self {
        self.config.state = StateConfig { dir: Some(dir.to_path_buf()), interval, ..Default::default() };
        self
    }

    /// Keeps raw readings in the site store at `dir`, sealed under the KEK in `kek_file`,
    /// cutting a segment every `segment_interval`.
    pub(crate) fn store(mut self, dir: &Path, kek_file: &Path, segment_interval: Duration) -> Self {
        self.config.store = StoreConfig {
            dir: Some(dir.to_path_buf()),
            kek_file: Some(kek_file.to_path_buf()),
            segment_interval,
            ..Default::default()
        };
        self
    }

    /// Serves Flight SQL on a free loopback port to `users`.
    pub(crate) fn sql(self, users: Vec<UserConfig>) -> Self {
        self.sql_at("127.0.0.1:0", users)
    }

    /// Serves Flight SQL at `listen` to `users`.
    pub(crate) fn sql_at(mut self, listen: &str, users: Vec<UserConfig>) -> Self {
        self.config.sql = SqlConfig {
            listen: Some(listen.parse().expect("a socket address")),
            users,
            ..std::mem::take(&mut self.config.sql)
        };
        self
    }

    /// Federates `fleet` queries with `peers`, sharing `token`.
    pub(crate) fn peers(mut self, peers: Vec<Peer>, token: &str) -> Self {
        self.config.sql.peers = peers;
        self.config.sql.federation_token = Some(token.to_string());
        self
    }

    /// Releases aggregates of columns above a caller's grade for groups of at least `rows`
    /// readings spanning `span` (the site's group policy; the default is for production data).
    pub(crate) fn group_policy(mut self, rows: u64, span: Duration) -> Self {
        self.config.sql.min_group_rows = rows;
        self.config.sql.min_group_span = span;
        self
    }

    /// mTLS with these files.
    pub(crate) fn tls(mut self, files: TlsFiles) -> Self {
        self.config.tls = Some(files);
        self
    }

    /// Takes the cluster-wide queries from the control-plane node at `admin`, read every `poll`.
    pub(crate) fn control(mut self, admin: &str, poll: Duration) -> Self {
        self.config.control = ControlConfig { admin: Some(admin.to_string()), poll, ..Default::default() };
        self
    }

    /// Any other change to the config.
    pub(crate) fn with(mut self, change: impl FnOnce(&mut NodeConfig)) -> Self {
        change(&mut self.config);
        self
    }

    /// The config (for a node process, or to start a node again later).
    pub(crate) fn config(&self) -> NodeConfig {
        self.config.clone()
    }

    /// Starts the node in this process.
    pub(crate) fn start(&self) -> Node {
        init_logging();
        Node::start(&self.config).expect("the node starts")
    }
}

/// Several nodes in this process (the sites of a cluster, or the pods of one site), started
/// from their [`TestNode`]s, waited on together and stopped together.
pub(crate) struct TestCluster {
    /// The running nodes, in the order they were given.
    pub(crate) nodes: Vec<Node>,
}

impl TestCluster {
    /// Starts every node, in order.
    pub(crate) fn start(nodes: impl IntoIterator<Item = TestNode>) -> Self {
        TestCluster { nodes: nodes.into_iter().map(|n| n.start()).collect() }
    }

    /// Waits up to `within` until `done(i, node)` holds for every node; fails the test, naming
    /// `what` and the node's counters, if it does not, or if a node stops on its own.
    pub(crate) fn wait_until(&self, what: &str, within: Duration, done: impl Fn(usize, &Node) -> bool) {
        let until = std::time::Instant::now() + within;
        for (i, node) in self.nodes.iter().enumerate() {
            while !done(i, node) {
                assert!(std::time::Instant::now() < until, "{what} (node {i}): {:?}", node.detect_stats());
                assert!(!node.failed(), "node {i} stopped on its own");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Stops every node, each cleanly.
    pub(crate) fn stop(self) {
        for node in self.nodes {
            node.stop().expect("the node stops");
        }
    }
}
