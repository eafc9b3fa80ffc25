//! One running node: the ingest feeding the detection stage, checkpointed per Kafka partition
//! when the config names a state directory, running its `[detect]` queries and, with
//! `[control] admin` set, the queries registered cluster-wide (read at start, then kept in step
//! while running by a [`QueryWatcher`]), and with `[sql] listen` set, serving its tables over
//! Flight SQL (see [`crate::sql`]).
//!
//! With a state directory (shared by the site's nodes, see [`crate::partition_state`]), each
//! partition the consumer group assigns to this node starts at its newest valid checkpoint's
//! offset, and that checkpoint's motor state is adopted before the partition's first reading
//! (damaged newer files are skipped and reported; a partition whose files are all unreadable
//! stops the node rather than silently starting empty). The ingest sends a barrier every
//! `state.interval`, and on revoke and stop; the detection stage checkpoints each partition
//! with new messages at each one before acknowledging, and on revoke hands the partition over
//! (see [`crate::detect`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use anyhow::{Context as _, Result};
use tessera_ingest::{Ingest, IngestStats};
use tessera_stream::StreamEngine;

use crate::config::NodeConfig;
use crate::control::{QueryWatcher, RegistryRows};
use crate::sql::SqlEndpoint;
use crate::storage::{StoreStats, TelemetryStore};
use crate::detect::{Detect, DetectStats, build_engine};
use crate::partition_state::PartitionCheckpoints;

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
}

impl Node {
    /// Builds the engine from the config and starts the ingest and the detection stage,
    /// checkpointed per partition if a state directory is configured.
    pub fn start(config: &NodeConfig) -> Result<Node> {
        config.validate()?;
        let tls = match &config.tls {
            Some(files) => Some(Arc::new(tessera_tls::TlsMaterial::load(files)?)),
            None => None,
        };
        let client_tls = tessera_tls::ClientTls::from_material(tls.as_ref());
        let grades = tessera_core::LiveGrades::new(config.grades.clone());
        let mut engine = build_engine(&config.detect)?;
        let local: BTreeSet<String> = engine.queries().map(|q| q.name.clone()).collect();
        let mut registered = Vec::new();
        if let Some(admin) = &config.control.admin {
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
        let registry = config.control.admin.as_ref().map(|_| RegistryRows::default());
        let sql = match config.sql.listen {
            Some(listen) => {
                let tables = crate::sql::served_tables(shared_tables, &detect.running_queries(), registry.as_ref(), store.as_ref());
                Some(SqlEndpoint::start(&config.sql, listen, &config.site_id, tables, grades.clone(), tls.clone())?)
            }
            None => None,
        };
        let watcher = match (&config.control.admin, registry) {
            (Some(admin), Some(registry)) => {
                let running = registered.into_iter().filter(|(name, _)| !local.contains(name)).collect();
                Some(QueryWatcher::start(&config.control, admin, client_tls, local, running, detect.query_changes(), registry, grades)?)
            }
            _ => None,
        };
        Ok(Node { ingest, detect, watcher, sql, store })
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
        self.ingest.is_finished() || self.detect.is_finished()
    }

    /// Stops: the ingest hands everything on behind a last barrier (checkpointed, then
    /// committed), then the detection stage ends. Returns the ingest's counters and the
    /// engine; if the detection stage failed, its error (the root cause) comes first.
    pub fn stop(self) -> Result<(IngestStats, StreamEngine)> {
        drop(self.watcher);
        drop(self.sql);
        let ingest = self.ingest.stop();
        let engine = self.detect.stop();
        // After the stage: it no longer sends, so the store writes what is pending and ends.
        let stored = self.store.map(TelemetryStore::stop).transpose();
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
