//! The JSON API under `/api/v1`, as a client speaks it over HTTP: sign in with the SQL users'
//! credentials, read the fleet's motors, one motor, the alerts and the cluster through the
//! same graded SQL; bad credentials, a missing, unknown or signed-out token, bad parameters and
//! an analyst's acknowledgement are refused with their status and a JSON error; every route
//! docs/openapi.yaml describes is served, and no other.

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
    request_with(addr, method, path, authorization, "")
}

/// [`request`] with a JSON body.
fn request_with(addr: &str, method: &str, path: &str, authorization: Option<&str>, body: &str) -> (u16, String) {
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend(authorization.map(|a| ("Authorization", a)));
    let (status, _, body) = exchange(addr, method, path, &headers, body);
    (status, body)
}

/// `(method, path)` of every operation in docs/openapi.yaml, sorted.
fn openapi_routes() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml")).expect("openapi");
    let mut routes = Vec::new();
    let mut in_paths = false;
    let mut path = String::new();
    for line in text.lines() {
        if line == "paths:" {
            in_paths = true;
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /").and_then(|p| p.strip_suffix(':')) {
            path = format!("/{p}");
        } else if let Some(m) = line.strip_prefix("    ").and_then(|m| m.strip_suffix(':'))
            && ["get", "post", "put", "delete", "patch"].contains(&m)
        {
            routes.push((m.to_string(), path.clone()));
        }
    }
    routes.sort();
    routes
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
        .sql(vec![
            user("ana", Role::FleetAnalyst, None),
            user("opa", Role::SiteOperator, Some("site-a")),
            user("opb", Role::SiteOperator, Some("site-b")),
        ])
        .with(|c| c.http.listen = Some("127.0.0.1:0".parse().expect("addr")))
        .start();
    let http = node.http_addr().expect("http").to_string();
    // Another site's operator may not acknowledge this site's alerts here.
    let (_, body) = request(&http, "POST", "/api/v1/sessions", Some(&basic("opb", PASSWORD)));
    let opb = format!("Bearer {}", json(&body)["token"].as_str().expect("a token"));
    let (code, body) = request_with(&http, "POST", "/api/v1/alerts/a1/acknowledge", Some(&opb), r#"{"note": "x"}"#);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("you act for site site-b"), "{body}");
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
        for bad in [
            "/api/v1/motors?status=broken",
            "/api/v1/motors?site=a'%20OR%20'1'='1",
            "/api/v1/motors?limit=3",
            "/api/v1/alerts?state=maybe",
        ] {
            let (code, body) = request(&http, "GET", bad, Some(&bearer));
            assert_eq!(code, 400, "{bad}: {body}");
        }
        // One motor: its health for both; its newest raw readings for the site's operator only
        // (the grade rules refuse the analyst, and say why).
        let (code, body) = request(&http, "GET", "/api/v1/motors/M3", Some(&bearer));
        assert_eq!(code, 200, "{body}");
        let detail = json(&body);
        assert_eq!(detail["health"]["motor_id"], "M3");
        match name {
            "opa" => {
                let rows = detail["readings"]["Ok"].as_array().expect("readings");
                assert!(!rows.is_empty() && rows[0]["current_a"] == 10.0, "{detail}");
                assert!(detail["scores"].is_array(), "the operator reads the scores: {detail}");
            }
            _ => {
                let why = detail["readings"]["Err"].as_str().expect("a refusal");
                assert!(why.contains("may not read raw"), "{why}");
                assert!(detail["scores"].is_null(), "{detail}");
            }
        }
        let (code, body) = request(&http, "GET", "/api/v1/motors/M999", Some(&bearer));
        assert_eq!(code, 404, "{body}");
        let (code, body) = request(&http, "GET", "/api/v1/alerts", Some(&bearer));
        assert_eq!((code, json(&body)), (200, serde_json::json!([])), "{body}");
        let (code, body) = request(&http, "GET", "/api/v1/cluster", Some(&bearer));
        assert_eq!(code, 200, "{body}");
        assert!(json(&body)["control_error"].as_str().is_some_and(|e| e.contains("no control plane")), "{body}");
        // Acknowledging: not a fleet analyst's to do; the operator needs a control plane.
        let ack = |token: &str| {
            request_with(&http, "POST", "/api/v1/alerts/a1/acknowledge", Some(token), r#"{"note": "on it"}"#)
        };
        let (code, body) = ack(&bearer);
        assert_eq!(code, if name == "ana" { 403 } else { 503 }, "{body}");
        // Signing out ends the session.
        assert_eq!(request(&http, "DELETE", "/api/v1/sessions", Some(&bearer)).0, 204);
        assert_eq!(request(&http, "GET", "/api/v1/fleet", Some(&bearer)).0, 401);
    }
    // Every route docs/openapi.yaml describes is served (a handler's own 404 is JSON; an
    // unknown route's is not), and the description lists exactly the API's routes.
    let described = openapi_routes();
    let mut served: Vec<(String, String)> =
        tessera_node::api::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    served.sort();
    assert_eq!(described, served, "docs/openapi.yaml and the API's routes differ");
    for (method, path) in &described {
        let concrete = path.replace("{motor}", "M1").replace("{alert}", "a1");
        let (code, body) = request(&http, &method.to_uppercase(), &concrete, None);
        assert!(code != 405 && (code != 404 || body.contains("\"error\"")), "{method} {path}: {code} {body}");
    }
    let (code, body) = request(&http, "GET", "/api/v1/nowhere", None);
    assert!(code == 404 && !body.contains("\"error\""), "an unknown route is not served: {code} {body}");
    node.stop().expect("the node stops");
    drop(kafka);
}

/// A node whose SQL speaks TLS does not serve the API or the console on its plain-HTTP
/// listener (the one place users' passwords would cross in the clear; `/metrics` is still
/// there), but on `[console] listen` over HTTPS with its certificate: a client that trusts the
/// cluster CA signs in there, its session cookie is `Secure`, and plain HTTP gets nothing.
#[test]
fn a_node_with_tls_serves_the_console_and_api_over_https_only() {
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
        .tls(tls.clone())
        .with(|c| {
            c.http.listen = Some("127.0.0.1:0".parse().expect("addr"));
            c.console.listen = Some("127.0.0.1:0".parse().expect("addr"));
        })
        .start();
    let http = node.http_addr().expect("http").to_string();
    let (code, _) = request(&http, "POST", "/api/v1/sessions", Some(&basic("ana", PASSWORD)));
    assert_eq!(code, 404, "no sign-in over plain HTTP beside a TLS endpoint");
    assert_eq!(request(&http, "GET", "/console/sign-in", None).0, 404);
    assert_eq!(request(&http, "GET", "/metrics", None).0, 200);

    let console = node.console_addr().expect("the console's listener").to_string();
    // HTTPS, verified against the cluster CA by Python's ssl module (a client we did not write).
    let script = r#"
import http.client, json, ssl, sys, base64
ctx = ssl.create_default_context(cafile=sys.argv[2])
host, port = sys.argv[1].rsplit(":", 1)
c = http.client.HTTPSConnection(host, int(port), context=ctx)
c.request("POST", "/console/sign-in", body="user=ana&password=" + sys.argv[3], headers={"Content-Type": "application/x-www-form-urlencoded"})
r = c.getresponse(); r.read()
cookie = r.getheader("Set-Cookie") or ""
c.request("POST", "/api/v1/sessions", headers={"Authorization": "Basic " + base64.b64encode(("ana:" + sys.argv[3]).encode()).decode()})
r2 = c.getresponse(); body = json.loads(r2.read())
print(json.dumps({"sign_in": r.status, "cookie": cookie, "api": r2.status, "role": body.get("role")}))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &console, &tls.ca.display().to_string(), PASSWORD])
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(answer["sign_in"], 303, "{answer}");
    assert_eq!(answer["api"], 200, "{answer}");
    assert_eq!(answer["role"], "fleet-analyst", "{answer}");
    let cookie = answer["cookie"].as_str().expect("a cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Secure"), "{cookie}");
    // Plain HTTP on the console's port: no answer (the TLS handshake fails, and is counted; the
    // server may close the connection before the request is even written).
    let mut s = std::net::TcpStream::connect(&console).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let _ = write!(s, "GET /console/sign-in HTTP/1.1\r\nHost: {console}\r\nConnection: close\r\n\r\n");
    let mut plain = String::new();
    let _ = s.read_to_string(&mut plain);
    assert!(!plain.contains("200 OK") && !plain.contains("Sign in"), "plain HTTP was answered: {plain}");
    node.stop().expect("the node stops");
}

/// A form's content type.
const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// One HTTP/1.1 request with `headers` and `body`: status, response head, body.
fn exchange(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read");
    let status = response.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status line");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, head.to_string(), body.to_string())
}

/// The console's forms act only for this origin and this session: a form posted from another
/// origin, or without the session's CSRF token, does nothing (403), and signing in never sends
/// the browser to another site.
#[test]
fn a_form_from_another_origin_or_without_the_token_does_nothing() {
    let (_kafka, brokers) = crate::embedded_kafka(1, 1);
    let node = TestNode::new("site-a", &brokers, "console-csrf", "telemetry")
        .sql(vec![user("opa", Role::SiteOperator, Some("site-a"))])
        .with(|c| c.http.listen = Some("127.0.0.1:0".parse().expect("addr")))
        .start();
    let http = node.http_addr().expect("http").to_string();
    let form = format!("user=opa&password={PASSWORD}&next=https%3A%2F%2Fevil.example%2F");
    let (code, head, _) = exchange(&http, "POST", "/console/sign-in", &[FORM], &form);
    assert_eq!(code, 303, "{head}");
    assert!(head.to_lowercase().contains("location: /console/fleet\r"), "no redirect off the console: {head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    let (code, _, page) = exchange(&http, "GET", "/console/alerts", &[("Cookie", &cookie)], "");
    assert_eq!(code, 200, "{page}");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).expect("a CSRF token");
    let ack =
        |headers: &[(&str, &str)], body: &str| exchange(&http, "POST", "/console/alerts/a1/acknowledge", headers, body);
    let good = format!("csrf={csrf}&note=on+it&silence_minutes=0");
    let (code, _, body) = ack(&[("Cookie", &cookie), ("Origin", "http://evil.example")], &good);
    assert_eq!(code, 403, "another origin: {body}");
    let (code, _, body) = ack(&[FORM, ("Cookie", &cookie)], "note=on+it");
    assert_eq!(code, 403, "no token: {body}");
    let (code, _, body) = ack(&[FORM, ("Cookie", &cookie)], "csrf=forged&note=on+it");
    assert_eq!(code, 403, "another token: {body}");
    // With both, the request goes on (and fails later: this node has no control plane).
    let origin = format!("http://{http}");
    let (code, _, body) = ack(&[FORM, ("Cookie", &cookie), ("Origin", &origin)], &good);
    assert_eq!(code, 503, "{body}");
    // Signing out needs the token as well; without it the session stays.
    let (code, _, _) = exchange(&http, "POST", "/console/sign-out", &[("Cookie", &cookie)], "");
    assert_eq!(code, 403);
    assert_eq!(exchange(&http, "GET", "/console/fleet", &[("Cookie", &cookie)], "").0, 200);
    let (code, _, _) =
        exchange(&http, "POST", "/console/sign-out", &[FORM, ("Cookie", &cookie)], &format!("csrf={csrf}"));
    assert_eq!(code, 303);
    let (code, head, _) = exchange(&http, "GET", "/console/fleet", &[("Cookie", &cookie)], "");
    assert!(code == 303 && head.contains("/console/sign-in"), "signed out: {head}");
    node.stop().expect("the node stops");
}
