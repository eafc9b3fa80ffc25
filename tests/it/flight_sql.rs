//! The SQL endpoint with third-party clients: arrow-rs's Flight SQL client in process, and
//! ADBC (adbc-driver-flightsql) and pyarrow.flight from Python (the venv `scripts/setup.sh`
//! makes; `TESSERA_PYTHON` names its interpreter). A node ingests a small fleet from the
//! embedded Kafka and serves its tables; every client sees the same answers, roles are
//! enforced with the right gRPC codes, and refusals are in the audit table. Three sites
//! federate over mTLS; a federated call without a node's certificate is refused.

use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use tessera_cli::commands::sql::SqlConnection;
use tessera_core::now_ms;
use tessera_core::{Channel, MotorId, Reading, SiteId};
use tessera_sql::{Role, TokenConfig};
use tessera_tls::TlsFiles;
use tessera_tls::pki::{self, Subject};
use tessera_workload::producer::WireFormat;
use tonic::Code;

use crate::support::sql::{FEDERATION_TOKEN, PASSWORD, client, int, login, login_tls, run, user};
use crate::support::{TestCluster, TestNode};

const QUERY: &str = "CREATE CONTINUOUS QUERY vib WITH (open_above = 3, close_below = 1) AS
  SELECT motor_id, window_start, avg(vibration_x_rms) AS vib,
         zscore(motor_id, window_start, avg(vibration_x_rms), 4) AS score
  FROM TUMBLE(telemetry, ts, INTERVAL '1 second') GROUP BY motor_id, window_start";

/// 4 s windows that count their readings: those of at least 3 readings over 3 s (the fleet
/// test's group policy) are released to analysts.
const WINDOWS: &str = "CREATE CONTINUOUS QUERY win AS
  SELECT motor_id, window_start, count(*) AS readings, avg(vibration_x_rms) AS score
  FROM TUMBLE(telemetry, ts, INTERVAL '4 seconds') GROUP BY motor_id, window_start";
const RELEASED: &str = "query = 'win' AND features['readings'] >= 3 \
  AND CAST(window_end AS BIGINT) - CAST(window_start AS BIGINT) >= 3000";

/// Four motors at site-a, 1 reading/s for 40 s; M1's vibration steps up at 20 s (an alert).
fn readings(t0: i64) -> Vec<Reading> {
    let mut out = Vec::new();
    for s in 0..40i64 {
        for m in 1..=4 {
            let mut r = crate::support::reading(m, "site-a", t0 + s * 1000, s as u64);
            let wobble = [1.0, 1.1, 0.9, 1.0][(s % 4) as usize];
            r.set(Channel::VibrationXRms, Some(if m == 1 && s >= 20 { 5.0 } else { wobble }));
            out.push(r);
        }
    }
    out
}

/// `readings` as site `site`'s: its id, and motor ids prefixed by it (each site's motors are
/// its own).
fn at_site(site: &str, readings: impl IntoIterator<Item = Reading>) -> Vec<Reading> {
    readings
        .into_iter()
        .map(|mut r| {
            r.motor_id = MotorId::new(format!("{site}-{}", r.motor_id.as_str())).expect("id");
            r.site_id = SiteId::new(site).expect("id");
            r
        })
        .collect()
}

fn rows(batches: &[RecordBatch]) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for b in batches {
        let names = b.column(0).as_any().downcast_ref::<StringArray>().expect("names");
        let counts = b.column(1).as_any().downcast_ref::<Int64Array>().expect("counts");
        out.extend((0..b.num_rows()).map(|i| (names.value(i).to_string(), counts.value(i))));
    }
    out
}

#[test]
fn third_party_clients_query_the_endpoint_and_roles_are_enforced() {
    let (kafka, brokers) = crate::embedded_kafka(1, 2);
    kafka.create_topic("alerts", 1).expect("topic");
    kafka.create_topic("late", 1).expect("topic");
    let t0 = (now_ms() - 120_000).div_euclid(1000) * 1000;
    let sent = readings(t0);
    let p = tessera_suite::producer(&brokers, "telemetry", WireFormat::Protobuf).expect("producer");
    p.send_readings(&sent).expect("send");
    p.flush(Duration::from_secs(10)).expect("flush");

    // (TestNode: no idle closes, so once every reading is taken in, the tables stay as they are.)
    let node = TestNode::new("site-a", &brokers, "flight-sql", "telemetry")
        .queries([QUERY])
        .sql(vec![
            user("root", Role::Admin, None),
            user("ana", Role::FleetAnalyst, None),
            user("opa", Role::SiteOperator, Some("site-a")),
            user("opb", Role::SiteOperator, Some("site-b")),
        ])
        .with(|c| {
            c.sql.tokens =
                vec![TokenConfig { sha256: tessera_sql::auth::hash_token("dashboard-token"), user: "ana".into() }]
        })
        .group_policy(20, Duration::from_secs(10))
        .start();
    let addr = node.sql_addr().expect("the endpoint runs").to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let taken_in = || node.detect_stats().engine.windows.first().map_or(0, |(_, w)| w.rows_in);
    while taken_in() < sent.len() as u64 || node.detect_stats().alerts_sent < 1 {
        assert!(Instant::now() < deadline, "not ingested: {:?}", node.detect_stats());
        std::thread::sleep(Duration::from_millis(50));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");

    // arrow-rs's client: the reference answers, and every refusal with its code.
    let (per_query, m1_windows, alerts) = rt.block_on(async {
        let mut root = login(&addr, "root").await;
        let per_query = rows(
            &run(&mut root, "SELECT query, count(*) AS n FROM motor_windows GROUP BY query ORDER BY query")
                .await
                .expect("windows"),
        );
        let m1 = int(&run(&mut root, "SELECT count(*) FROM motor_windows WHERE motor_id = 'M1'").await.expect("m1"));
        let alerts = int(&run(&mut root, "SELECT count(*) FROM alerts").await.expect("alerts"));
        assert!(alerts >= 1, "M1's step raised an alert");
        assert_eq!(
            int(&run(&mut root, "SELECT count(*) FROM telemetry").await.expect("raw")),
            sent.len() as i64,
            "raw readings, all kept"
        );

        let mut opa = login(&addr, "opa").await;
        assert_eq!(
            int(&run(&mut opa, "SELECT count(*) FROM telemetry WHERE motor_id = 'M1'")
                .await
                .expect("own site's raw data")),
            40
        );
        let mut opb = login(&addr, "opb").await;
        let denied = run(&mut opb, "SELECT * FROM telemetry").await.expect_err("another site's raw data");
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        let mut ana = login(&addr, "ana").await;
        let denied =
            run(&mut ana, "SELECT motor_id, (SELECT vibration_x_rms FROM telemetry LIMIT 1) AS v FROM motor_windows")
                .await
                .expect_err("raw core data in a subquery");
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        assert!(
            denied.message().contains("ana (fleet-analyst) may not read raw core columns of site site-a"),
            "{denied:?}"
        );
        // Grades decide, not tables: raw general columns are open to analysts; a column above
        // their grade only through count/sum/avg/var/stddev of groups that meet the site's
        // policy (here 20 readings over 10 s). Results carry their grades.
        let general = run(&mut ana, "SELECT motor_id, count(*) AS n FROM telemetry GROUP BY motor_id")
            .await
            .expect("general columns, aggregated");
        assert_eq!(general[0].schema().metadata()["tessera.grade"], "general");
        let summary = run(&mut ana, "SELECT motor_id, avg(vibration_x_rms) AS v FROM telemetry GROUP BY motor_id")
            .await
            .expect("an aggregate of a core column over groups of 40 readings");
        assert_eq!(summary.iter().map(RecordBatch::num_rows).sum::<usize>(), 4);
        assert_eq!(
            summary[0].schema().metadata()["tessera.grade"],
            "core",
            "a result inherits the highest grade of its inputs"
        );
        assert_eq!(summary[0].schema().field(0).metadata()["tessera.grade"], "general");
        let small =
            run(&mut ana, "SELECT motor_id, ts, avg(vibration_x_rms) AS v FROM telemetry GROUP BY motor_id, ts")
                .await
                .expect("row-sized groups are answered, without them");
        assert_eq!(small.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
        let denied = run(&mut ana, "SELECT motor_id, max(vibration_x_rms) AS v FROM telemetry GROUP BY motor_id")
            .await
            .expect_err("max returns a reading");
        assert!(denied.message().contains("max is not one of the allowed aggregates"), "{denied:?}");
        let denied =
            run(&mut ana, "SELECT motor_id, current_a FROM telemetry").await.expect_err("a raw important column");
        assert!(denied.message().contains("may not read raw important columns"), "{denied:?}");
        // Counting windows reads no graded column; their scores are another matter: the windows
        // of `vib` hold one reading each and do not count them, so none is released.
        assert_eq!(
            rows(
                &run(&mut ana, "SELECT query, count(*) FROM motor_windows GROUP BY query").await.expect("derived data")
            ),
            per_query
        );
        let scores = run(&mut ana, "SELECT motor_id, score FROM motor_windows").await.expect("released windows");
        assert_eq!(scores.iter().map(RecordBatch::num_rows).sum::<usize>(), 0, "no window of one reading is released");
        let denied = run(&mut ana, "SELECT * FROM query_audit").await.expect_err("audit is for admins");
        assert_eq!(denied.code(), Code::PermissionDenied);
        for (sql, code, says) in [
            (
                "SELECT count(*) FROM no_such_table",
                Code::InvalidArgument,
                "table 'tessera.public.no_such_table' not found",
            ),
            ("SELEC 1", Code::InvalidArgument, "Expected"),
            ("SELECT 1; SELECT 2", Code::InvalidArgument, "single SQL statement"),
            ("CREATE TABLE t AS SELECT 1", Code::PermissionDenied, "only queries are allowed"),
            ("SET datafusion.execution.batch_size = 1", Code::PermissionDenied, "only queries are allowed"),
        ] {
            let err = run(&mut ana, sql).await.expect_err(sql);
            assert_eq!((err.code(), err.message().contains(says)), (code, true), "{sql}: {err:?}");
        }

        // Tokens: a configured one works directly; none or a made-up one is Unauthenticated.
        let mut dashboard = client(&addr).await;
        dashboard.set_token("dashboard-token".into());
        assert_eq!(int(&run(&mut dashboard, "SELECT count(*) FROM alerts").await.expect("token")), alerts);
        let mut anonymous = client(&addr).await;
        assert_eq!(run(&mut anonymous, "SELECT 1").await.expect_err("no token").code(), Code::Unauthenticated);
        anonymous.set_token("made-up".into());
        assert_eq!(run(&mut anonymous, "SELECT 1").await.expect_err("bad token").code(), Code::Unauthenticated);
        let mut wrong = client(&addr).await;
        let err = wrong.handshake("root", "wrong").await.expect_err("wrong password").to_string();
        assert!(err.contains("Unauthenticated") || err.contains("unknown user or wrong password"), "{err}");

        // Every refusal is in the audit table, with who and why.
        let audit = run(&mut root, "SELECT user, sql, refused FROM query_audit WHERE refused IS NOT NULL ORDER BY at")
            .await
            .expect("audit");
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&audit).expect("text").to_string();
        assert!(text.contains("opb") && text.contains("may not read raw core columns"), "{text}");
        assert!(text.contains("CREATE TABLE t AS SELECT 1"), "{text}");
        (per_query, m1, alerts)
    });
    assert_eq!(per_query.iter().map(|(q, _)| q.as_str()).collect::<Vec<_>>(), ["vib"]);

    // ADBC and pyarrow.flight see the same, through the wire protocol alone.
    let python = std::env::var("TESSERA_PYTHON")
        .unwrap_or_else(|_| format!("{}/.cache/tessera/venv/bin/python", std::env::var("HOME").unwrap_or_default()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/flight_sql_adbc.py");
    let out = std::process::Command::new(&python)
        .args([script, addr.as_str(), "ana", PASSWORD])
        .output()
        .unwrap_or_else(|e| {
            panic!("{python}: {e} (scripts/setup.sh --with-broker makes the venv; TESSERA_PYTHON names its python)")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_str(&stdout).expect("the script's JSON");
    println!(
        "flight sql: arrow-rs windows per query {per_query:?}, M1 windows {m1_windows}, alerts {alerts}; python clients: {got}"
    );
    let adbc = &got["adbc"];
    let adbc_rows: Vec<(String, i64)> = adbc["windows_per_query"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r[0].as_str().expect("name").to_string(), r[1].as_i64().expect("n")))
        .collect();
    assert_eq!(adbc_rows, per_query, "{got}");
    assert_eq!(adbc["windows_of_m1"].as_i64(), Some(m1_windows), "{got}");
    assert_eq!(adbc["queries"], serde_json::json!(["vib"]), "{got}");
    assert!(adbc["bad_sql"].as_str().expect("error").contains("no_such_table"), "{got}");
    let objects: Vec<&str> = adbc["objects"].as_array().expect("objects").iter().filter_map(|v| v.as_str()).collect();
    for table in ["alerts", "motor_windows", "late_events", "telemetry", "continuous_queries"] {
        assert!(objects.contains(&format!("tessera.public.{table}").as_str()), "{table}: {objects:?}");
    }
    assert!(!objects.contains(&"tessera.public.query_audit"), "the audit table is listed for admins only: {objects:?}");
    assert_eq!(got["pyarrow"]["alerts"].as_i64(), Some(alerts), "{got}");

    // The example script of examples/ works as its docs say.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/query_fleet.py");
    let out = std::process::Command::new(&python)
        .args([example, "--at", addr.as_str(), "--user", "ana", "--password", PASSWORD])
        .output()
        .expect("example");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{text}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("tessera.public: alerts") && text.contains("windows in the last hour (motor_windows)"),
        "{text}"
    );

    // The CLI prints a table.
    let connection = SqlConnection {
        allow_partial: false,
        at: addr.clone(),
        user: Some("ana".into()),
        password: Some(PASSWORD.into()),
        token: None,
        timeout: Duration::from_secs(10),
        tls: Default::default(),
    };
    let table = tessera_cli::commands::sql::query_table(&connection, "SELECT name FROM continuous_queries")
        .expect("tessera sql");
    assert!(table.contains("| vib "), "{table}");
    let err = tessera_cli::commands::sql::query_table(&connection, "SELECT * FROM telemetry")
        .expect_err("denied")
        .to_string();
    assert!(err.contains("may not read raw core columns"), "{err}");
    node.stop().expect("the node stops");
}

/// Three sites, each a node reading its own topic and serving SQL, federated: an aggregate over
/// `fleet.motor_windows` at any node equals the same aggregate merged from each site's own
/// answer; only partial aggregates cross (the plan shows the per-site fragment); a fleet scan
/// of raw telemetry by an analyst is refused by the sites with PermissionDenied, and audited.
#[test]
fn a_cross_site_aggregate_equals_the_sites_own_aggregates() {
    let (kafka, brokers) = crate::embedded_kafka(1, 1);
    kafka.create_topic("alerts", 1).expect("topic");
    kafka.create_topic("late", 1).expect("topic");
    let sites = ["site-a", "site-b", "site-c"];
    let ports: Vec<u16> = sites.iter().map(|_| crate::support::cluster::free_port()).collect();
    let t0 = (now_ms() - 120_000).div_euclid(1000) * 1000;
    // The sites speak mTLS: one cluster CA, a certificate per node.
    let pki_dir = tempfile::tempdir().expect("tempdir");
    let year = Duration::from_secs(365 * 24 * 3600);
    let ca = pki::new_ca("test cluster CA", year).expect("CA");
    let write = |name: &str, text: &str| {
        let path = pki_dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let ca_file = write("ca.crt", &ca.cert_pem);
    let mut nodes = Vec::new(); // TestNodes, started together below
    let mut sent = Vec::new();
    for (i, site) in sites.iter().enumerate() {
        let topic = format!("telemetry-{i}");
        kafka.create_topic(&topic, 1).expect("topic");
        // Each site's motors are its own (M1.. prefixed by the site); site i has 2 + i motors.
        let readings =
            at_site(site, readings(t0).into_iter().filter(|r| r.motor_id.as_str() <= format!("M{}", 2 + i).as_str()));
        sent.push(crate::support::sql::publish(&brokers, &topic, &readings));
        let peers = crate::support::sql::loopback_peers(site, &sites, &ports);
        let cert = pki::issue(
            &ca,
            &Subject::Node { id: i as u64 + 1, site: site.to_string(), hosts: vec!["127.0.0.1".into()] },
            year,
        )
        .expect("cert");
        let tls = TlsFiles {
            ca: ca_file.clone(),
            cert: write(&format!("{site}.crt"), &cert.cert_pem),
            key: write(&format!("{site}.key"), &cert.key_pem),
        };
        let node = TestNode::new(site, &brokers, site, &topic)
            .queries([QUERY, WINDOWS])
            .group_policy(3, Duration::from_secs(3))
            .sql_at(
                &format!("127.0.0.1:{}", ports[i]),
                vec![
                    user("root", Role::Admin, None),
                    user("ana", Role::FleetAnalyst, None),
                    user("opb", Role::SiteOperator, Some("site-b")),
                ],
            )
            .peers(peers, FEDERATION_TOKEN)
            .tls(tls);
        nodes.push(node);
    }
    let cluster = TestCluster::start(nodes);
    cluster.wait_until("every reading taken in", Duration::from_secs(60), |i, node| {
        node.detect_stats().engine.windows.first().map_or(0, |(_, w)| w.rows_in) >= sent[i]
    });
    let nodes = &cluster.nodes;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    rt.block_on(async {
        // Windows are aggregates: an analyst sees those that met each site's policy, as they are.
        let per_motor = "SELECT motor_id, count(*) AS n, sum(score) AS s, min(score) AS lo, max(score) AS hi, avg(score) AS mean \
                         FROM {t} WHERE window_start >= to_timestamp_millis({from}) AND {released} GROUP BY motor_id ORDER BY motor_id";
        let sql = |table: &str, released: &str| {
            per_motor.replace("{t}", table).replace("{from}", &(t0 + 2000).to_string()).replace("{released}", released)
        };
        // Each site's own answer, merged by hand: what an admin of the site sees of the released windows.
        let mut expected = Vec::new();
        let (mut released_windows, mut windows) = (0, 0);
        for i in 0..3 {
            let mut root = login_tls(&addr(i), "root", &ca.cert_pem).await;
            expected.extend(run(&mut root, &sql("public.motor_windows", RELEASED)).await.expect("own site"));
            released_windows += int(&run(&mut root, &format!("SELECT count(*) FROM motor_windows WHERE {RELEASED}")).await.expect("own count"));
            windows += int(&run(&mut root, "SELECT count(*) FROM motor_windows").await.expect("own count"));
        }
        let expected_text = sorted_text(&expected);
        assert_eq!(expected.iter().map(RecordBatch::num_rows).sum::<usize>(), 2 + 3 + 4, "{expected_text}");
        assert!(released_windows >= (2 + 3 + 4) * 8, "40 s of 4 s windows per motor: {released_windows}");
        for i in 0..3 {
            let mut ana = login_tls(&addr(i), "ana", &ca.cert_pem).await;
            let got = run(&mut ana, &sql("fleet.motor_windows", "query = 'win'")).await.expect("fleet aggregate");
            assert_eq!(sorted_text(&got), expected_text, "through site {i}");
            let total = int(&run(&mut ana, "SELECT count(*) FROM fleet.motor_windows").await.expect("count"));
            assert_eq!(total, windows, "through site {i}: counting windows reads no graded column");
            let scored = int(&run(&mut ana, "SELECT count(score) FROM fleet.motor_windows").await.expect("count"));
            assert_eq!(scored, released_windows, "through site {i}: scores of released windows only");
        }
        let mut ana = login_tls(&addr(1), "ana", &ca.cert_pem).await;
        let plan = run(&mut ana, &format!("EXPLAIN {}", sql("fleet.motor_windows", "query = 'win'"))).await.expect("explain");
        let plan = datafusion::arrow::util::pretty::pretty_format_batches(&plan).expect("text").to_string();
        assert!(plan.contains("site_partials"), "the aggregate is computed per site:\n{plan}");
        println!("flight sql: {} motors' aggregates equal through every site; the plan through site-b:\n{plan}", 2 + 3 + 4);
        let denied = run(&mut ana, "SELECT * FROM fleet.telemetry").await.expect_err("raw rows of every site");
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        assert!(denied.message().contains("may not read raw core columns"), "{denied:?}");
        for i in [0, 2] {
            let mut root = login_tls(&addr(i), "root", &ca.cert_pem).await;
            let audit = run(&mut root, "SELECT user, refused FROM query_audit WHERE \"user\" = 'ana' AND refused LIKE '%raw core columns%'").await.expect("audit");
            assert_eq!(audit.iter().map(RecordBatch::num_rows).sum::<usize>(), 1, "site {i} audited the refused fragment");
        }
        // An admin is an admin of the site they signed in at: raw core and important columns
        // of other sites stay there (their aggregates may leave); their own site's come out.
        let mut root = login_tls(&addr(1), "root", &ca.cert_pem).await;
        let denied = run(&mut root, "SELECT motor_id, vibration_x_rms FROM fleet.telemetry").await.expect_err("raw core rows of other sites");
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        assert!(denied.message().contains("admin may read raw general columns at most"), "{denied:?}");
        let denied = run(&mut root, "SELECT motor_id, current_a FROM fleet.telemetry").await.expect_err("raw important rows of other sites");
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        assert!(denied.message().contains("may not read raw important columns of site site-"), "{denied:?}");
        let own = run(&mut root, "SELECT motor_id, current_a, vibration_x_rms FROM telemetry").await.expect("an admin's own site, raw");
        assert!(own.iter().map(RecordBatch::num_rows).sum::<usize>() > 0);
        let mean = run(&mut root, "SELECT motor_id, avg(vibration_x_rms) AS mean FROM fleet.telemetry GROUP BY motor_id").await.expect("an aggregate of big groups leaves");
        assert_eq!(mean.iter().map(RecordBatch::num_rows).sum::<usize>(), 2 + 3 + 4);
        let denied = run(&mut root, "SELECT motor_id, max(vibration_x_rms) AS peak FROM fleet.telemetry GROUP BY motor_id").await.expect_err("a max is a reading");
        assert!(denied.message().contains("max is not one of the allowed aggregates"), "{denied:?}");
        let per_reading = run(&mut root, "SELECT motor_id, ts, avg(vibration_x_rms) FROM fleet.telemetry GROUP BY motor_id, ts").await.expect("row-sized groups");
        assert_eq!(per_reading.iter().map(RecordBatch::num_rows).sum::<usize>(), 40 * 3, "only the admin's own site's 3 motors, reading by reading");
        // Raw core never leaves its site, whatever the role: site-b's own operator, asking
        // through site-a, is refused by site-b too (the client hears site-a's refusal, the
        // local one), and site-b audits why.
        let mut opb = login_tls(&addr(0), "opb", &ca.cert_pem).await;
        let denied = run(&mut opb, "SELECT motor_id, vibration_x_rms FROM fleet.telemetry WHERE site_id = 'site-b'").await.expect_err("raw core through another site");
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        let mut root_b = login_tls(&addr(1), "root", &ca.cert_pem).await;
        let audit = run(&mut root_b, "SELECT refused FROM query_audit WHERE \"user\" = 'opb' AND refused LIKE '%never leave their site%'").await.expect("audit");
        assert_eq!(audit.iter().map(RecordBatch::num_rows).sum::<usize>(), 1, "site-b audited the refused fragment");

        // The federation token alone opens nothing: a federated call must come with a node's
        // certificate (not none, not an operator's), and a client in the clear is not served.
        let forged = |cert: Option<&pki::Issued>| {
            let mut tls = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(&ca.cert_pem));
            if let Some(cert) = cert {
                tls = tls.identity(tonic::transport::Identity::from_pem(&cert.cert_pem, &cert.key_pem));
            }
            let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{}", addr(0))).expect("uri").tls_config(tls).expect("tls");
            async move {
                let mut c = FlightSqlServiceClient::new(endpoint.connect().await.expect("connect"));
                c.set_token(FEDERATION_TOKEN.into());
                c.set_header(tessera_sql::federation::AS_USER, "root");
                c.set_header(tessera_sql::federation::AS_ROLE, "admin");
                run(&mut c, "SELECT count(*) FROM motor_windows").await.expect_err("a forged federated call")
            }
        };
        let operator = pki::issue(&ca, &Subject::Operator { name: "eve".into(), role: tessera_tls::OperatorRole::Admin }, year).expect("operator");
        for refused in [forged(None).await, forged(Some(&operator)).await] {
            assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
            assert!(refused.message().contains("must come with a node's certificate"), "{refused:?}");
        }
        // A node of another site may not pass as a node of this one (to read its raw core
        // data "within the site"): site-b's own certificate, asking site-a as one of its nodes.
        let pem = |name: &str| std::fs::read_to_string(pki_dir.path().join(name)).expect("pem");
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&ca.cert_pem))
            .identity(tonic::transport::Identity::from_pem(pem("site-b.crt"), pem("site-b.key")));
        let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{}", addr(0))).expect("uri").tls_config(tls).expect("tls");
        let mut c = FlightSqlServiceClient::new(endpoint.connect().await.expect("connect"));
        c.set_token(FEDERATION_TOKEN.into());
        c.set_header(tessera_sql::federation::AS_USER, "root");
        c.set_header(tessera_sql::federation::AS_ROLE, "admin");
        c.set_header(tessera_sql::federation::AS_SITE, "site-a");
        c.set_header(tessera_sql::federation::WITHIN_SITE, "1");
        let refused = run(&mut c, "SELECT motor_id, vibration_x_rms FROM telemetry").await.expect_err("site-b posing as site-a");
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert!(refused.message().contains("may not ask as a node of site site-a"), "{refused:?}");
        let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", addr(0))).expect("uri").connect().await;
        if let Ok(channel) = plain {
            FlightSqlServiceClient::new(channel).handshake("root", PASSWORD).await.expect_err("served in the clear");
        }
        let until = Instant::now() + Duration::from_secs(20);
        while nodes[0].sql_refusals().expect("endpoint").0 < 1 {
            assert!(Instant::now() < until, "the plain client's handshake was not counted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(nodes[0].sql_refusals().expect("endpoint").1, 3, "forged federated calls counted");
    });
    cluster.stop();
}

/// Batches as text with their rows sorted (sites answer in any order).
fn sorted_text(batches: &[RecordBatch]) -> String {
    let text = datafusion::arrow::util::pretty::pretty_format_batches(batches).expect("text").to_string();
    let mut lines: Vec<&str> = text.lines().filter(|l| l.starts_with("| ")).collect();
    let header = lines.remove(0);
    lines.sort();
    std::iter::once(header).chain(lines).collect::<Vec<_>>().join("\n")
}

/// A fleet query fans out to every site with one deadline (`sql.fragment_timeout`) and says
/// which sites answered. Two live sites and a third whose link delivers nothing (its address
/// accepts connections and never answers, as a site behind a stalled WAN link does): by
/// default the query fails `UNAVAILABLE` within the deadline, naming the site; a caller who
/// takes a partial answer gets the live sites' rows, the result's schema names the sites that
/// answered and the one left out, and a warning header and the CLI's warning say so. The slow
/// site shows in `query_audit` and in `/metrics`.
#[test]
fn a_fleet_query_says_which_sites_answered_and_leaves_a_stalled_site_out_only_when_asked() {
    use tessera_sql::fanout::{SITES_ANSWERED_METADATA_KEY, SITES_MISSING_METADATA_KEY, WARNING_HEADER};

    let (kafka, brokers) = crate::embedded_kafka(1, 1);
    kafka.create_topic("alerts", 1).expect("topic");
    kafka.create_topic("late", 1).expect("topic");
    // The stalled site: connections are accepted, and held without a byte in answer.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let stalled_addr = stalled.local_addr().expect("addr").to_string();
    stalled.set_nonblocking(true).expect("nonblocking");
    let holding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let holder = {
        let holding = holding.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while holding.load(std::sync::atomic::Ordering::Relaxed) {
                match stalled.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    };
    let sites = ["site-a", "site-b"];
    let ports: Vec<u16> = sites.iter().map(|_| crate::support::cluster::free_port()).collect();
    let t0 = (now_ms() - 120_000).div_euclid(1000) * 1000;
    let deadline = Duration::from_secs(2);
    let mut nodes = Vec::new();
    let mut sent = Vec::new();
    for (i, site) in sites.iter().enumerate() {
        let topic = format!("telemetry-{i}");
        kafka.create_topic(&topic, 1).expect("topic");
        let readings = at_site(site, readings(t0));
        sent.push(crate::support::sql::publish(&brokers, &topic, &readings));
        let mut peers: Vec<tessera_sql::Peer> = crate::support::sql::loopback_peers(site, &sites, &ports);
        peers.push(tessera_sql::Peer { site: "site-c".into(), addr: stalled_addr.clone(), fallbacks: vec![] });
        nodes.push(
            TestNode::new(site, &brokers, site, &topic)
                .queries([WINDOWS])
                .sql_at(&format!("127.0.0.1:{}", ports[i]), vec![user("root", Role::Admin, None)])
                .peers(peers, FEDERATION_TOKEN)
                .with(|c| {
                    c.sql.fragment_timeout = deadline;
                    c.http.listen = Some("127.0.0.1:0".parse().expect("addr"));
                }),
        );
    }
    let cluster = TestCluster::start(nodes);
    cluster.wait_until("every reading taken in", Duration::from_secs(60), |i, node| {
        node.detect_stats().engine.windows.first().map_or(0, |(_, w)| w.rows_in) >= sent[i]
    });
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let fleet = "SELECT count(*) FROM fleet.motor_windows";
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut root = login(&addr(0), "root").await;
        let own: i64 = {
            let mut n = 0;
            for i in 0..2 {
                n += int(&run(&mut login(&addr(i), "root").await, "SELECT count(*) FROM motor_windows")
                    .await
                    .expect("own"));
            }
            n
        };
        // All sites or an error (the default), within the deadline.
        let started = Instant::now();
        let refused = run(&mut root, fleet).await.expect_err("a site did not answer");
        let took = started.elapsed();
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        // The site's own call times out, or the fan-out's deadline for it: either names it.
        assert!(refused.message().starts_with("site site-c"), "{refused:?}");
        assert!(took < deadline * 3, "the fan-out's deadline held: {took:?}");

        // What answered, marked.
        root.set_header(tessera_sql::identity::ALLOW_PARTIAL, "true");
        let info = root.execute(fleet.to_string(), None).await.expect("execute");
        let ticket = info.endpoint[0].ticket.clone().expect("ticket");
        let mut call = tonic::Request::new(arrow_flight::Ticket { ticket: ticket.ticket.clone() });
        call.metadata_mut().insert(
            "authorization",
            root.token().map(|t| format!("Bearer {t}")).expect("token").parse().expect("header"),
        );
        call.metadata_mut().insert(tessera_sql::identity::ALLOW_PARTIAL, "true".parse().expect("header"));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", addr(0)))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let mut raw = arrow_flight::flight_service_client::FlightServiceClient::new(channel);
        let reply = raw.do_get(call).await.expect("do_get");
        let warning = reply.metadata().get(WARNING_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
        let warning = warning.expect("a warning header");
        assert!(warning.starts_with("partial answer: site site-c:"), "{warning}");
        let mut stream = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
            futures::TryStreamExt::map_err(reply.into_inner(), arrow_flight::error::FlightError::from),
        );
        let mut batches = Vec::new();
        while let Some(batch) = futures::TryStreamExt::try_next(&mut stream).await.expect("batch") {
            batches.push(batch);
        }
        assert_eq!(int(&batches), own, "both live sites' windows");
        let metadata = stream.schema().expect("schema").metadata().clone();
        assert_eq!(
            metadata.get(SITES_ANSWERED_METADATA_KEY).map(String::as_str),
            Some("site-a, site-b"),
            "{metadata:?}"
        );
        assert_eq!(metadata.get(SITES_MISSING_METADATA_KEY).map(String::as_str), Some("site-c"), "{metadata:?}");

        // The slow site in the audit: the slowest of the partial answer's fragments.
        let audit = run(
            &mut login(&addr(0), "root").await,
            "SELECT sites_answered, sites_left_out, slowest_site, slowest_site_ms FROM query_audit \
             WHERE sql = 'SELECT count(*) FROM fleet.motor_windows' AND refused IS NULL",
        )
        .await
        .expect("audit");
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&audit).expect("text").to_string();
        assert!(
            text.contains("site-a (")
                && text.contains("site-b (")
                && text.contains("| site-c (")
                && text.contains("| site-c "),
            "{text}"
        );
        let slowest =
            audit[0].column(3).as_any().downcast_ref::<datafusion::arrow::array::UInt64Array>().expect("ms").value(0);
        assert!(slowest >= deadline.as_millis() as u64, "{text}");
    });
    // And in /metrics: site-c's fragments were left out once and unavailable once.
    let metrics = crate::support::http_get(&cluster.nodes[0].http_addr().expect("http").to_string(), "/metrics");
    for line in [
        "tessera_sql_site_fragments_total{site=\"site-a\",answering_site=\"site-c\",outcome=\"left_out\"} 1",
        "tessera_sql_site_fragments_total{site=\"site-a\",answering_site=\"site-c\",outcome=\"unavailable\"} 1",
        "tessera_sql_site_fragments_total{site=\"site-a\",answering_site=\"site-b\",outcome=\"answered\"}",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    assert!(
        metrics.contains("tessera_sql_site_fragment_duration_seconds_bucket{site=\"site-a\",answering_site=\"site-c\""),
        "{metrics}"
    );

    // The CLI warns on stderr, and prints the live sites' answer.
    let out = crate::cli_process::command(&[
        "sql",
        "--at",
        &addr(1),
        "--user",
        "root",
        "--password",
        PASSWORD,
        "--allow-partial",
        "-o",
        "csv",
        fleet,
    ])
    .output()
    .expect("tessera runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: a partial answer from sites site-b, site-a; left out: site-c"), "{stderr}");
    holding.store(false, std::sync::atomic::Ordering::Relaxed);
    holder.join().expect("holder");
    cluster.stop();
}
