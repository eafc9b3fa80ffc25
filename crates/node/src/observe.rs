//! What a running node tells its operators over HTTP (`[http] listen`):
//!
//! - `/metrics`: Prometheus text format. Ingest rate, consumer lag and event-time freshness
//!   per partition, dead-letter and late counts, windows closed, alert events by query,
//!   severity and state, alerts open by query, window-close-to-alert latency, checkpoint
//!   durations, Raft term and leader, Flight SQL query latency, TLS refusals, and the
//!   standard `process_*` metrics. Every series carries the node's `site`.
//! - `/livez`: 200 while the detection thread is turning (it loops at least every 100 ms; 30 s
//!   without a turn is a hang) and no stage has ended; 503 with the reason otherwise.
//! - `/readyz`: live, its input topics exist, and with a Raft member, a leader known: the node
//!   reads its input, can answer SQL and follows the cluster's queries. 503 with the reason
//!   otherwise (the missing topics by name). Below `ok`, a line per
//!   warning an operator must see (a control plane in plaintext on a non-loopback address).
//! - `/startupz`: 200 once the node has started (the endpoint is served from then on).
//!
//! Everything is read at scrape time from counters the stages keep anyway ([`NodeProbe`]).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::StatusCode;
use tessera_core::{LatencyHistogram, LatencySnapshot};
use tessera_ingest::IngestMetrics;

use crate::detect::DetectProbe;
use crate::error::NodeError;
use crate::lifecycle::Shutdown;
use serde::{Deserialize, Serialize};

/// How long the detection thread may go without a turn before the node counts as hung.
const HUNG_AFTER_MS: i64 = 30_000;

/// Handles on a node's counters, cheap to clone, read at each scrape or probe.
#[derive(Clone)]
pub struct NodeProbe {
    /// The node's site (a label on every series).
    pub site: String,
    /// The ingest's counters.
    pub ingest: Arc<IngestMetrics>,
    /// The detection stage's counters.
    pub detect: DetectProbe,
    /// Window close to alert written.
    pub alert_latency: Arc<LatencyHistogram>,
    /// Flight SQL query latency, if the endpoint runs.
    pub sql_latency: Option<Arc<LatencyHistogram>>,
    /// Fleet queries' fragments per answering site, if the endpoint runs.
    pub sql_fragments: Option<Arc<tessera_sql::fanout::SiteFragmentStats>>,
    /// The SQL endpoint's refusals, if it runs.
    pub sql_refusals: Option<Arc<tessera_tls::Refusals>>,
    /// The Raft member, if the node runs one.
    pub raft: Option<tessera_consensus::Raft>,
    /// The Raft endpoint's refusals, if the node runs a member.
    pub raft_refusals: Option<Arc<tessera_tls::Refusals>>,
    /// Set when a stage of the node has ended on its own (the reason is in the log).
    pub failed: Arc<AtomicBool>,
    /// What `/readyz` warns of while the node is ready anyway.
    pub warnings: Vec<String>,
    /// The alert receivers (`[notify]`), if any.
    pub notify: Option<crate::notify::Notifier>,
}

impl NodeProbe {
    /// `Ok` while the node works; else why not.
    pub fn live(&self) -> Result<(), String> {
        if self.failed.load(Ordering::Relaxed) {
            return Err("a stage of the node has stopped (see the log)".into());
        }
        let idle = tessera_core::now_ms() - self.detect.last_turn_ms();
        if idle > HUNG_AFTER_MS {
            return Err(format!("the detection thread has not turned for {} s", idle / 1000));
        }
        Ok(())
    }

    /// `Ok` when the node can serve: live, its input topics exist, and with a Raft member, a
    /// leader known.
    pub fn ready(&self) -> Result<(), String> {
        self.live()?;
        let missing = self.ingest.missing_topics();
        if !missing.is_empty() {
            return Err(format!(
                "waiting for input topic(s) {} to exist on the brokers (create them, or set [ingest.create_topics])",
                missing.join(", ")
            ));
        }
        if let Some(raft) = &self.raft {
            let status = tessera_consensus::RaftStatus::of(raft);
            if status.voters == 0 {
                return Err("the control plane has not been initialised yet".into());
            }
            if status.leader.is_none() {
                return Err(format!("no Raft leader known in term {}", status.term));
            }
        }
        Ok(())
    }

    /// Every metric, in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = Metrics { text: String::new(), site: escape(&self.site) };
        let i = self.ingest.snapshot();
        out.gauge(
            "tessera_build_info",
            "The running version (value 1).",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        out.counter("tessera_ingest_messages_total", "Kafka messages consumed.", &[], i.messages);
        out.counter("tessera_ingest_bytes_total", "Bytes of Kafka messages consumed.", &[], i.bytes);
        out.counter(
            "tessera_ingest_readings_total",
            "Readings accepted (rate: the ingest rate); those rejected: tessera_ingest_rejected_total.",
            &[],
            i.readings_accepted,
        );
        out.family(
            "tessera_ingest_rejected_total",
            "counter",
            "Readings rejected, by reason (each one dead-lettered).",
        );
        for (reason, n) in &i.rejected_by_reason {
            out.sample("tessera_ingest_rejected_total", &[("reason", reason)], *n as f64);
        }
        out.counter(
            "tessera_ingest_dead_letters_total",
            "Messages written to the dead-letter topic.",
            &[],
            i.dead_letters_sent,
        );
        out.gauge(
            "tessera_ingest_consumer_lag",
            "Messages behind the high watermarks of the partitions this node owns.",
            &[],
            i.consumer_lag as f64,
        );
        out.gauge(
            "tessera_ingest_missing_topics",
            "Subscribed input topics the brokers say do not exist (the node waits for them).",
            &[],
            self.ingest.missing_topics().len() as f64,
        );
        out.counter("tessera_ingest_batches_total", "Arrow batches handed to the detection stage.", &[], i.batches);
        out.counter("tessera_ingest_commits_total", "Offset commits.", &[], i.commits);
        out.counter("tessera_ingest_commit_errors_total", "Offset commits that failed.", &[], i.commit_errors);
        out.counter("tessera_ingest_rebalances_total", "Consumer-group rebalances seen.", &[], i.rebalances);
        out.counter("tessera_ingest_pauses_total", "Times the consumer paused for backpressure.", &[], i.pauses);
        out.counter(
            "tessera_ingest_consumer_errors_total",
            "Consumer errors reported by librdkafka.",
            &[],
            i.consumer_errors,
        );
        out.counter(
            "tessera_ingest_stale_checkpoints_total",
            "Assigned partitions whose checkpoint was older than the group's committed offset (not restored: no rewind).",
            &[],
            i.stale_checkpoints,
        );

        out.family(
            "tessera_ingest_watermark_lag_seconds",
            "gauge",
            "Event-time freshness per owned partition: now minus the newest event time accepted from it.",
        );
        let now_ms = tessera_core::now_ms();
        for ((topic, partition), newest) in self.ingest.newest_event_times() {
            out.sample(
                "tessera_ingest_watermark_lag_seconds",
                &[("topic", &topic), ("partition", &partition.to_string())],
                (now_ms - newest) as f64 / 1000.0,
            );
        }

        let d = self.detect.stats();
        out.family("tessera_detect_windows_closed_total", "counter", "Windows closed, by window (kind_size[_slide]).");
        for (spec, w) in &d.engine.windows {
            out.sample(
                "tessera_detect_windows_closed_total",
                &[("window", &window_label(spec))],
                w.windows_closed as f64,
            );
        }
        out.family(
            "tessera_detect_alert_events_total",
            "counter",
            "Alert events written, by query, severity and state (open, update, close).",
        );
        for ((query, severity, state), n) in &d.alert_events {
            out.sample(
                "tessera_detect_alert_events_total",
                &[("query", query), ("severity", severity), ("state", state)],
                *n as f64,
            );
        }
        out.family("tessera_detect_alerts_open", "gauge", "Alerts open now, by query (judges by their name).");
        for (query, n) in &d.engine.alerts_open_by_query {
            out.sample("tessera_detect_alerts_open", &[("query", query)], *n as f64);
        }
        out.family(
            "tessera_detect_judge_motors",
            "gauge",
            "Motors the shift and wear judges hold, by judge and where their state is: memory (hot) or the spill file (cold).",
        );
        for (judge, (held, hot)) in &d.engine.judge_motors {
            out.sample("tessera_detect_judge_motors", &[("judge", judge), ("state", "hot")], *hot as f64);
            out.sample("tessera_detect_judge_motors", &[("judge", judge), ("state", "cold")], (held - hot) as f64);
        }
        out.counter(
            "tessera_detect_late_readings_total",
            "Readings too late for their window, written to the late topic.",
            &[],
            d.late_sent,
        );
        out.counter(
            "tessera_detect_query_errors_total",
            "Continuous-query runs that failed (their windows dead-lettered).",
            &[],
            d.engine.query_errors,
        );
        out.counter("tessera_detect_checkpoints_total", "Checkpoint files written.", &[], d.checkpoints);
        out.histogram_family(
            "tessera_detect_checkpoint_duration_seconds",
            "Checkpoints: encoding (the detection stage pauses for it), and writing (the broker's confirmations, then the files).",
            &[(&[("phase", "encode")], &d.checkpoint_encode.snapshot()), (&[("phase", "write")], &d.checkpoint_write.snapshot())],
        );
        out.gauge(
            "tessera_detect_partitions_owned",
            "Kafka partitions whose state this node holds.",
            &[],
            d.partitions_owned as f64,
        );
        out.histogram(
            "tessera_alert_latency_seconds",
            "From the step that closed a window to its alert written (processing time).",
            &self.alert_latency.snapshot(),
        );

        if let Some(notifier) = &self.notify {
            let receivers = notifier.counts();
            let families = [
                ("tessera_notify_queued_total", "Alert events handed to a receiver's queue."),
                ("tessera_notify_sent_total", "Alert events a receiver accepted (Alertmanager resends count again)."),
                ("tessera_notify_failed_total", "Requests to a receiver that failed (each retried with back-off)."),
                (
                    "tessera_notify_dropped_total",
                    "Queued entries dropped: a receiver's queue was full, or the grades withheld them.",
                ),
            ];
            out.counter(
                "tessera_notify_silenced_total",
                "Alert events not sent because someone silenced their alert.",
                &[],
                notifier.silenced(),
            );
            for (i, (name, help)) in families.into_iter().enumerate() {
                out.family(name, "counter", help);
                for (url, kind, counts) in &receivers {
                    out.sample(name, &[("receiver", url), ("kind", kind)], counts.snapshot()[i] as f64);
                }
            }
        }
        if let Some(sql) = &self.sql_latency {
            out.histogram(
                "tessera_sql_query_duration_seconds",
                "Flight SQL queries, from arrival to the last row sent (or the refusal).",
                &sql.snapshot(),
            );
        }
        if let Some(fragments) = &self.sql_fragments {
            let sites = fragments.snapshot();
            if !sites.is_empty() {
                let name = "tessera_sql_site_fragments_total";
                out.family(name, "counter", "Fleet queries' fragments by answering site and outcome: answered, left_out (late, with the caller's leave), unavailable (late: the query failed), refused.");
                for (site, counts, _) in &sites {
                    for (answer, count) in tessera_sql::fanout::SITE_ANSWERS.iter().zip(counts) {
                        out.sample(name, &[("answering_site", site), ("outcome", answer.name())], *count as f64);
                    }
                }
                let series: Vec<([(&str, &str); 1], &LatencySnapshot)> =
                    sites.iter().map(|(site, _, latency)| ([("answering_site", site.as_str())], latency)).collect();
                let series: Vec<(&[(&str, &str)], &LatencySnapshot)> =
                    series.iter().map(|(labels, latency)| (&labels[..], *latency)).collect();
                out.histogram_family(
                    "tessera_sql_site_fragment_duration_seconds",
                    "Fleet queries' fragments by answering site: from sending to the answer, or to giving up.",
                    &series,
                );
            }
        }
        let refusals: Vec<(&str, &Arc<tessera_tls::Refusals>)> =
            [("sql", self.sql_refusals.as_ref()), ("raft", self.raft_refusals.as_ref())]
                .into_iter()
                .filter_map(|(e, r)| r.map(|r| (e, r)))
                .collect();
        if !refusals.is_empty() {
            out.family(
                "tessera_tls_refusals_total",
                "counter",
                "Calls refused for their certificate: failed handshakes, or a certificate that does not fit the claim.",
            );
            for (endpoint, r) in refusals {
                out.sample(
                    "tessera_tls_refusals_total",
                    &[("endpoint", endpoint), ("kind", "handshake")],
                    r.handshakes() as f64,
                );
                out.sample(
                    "tessera_tls_refusals_total",
                    &[("endpoint", endpoint), ("kind", "identity")],
                    r.identities() as f64,
                );
            }
        }
        if let Some(raft) = &self.raft {
            let s = tessera_consensus::RaftStatus::of(raft);
            let node = s.node_id.to_string();
            out.gauge("tessera_raft_term", "The current Raft term.", &[("node", &node)], s.term as f64);
            out.gauge(
                "tessera_raft_has_leader",
                "1 if this node knows a leader.",
                &[("node", &node)],
                f64::from(u8::from(s.leader.is_some())),
            );
            out.family(
                "tessera_raft_leader_id",
                "gauge",
                "The leader this node knows of (absent while none is known).",
            );
            if let Some(leader) = s.leader {
                out.sample("tessera_raft_leader_id", &[("node", &node)], leader as f64);
            }
            out.gauge(
                "tessera_raft_is_leader",
                "1 if this node is the leader.",
                &[("node", &node)],
                f64::from(u8::from(s.is_leader)),
            );
            out.gauge(
                "tessera_raft_applied_index",
                "The last applied log index.",
                &[("node", &node)],
                s.applied_index.map_or(0.0, |i| i as f64),
            );
            out.gauge("tessera_raft_voters", "Voters in the current membership.", &[("node", &node)], s.voters as f64);
        }
        process_metrics(&mut out);
        out.text
    }
}

/// Prometheus text, with the site label on every sample.
struct Metrics {
    text: String,
    site: String,
}

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let mut l = format!("site=\"{}\"", self.site);
        for (k, v) in labels {
            let _ = write!(l, ",{k}=\"{}\"", escape(v));
        }
        let _ = writeln!(self.text, "{name}{{{l}}} {}", number(value));
    }

    fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.family(name, "counter", help);
        self.sample(name, labels, value as f64);
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.family(name, "gauge", help);
        self.sample(name, labels, value);
    }

    fn histogram(&mut self, name: &str, help: &str, h: &LatencySnapshot) {
        self.histogram_family(name, help, &[(&[], h)]);
    }

    /// A histogram family with a series per label set.
    fn histogram_family(&mut self, name: &str, help: &str, series: &[(&[(&str, &str)], &LatencySnapshot)]) {
        self.family(name, "histogram", help);
        for (labels, h) in series {
            let bounds: Vec<String> =
                h.cumulative.iter().map(|(bound, _)| number(*bound)).chain(["+Inf".into()]).collect();
            let counts = h.cumulative.iter().map(|(_, n)| *n).chain([h.count]);
            for (le, n) in bounds.iter().zip(counts) {
                let with_le: Vec<(&str, &str)> = labels.iter().copied().chain([("le", le.as_str())]).collect();
                self.sample(&format!("{name}_bucket"), &with_le, n as f64);
            }
            self.sample(&format!("{name}_sum"), labels, h.sum_s);
            self.sample(&format!("{name}_count"), labels, h.count as f64);
        }
    }
}

/// A window spec as a label value: `tumble_10s`, `hop_60s_10s` (size, slide), `session_30s`
/// (gap); milliseconds where a size is not whole seconds.
fn window_label(spec: &tessera_core::WindowSpec) -> String {
    let span = |ms: i64| if ms % 1000 == 0 { format!("{}s", ms / 1000) } else { format!("{ms}ms") };
    match *spec {
        tessera_core::WindowSpec::Tumbling { size_ms } => format!("tumble_{}", span(size_ms)),
        tessera_core::WindowSpec::Hopping { size_ms, slide_ms } => format!("hop_{}_{}", span(size_ms), span(slide_ms)),
        tessera_core::WindowSpec::Session { gap_ms } => format!("session_{}", span(gap_ms)),
    }
}

/// The process's own metrics under Prometheus' standard names (`process_*`), read from
/// `/proc/self` (Linux; elsewhere none are written).
fn process_metrics(out: &mut Metrics) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return };
    // Fields after the command name (which may hold spaces), from field 3 (state) on.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    // /proc reports CPU times and the start time in USER_HZ ticks, 100 per second on Linux.
    const TICKS: f64 = 100.0;
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    if let (Some(user), Some(system)) = (field(14), field(15)) {
        out.family("process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.");
        out.sample("process_cpu_seconds_total", &[], (user + system) / TICKS);
    }
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<f64>().ok()));
    if let (Some(boot), Some(start)) = (boot, field(22)) {
        out.gauge(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
            &[],
            boot + start / TICKS,
        );
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let status_value = |key: &str| {
        status.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
    };
    if let Some(kib) = status_value("VmRSS:") {
        out.gauge("process_resident_memory_bytes", "Resident memory size, in bytes.", &[], kib * 1024.0);
    }
    if let Some(kib) = status_value("VmSize:") {
        out.gauge("process_virtual_memory_bytes", "Virtual memory size, in bytes.", &[], kib * 1024.0);
    }
    if let Some(threads) = status_value("Threads:") {
        out.gauge("process_threads", "Threads of the process.", &[], threads);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.gauge("process_open_fds", "Open file descriptors.", &[], fds.count() as f64);
    }
    let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|l| {
        l.lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3)?.parse::<f64>().ok())
    });
    if let Some(max) = max_fds {
        out.gauge("process_max_fds", "Most open file descriptors allowed.", &[], max);
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Serves `/metrics` and the health checks of `probe` on `listener` until `shutdown`.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    probe: NodeProbe,
    api: Option<axum::Router>,
    shutdown: Shutdown,
) -> Result<(), NodeError> {
    use axum::routing::get;
    let addr = listener.local_addr().map_err(|source| NodeError::Io { what: "the HTTP listener's address", source })?;
    let answer = |r: Result<(), String>| match r {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    };
    let (live, ready, metrics) = (probe.clone(), probe.clone(), probe);
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = metrics.render();
                async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body) }
            }),
        )
        .route(
            "/livez",
            get(move || {
                let r = answer(live.live());
                async move { r }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let (code, mut body) = answer(ready.ready());
                for warning in &ready.warnings {
                    let _ = writeln!(body, "warning: {warning}");
                }
                async move { (code, body) }
            }),
        )
        .route("/startupz", get(|| async { "started\n" }));
    let app = match api {
        Some(api) => app.merge(api),
        None => app,
    };
    tracing::info!(%addr, "metrics and health endpoints serving");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.wait())
        .await
        .map_err(|source| NodeError::Io { what: "the HTTP endpoint stopped", source })
}

/// The `[http]` section: Prometheus metrics and health checks for orchestrators.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Where `/metrics`, `/livez`, `/readyz`, `/startupz` and (with `[sql] listen`) the JSON
    /// API under `/api/v1` ([`crate::api`]) are served; unset: nowhere.
    pub listen: Option<SocketAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_and_labels_render_in_the_text_format() {
        let mut m = Metrics { text: String::new(), site: escape("site-\"a\"") };
        let h = LatencyHistogram::default();
        h.observe(std::time::Duration::from_millis(3));
        m.histogram("x_seconds", "help", &h.snapshot());
        assert!(m.text.starts_with("# HELP x_seconds help\n# TYPE x_seconds histogram\n"), "{}", m.text);
        assert!(m.text.contains("x_seconds_bucket{site=\"site-\\\"a\\\"\",le=\"0.0025\"} 0\n"), "{}", m.text);
        assert!(m.text.contains("x_seconds_bucket{site=\"site-\\\"a\\\"\",le=\"0.005\"} 1\n"), "{}", m.text);
        assert!(m.text.contains("x_seconds_bucket{site=\"site-\\\"a\\\"\",le=\"+Inf\"} 1\n"), "{}", m.text);
        assert!(m.text.contains("x_seconds_count{site=\"site-\\\"a\\\"\"} 1\n"), "{}", m.text);
    }

    #[test]
    fn window_labels_are_identifiers_and_process_metrics_use_the_standard_names() {
        use tessera_core::WindowSpec;
        assert_eq!(window_label(&WindowSpec::Tumbling { size_ms: 10_000 }), "tumble_10s");
        assert_eq!(window_label(&WindowSpec::Hopping { size_ms: 60_000, slide_ms: 1_500 }), "hop_60s_1500ms");
        assert_eq!(window_label(&WindowSpec::Session { gap_ms: 30_000 }), "session_30s");
        let mut m = Metrics { text: String::new(), site: "site-a".into() };
        process_metrics(&mut m);
        for family in
            ["process_cpu_seconds_total counter", "process_resident_memory_bytes gauge", "process_max_fds gauge"]
        {
            assert!(m.text.contains(&format!("# TYPE {family}")), "{family}: {}", m.text);
        }
    }
}
