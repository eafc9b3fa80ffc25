//! Web console benchmark (issue 24, point 6): how long headless Chromium takes to draw the
//! fleet page of 1,000 and 10,000 motors, how soon an acknowledgement made at one site shows on
//! a page open at another, and the CPU the cluster spends while 20 consoles stay open.
//!
//! `cargo bench --bench console_draw -- [--motors 1000,10000] [--loads 5] [--consoles 20] [--hold 30]`
//!
//! For each fleet size, `tessera demo` runs in this process (embedded Kafka, 3 sites of one node
//! each in one Raft group, the simulator at 1 Hz with its faults), as `scripts/demo.sh` runs it.
//! A fleet analyst signs in at site a's console in Chromium (chromedriver, as the tests drive
//! it), and the fleet page is loaded `--loads` times: the figure is the browser's navigation
//! timing, from the request to the load event (`loadEventEnd`), the page then holding every
//! motor (the fleet query federated over the three sites, rendered, parsed, styled). Then
//! `--consoles` consoles hold the fleet page open for `--hold` seconds, each its own session
//! and the page's event stream (which the node renders every second; the streams are read by
//! plain sockets here, as one browser holds at most 6 HTTP/1.1 connections to a host); the process's CPU (user + system, from `/proc/self/stat`) over
//! that time is set beside the same time with no console open: the difference is what the
//! consoles cost. The acknowledgement's latency: site a's admin acknowledges an open alert of
//! site a over the API; a page open at site c's console shows it (the time until its row says
//! so, polled every 50 ms).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tessera_suite::browser::Browser;
use tessera_workload::demo::{DEMO_PASSWORD, DemoOptions};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
}

/// This process's CPU time so far (user + system), from `/proc/self/stat` (clock ticks of 10 ms).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A free base port with the next two free as well (site i listens at base + i).
fn free_base() -> u16 {
    loop {
        let base = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        if base < 65_000 && (1..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

/// One HTTP/1.1 request; the status and the body.
fn http(addr: &str, method: &str, path: &str, authorization: &str, body: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {authorization}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read");
    let status = response.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn session(addr: &str, user: &str) -> String {
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{DEMO_PASSWORD}"));
    let (_, body) = http(addr, "POST", "/api/v1/sessions", &format!("Basic {basic}"), "");
    let token: serde_json::Value = serde_json::from_str(&body).expect("a session");
    format!("Bearer {}", token["token"].as_str().expect("a token"))
}

/// A console's live fleet page: signed in through the form, its event stream open.
fn fleet_stream(addr: &str) -> std::net::TcpStream {
    use std::io::{Read as _, Write as _};
    let body = format!("user=analyst&password={DEMO_PASSWORD}");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "POST /console/sign-in HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read");
    let cookie = response
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET /console/events/fleet HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("write");
    stream
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run(motors: u32, loads: usize, consoles: usize, hold: Duration) {
    let base = free_base();
    let opts = DemoOptions {
        motors,
        sites: 3,
        rate_hz: 1.0,
        duration: Duration::from_secs(3600),
        fault_fraction: 0.05,
        seed: 42,
        format: tessera_workload::producer::WireFormat::Protobuf,
        bad_every: 0,
        brokers: None,
        sql_port: 0,
        http_port: base,
        exit_when_done: false,
        nodes_per_site: 1,
        session_ttl: Duration::from_secs(8 * 3600),
    };
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let demo =
        std::thread::spawn(move || tessera_workload::demo::run(&opts, stop).map(|_| ()).map_err(|e| e.to_string()));
    let (site_a, site_c) = (format!("127.0.0.1:{base}"), format!("127.0.0.1:{}", base + 2));

    // Wait until every motor is on the fleet view (its health board filled at every site).
    let until = Instant::now() + Duration::from_secs(300);
    let analyst = loop {
        assert!(Instant::now() < until, "the demo's {motors} motors never showed");
        std::thread::sleep(Duration::from_secs(1));
        if std::net::TcpStream::connect(&site_a).is_err() {
            continue;
        }
        let token = session(&site_a, "analyst");
        let (_, body) = http(&site_a, "GET", "/api/v1/fleet", &token, "");
        let rows: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let total: u64 = rows.as_array().map_or(0, |r| r.iter().filter_map(|x| x["motors"].as_u64()).sum());
        if total == u64::from(motors) {
            break token;
        }
    };
    let _ = analyst;

    let browser = Browser::start(1600, 1000);
    browser.sign_in(&format!("http://{site_a}"), "analyst", DEMO_PASSWORD);
    browser.wait_for("#grid", Duration::from_secs(60));
    let mut draws = Vec::new();
    for _ in 0..loads {
        browser.goto(&format!("http://{site_a}/console/fleet"));
        let timing = browser.execute(
            "const n = performance.getEntriesByType('navigation')[0]; \
             return [n.responseStart - n.startTime, n.loadEventEnd - n.startTime, document.querySelectorAll('#grid a.m').length];",
        );
        let shown = timing[2].as_u64().unwrap_or(0);
        assert_eq!(shown, u64::from(motors), "the page holds every motor");
        draws.push((timing[0].as_f64().unwrap_or(f64::NAN), timing[1].as_f64().unwrap_or(f64::NAN)));
    }
    let first_byte = median(draws.iter().map(|d| d.0).collect());
    let loaded = median(draws.iter().map(|d| d.1).collect());

    // The acknowledgement, made at site a, on a page open at site c.
    let watcher = Browser::start(1600, 1000);
    watcher.sign_in(&format!("http://{site_c}"), "admin", DEMO_PASSWORD);
    watcher.wait_for("#grid", Duration::from_secs(60));
    watcher.goto(&format!("http://{site_c}/console/alerts"));
    watcher.wait_for("#alerts", Duration::from_secs(30));
    let admin = session(&site_a, "admin");
    let alert = loop {
        let (_, body) = http(&site_a, "GET", "/api/v1/alerts?site=site-a", &admin, "");
        let alerts: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let open = alerts.as_array().and_then(|a| a.iter().find(|x| x["acknowledged"].is_null()).cloned());
        if let Some(a) = open {
            break a["alert_id"].as_str().expect("an id").to_string();
        }
        assert!(Instant::now() < until + Duration::from_secs(300), "no alert at site a");
        std::thread::sleep(Duration::from_secs(1));
    };
    let clicked = Instant::now();
    let (code, body) =
        http(&site_a, "POST", &format!("/api/v1/alerts/{alert}/acknowledge"), &admin, r#"{"note": "bench"}"#);
    assert_eq!(code, 200, "{body}");
    let recorded = clicked.elapsed();
    let row = format!("tr[data-alert=\"{alert}\"] .acked");
    while watcher.find_all(&row).is_empty() {
        assert!(clicked.elapsed() < Duration::from_secs(60), "the acknowledgement never showed at site c");
        std::thread::sleep(Duration::from_millis(50));
    }
    let shown = clicked.elapsed();
    drop(watcher);

    // CPU with no console open, then with `consoles` tabs on the fleet page.
    browser.goto("about:blank");
    std::thread::sleep(Duration::from_secs(3));
    let (c0, t0) = (cpu(), Instant::now());
    std::thread::sleep(hold);
    let idle = (cpu() - c0).as_secs_f64() / t0.elapsed().as_secs_f64();
    // Each console: its own session and the fleet page's event stream, read as it comes.
    let streams: Vec<std::net::TcpStream> = (0..consoles).map(|_| fleet_stream(&site_a)).collect();
    let readers: Vec<_> = streams
        .iter()
        .map(|s| {
            let mut s = s.try_clone().expect("a stream");
            std::thread::spawn(move || {
                use std::io::Read as _;
                let mut buf = [0u8; 64 * 1024];
                while s.read(&mut buf).is_ok_and(|n| n > 0) {}
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let (c1, t1) = (cpu(), Instant::now());
    std::thread::sleep(hold);
    let busy = (cpu() - c1).as_secs_f64() / t1.elapsed().as_secs_f64();
    for s in &streams {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    readers.into_iter().for_each(|r| r.join().expect("a reader"));
    drop(browser);

    println!(
        "console_draw motors={motors} draw_loaded_ms_median={loaded:.0} first_byte_ms_median={first_byte:.0} \
         loads={loads} ack_recorded_ms={} ack_shown_at_other_site_ms={} cpu_cores_idle={idle:.3} \
         cpu_cores_with_{consoles}_consoles={busy:.3} consoles_cost_cores={:.3}",
        recorded.as_millis(),
        shown.as_millis(),
        busy - idle
    );
    stop.store(true, Ordering::Relaxed);
    demo.join().expect("the demo thread").expect("the demo stops cleanly");
}

fn main() {
    let motors: Vec<u32> =
        arg("--motors", "1000,10000").split(',').map(|m| m.trim().parse().expect("--motors: numbers")).collect();
    let loads: usize = arg("--loads", "5").parse().expect("--loads");
    let consoles: usize = arg("--consoles", "20").parse().expect("--consoles");
    let hold = Duration::from_secs(arg("--hold", "30").parse().expect("--hold"));
    for m in motors {
        run(m, loads, consoles, hold);
    }
}
