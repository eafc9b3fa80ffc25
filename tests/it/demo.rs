//! `tessera demo` as a user runs it: a separate process (see [`crate::cli_process`]: the very
//! command line of the `tessera` binary)
//! for 60 simulated seconds, in the Helm chart's shape (`--nodes-per-site 3`: the client asks
//! one node of a site and gets every site's whole answer). It must raise alerts for injected faults, answer a Flight SQL
//! query from a third-party client (ADBC) across the three sites, serve /metrics, deliver its
//! spans to an OTLP receiver hosted here, and exit 0 on SIGINT.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::demo_process::DemoProcess;
use crate::support::http_get;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};

/// A span as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    /// The span's attributes and its resource's, as text.
    attributes: HashMap<String, String>,
    resource: HashMap<String, String>,
}

/// OTLP key-values as text (strings, and other values as OTLP's debug form).
fn key_values(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> HashMap<String, String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    kvs.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

/// An OTLP/gRPC trace receiver: the collector's own service, keeping what it is sent.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().expect("not poisoned");
        for spans in request.into_inner().resource_spans {
            let resource = key_values(spans.resource.as_ref().map_or(&[][..], |r| &r.attributes));
            for scope in spans.scope_spans {
                for s in scope.spans {
                    got.push(Received {
                        name: s.name,
                        trace: s.trace_id,
                        id: s.span_id,
                        parent: s.parent_span_id,
                        attributes: key_values(&s.attributes),
                        resource: resource.clone(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[test]
fn the_demo_alerts_answers_sql_exports_spans_and_stops_on_sigint() {
    // Nine nodes: not beside the fault tests' node processes (on two cores, a site's nodes
    // then took longer than the fragment timeout to settle their partitions).
    let _one_at_a_time = crate::fault::node_processes();
    // The OTLP receiver.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let receiver = Receiver::default();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let otlp = listener.local_addr().expect("addr");
    let service = TraceServiceServer::new(receiver.clone());
    rt.spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming(tokio_stream_of(listener)));

    let args = [
        "demo",
        "--duration",
        "60s",
        "--nodes-per-site",
        "3",
        "--sql-port",
        "0",
        "--http-port",
        "0",
        "--otlp-endpoint",
        &format!("http://{otlp}"),
    ];
    let mut demo = DemoProcess::start(&args);
    // The simulated minute, then the cluster keeps serving.
    demo.wait_for("the simulated span has ended", Duration::from_secs(240));
    let out = demo.text();
    // Site a's first line is a node without Raft; its Raft member's line says so.
    let addr_after = |marker: &str, raft: bool| -> String {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("site-a") && l.contains(marker) && (!raft || l.contains("Raft node")))
            .unwrap_or_else(|| panic!("no {marker} in:\n{out}"));
        let rest = &line[line.find(marker).expect("marker") + marker.len()..];
        rest.split_whitespace()
            .next()
            .expect("address")
            .trim_start_matches("http://")
            .trim_end_matches("/console")
            .to_string()
    };
    let sql = addr_after("Flight SQL", false);
    let metrics_addr = addr_after("console", true);
    let opened: Vec<&str> = out.lines().filter(|l| l.starts_with("ALERT open")).collect();
    assert!(!opened.is_empty(), "no alert was printed:\n{out}");

    // A Flight SQL query across the three sites from a third-party client, as the README says.
    let python = std::env::var("TESSERA_PYTHON")
        .unwrap_or_else(|_| format!("{}/.cache/tessera/venv/bin/python", std::env::var("HOME").unwrap_or_default()));
    let script = r#"
import json, sys
import adbc_driver_flightsql.dbapi as flightsql
with flightsql.connect("grpc://" + sys.argv[1], db_kwargs={"username": "analyst", "password": "tessera-demo"}, autocommit=True) as conn:
    with conn.cursor() as cur:
        cur.execute("SELECT site_id, count(DISTINCT motor_id) AS motors_alerted, round(max(peak_score), 1) AS worst FROM fleet.alerts GROUP BY site_id ORDER BY site_id")
        alerts = cur.fetchall()
        cur.execute("SELECT site_id, motors FROM sites ORDER BY site_id")
        sites = cur.fetchall()
        cur.execute("SELECT count(DISTINCT motor_id) FROM fleet.telemetry")
        print(json.dumps({"alerts": alerts, "sites": sites, "motors": cur.fetchall()[0][0]}))
"#;
    let answer = Command::new(&python)
        .args(["-c", script, &sql])
        .output()
        .expect("python (scripts/setup.sh --with-broker makes the venv)");
    let stdout = String::from_utf8_lossy(&answer.stdout).to_string();
    if !answer.status.success() {
        panic!("the query failed: {}\n{stdout}\ndemo:\n{}", String::from_utf8_lossy(&answer.stderr), demo.text());
    }
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).expect("rows as JSON");
    let rows: Vec<(String, i64, f64)> = serde_json::from_value(answer["alerts"].clone()).expect("alert rows");
    // The control plane's registry: the three sites, with the motors the demo assigned them.
    let sites: Vec<(String, i64)> = serde_json::from_value(answer["sites"].clone()).expect("site rows");
    assert_eq!(sites.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), ["site-a", "site-b", "site-c"], "{sites:?}");
    assert_eq!(sites.iter().map(|s| s.1).sum::<i64>(), 1000, "{sites:?}");
    // Asked at one node, every node of every site answered for its partitions, once each.
    assert_eq!(answer["motors"].as_i64(), Some(1000), "motors with readings: {answer}");
    let alerted: i64 = rows.iter().map(|r| r.1).sum();
    assert!(
        alerted >= opened.len() as i64 / 2 && alerted > 0,
        "fleet.alerts says {rows:?}; the demo printed {} openings",
        opened.len()
    );

    // /metrics of site a: Raft, ingest, the window-to-alert latency and the query just run.
    let metrics = http_get(&metrics_addr, "/metrics");
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
    };
    assert!(value("tessera_raft_term{") >= 1.0);
    assert!(value("tessera_raft_voters{") == 3.0);
    // Site a's Raft member, one of its three nodes: about a third of its readings.
    assert!(value("tessera_ingest_readings_total{site=\"site-a\"}") > 3_000.0);
    assert!(value("tessera_sql_query_duration_seconds_count{") >= 1.0);
    assert!(value("tessera_detect_windows_closed_total{") > 0.0);
    assert!(http_get(&metrics_addr, "/readyz").starts_with("HTTP/1.1 200"), "not ready");
    // Every series the alert rules and the dashboard use is one a node serves (the TLS refusal
    // counters appear only with [tls], which the demo does not use).
    for name in crate::observability_assets::referenced_metrics() {
        // (TLS refusals need [tls]; notifications need [notify]: tests/it/notify.rs checks those.)
        if name != "tessera_tls_refusals_total" && !name.starts_with("tessera_notify_") {
            assert!(
                metrics.contains(&format!("# TYPE {name} ")),
                "deploy/ uses {name}, which /metrics does not serve:\n{metrics}"
            );
        }
    }

    // The process's own metrics, event-time freshness per partition, alert events by query,
    // severity and state, and window labels that are identifiers.
    for family in
        ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"]
    {
        assert!(metrics.contains(&format!("# TYPE {family} ")), "{family} missing:\n{metrics}");
    }
    assert!(metrics.contains("tessera_ingest_watermark_lag_seconds{site=\""), "no freshness sample:\n{metrics}");
    assert!(
        metrics.lines().any(|l| l.starts_with("tessera_detect_alert_events_total{")
            && l.contains("query=\"")
            && l.contains("severity=\"")
            && l.contains("state=\"open\"")),
        "alert events by query, severity and state:\n{metrics}"
    );
    assert!(metrics.contains("window=\"tumble_"), "window labels:\n{metrics}");
    assert!(
        !metrics.lines().any(|l| l.starts_with("tessera_ingest_readings_total{") && l.contains("outcome=\"")),
        "readings_total has no outcome label any more:\n{metrics}"
    );
    // The fleet query above reached every site from some node; every node lists its peers.
    for site in ["site-a", "site-b", "site-c"] {
        assert!(
            metrics.contains(&format!("answering_site=\"{site}\",outcome=\"answered\"}}")),
            "fragments of {site}:\n{metrics}"
        );
    }

    // SIGINT: a clean stop, exit status 0.
    let status = demo.interrupt(Duration::from_secs(90));
    let out = demo.text();
    let status = status.unwrap_or_else(|| panic!("the demo did not stop within 90 s of SIGINT:\n{out}"));
    assert!(status.success(), "exit status {status:?}:\n{out}");
    assert!(out.contains("demo stopped cleanly"), "{out}");
    let caught = out
        .lines()
        .find_map(|l| {
            l.split_once(" motors alerted: ")
                .map(|(_, rest)| rest.split(' ').next().unwrap_or("0").parse::<u64>().unwrap_or(0))
        })
        .unwrap_or_else(|| panic!("no final score:\n{out}"));
    assert!(caught >= 1, "no alerted motor had an injected fault:\n{out}");

    // The spans: ingest → window → alert in one trace, and a query continued on other sites.
    let spans = receiver.0.lock().expect("not poisoned").clone();
    let by_id: HashMap<&[u8], &Received> = spans.iter().map(|s| (s.id.as_slice(), s)).collect();
    let parent_of = |s: &Received| by_id.get(s.parent.as_slice()).copied();
    let alert = spans.iter().filter(|s| s.name == "alert.emit").find_map(|a| {
        let step = parent_of(a).filter(|p| p.name == "detect.step")?;
        let batch = parent_of(step).filter(|p| p.name == "ingest.batch")?;
        Some((a, batch))
    });
    let names: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let (alert, batch) = alert.unwrap_or_else(|| {
        panic!("no alert.emit ← detect.step ← ingest.batch chain among {} spans {names:?}", spans.len())
    });
    assert_eq!(alert.trace, batch.trace);
    let federated = spans
        .iter()
        .filter(|s| s.name == "sql.query")
        .find(|s| parent_of(s).is_some_and(|p| p.trace == s.trace && p.name == "sql.query"));
    assert!(federated.is_some(), "no sql.query continued from another site's sql.query: {names:?}");
    // OpenTelemetry's semantic conventions: messaging on the ingest, database on SQL, and the
    // process's identity on the resource.
    let attribute = |s: &Received, key: &str| s.attributes.get(key).cloned().unwrap_or_default();
    assert_eq!(attribute(batch, "messaging.system"), "kafka", "{:?}", batch.attributes);
    assert_eq!(attribute(batch, "messaging.operation.type"), "process");
    assert!(!attribute(batch, "messaging.consumer.group.name").is_empty(), "{:?}", batch.attributes);
    let query = federated.expect("checked");
    assert_eq!(attribute(query, "db.operation.name"), "SELECT", "{:?}", query.attributes);
    assert!(attribute(query, "db.query.text").to_uppercase().contains("SELECT"), "{:?}", query.attributes);
    assert_eq!(attribute(query, "db.namespace"), "tessera");
    for key in ["service.name", "service.version", "service.instance.id"] {
        assert!(batch.resource.contains_key(key), "resource lacks {key}: {:?}", batch.resource);
    }
    println!(
        "demo: {} alerts opened, {caught} motors with faults alerted, fleet.alerts {rows:?}; {} spans received",
        opened.len(),
        spans.len()
    );
}

fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let accepted = l.accept().await.map(|(s, _)| s);
        Some((accepted, l))
    })
}
