//! One running node: the ingest feeding the detection stage, checkpointed per Kafka partition
//! when the config names a state directory, running its `[detect]` queries and, with
//! `[control] admin` set, the queries registered cluster-wide (read at start, then kept in step
//! while running by a [`QueryWatcher`]), and with `[sql] listen` set, serving its tables over
//! Flight SQL (see [`crate::sql`]).
//!
//! With a state directory (shared by the site's nodes, see [`crate::checkpoints`]), each
//! partition the consumer group assigns to this node starts at its newest valid checkpoint's
//! offset, and that checkpoint's motor state is adopted before the partition's first reading
//! (damaged newer files are skipped and reported; a partition whose files are all unreadable
//! stops the node rather than silently starting empty). The ingest sends a barrier every
//! `state.interval`, and on revoke and stop; the detection stage checkpoints each partition
//! with new messages at each one before acknowledging, and on revoke hands the partition over
//! (see [`crate::detect`]).
//!
//! With `[raft]` set, the node is also a member of the cluster's control plane (a Raft node
//! on its own runtime), and takes the cluster's queries from itself; on a first start the
//! member with the lowest id among `raft.initial_members` initialises the cluster. With
//! `[http] listen` set, it serves `/metrics` and health checks (see [`crate::observe`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use anyhow::{Context as _, Result};
use tessera_ingest::{Ingest, IngestStats};
use tessera_stream::StreamEngine;

use crate::config::NodeConfig;
use crate::control::member::ControlMember;
use crate::control::{QueryWatcher, RegistryRows};
use crate::sql::SqlEndpoint;
use crate::store::{StoreStats, TelemetryStore};
use crate::detect::{Detect, DetectStats, build_engine};
use crate::checkpoints::PartitionCheckpoints;

/// A running node.
pub struct Node {
    ingest: Ingest,
    detect: Detect,
    /// Keeps the cluster-wide queries in step with the control plane (`[control] admin`).
    watcher: Option<QueryWatcher>,
    /// The Flight SQL endpoint (`[sql] listen`).
    sql: Option<SqlEndpoint>,
    /// The site-local store of raw readings (`[store] dir`).
    store: Option<TelemetryStore>,
    /// `/metrics` and the health checks (`[http] listen`).
    http: Option<crate::observe::HttpEndpoint>,
    /// The Raft member (`[raft]`), stopped last.
    control: Option<ControlMember>,
    /// Set once a part has been seen to end on its own (the liveness probe reads it).
    failed: Arc<std::sync::atomic::AtomicBool>,
}

impl Node {
    /// Builds the engine from the config and starts the ingest and the detection stage,
    /// checkpointed per partition if a state directory is configured.
    pub fn start(config: &NodeConfig) -> Result<Node> {
        config.validate()?;
        let tls = match &config.tls {
            Some(files) => Some(Arc::new(tessera_tls::TlsMaterial::load(files).map_err(|e| e.within("tls"))?)),
            None => None,
        };
        let client_tls = tessera_tls::ClientTls::from_material(tls.as_ref());
        let grades = tessera_core::LiveGrades::new(config.grades.clone());
        let control = match &config.raft {
            Some(raft) => Some(crate::control::member::start(raft, &config.site_id, tls.clone())?),
            None => None,
        };
        // A member takes the cluster's queries from itself (the watcher reads them once the
        // cluster has a leader); otherwise from `[control] admin`, read once before starting.
        let admin = config.control.admin.clone().or_else(|| control.as_ref().map(|c| c.node.advertised().to_string()));
        let mut engine = build_engine(&config.detect)?;
        let local: BTreeSet<String> = engine.queries().map(|q| q.name.clone()).collect();
        let mut registered = Vec::new();
        if let (Some(admin), None) = (&config.control.admin, &control) {
            registered = crate::control::registered_queries(admin, &client_tls, config.control.timeout)
                .with_context(|| format!("reading the cluster's queries from control.admin {admin}"))?;
            for (name, why) in crate::control::add_registered_queries(&mut engine, &registered)? {
                tracing::error!(query = %name, %why, "a query registered cluster-wide is not run on this node");
            }
            tracing::info!(registered = registered.len(), %admin, "cluster-wide queries read");
        }
        let (tx, rx) = sync_channel(64);
        let (ingest, checkpointed) = match &config.state.dir {
            None => (Ingest::start(config.ingest.clone(), tx), false),
            Some(dir) => {
                let mut ingest_config = config.ingest.clone();
                ingest_config.checkpoint_interval = config.state.interval;
                let stores = PartitionCheckpoints::new(dir, config.state.keep)?.sealed(config.store.checkpoint_sealer()?);
                (Ingest::start_with_states(ingest_config, tx, Arc::new(stores)), true)
            }
        };
        let ingest = ingest.context("starting the ingest")?;
        let shared_tables = engine.shared_tables();
        let store = match config.store.open()? {
            Some(store) => Some(TelemetryStore::start(store, &config.store, grades.clone())?),
            None => None,
        };
        let detect = Detect::start_checkpointed(engine, &config.detect, &config.ingest.brokers, rx, checkpointed, store.as_ref().map(TelemetryStore::sender))?;
        let registry = admin.as_ref().map(|_| RegistryRows::default());
        let sql = match config.sql.listen {
            Some(listen) => {
                let tables = crate::sql::served_tables(shared_tables, &detect.running_queries(), registry.as_ref(), store.as_ref());
                Some(SqlEndpoint::start(&config.sql, listen, &config.site_id, tables, grades.clone(), tls.clone())?)
            }
            None => None,
        };
        let watcher = match (&admin, registry) {
            (Some(admin), Some(registry)) => {
                let running = registered.into_iter().filter(|(name, _)| !local.contains(name)).collect();
                Some(QueryWatcher::start(&config.control, admin, client_tls, local, running, detect.query_changes(), registry, grades)?)
            }
            _ => None,
        };
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let http = match config.http.listen {
            Some(listen) => {
                let probe = crate::observe::NodeProbe {
                    site: config.site_id.clone(),
                    ingest: ingest.metrics().clone(),
                    detect: detect.probe(),
                    alert_latency: detect.alert_latency(),
                    sql_latency: sql.as_ref().map(SqlEndpoint::query_latency),
                    sql_refusals: sql.as_ref().map(|s| s.refusals().clone()),
                    raft: control.as_ref().map(|c| c.node.raft().clone()),
                    raft_refusals: control.as_ref().map(|c| c.node.refusals().clone()),
                    failed: failed.clone(),
                };
                Some(crate::observe::HttpEndpoint::start(listen, probe)?)
            }
            None => None,
        };
        Ok(Node { ingest, detect, watcher, sql, store, http, control, failed })
    }

    /// Where `/metrics` and the health checks are served, if they are.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().map(crate::observe::HttpEndpoint::addr)
    }

    /// The Raft member's address, if the node runs one.
    pub fn raft_addr(&self) -> Option<std::net::SocketAddr> {
        self.control.as_ref().map(|c| c.node.addr())
    }

    /// The Raft member's view of the cluster, if the node runs one.
    pub fn raft_status(&self) -> Option<tessera_consensus::RaftStatus> {
        self.control.as_ref().map(|c| c.node.status())
    }

    /// The site-local store of raw readings, if it runs (for shredding on request).
    pub fn store(&self) -> Option<&TelemetryStore> {
        self.store.as_ref()
    }

    /// The store's counters, if it runs.
    pub fn store_stats(&self) -> Option<StoreStats> {
        self.store.as_ref().map(TelemetryStore::stats)
    }

    /// Where the Flight SQL endpoint listens, if it runs.
    pub fn sql_addr(&self) -> Option<std::net::SocketAddr> {
        self.sql.as_ref().map(SqlEndpoint::addr)
    }

    /// Calls the SQL endpoint refused for want of a fitting certificate (handshakes, and
    /// federated calls without a node's certificate), if it runs.
    pub fn sql_refusals(&self) -> Option<(u64, u64)> {
        self.sql.as_ref().map(|s| (s.refusals().handshakes(), s.refusals().identities()))
    }

    /// The ingest's counters.
    pub fn ingest_stats(&self) -> IngestStats {
        self.ingest.metrics().snapshot()
    }

    /// The detection stage's counters, with the checkpoints adopted and written.
    pub fn detect_stats(&self) -> DetectStats {
        self.detect.stats()
    }

    /// True if a part of the node has ended on its own (an error); [`Node::stop`] says which.
    pub fn failed(&self) -> bool {
        let failed = self.ingest.is_finished() || self.detect.is_finished();
        if failed {
            self.failed.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        failed
    }

    /// Stops: the ingest hands everything on behind a last barrier (checkpointed, then
    /// committed), then the detection stage ends. Returns the ingest's counters and the
    /// engine; if the detection stage failed, its error (the root cause) comes first.
    pub fn stop(self) -> Result<(IngestStats, StreamEngine)> {
        drop(self.http);
        drop(self.watcher);
        drop(self.sql);
        let ingest = self.ingest.stop();
        let engine = self.detect.stop();
        // After the stage: it no longer sends, so the store writes what is pending and ends.
        let stored = self.store.map(TelemetryStore::stop).transpose();
        let controlled = match self.control {
            Some(ControlMember { runtime, node }) => runtime.block_on(node.shutdown()).context("stopping the Raft member"),
            None => Ok(()),
        };
        let stored = stored.and_then(|s| controlled.map(|()| s));
        let engine = match (engine, stored) {
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(e),
            (Ok(engine), Ok(_)) => Ok(engine),
        };
        match (ingest, engine) {
            (_, Err(e)) => Err(e),
            (Err(e), _) => Err(e.into()),
            (Ok(stats), Ok(engine)) => Ok((stats, engine)),
        }
    }
}

