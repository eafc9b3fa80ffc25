//! One running node: the ingest feeding the detection stage, checkpointed per Kafka partition
//! when the config names a state directory or object store, running its `[detect]` queries and, with
//! `[control] admin` set, the queries registered cluster-wide (read at start, then kept in step
//! while running by a [`QueryWatcher`]), and with `[sql] listen` set, serving its tables over
//! Flight SQL (see [`crate::sql`]).
//!
//! With checkpoints (a directory the site's nodes share, or an object store, see
//! [`crate::checkpoints`]), each
//! partition the consumer group assigns to this node starts at its newest valid checkpoint's
//! offset, and that checkpoint's motor state is adopted before the partition's first reading
//! (damaged newer files are skipped and reported; a partition whose files are all unreadable
//! stops the node rather than silently starting empty). The ingest sends a barrier every
//! `state.interval`, and on revoke and stop; the detection stage checkpoints each partition
//! with new messages at each one before acknowledging, and on revoke hands the partition over
//! (see [`crate::detect`]).
//!
//! With `[raft]` set, the node is also a member of the cluster's control plane (a Raft node
//! in the same process), and takes the cluster's queries from itself; on a first start the
//! member with the lowest id among `raft.initial_members` initialises the cluster. With
//! `[http] listen` set, it serves `/metrics` and health checks (see [`crate::observe`]).
//!
//! One lifecycle: the node owns one tokio runtime and one shutdown signal (see
//! [`crate::lifecycle`]). Its servers (Flight SQL, HTTP, the query watcher, the Raft member)
//! are tasks on that runtime, each given its bound listener and the signal; its blocking stages
//! (the ingest's threads, the detection thread, the store's writer) are started here and
//! stopped in order by [`Node::stop`], which returns once every part has ended.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use tessera_ingest::{Ingest, IngestHandle, IngestLoop, IngestStats};
use tessera_stream::StreamEngine;

use crate::checkpoints::PartitionCheckpoints;
use crate::config::NodeConfig;
use crate::control::{QueryWatcher, RegistryRows};
use crate::detect::{Detect, DetectStats, build_engine};
use crate::error::NodeError;
use crate::lifecycle::{ShutdownTrigger, StageFailure, StageLoop, StageThread, Tasks, shutdown_signal};
use crate::sql::SqlEndpoint;
use crate::store::{StoreStats, TelemetryStore};

/// A running node.
pub struct Node {
    /// The one runtime every async part of the node runs on.
    runtime: tokio::runtime::Runtime,
    /// Where SQL queries run (`[sql] listen`): a runtime of their own, so that a CPU-bound
    /// query cannot hold up the servers, the Raft member or the probes.
    queries: Option<tokio::runtime::Runtime>,
    /// Asks every server task to stop.
    shutdown: ShutdownTrigger,
    /// The server tasks (SQL, HTTP, query watcher, Raft bootstrap), waited for on stop.
    tasks: Tasks,
    ingest: IngestHandle,
    detect: Detect,
    /// The site-local store of raw readings (`[store] dir`).
    store: Option<TelemetryStore>,
    /// The blocking stages' threads, started by [`Node::start`] and joined by [`Node::stop`].
    threads: StageThreads,
    /// The Flight SQL endpoint's address and certificate refusals (`[sql] listen`).
    sql: Option<(SocketAddr, Arc<tessera_tls::Refusals>)>,
    /// Where `/metrics` and the health checks are served (`[http] listen`).
    http: Option<SocketAddr>,
    /// Where the web console and the JSON API are served on a listener of their own.
    console: Option<SocketAddr>,
    /// The Raft member (`[raft]`), stopped last.
    control: Option<tessera_consensus::ConsensusNode>,
    /// Set once a part has been seen to end on its own (the liveness probe reads it).
    failed: Arc<std::sync::atomic::AtomicBool>,
    /// The wear judge's motors with a machine class of their own, as the registry says.
    machine_classes: Option<tessera_stream::wear::MotorClasses>,
}

/// Binds `listen` on `runtime`; the error names the config field.
fn bind(
    runtime: &tokio::runtime::Runtime,
    listen: SocketAddr,
    field: &'static str,
) -> Result<(tokio::net::TcpListener, SocketAddr), NodeError> {
    let bad = |source| NodeError::Bind { field, addr: listen, source };
    let listener = runtime.block_on(tokio::net::TcpListener::bind(listen)).map_err(bad)?;
    let addr = listener.local_addr().map_err(bad)?;
    Ok((listener, addr))
}

impl Node {
    /// Builds the engine from the config and starts every part the config asks for.
    pub fn start(config: &NodeConfig) -> Result<Node, NodeError> {
        config.validate()?;
        for warning in &config.deprecated {
            tracing::warn!("config: {warning}");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tessera-node")
            .enable_all()
            .build()
            .map_err(|source| NodeError::Io { what: "building the node's runtime", source })?;
        let (shutdown, signal) = shutdown_signal();
        let mut tasks = Tasks::default();
        let tls = match &config.tls {
            Some(files) => Some(Arc::new(tessera_tls::TlsMaterial::load(files).map_err(|e| e.within("tls"))?)),
            None => None,
        };
        let client_tls = tessera_tls::ClientTls::from_material(tls.as_ref());
        let grades = tessera_core::LiveGrades::new(config.grades.clone());
        // The group policy of aggregates released to callers below a column's grade: the
        // config, raised by the cluster's `use` rules (the watcher applies them).
        let group_policy = tessera_sql::LiveGroupPolicy::new(config.sql.group_policy());
        let control = match &config.raft {
            Some(raft) => Some(crate::control::member::start(
                raft,
                &config.site_id,
                tls.clone(),
                &runtime,
                &mut tasks,
                signal.clone(),
            )?),
            None => None,
        };
        // A member takes the cluster's queries from itself (the watcher reads them once the
        // cluster has a leader); otherwise from `[control] admin`, read once before starting.
        let admin = config.control.admin.clone().or_else(|| control.as_ref().map(|c| c.advertised().to_string()));
        let mut detect = config.detect.clone();
        if detect.spill_dir.is_none() {
            // `@` is in no Kafka topic's name: the checkpoints' topic directories beside it
            // are never confused with it.
            detect.spill_dir = config.state.dir.as_ref().map(|dir| dir.join("@spill"));
        }
        let mut engine = build_engine(&detect)?;
        let local: BTreeSet<String> = engine.queries().map(|q| q.name.clone()).collect();
        let mut registered = Vec::new();
        if let (Some(admin), None) = (&config.control.admin, &control) {
            registered = runtime
                .block_on(crate::control::registered_queries(admin, &client_tls, config.control.timeout))
                .map_err(|e| NodeError::Failed {
                    part: "reading of the cluster's queries (control.admin)",
                    source: Box::new(e),
                })?;
            for (name, why) in crate::control::add_registered_queries(&mut engine, &registered)? {
                tracing::error!(query = %name, %why, "a query registered cluster-wide is not run on this node");
            }
            tracing::info!(registered = registered.len(), %admin, "cluster-wide queries read");
        }
        crate::topics::create_ingest_topics(&config.ingest)?;
        let (tx, rx) = sync_channel(64);
        let (ingest, ingest_loops, checkpointed) = match PartitionCheckpoints::configured(&config.state)? {
            None => {
                let (handle, loops) = Ingest::prepare(config.ingest.clone(), tx, None)?;
                (handle, loops, false)
            }
            Some(stores) => {
                let mut ingest_config = config.ingest.clone();
                ingest_config.checkpoint_interval = config.state.interval;
                let stores = stores.sealed(config.store.checkpoint_sealer()?);
                let (handle, loops) = Ingest::prepare(ingest_config, tx, Some(Arc::new(stores)))?;
                (handle, loops, true)
            }
        };
        let shared_tables = engine.shared_tables();
        let machine_classes = engine.machine_classes();
        let (store, store_loop) = match config.store.open()? {
            Some(store) => {
                let (store, writer) = TelemetryStore::prepare(store, &config.store, grades.clone(), checkpointed);
                (Some(store), Some(writer))
            }
            None => (None, None),
        };
        // Alertmanager and webhooks (`[notify]`): senders on the node's runtime.
        let notifier = match config.notify.enabled() {
            true => Some(crate::notify::Notifier::start(&config.notify, &grades, runtime.handle(), signal.clone())?),
            false => None,
        };
        let (detect, detect_loop) = Detect::prepare_checkpointed(
            engine,
            &config.detect,
            &crate::topics::KafkaClient::of(&config.ingest),
            rx,
            checkpointed,
            store.as_ref().map(TelemetryStore::link),
            notifier.clone(),
        )?;
        let registry = admin.as_ref().map(|_| RegistryRows::default());
        let mut sql_latency = None;
        let mut sql_fragments = None;
        let mut queries = None;
        let sql = match config.sql.listen {
            Some(listen) => {
                let cores = std::thread::available_parallelism().map_or(2, usize::from);
                let query_runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(cores.saturating_sub(1).max(1))
                    .thread_name("tessera-query")
                    .enable_all()
                    .build()
                    .map_err(|source| NodeError::Io { what: "building the query runtime", source })?;
                let tables = crate::sql::served_tables(
                    shared_tables,
                    &detect.running_queries(),
                    registry.as_ref(),
                    store.as_ref(),
                    ingest.metrics().clone(),
                );
                let endpoint = SqlEndpoint::new(
                    &config.sql,
                    &config.site_id,
                    tables,
                    grades.clone(),
                    group_policy.clone(),
                    tls.clone(),
                    query_runtime.handle().clone(),
                )?;
                queries = Some(query_runtime);
                let (listener, addr) = bind(&runtime, listen, "sql.listen")?;
                let served = (addr, endpoint.refusals().clone(), endpoint.shared());
                sql_latency = Some(endpoint.query_latency());
                sql_fragments = Some(endpoint.site_fragments());
                tasks.spawn(&runtime, "SQL endpoint", endpoint.serve(listener, signal.clone()));
                Some(served)
            }
            None => None,
        };
        if let (Some(admin), Some(registry)) = (&admin, registry) {
            let running = registered.into_iter().filter(|(name, _)| !local.contains(name)).collect();
            let watcher = QueryWatcher::new(
                &config.control,
                admin,
                client_tls,
                local,
                running,
                detect.query_changes(),
                registry,
                grades,
                group_policy,
                machine_classes.clone(),
            );
            tasks.spawn(&runtime, "query watcher", watcher.run(signal.clone()));
        }
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let probe = crate::observe::NodeProbe {
            site: config.site_id.clone(),
            ingest: ingest.metrics().clone(),
            detect: detect.probe(),
            alert_latency: detect.alert_latency(),
            sql_latency,
            sql_fragments,
            sql_refusals: sql.as_ref().map(|(_, refusals, _)| refusals.clone()),
            raft: control.as_ref().map(|c| c.raft().clone()),
            raft_refusals: control.as_ref().map(|c| c.refusals().clone()),
            notify: notifier.clone(),
            failed: failed.clone(),
            warnings: control
                .as_ref()
                .filter(|c| c.plaintext_exposed())
                .map(|c| {
                    format!(
                        "the control plane listens in plaintext on {} (raft.insecure_plaintext): anyone who reaches it can change the cluster",
                        c.addr()
                    )
                })
                .into_iter()
                .collect(),
        };
        // The web console and the JSON API answer through the SQL endpoint; acknowledgements go
        // through the node's own Raft member, else through the control plane it follows.
        let desk = match (&control, &admin) {
            (Some(member), _) => Some(crate::control::desk::Desk::Member(member.alert_desk())),
            (None, Some(admin)) => Some(crate::control::desk::Desk::remote(
                admin,
                tessera_tls::ClientTls::from_material(tls.as_ref()),
                config.control.timeout,
                &config.site_id,
            )),
            (None, None) => None,
        };
        // Silences people set in the control plane hold the node's notifications back.
        if let (Some(desk), Some(notifier)) = (&desk, &notifier) {
            let silences = crate::control::desk::keep_silences(desk.clone(), notifier.clone(), config.control.poll);
            tasks.spawn(&runtime, "alert silences", {
                let signal = signal.clone();
                async move {
                    tokio::select! {
                        () = silences => {}
                        () = signal.wait() => {}
                    }
                    Ok(())
                }
            });
        }
        let console_app = sql.as_ref().map(|(_, _, endpoint)| {
            let desk = desk.clone();
            let views = Arc::new(crate::views::Views::new(endpoint.clone(), desk, probe.clone()));
            let secure = tls.is_some();
            crate::api::router(views.clone()).merge(crate::console::router(views, secure))
        });
        // They sign users in with their passwords: on `[console] listen` (HTTPS with [tls]),
        // else beside /metrics, but never in plain HTTP next to a SQL endpoint that speaks TLS.
        let (console_app, http_api) = match (console_app, config.console.listen, &tls) {
            (Some(app), Some(_), _) => (Some(app), None),
            (Some(app), None, None) => (None, Some(app)),
            (Some(_), None, Some(_)) => {
                tracing::warn!(
                    "the web console and the JSON API are not served: [tls] is set, so they need [console] listen (HTTPS)"
                );
                (None, None)
            }
            (None, _, _) => (None, None),
        };
        let console = match (console_app, config.console.listen) {
            (Some(app), Some(listen)) => {
                let (listener, addr) = bind(&runtime, listen, "console.listen")?;
                let https = match &tls {
                    Some(material) => Some(tessera_tls::ServerTls {
                        config: material.https_config().map_err(|e| NodeError::Tls(e.within("tls")))?,
                        endpoint: "console",
                        refusals: Arc::new(tessera_tls::Refusals::default()),
                    }),
                    None => None,
                };
                tasks.spawn(&runtime, "web console", crate::console::serve(listener, app, https, signal.clone()));
                Some(addr)
            }
            _ => None,
        };
        let http = match config.http.listen {
            Some(listen) => {
                let (listener, addr) = bind(&runtime, listen, "http.listen")?;
                tasks.spawn(
                    &runtime,
                    "HTTP endpoint",
                    crate::observe::serve_http(listener, probe, http_api, signal.clone()),
                );
                Some(addr)
            }
            None => None,
        };
        // Last, once nothing else can fail: the blocking stages' threads.
        let threads = StageThreads::spawn(ingest_loops, detect_loop, store_loop)?;
        Ok(Node {
            runtime,
            queries,
            shutdown,
            tasks,
            ingest,
            detect,
            store,
            threads,
            sql: sql.map(|(addr, refusals, _)| (addr, refusals)),
            http,
            console,
            control,
            failed,
            machine_classes,
        })
    }

    /// Where the web console and the JSON API are served on `[console] listen` (HTTPS with
    /// `[tls]`), if they are.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console
    }

    /// Where `/metrics` and the health checks are served, if they are.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// The Raft member's address, if the node runs one.
    pub fn raft_addr(&self) -> Option<SocketAddr> {
        self.control.as_ref().map(|c| c.addr())
    }

    /// The Raft member's view of the cluster, if the node runs one.
    pub fn raft_status(&self) -> Option<tessera_consensus::RaftStatus> {
        self.control.as_ref().map(|c| c.status())
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
    pub fn sql_addr(&self) -> Option<SocketAddr> {
        self.sql.as_ref().map(|(addr, _)| *addr)
    }

    /// Calls the SQL endpoint refused for want of a fitting certificate (handshakes, and
    /// federated calls without a node's certificate), if it runs.
    pub fn sql_refusals(&self) -> Option<(u64, u64)> {
        self.sql.as_ref().map(|(_, r)| (r.handshakes(), r.identities()))
    }

    /// The ingest's counters.
    pub fn ingest_stats(&self) -> IngestStats {
        self.ingest.metrics().snapshot()
    }

    /// The motors whose vibration zones the wear judge takes from the registry's machine
    /// classes (None: wear is off), kept current by the query watcher.
    pub fn machine_classes(&self) -> Option<&tessera_stream::wear::MotorClasses> {
        self.machine_classes.as_ref()
    }

    /// The detection stage's counters, with the checkpoints adopted and written.
    pub fn detect_stats(&self) -> DetectStats {
        self.detect.stats()
    }

    /// True if a part of the node has ended on its own (an error); [`Node::stop`] says which.
    pub fn failed(&self) -> bool {
        let failed = self.threads.any_finished();
        if failed {
            self.failed.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        failed
    }

    /// Stops, and returns once every part has ended: the servers first (the shutdown signal,
    /// then every task waited for), then the ingest hands everything on behind a last barrier
    /// (checkpointed, then committed), the detection stage ends, the store writes what is
    /// pending, and the Raft member stops last. Returns the ingest's counters and the engine;
    /// if stages failed, the error of the one that failed first (the cause of the others).
    pub fn stop(self) -> Result<(IngestStats, StreamEngine), NodeError> {
        let Node { runtime, queries, shutdown, tasks, ingest, detect, mut store, threads, control, .. } = self;
        shutdown.trigger();
        if let Err(e) = runtime.block_on(tasks.join()) {
            tracing::error!(error = %tessera_core::error_chain(&e), "a server of the node failed");
        }
        // The endpoint has stopped: what queries still run are aborted.
        if let Some(queries) = queries {
            queries.shutdown_timeout(std::time::Duration::from_secs(5));
        }
        let StageThreads { ingest: ingest_threads, detect: detect_thread, store: store_thread } = threads;
        let mut failures = Vec::new();
        ingest.request_stop();
        failures.extend(ingest_threads.into_iter().filter_map(|t| t.join().err()));
        let stats = ingest.metrics().snapshot();
        detect.request_stop();
        let engine = detect_thread.join().map_err(|f| failures.push(f)).ok();
        // After the stage: it no longer sends, so the store writes what is pending and ends.
        if let Some(store) = &mut store {
            store.request_stop();
        }
        failures.extend(store_thread.and_then(|t| t.join().err()));
        if let Some(node) = control
            && let Err(e) = runtime.block_on(node.shutdown())
        {
            failures.push(Box::new(StageFailure {
                stage: "Raft member",
                at: std::time::Instant::now(),
                error: e.into(),
            }));
        }
        // The earliest failure is the cause of the others, except that a stage finding its
        // downstream gone only follows the failure of the stage that dropped it (which may be
        // stamped later: it stamps once it has ended).
        let consequence =
            |f: &StageFailure| matches!(f.error, NodeError::Ingest(tessera_ingest::IngestError::DownstreamClosed));
        failures.sort_by_key(|f| (consequence(f), f.at));
        let mut failures = failures.into_iter();
        match (failures.next(), engine) {
            (Some(first), _) => {
                for later in failures {
                    tracing::error!(stage = later.stage, error = %tessera_core::error_chain(&later.error), "a stage failed after another");
                }
                Err((*first).into_error())
            }
            (None, Some(engine)) => Ok((stats, engine)),
            (None, None) => unreachable!("a detect thread that returns no engine has failed"),
        }
    }
}

/// The node's blocking stages' threads.
struct StageThreads {
    /// The consumer's, then the decoder's.
    ingest: Vec<StageThread<()>>,
    detect: StageThread<StreamEngine>,
    store: Option<StageThread<()>>,
}

impl StageThreads {
    /// Starts each stage's loop on a thread of its own, downstream first.
    fn spawn(
        ingest: [IngestLoop; 2],
        detect: StageLoop<StreamEngine>,
        store: Option<StageLoop<()>>,
    ) -> Result<Self, NodeError> {
        let store = store.map(StageThread::spawn).transpose()?;
        let detect = StageThread::spawn(detect)?;
        let ingest = ingest
            .into_iter()
            .rev()
            .map(|l| StageThread::spawn(StageLoop::new(l.name(), move || l.run().map_err(NodeError::from))))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .rev()
            .collect();
        Ok(Self { ingest, detect, store })
    }

    /// True once any stage's loop has ended (on its own, while the node runs: a failure).
    fn any_finished(&self) -> bool {
        self.ingest.iter().any(StageThread::is_finished)
            || self.detect.is_finished()
            || self.store.as_ref().is_some_and(StageThread::is_finished)
    }
}
