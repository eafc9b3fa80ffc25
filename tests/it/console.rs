//! The web console in a real browser (headless Chromium over WebDriver) against `tessera demo`
//! in the Helm chart's shape: 3 sites of 3 nodes each, only one node per site a Raft member.
//! Each role signs in; the analyst sees 1,000 motors across the 3 sites with the alerted ones
//! coloured, and no raw core value (a planted marker that the site's operator does see); a
//! site operator acknowledges an alert at a node that is not a Raft member, and a page open
//! at another site's node shows it without a reload; sign-out, a wrong password and an expired
//! session are refused. Screenshots of the fleet and motor pages are saved (into docs/ with
//! `TESSERA_UPDATE_SCREENSHOTS=1`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tessera_core::{Channel, MotorId, Reading, SiteId, now_ms};
use tessera_workload::producer::WireFormat;

use tessera_suite::browser::Browser;

use crate::support::demo_process::DemoProcess;

const PASSWORD: &str = "tessera-demo";
/// The demo's session lifetime here: long enough for the test's steps, short enough to see
/// one expire.
const SESSION_TTL_S: u64 = 90;
/// A raw core value (vibration) planted in one reading.
const MARKER: f64 = 987.654_321;

/// The consoles the banner lists: site → (base URL, whether that node is the site's Raft member).
fn consoles(banner: &str) -> BTreeMap<String, Vec<(String, bool)>> {
    let mut out: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
    for line in banner.lines().filter(|l| l.contains(" console http://")) {
        let site = line.split_whitespace().next().expect("a site").to_string();
        let url = line.split(" console ").nth(1).and_then(|r| r.split_whitespace().next()).expect("a URL");
        let base = url.trim_end_matches("/console").to_string();
        out.entry(site).or_default().push((base, line.contains("Raft node")));
    }
    out
}

/// The tiles of the fleet grid: motor → (site, status).
fn tiles(b: &Browser) -> BTreeMap<String, (String, String)> {
    let found = b.execute(
        "return Array.from(document.querySelectorAll('#grid a.m')).map(a => [a.dataset.motor, a.dataset.site, a.className]);",
    );
    found
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    let status = r[2].as_str().unwrap_or_default().trim_start_matches("m ").to_string();
                    (
                        r[0].as_str().unwrap_or_default().to_string(),
                        (r[1].as_str().unwrap_or_default().to_string(), status),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn save(name: &str, png: &[u8]) {
    let dir = std::env::temp_dir().join("tessera-console-screenshots");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join(name), png).expect("screenshot");
    if std::env::var_os("TESSERA_UPDATE_SCREENSHOTS").is_some() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs").join(name);
        std::fs::write(docs, png).expect("screenshot in docs/");
    }
}

#[test]
fn the_console_in_a_browser_shows_each_role_its_fleet_and_acknowledges_across_sites() {
    // Nine nodes and several browsers: not beside the fault tests' node processes.
    let _one_at_a_time = crate::fault::node_processes();
    let mut demo = DemoProcess::start(&[
        "demo",
        "--duration",
        "10m",
        "--nodes-per-site",
        "3",
        "--sql-port",
        "0",
        "--http-port",
        "0",
        "--session-ttl",
        &format!("{SESSION_TTL_S}s"),
    ]);
    let banner = demo.wait_for("simulating 1000 motors", Duration::from_secs(180));
    // The console's address comes first (before the broker and the sites' endpoints).
    let position = |what: &str| banner.find(what).unwrap_or_else(|| panic!("no {what:?} in:\n{banner}"));
    assert!(position("Web console: http://") < position("embedded Kafka"), "{banner}");
    assert!(position("Web console: http://") < position("sites, one Raft group"), "{banner}");
    let consoles = consoles(&banner);
    assert_eq!(consoles.len(), 3, "{banner}");
    let node = |site: &str, member: bool| -> String {
        consoles[site].iter().find(|(_, m)| *m == member).map(|(u, _)| u.clone()).expect("a console")
    };
    let brokers = banner
        .lines()
        .find_map(|l| l.strip_prefix("embedded Kafka: librdkafka mock cluster, 3 brokers at "))
        .expect("the embedded broker's address")
        .to_string();

    // A session that will expire at the end.
    let expiring = Browser::start(1280, 800);
    expiring.sign_in(&node("site-a", true), "analyst", PASSWORD);
    expiring.wait_for("#grid", Duration::from_secs(30));
    let expiring_since = Instant::now();

    // A wrong password is refused, and nothing is signed in.
    let analyst = Browser::start(1600, 1000);
    analyst.sign_in(&node("site-b", false), "analyst", "not-the-password");
    let error = analyst.wait_for("#sign-in-error", Duration::from_secs(10));
    assert!(analyst.text(&error).contains("Wrong user or password"), "{}", analyst.source());
    analyst.goto(&format!("{}/console/fleet", node("site-b", false)));
    assert!(analyst.url().contains("/console/sign-in"), "{}", analyst.url());

    // The fleet analyst at a site-b node that is no Raft member: 1,000 motors over 3 sites,
    // the motors the demo alerted on coloured (the page updates itself: no reload).
    analyst.sign_in(&node("site-b", false), "analyst", PASSWORD);
    analyst.wait_for("#grid", Duration::from_secs(30));
    analyst.wait_until("1,000 motors on the fleet page", Duration::from_secs(120), |b| tiles(b).len() == 1000);
    let fleet = tiles(&analyst);
    let sites: std::collections::BTreeSet<&str> = fleet.values().map(|(s, _)| s.as_str()).collect();
    assert_eq!(sites.into_iter().collect::<Vec<_>>(), ["site-a", "site-b", "site-c"]);
    assert_eq!(analyst.find_all("#counts tbody tr").len(), 3);
    let text = demo.wait_for("ALERT open", Duration::from_secs(120));
    let alerted: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("ALERT open"))
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .collect();
    let took = analyst.wait_until("the alerted motors coloured", Duration::from_secs(60), |b| {
        let now = tiles(b);
        alerted.iter().all(|m| now.get(m).is_some_and(|(_, s)| s != "healthy"))
    });
    eprintln!("{} alerted motors coloured on the open page {took:?} after the check began", alerted.len());
    save("console-fleet.png", &analyst.screenshot());

    // Plant a raw core value in one reading of a site-a motor.
    let marked = fleet.iter().find(|(_, (s, _))| s == "site-a").map(|(m, _)| m.clone()).expect("a site-a motor");
    let producer = tessera_suite::producer(&brokers, "telemetry.site-a", WireFormat::Protobuf).expect("producer");
    let mut reading = Reading {
        motor_id: MotorId::new(marked.clone()).expect("id"),
        site_id: SiteId::new("site-a").expect("id"),
        event_time_ms: now_ms(),
        sequence: 1 << 40,
        channels: [None; 7],
        extra: Default::default(),
    };
    reading.set(Channel::CurrentA, Some(30.0));
    reading.set(Channel::VibrationXRms, Some(MARKER));
    producer.send_readings(&[reading]).expect("send");
    producer.flush(Duration::from_secs(10)).expect("flush");
    let marker = format!("{MARKER}");

    // The site's operator sees it on the motor's page at one of the site's nodes ...
    let operator = Browser::start(1600, 1000);
    operator.sign_in(&node("site-a", false), "operator-site-a", PASSWORD);
    operator.wait_for("#grid", Duration::from_secs(30));
    // A site operator's fleet page starts at their site.
    let own = tiles(&operator);
    assert!(!own.is_empty() && own.values().all(|(s, _)| s == "site-a"), "{own:?}");
    operator.goto(&format!("{}/console/motors/{marked}", node("site-a", false)));
    operator.wait_until("the marker among the operator's newest readings", Duration::from_secs(60), |b| {
        if !b.source().contains(&marker[..7]) {
            b.goto(&format!("{}/console/motors/{marked}", node("site-a", false)));
            return false;
        }
        true
    });
    // ... the analyst sees none of it, on any page, at either site.
    for base in [node("site-b", false), node("site-a", true)] {
        if base != node("site-b", false) {
            analyst.clear_cookies();
            analyst.sign_in(&base, "analyst", PASSWORD);
            analyst.wait_for("#grid", Duration::from_secs(30));
        }
        for page in ["/console/fleet".to_string(), format!("/console/motors/{marked}"), "/console/alerts".into()] {
            analyst.goto(&format!("{base}{page}"));
            analyst.wait_for("main", Duration::from_secs(10));
            let html = analyst.source();
            assert!(!html.contains(&marker[..7]), "the analyst's {page} at {base} shows the raw core marker");
            if page.starts_with("/console/motors/") {
                assert!(html.contains("id=\"readings-withheld\""), "{html}");
            }
        }
    }

    // A page open at site-c's node before the acknowledgement ...
    let watcher = Browser::start(1600, 1000);
    watcher.sign_in(&node("site-c", true), "admin", PASSWORD);
    watcher.wait_for("#grid", Duration::from_secs(30));
    watcher.goto(&format!("{}/console/alerts", node("site-c", true)));
    watcher.wait_for("#alerts", Duration::from_secs(10));
    // ... while site-a's operator acknowledges one of site-a's alerts at a node that is no
    // Raft member (the control plane's admin API records it).
    operator.goto(&format!("{}/console/alerts", node("site-a", false)));
    operator.wait_until("an open site-a alert to acknowledge", Duration::from_secs(120), |b| {
        !b.find_all("form.ack-form").is_empty()
    });
    let row = operator.wait_for("tr[data-alert]:has(form.ack-form)", Duration::from_secs(5));
    let alert_id = operator.attribute(&row, "data-alert").expect("an alert id");
    let form = format!("tr[data-alert=\"{alert_id}\"] form.ack-form");
    operator.type_into(
        &operator.wait_for(&format!("{form} input[name=note]"), Duration::from_secs(5)),
        "bearing ordered, crew 2",
    );
    operator.execute(&format!(
        "document.querySelector('{} select[name=silence_minutes]').value = '60';",
        form.replace('\'', "\\'")
    ));
    let acked_at = Instant::now();
    operator.click(&operator.wait_for(&format!("{form} button"), Duration::from_secs(5)));
    let flash = operator.wait_for("#flash", Duration::from_secs(30));
    assert!(operator.text(&flash).contains(&alert_id), "{}", operator.source());
    let recorded_after = acked_at.elapsed();
    let acked = format!("tr[data-alert=\"{alert_id}\"] .acked");
    watcher.wait_until("the acknowledgement at site-c's open page", Duration::from_secs(30), |b| {
        !b.find_all(&acked).is_empty()
    });
    eprintln!(
        "acknowledged at site-a (recorded and the page back {recorded_after:?} after the click), shown live at site-c {:?} after the click",
        acked_at.elapsed()
    );
    let shown = watcher.text(&watcher.wait_for(&acked, Duration::from_secs(1)));
    assert!(
        shown.contains("operator-site-a") && shown.contains("bearing ordered") && shown.contains("silenced until"),
        "{shown}"
    );

    // The admin opens a motor of its own site the demo alerted on: its status, alerts and charts.
    let admin = Browser::start(1600, 1200);
    admin.sign_in(&node("site-a", true), "admin", PASSWORD);
    admin.wait_for("#grid", Duration::from_secs(30));
    let tile = admin.wait_for("#grid a.m[data-site=\"site-a\"]:not(.healthy)", Duration::from_secs(60));
    let motor = admin.attribute(&tile, "data-motor").expect("a motor");
    admin.click(&tile);
    admin.wait_for("#motor-status", Duration::from_secs(30));
    assert!(admin.url().ends_with(&format!("/console/motors/{motor}")), "{}", admin.url());
    admin.wait_for(".charts .chart canvas", Duration::from_secs(30));
    assert!(admin.find_all("#readings tbody tr").len() > 1, "the site's admin sees the newest readings");
    save("console-motor.png", &admin.screenshot());

    // Sign out: the session ends, and pages send back to the sign-in.
    admin.click(&admin.wait_for("#sign-out", Duration::from_secs(5)));
    admin.wait_until("the sign-in page after signing out", Duration::from_secs(10), |b| {
        b.url().contains("/console/sign-in")
    });
    admin.goto(&format!("{}/console/alerts", node("site-a", true)));
    assert!(admin.url().contains("/console/sign-in"), "{}", admin.url());

    // The first session has expired by now (or soon): refused, with a reason.
    let ttl = Duration::from_secs(SESSION_TTL_S + 1);
    if let Some(rest) = ttl.checked_sub(expiring_since.elapsed()) {
        std::thread::sleep(rest);
    }
    expiring.goto(&format!("{}/console/fleet", node("site-a", true)));
    assert!(expiring.url().contains("why=expired"), "{}", expiring.url());
    assert!(expiring.source().contains("session has expired"), "{}", expiring.source());
    drop(demo);
}
