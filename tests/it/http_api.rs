//! The JSON API under `/api/v1` (issue 24, point 2, first routes), as a client speaks it over
//! HTTP: sign in with the SQL users' credentials, read the fleet's motors and their statuses
//! through the same graded SQL; bad credentials, a missing or unknown token and bad parameters
//! are refused with their status and a JSON error.

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tessera_core::now_ms;
use tessera_core::{Channel, Reading};
use tessera_sql::Role;
use tessera_workload::producer::WireFormat;

use crate::support::sql::{PASSWORD, user};
use crate::support::{TestNode, reading};

/// One HTTP/1.1 request; the status code and the body.
fn request(addr: &str, method: &str, path: &str, authorization: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read");
    let status = response.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn basic(name: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}")))
}

#[test]
fn the_api_answers_signed_in_users_through_graded_sql_and_refuses_the_rest() {
    let (kafka, brokers) = crate::embedded_kafka(1, 2);
    kafka.create_topic("alerts", 1).expect("topic");
    kafka.create_topic("late", 1).expect("topic");
    let node = TestNode::new("site-a", &brokers, "http-api", "telemetry")
        .sql(vec![user("ana", Role::FleetAnalyst, None), user("opa", Role::SiteOperator, Some("site-a"))])
        .with(|c| c.http.listen = Some("127.0.0.1:0".parse().expect("addr")))
        .start();
    let http = node.http_addr().expect("http").to_string();
    // Five motors, a minute of readings each.
    let t0 = (now_ms() - 120_000).div_euclid(1000) * 1000;
    let readings: Vec<Reading> = (0..60)
        .flat_map(|s| {
            (1..=5).map(move |m| {
                let mut r = reading(m, "site-a", t0 + s * 1000, s as u64);
                r.set(Channel::CurrentA, Some(10.0));
                r
            })
        })
        .collect();
    let p = tessera_suite::producer(&brokers, "telemetry", WireFormat::Protobuf).expect("producer");
    p.send_readings(&readings).expect("send");
    p.flush(Duration::from_secs(10)).expect("flush");

    // Refused: no credentials, a wrong password, no token, an unknown token.
    let (code, body) = request(&http, "POST", "/api/v1/sessions", Some(&basic("ana", "wrong")));
    assert_eq!(code, 401, "{body}");
    assert!(json(&body)["error"].is_string());
    assert_eq!(request(&http, "POST", "/api/v1/sessions", None).0, 401);
    assert_eq!(request(&http, "GET", "/api/v1/motors", None).0, 401);
    assert_eq!(request(&http, "GET", "/api/v1/motors", Some("Bearer not-a-session")).0, 401);

    // Signed in, each role sees the five motors' statuses (general columns).
    for name in ["ana", "opa"] {
        let (code, body) = request(&http, "POST", "/api/v1/sessions", Some(&basic(name, PASSWORD)));
        assert_eq!(code, 200, "{body}");
        let session = json(&body);
        assert_eq!(session["user"], name);
        let bearer = format!("Bearer {}", session["token"].as_str().expect("a token"));
        let until = Instant::now() + Duration::from_secs(60);
        let motors = loop {
            let (code, body) = request(&http, "GET", "/api/v1/motors", Some(&bearer));
            assert_eq!(code, 200, "{body}");
            let motors = json(&body);
            if motors.as_array().is_some_and(|m| m.len() == 5) {
                break motors;
            }
            assert!(Instant::now() < until, "five motors never listed: {body}");
            std::thread::sleep(Duration::from_millis(100));
        };
        for m in motors.as_array().expect("rows") {
            assert_eq!(m["site_id"], "site-a");
            assert_eq!(m["status"], "healthy", "{m}");
            assert!(m.get("score").is_none(), "no score column: {m}");
        }
        let (code, body) = request(&http, "GET", "/api/v1/motors?status=healthy&site=site-a", Some(&bearer));
        assert_eq!((code, json(&body).as_array().map(Vec::len)), (200, Some(5)), "{body}");
        let (code, body) = request(&http, "GET", "/api/v1/motors?status=critical", Some(&bearer));
        assert_eq!((code, json(&body).as_array().map(Vec::len)), (200, Some(0)), "{body}");
        let (code, body) = request(&http, "GET", "/api/v1/fleet", Some(&bearer));
        assert_eq!(code, 200, "{body}");
        assert_eq!(json(&body), serde_json::json!([{ "site_id": "site-a", "status": "healthy", "motors": 5 }]));
        // Bad parameters: refused, nothing spliced into SQL.
        for bad in ["/api/v1/motors?status=broken", "/api/v1/motors?site=a'%20OR%20'1'='1", "/api/v1/motors?limit=3"] {
            let (code, body) = request(&http, "GET", bad, Some(&bearer));
            assert_eq!(code, 400, "{bad}: {body}");
        }
    }
    node.stop().expect("the node stops");
    drop(kafka);
}

/// A node whose SQL speaks TLS does not serve the API on its plain-HTTP listener: the one
/// place users' passwords would cross in the clear. `/metrics` is still there.
#[test]
fn a_node_with_tls_serves_no_api_on_its_plain_http_listener() {
    use tessera_tls::pki::{self, Subject};
    let (_kafka, brokers) = crate::embedded_kafka(1, 1);
    let dir = tempfile::tempdir().expect("dir");
    let year = Duration::from_secs(365 * 24 * 3600);
    let ca = pki::new_ca("test cluster CA", year).expect("CA");
    let cert = pki::issue(&ca, &Subject::Node { id: 1, site: "site-a".into(), hosts: vec!["127.0.0.1".into()] }, year)
        .expect("cert");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let tls = tessera_tls::TlsFiles {
        ca: write("ca.crt", &ca.cert_pem),
        cert: write("node.crt", &cert.cert_pem),
        key: write("node.key", &cert.key_pem),
    };
    let node = TestNode::new("site-a", &brokers, "http-api-tls", "telemetry")
        .sql(vec![user("ana", Role::FleetAnalyst, None)])
        .tls(tls)
        .with(|c| c.http.listen = Some("127.0.0.1:0".parse().expect("addr")))
        .start();
    let http = node.http_addr().expect("http").to_string();
    let (code, _) = request(&http, "POST", "/api/v1/sessions", Some(&basic("ana", PASSWORD)));
    assert_eq!(code, 404, "no sign-in over plain HTTP beside a TLS endpoint");
    assert_eq!(request(&http, "GET", "/metrics", None).0, 200);
    node.stop().expect("the node stops");
}
