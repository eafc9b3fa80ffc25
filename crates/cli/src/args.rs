//! Flags several commands share: how to reach a control-plane node's admin API
//! ([`AdminArgs`]), which mTLS files to present ([`TlsArgs`]), where to publish telemetry
//! ([`TopicArgs`]) and the simulated fleet ([`FleetArgs`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use tessera_proto::raft::cluster_admin_client::ClusterAdminClient;
use tessera_tls::{ClientTls, TlsFiles, TlsMaterial};
use tessera_workload::producer::{TelemetryProducer, WireFormat};
use tonic::transport::Channel;

/// TLS files for a node or a client (`--tls-ca`, `--tls-cert`, `--tls-key`): all three, or
/// none for a cluster without TLS.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// The cluster's CA bundle (PEM) every peer certificate must chain to.
    #[arg(long = "tls-ca", env = "TESSERA__TLS__CA")]
    pub ca: Option<PathBuf>,
    /// This side's certificate (from `tessera cert node|operator`).
    #[arg(long = "tls-cert", env = "TESSERA__TLS__CERT")]
    pub cert: Option<PathBuf>,
    /// Its private key.
    #[arg(long = "tls-key", env = "TESSERA__TLS__KEY")]
    pub key: Option<PathBuf>,
}

impl TlsArgs {
    /// The files, if TLS is asked for; naming the missing flag if only some are given.
    pub fn files(&self) -> Result<Option<TlsFiles>> {
        match (&self.ca, &self.cert, &self.key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => {
                Ok(Some(TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() }))
            }
            _ => {
                let missing: Vec<&str> = [
                    ("--tls-ca", self.ca.is_none()),
                    ("--tls-cert", self.cert.is_none()),
                    ("--tls-key", self.key.is_none()),
                ]
                .into_iter()
                .filter_map(|(flag, missing)| missing.then_some(flag))
                .collect();
                bail!("TLS needs --tls-ca, --tls-cert and --tls-key together; missing {}", missing.join(", "))
            }
        }
    }

    /// The loaded material, if TLS is asked for.
    pub fn material(&self) -> Result<Option<Arc<TlsMaterial>>> {
        Ok(match self.files()? {
            Some(files) => Some(Arc::new(TlsMaterial::load(&files).map_err(|e| e.within("tls"))?)),
            None => None,
        })
    }

    /// How a client connects.
    pub fn client(&self) -> Result<ClientTls> {
        Ok(ClientTls::from_material(self.material()?.as_ref()))
    }
}

/// Which node to ask, and who is asking.
#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// Any node's gRPC address.
    #[arg(long, env = "TESSERA__CLIENT__ADMIN", default_value = "127.0.0.1:7070")]
    pub at: String,
    /// Who is asking, for the audit log (default: $USER).
    #[arg(long, env = "TESSERA__CLIENT__ACTOR")]
    pub actor: Option<String>,
    /// How long to wait for the answer.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// mTLS (for a cluster with TLS): an operator's or node's certificate.
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl AdminArgs {
    /// Who is asking: `--actor`, else $USER, else `cli`.
    pub fn actor(&self) -> String {
        self.actor
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "cli".into())
    }

    /// A client of the node at `--at`.
    pub async fn client(&self) -> Result<ClusterAdminClient<Channel>> {
        Ok(ClusterAdminClient::new(
            tessera_node::control::grpc_channel(&self.at, &self.tls.client()?, self.timeout, "node").await?,
        ))
    }
}

/// How a read is served (`--local`).
#[derive(Args, Debug, Clone, Copy)]
pub struct ReadArgs {
    /// Answer from the asked member's own state, without the leader: may be stale (the member
    /// says how far it had applied), but works on a learner cut off from the voters.
    /// Default: linearizable (through the leader's read index).
    #[arg(long)]
    pub local: bool,
}

impl ReadArgs {
    /// `message` as a read request, with the header that asks for a local read if `--local`.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if self.local {
            request
                .metadata_mut()
                .insert(tessera_consensus::READ_HEADER, tonic::metadata::MetadataValue::from_static("local"));
        }
        request
    }

    /// The note a local read prints (on stderr) about how stale its answer may be.
    pub fn note<T>(&self, reply: &tonic::Response<T>) {
        if self.local {
            let applied = reply
                .metadata()
                .get(tessera_consensus::APPLIED_INDEX_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?");
            eprintln!("(a local read: the member had applied the log up to index {applied})");
        }
    }
}

/// Where `simulate` and `replay` publish; the topic is created if missing.
#[derive(Args)]
pub struct TopicArgs {
    /// Kafka bootstrap servers.
    #[arg(long)]
    pub brokers: String,
    /// The topic.
    #[arg(long, default_value = "telemetry")]
    pub topic: String,
    /// Partitions of the topic, if it has to be created.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
}

impl TopicArgs {
    /// Creates the topic if needed and returns a producer for it.
    pub fn producer(&self, format: WireFormat) -> Result<TelemetryProducer> {
        tessera_node::topics::ensure_topics(&self.brokers, &[(&self.topic, self.partitions)])?;
        TelemetryProducer::new(&self.brokers, &self.topic, format, &std::collections::BTreeMap::new())
            .map_err(Into::into)
    }
}

/// The simulated fleet, shared by `demo` and `simulate`.
#[derive(Args)]
pub struct FleetArgs {
    /// Motors in the fleet.
    #[arg(long, default_value_t = 1000)]
    pub motors: u32,
    /// Sites the motors are spread over.
    #[arg(long, default_value_t = 3)]
    pub sites: u32,
    /// Readings per second per motor.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// The simulated (event-time) span; Ctrl-C stops earlier [default: 60s for simulate, 3m
    /// for the demo].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Share of motors with an injected fault.
    #[arg(long, default_value_t = 0.05)]
    pub fault_fraction: f64,
    /// Seed of the simulator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Message encoding.
    #[arg(long, value_enum, default_value_t = WireFormat::Protobuf)]
    pub format: WireFormat,
}
