//! Processes of this very executable, and a control-plane cluster of them on loopback, for the
//! control-plane and fault tests and the failover benchmark (which includes this file).
//!
//! [`ChildProcess`] is the one way a test starts a process: this executable with the arguments
//! that lead it to its entry point (an ignored test of the suite, a flag of the benchmark),
//! its output collected as it comes (a full pipe would block it), killed when dropped.
//!
//! A node process is this very executable started again with [`NODE_ARGS_ENV`] holding the
//! `tessera control-node` arguments as JSON: the test binary runs them from an ignored test,
//! the benchmark from the top of `main`. Either way the node runs the same code as
//! `tessera control-node`. Killing is SIGKILL; each node keeps its data directory and port,
//! so a restarted node is the same member.

#![allow(dead_code, unreachable_pub)] // each includer uses part of it, and it is private to each

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tessera_proto::raft as pb;
use tessera_proto::raft::cluster_admin_client::ClusterAdminClient;
use tonic::transport::Channel;

/// The environment variable that turns this executable into a control-plane node.
pub const NODE_ARGS_ENV: &str = "TESSERA_CONTROL_NODE_ARGS";

/// Runs `tessera control-node` with the arguments in [`NODE_ARGS_ENV`], if set; returns
/// whether it did (the process should then exit).
pub fn run_node_if_asked() -> bool {
    let Ok(args) = std::env::var(NODE_ARGS_ENV) else { return false };
    let args: Vec<String> = serde_json::from_str(&args).expect("node args as JSON");
    let stop = std::sync::atomic::AtomicBool::new(false);
    if let Err(e) = tessera_cli::run_in_process(std::iter::once("tessera".to_string()).chain(args), &stop) {
        eprintln!("control node error: {e:#}");
        std::process::exit(3);
    }
    true
}

/// A spare loopback port for a node to take ([`tessera_workload::ports`]).
pub fn free_port() -> u16 {
    tessera_workload::ports::spare_loopback_port().expect("a spare loopback port")
}

/// A process of this executable, started with `args` (what leads it to its entry point) and
/// `env`; everything it prints is collected. Killed (SIGKILL) when dropped.
pub struct ChildProcess {
    child: Child,
    output: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl ChildProcess {
    /// Starts it.
    pub fn spawn(args: &[String], env: &[(&str, String)]) -> Self {
        let mut cmd = Command::new(std::env::current_exe().expect("this executable"));
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child = cmd.spawn().expect("a child process starts");
        let output: Arc<Mutex<String>> = Arc::default();
        let streams: [Box<dyn std::io::Read + Send>; 2] =
            [Box::new(child.stdout.take().expect("stdout")), Box::new(child.stderr.take().expect("stderr"))];
        let readers = streams
            .into_iter()
            .map(|mut stream| {
                let output = output.clone();
                std::thread::spawn(move || {
                    let mut chunk = [0u8; 4096];
                    while let Ok(n @ 1..) = stream.read(&mut chunk) {
                        output
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push_str(&String::from_utf8_lossy(&chunk[..n]));
                    }
                })
            })
            .collect();
        ChildProcess { child, output, readers }
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until it has printed `text` (true), or has ended or `within` has passed (false).
    pub fn wait_for_output(&mut self, text: &str, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if self.output().contains(text) {
                return true;
            }
            if !self.running() {
                return self.output().contains(text);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `within` for it to end by itself: its status and everything it printed;
    /// `None` (and it is killed) if it did not end in time.
    pub fn wait(mut self, within: Duration) -> (Option<ExitStatus>, String) {
        let until = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break Some(status);
            }
            if Instant::now() > until {
                let stacks = thread_stacks(self.child.id());
                self.output.lock().unwrap_or_else(|p| p.into_inner()).push_str(&stacks);
                self.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        (status, self.output())
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if self.running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Where each thread of process `pid` is (gdb's backtraces), to show what a process that
/// hung waits for; a note if gdb is not installed.
fn thread_stacks(pid: u32) -> String {
    let gdb = Command::new("gdb")
        .args(["-p", &pid.to_string(), "-batch", "-nx", "-ex", "thread apply all bt 25"])
        .stdin(Stdio::null())
        .output();
    match gdb {
        Ok(out) => format!("\n--- its threads (gdb) ---\n{}", String::from_utf8_lossy(&out.stdout)),
        Err(e) => format!("\n(no thread stacks: gdb: {e})\n"),
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How to start this executable as a node: the extra arguments it needs to get there.
#[derive(Clone)]
pub struct Launcher {
    /// Arguments before anything else (the test binary's filter to its ignored node test).
    pub prefix: Vec<String>,
}

/// One node process.
pub struct NodeProc {
    /// Raft id.
    pub id: u64,
    /// Site.
    pub site: String,
    /// `127.0.0.1:port`.
    pub addr: String,
    dir: PathBuf,
    extra: Vec<String>,
    process: Option<ChildProcess>,
    /// What the process printed before its last kill.
    earlier_output: String,
    launcher: Launcher,
}

impl NodeProc {
    /// Starts node `id` of `site` with its data under `work`, and waits until it serves.
    pub fn start(launcher: &Launcher, id: u64, site: &str, work: &Path, extra: &[&str]) -> Self {
        let mut node = NodeProc {
            id,
            site: site.to_string(),
            addr: format!("127.0.0.1:{}", free_port()),
            dir: work.join(format!("node-{id}")),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            process: None,
            earlier_output: String::new(),
            launcher: launcher.clone(),
        };
        node.restart();
        node
    }

    /// The node as `ID=SITE@ADDR`.
    pub fn spec(&self) -> String {
        format!("{}={}@{}", self.id, self.site, self.addr)
    }

    /// Starts the process again (same id, port and data), and waits until it serves.
    pub fn restart(&mut self) {
        assert!(self.process.is_none(), "node {} is running", self.id);
        let mut args: Vec<String> =
            ["control-node", "--id", &self.id.to_string(), "--site", &self.site, "--listen", &self.addr]
                .iter()
                .map(|s| s.to_string())
                .collect();
        args.extend(["--data-dir".to_string(), self.dir.display().to_string()]);
        args.extend(self.extra.iter().cloned());
        let mut process =
            ChildProcess::spawn(&self.launcher.prefix, &[(NODE_ARGS_ENV, serde_json::to_string(&args).expect("args"))]);
        if !process.wait_for_output("serving on", Duration::from_secs(30)) {
            panic!("node {} did not start serving within 30 s:\n{}", self.id, process.output());
        }
        self.process = Some(process);
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
            self.earlier_output.push_str(&process.output());
        }
    }

    /// Whether the process runs.
    pub fn running(&self) -> bool {
        self.process.is_some()
    }

    /// Everything the process printed so far (its earlier runs too).
    pub fn output(&self) -> String {
        let now = self.process.as_ref().map(ChildProcess::output).unwrap_or_default();
        format!("{}{now}", self.earlier_output)
    }

    /// Its data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An admin client.
    pub async fn client(&self) -> ClusterAdminClient<Channel> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(20))
            .connect_lazy();
        ClusterAdminClient::new(channel)
    }

    /// Its status, if it answers.
    pub async fn status(&self) -> Option<pb::StatusResponse> {
        if !self.running() {
            return None;
        }
        let mut client = self.client().await;
        let mut req = tonic::Request::new(pb::StatusRequest {});
        req.set_timeout(Duration::from_millis(500));
        client.status(req).await.ok().map(|r| r.into_inner())
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `n` nodes (ids 1..=n, sites `site-1`…) and initialises them as one cluster.
pub async fn start_cluster(launcher: &Launcher, n: u64, work: &Path, extra: &[&str]) -> Vec<NodeProc> {
    let nodes: Vec<NodeProc> =
        (1..=n).map(|id| NodeProc::start(launcher, id, &format!("site-{id}"), work, extra)).collect();
    let specs = nodes.iter().map(|n| pb::NodeSpec { id: n.id, site: n.site.clone(), addr: n.addr.clone() }).collect();
    let reply = nodes[0].client().await.init(pb::InitRequest { nodes: specs, actor: "harness".into() }).await;
    reply.unwrap_or_else(|e| panic!("init: {e}\n{}", nodes[0].output()));
    nodes
}

/// The node that reports itself leader, waiting up to `within`.
pub async fn leader(nodes: &[NodeProc], within: Duration) -> Option<(usize, pb::StatusResponse)> {
    let until = Instant::now() + within;
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if let Some(s) = n.status().await
                && s.role == "leader"
            {
                return Some((i, s));
            }
        }
        if Instant::now() > until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Registers query `name` through `node`; the log index it committed at.
pub async fn register(node: &NodeProc, name: &str) -> Result<u64, tonic::Status> {
    let req = pb::RegisterQueryRequest { name: name.into(), sql: format!("SELECT '{name}'"), actor: "harness".into() };
    let reply = node.client().await.register_query(req).await?.into_inner();
    assert!(reply.rejected.is_empty(), "{name}: {}", reply.rejected);
    Ok(reply.log_index)
}

/// The registered query names, read linearizably through `node`.
pub async fn query_names(node: &NodeProc) -> Result<Vec<String>, tonic::Status> {
    let reply = node.client().await.list_queries(pb::ListQueriesRequest {}).await?;
    Ok(reply.into_inner().queries.into_iter().map(|q| q.name).collect())
}
