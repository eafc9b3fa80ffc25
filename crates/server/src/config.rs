//! Layered node configuration: built-in defaults, then a TOML file, then environment
//! variables `TESSERA__SECTION__KEY` (e.g. `TESSERA__INGEST__BROKERS`), then validation.
//! Errors name the field. `deploy/tessera.example.toml` documents every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use tessera_ingest::IngestConfig;

use crate::detect::DetectConfig;
use crate::sql::SqlConfig;
use crate::storage::StoreConfig;
use tessera_core::GradeMap;

/// A node's configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// The site (plant) this node belongs to.
    pub site_id: String,
    /// Kafka ingest.
    pub ingest: IngestConfig,
    /// Windows, continuous queries and alerts.
    pub detect: DetectConfig,
    /// Checkpoints of the detection state.
    pub state: StateConfig,
    /// The control plane this node takes cluster-wide queries from.
    pub control: ControlConfig,
    /// The Flight SQL endpoint.
    pub sql: SqlConfig,
    /// The site-local store of raw telemetry (encrypted segments, retention, shredding).
    pub store: StoreConfig,
    /// The grade of each column of each stream (`[grades.<stream>] default = "..."`,
    /// `[grades.<stream>.columns] <column> = "..."`); defaults: [`GradeMap::builtin`]. The
    /// cluster's policy can raise them, never lower them.
    pub grades: GradeMap,
    /// mTLS on every gRPC endpoint and client of this node (`[tls] ca`, `cert`, `key`; see
    /// `tessera cert`); unset: in the clear (a trusted lab network only).
    pub tls: Option<tessera_tls::TlsFiles>,
    /// This node as a member of the cluster's control plane (Raft); unset: it is not one, and
    /// reads the cluster's queries from `[control] admin`.
    pub raft: Option<RaftConfig>,
    /// Prometheus `/metrics` and the health endpoints.
    pub http: HttpConfig,
    /// Tracing export (OpenTelemetry, OTLP over gRPC).
    pub telemetry: TelemetryConfig,
}

/// The `[raft]` section: the node runs a control-plane member in its own process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// This node's Raft id, unique in the cluster; unset: `id_base` plus the pod's ordinal
    /// (`TESSERA_POD_ORDINAL`, else the `-N` suffix of the host name, as a StatefulSet names
    /// its pods).
    pub node_id: Option<u64>,
    /// See `node_id`: one base per site keeps the sites' ids apart (site a 100.., b 200..).
    pub id_base: u64,
    /// Where the Raft and admin gRPC endpoint listens.
    pub listen: SocketAddr,
    /// The address other nodes reach this one at (default: the listen address).
    pub advertise: Option<String>,
    /// The Raft log, state machine and snapshots (site-local durable disk).
    pub data_dir: PathBuf,
    /// The cluster's first members, `ID=SITE@HOST:PORT`. On its first start the member with
    /// the lowest id initialises the cluster with them (no `tessera cluster init` needed);
    /// later starts, and every other member, ignore it. Empty: an operator initialises.
    pub initial_members: Vec<String>,
    /// Leader heartbeat period, ms.
    pub heartbeat_ms: u64,
    /// Election timeout range, ms; raise both between sites with slow links.
    pub election_timeout_min_ms: u64,
    /// See `election_timeout_min_ms`.
    pub election_timeout_max_ms: u64,
    /// How long a write may wait for a quorum, ms.
    pub write_timeout_ms: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        let d = tessera_consensus::RaftSettings::new(0, "", "0.0.0.0:7070".parse().expect("address"), "");
        Self {
            node_id: None,
            id_base: 0,
            listen: d.listen,
            advertise: None,
            data_dir: PathBuf::new(),
            initial_members: Vec::new(),
            heartbeat_ms: d.heartbeat_ms,
            election_timeout_min_ms: d.election_timeout_min_ms,
            election_timeout_max_ms: d.election_timeout_max_ms,
            write_timeout_ms: d.write_timeout_ms,
        }
    }
}

impl RaftConfig {
    /// The node's Raft id: `node_id`, or `id_base` plus the pod ordinal (see `node_id`).
    pub fn resolved_node_id(&self) -> Result<u64> {
        if let Some(id) = self.node_id {
            return Ok(id);
        }
        let ordinal = match std::env::var("TESSERA_POD_ORDINAL") {
            Ok(v) => v.trim().parse::<u64>().with_context(|| format!("config: raft.node_id: TESSERA_POD_ORDINAL={v:?} is not a number"))?,
            Err(_) => {
                let host = std::env::var("HOSTNAME").ok().or_else(|| std::fs::read_to_string("/etc/hostname").ok()).unwrap_or_default();
                let host = host.trim();
                host.rsplit_once('-').and_then(|(_, n)| n.parse::<u64>().ok()).with_context(|| {
                    format!("config: raft.node_id is unset and neither TESSERA_POD_ORDINAL nor the host name ({host:?}, no -N suffix) gives an ordinal")
                })?
            }
        };
        Ok(self.id_base + ordinal)
    }

    /// The consensus settings for node `id` at `site`.
    pub fn settings(&self, id: u64, site: &str) -> tessera_consensus::RaftSettings {
        tessera_consensus::RaftSettings {
            advertise: self.advertise.clone(),
            heartbeat_ms: self.heartbeat_ms,
            election_timeout_min_ms: self.election_timeout_min_ms,
            election_timeout_max_ms: self.election_timeout_max_ms,
            write_timeout_ms: self.write_timeout_ms,
            ..tessera_consensus::RaftSettings::new(id, site, self.listen, self.data_dir.clone())
        }
    }

    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(!self.data_dir.as_os_str().is_empty(), "config: raft.data_dir must be set (the Raft log's directory)");
        for m in &self.initial_members {
            crate::control::parse_node_spec(m).with_context(|| format!("config: raft.initial_members: {m:?}"))?;
        }
        self.settings(1, "site").raft_config().map_err(|e| anyhow::anyhow!("config: {e}"))?;
        Ok(())
    }
}

/// The `[http]` section: Prometheus metrics and health checks for orchestrators.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Where `/metrics`, `/livez`, `/readyz` and `/startupz` are served; unset: nowhere.
    pub listen: Option<SocketAddr>,
}

/// The `[telemetry]` section: where traces go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// An OTLP/gRPC collector (`http://otel-collector:4317`); unset: no export (off by
    /// default). `OTEL_EXPORTER_OTLP_ENDPOINT` sets it too.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the exported spans.
    pub service_name: String,
    /// Share of traces kept (0–1), decided at the root span and followed by its children.
    pub sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { otlp_endpoint: None, service_name: "tessera".into(), sample_ratio: 1.0 }
    }
}

/// The `[control]` section: where the cluster's control plane answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// `host:port` of any control-plane node; unset: this node runs only its own `[detect]`
    /// queries.
    pub admin: Option<String>,
    /// How long to wait for the control plane at start (and for each later read).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How often a running node reads the registered queries again, to start the ones
    /// registered and stop the ones dropped since.
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self { admin: None, timeout: Duration::from_secs(10), poll: Duration::from_secs(2) }
    }
}

/// The `[state]` section: where and how often the node checkpoints its windows, anomaly
/// baselines and alert state together with the Kafka offsets they cover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// The checkpoint directory, on durable site-local storage shared by the site's nodes (one
    /// store per Kafka partition under it, see [`crate::partition_state`]); unset: no
    /// checkpoints (a restart loses open windows and baselines).
    pub dir: Option<PathBuf>,
    /// How often to checkpoint (and so, at most, how much is read again after a crash).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Checkpoints kept (at least 2).
    pub keep: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self { dir: None, interval: Duration::from_secs(5), keep: 3 }
    }
}

impl StateConfig {
    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(!self.interval.is_zero(), "state.interval must be longer than 0");
        anyhow::ensure!(self.keep >= 2, "state.keep must be at least 2 (a damaged newest checkpoint needs one to fall back on)");
        if let Some(dir) = &self.dir {
            anyhow::ensure!(!dir.as_os_str().is_empty(), "state.dir must not be empty (leave it out for no checkpoints)");
        }
        Ok(())
    }
}

impl NodeConfig {
    /// Loads defaults ← `file` (if given) ← environment, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(NodeConfig { site_id: "site-a".into(), ..Default::default() }));
        if let Some(file) = file {
            anyhow::ensure!(file.exists(), "config file {} does not exist", file.display());
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("TESSERA__").split("__").lowercase(true));
        let config: NodeConfig = figment.extract().map_err(|e| anyhow::anyhow!("config: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every section; the error names the field.
    pub fn validate(&self) -> Result<()> {
        tessera_core::SiteId::new(self.site_id.clone()).context("config: site_id")?;
        self.ingest.validate().map_err(|e| anyhow::anyhow!("config: ingest.{}", e.to_string().trim_start_matches("invalid ingest config: ")))?;
        self.detect.validate().map_err(|e| anyhow::anyhow!("config: {e}"))?;
        self.state.validate().map_err(|e| anyhow::anyhow!("config: {e}"))?;
        self.store.validate().map_err(|e| anyhow::anyhow!("config: {e}"))?;
        anyhow::ensure!(!self.control.timeout.is_zero(), "config: control.timeout must be longer than 0");
        anyhow::ensure!(self.control.poll >= Duration::from_millis(100), "config: control.poll must be at least 100ms");
        if let Some(admin) = &self.control.admin {
            anyhow::ensure!(admin.contains(':'), "config: control.admin: '{admin}' is not host:port");
        }
        self.sql.validate().map_err(|e| anyhow::anyhow!("config: {e}"))?;
        if let Some(raft) = &self.raft {
            raft.validate()?;
        }
        anyhow::ensure!((0.0..=1.0).contains(&self.telemetry.sample_ratio), "config: telemetry.sample_ratio must be between 0 and 1");
        if let Some(endpoint) = &self.telemetry.otlp_endpoint {
            anyhow::ensure!(endpoint.starts_with("http://") || endpoint.starts_with("https://"), "config: telemetry.otlp_endpoint: '{endpoint}' must start with http:// or https://");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loading reads process-wide environment variables, which `environment_overrides_the_file`
    /// sets: every test that loads runs inside figment's `Jail`, which serialises them.
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn jailed(test: impl FnOnce()) {
        figment::Jail::expect_with(|_| {
            test();
            Ok(())
        });
    }

    #[test]
    fn the_example_config_is_the_default() {
        jailed(|| {
            let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/tessera.example.toml");
            let loaded = NodeConfig::load(Some(&example)).unwrap();
            let defaults = NodeConfig { site_id: "site-a".into(), ..Default::default() };
            assert_eq!(loaded, defaults, "deploy/tessera.example.toml documents the defaults");
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("node.toml", "site_id = \"site-b\"\n[ingest]\nshards = 4\n")?;
            jail.set_env("TESSERA__INGEST__BROKERS", "kafka-0:9092");
            jail.set_env("TESSERA__INGEST__SHARDS", "16");
            let c = NodeConfig::load(Some(std::path::Path::new("node.toml"))).expect("loads");
            assert_eq!((c.site_id.as_str(), c.ingest.brokers.as_str(), c.ingest.shards), ("site-b", "kafka-0:9092", 16));
            Ok(())
        });
    }

    #[test]
    fn file_and_errors_name_the_field() {
        jailed(file_and_errors);
    }

    fn file_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.toml");
        std::fs::write(&good, "site_id = \"site-b\"\n[ingest]\nbrokers = \"k:9092\"\nshards = 4\nbatch_max_age = \"250ms\"\n").unwrap();
        let c = NodeConfig::load(Some(&good)).unwrap();
        assert_eq!((c.site_id.as_str(), c.ingest.brokers.as_str(), c.ingest.shards), ("site-b", "k:9092", 4));
        assert_eq!(c.ingest.batch_max_age, std::time::Duration::from_millis(250));

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[ingest]\nshards = 0\n").unwrap();
        assert_eq!(NodeConfig::load(Some(&bad)).unwrap_err().to_string(), "config: ingest.shards: must be at least 1");

        let typo = dir.path().join("typo.toml");
        std::fs::write(&typo, "[ingest]\nshard = 3\n").unwrap();
        let err = NodeConfig::load(Some(&typo)).unwrap_err().to_string();
        assert!(err.contains("shard"), "{err}");

        let wrong_type = dir.path().join("type.toml");
        std::fs::write(&wrong_type, "[ingest]\nshards = \"many\"\n").unwrap();
        let err = NodeConfig::load(Some(&wrong_type)).unwrap_err().to_string();
        assert!(err.contains("ingest.shards"), "{err}");
    }
}
