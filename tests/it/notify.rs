//! Alerts that reach people (issue 24, point 3): a node's alert events posted to a real
//! Alertmanager process (Debian's `prometheus-alertmanager`, installed by
//! `scripts/setup.sh --with-broker`) — an alert raised while Alertmanager is down arrives once it
//! is up, with the labels motor, site, query and severity, and its close resolves it there.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tessera_core::now_ms;
use tessera_core::{Channel, Reading};
use tessera_node::config::NotifyConfig;
use tessera_workload::producer::WireFormat;

use crate::support::{TestNode, http_get, reading};

const QUERY: &str = "CREATE CONTINUOUS QUERY vib WITH (open_above = 3, close_below = 1) AS
  SELECT motor_id, window_start, avg(vibration_x_rms) AS vib,
         zscore(motor_id, window_start, avg(vibration_x_rms), 4) AS score
  FROM TUMBLE(telemetry, ts, INTERVAL '1 second') GROUP BY motor_id, window_start";

/// An Alertmanager process on a loopback port, stopped (by its pid) when dropped.
struct Alertmanager {
    child: Child,
    addr: String,
}

impl Alertmanager {
    fn start(dir: &Path, port: u16) -> Self {
        let config = dir.join("alertmanager.yml");
        std::fs::write(&config, "route:\n  receiver: none\nreceivers:\n  - name: none\n").expect("config");
        let addr = format!("127.0.0.1:{port}");
        let binary = ["prometheus-alertmanager", "alertmanager"]
            .into_iter()
            .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
            .expect("Alertmanager is installed (scripts/setup.sh --with-broker installs prometheus-alertmanager)");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=") // no gossip: one process alone
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Alertmanager starts");
        let am = Self { child, addr };
        let until = Instant::now() + Duration::from_secs(30);
        while !am.get("/-/ready").starts_with("HTTP/1.1 200") {
            assert!(Instant::now() < until, "Alertmanager not ready within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        am
    }

    fn get(&self, path: &str) -> String {
        match std::net::TcpStream::connect(&self.addr) {
            Ok(_) => http_get(&self.addr, path),
            Err(_) => String::new(),
        }
    }

    /// The active alerts Alertmanager holds.
    fn alerts(&self) -> Vec<serde_json::Value> {
        let response = self.get("/api/v2/alerts");
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("[]");
        // (A chunked body: the JSON array is the line that starts with `[`.)
        let json = body.lines().find(|l| l.starts_with('[')).unwrap_or("[]");
        serde_json::from_str(json).expect("Alertmanager's alerts as JSON")
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn vibration(motor: u32, ts: i64, seq: u64, v: f64) -> Reading {
    let mut r = reading(motor, "site-a", ts, seq);
    r.set(Channel::VibrationXRms, Some(v));
    r
}

#[test]
fn alerts_reach_a_real_alertmanager_even_one_that_was_down_and_resolve_there() {
    let (kafka, brokers) = crate::embedded_kafka(1, 2);
    kafka.create_topic("alerts", 1).expect("topic");
    kafka.create_topic("late", 1).expect("topic");
    let dir = tempfile::tempdir().expect("dir");
    // Alertmanager's port, held by a listener that never answers until Alertmanager starts
    // (after the alert was raised), so no other test takes it meanwhile.
    let am_holder = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let am_port = am_holder.local_addr().expect("addr").port();
    let node = TestNode::new("site-a", &brokers, "notify", "telemetry")
        .queries([QUERY])
        .with(|c| {
            c.notify = NotifyConfig {
                alertmanager: vec![format!("http://127.0.0.1:{am_port}")],
                timeout: Duration::from_millis(300), // a call to the silent holder fails by it
                retry_min: Duration::from_millis(50),
                retry_max: Duration::from_millis(500),
                resend: Duration::from_secs(2),
                ..Default::default()
            };
            c.http.listen = Some("127.0.0.1:0".parse().expect("addr"));
            // Each reading closes the windows before it: the alert opens with the step's next reading.
            c.detect.allowed_lateness = Duration::from_millis(100);
        })
        .start();
    let http = node.http_addr().expect("http").to_string();
    let p = tessera_suite::producer(&brokers, "telemetry", WireFormat::Protobuf).expect("producer");
    let t0 = (now_ms() - 60_000).div_euclid(1000) * 1000;
    // Motor 1: a baseline, a step to 2.0 (z ≈ 12: the alert opens), and readings that close
    // the step's window; the return to normal comes later.
    let first: Vec<Reading> = [1.0, 1.1, 0.9, 1.0, 2.0, 2.0, 2.0]
        .iter()
        .enumerate()
        .map(|(i, v)| vibration(1, t0 + i as i64 * 1000, i as u64, *v))
        .collect();
    p.send_readings(&first).expect("send");
    p.flush(Duration::from_secs(10)).expect("flush");
    let until = Instant::now() + Duration::from_secs(60);
    while node.detect_stats().alerts_sent < 1 {
        assert!(Instant::now() < until, "no alert raised: {:?}", node.detect_stats());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Alertmanager is down: the node retries.
    let metric = |name: &str| -> f64 {
        let text = http_get(&http, "/metrics");
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains("kind=\"alertmanager\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    while metric("tessera_notify_failed_total") < 1.0 {
        assert!(Instant::now() < until, "no failed send counted while Alertmanager is down");
        std::thread::sleep(Duration::from_millis(50));
    }

    drop(am_holder);
    let am = Alertmanager::start(dir.path(), am_port);
    let firing = |am: &Alertmanager| -> Option<serde_json::Value> {
        am.alerts().into_iter().find(|a| a["labels"]["motor"] == "M1")
    };
    let mut alert = None;
    while alert.is_none() {
        assert!(
            Instant::now() < until,
            "the alert raised while Alertmanager was down never arrived: {:?}",
            am.alerts()
        );
        std::thread::sleep(Duration::from_millis(100));
        alert = firing(&am);
    }
    let alert = alert.expect("found");
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "vib");
    assert_eq!(labels["query"], "vib");
    assert_eq!(labels["site"], "site-a");
    assert_eq!(labels["severity"], "warning");
    assert_eq!(alert["status"]["state"], "active", "{alert}");
    assert_eq!(metric("tessera_notify_dropped_total"), 0.0, "nothing dropped");

    // Back to normal: the alert closes, and Alertmanager resolves it.
    let rest: Vec<Reading> = [1.0, 1.0, 1.0, 1.0]
        .iter()
        .enumerate()
        .map(|(i, v)| vibration(1, t0 + (7 + i as i64) * 1000, 7 + i as u64, *v))
        .collect();
    p.send_readings(&rest).expect("send");
    p.flush(Duration::from_secs(10)).expect("flush");
    while firing(&am).is_some() {
        assert!(Instant::now() < until, "the close did not resolve the alert: {:?}", node.detect_stats());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(node.detect_stats().alerts_sent, 2, "one open, one close");
    // The shipped Prometheus rules' notification series are served.
    let metrics = http_get(&http, "/metrics");
    for name in crate::observability_assets::referenced_metrics() {
        if name.starts_with("tessera_notify_") {
            assert!(metrics.contains(&format!("# TYPE {name} counter")), "deploy/ uses {name}:\n{metrics}");
        }
    }
    assert!(metric("tessera_notify_sent_total") >= 2.0);
    node.stop().expect("the node stops");
    drop(am);
    drop(kafka);
}
