//! A hostile fleet analyst against two federated sites: 47 shapes of query, each sent at one
//! site's own tables and through the `fleet` schema (plus prepared statements, EXPLAIN and the
//! Flight SQL metadata calls), must be refused or answered without the planted reading — one
//! reading at each site whose vibration (`core`) and current (`important`) are marker values.
//! The sites release a column above an analyst's grade only as count/sum/avg/var/stddev of
//! groups of at least 5 readings over 4 s (their group policy, `crates/sql/src/release.rs`).

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::array::{Array, Float64Array, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::TryStreamExt as _;
use tessera_core::{Channel, MotorId, Reading, now_ms};
use tessera_sql::Role;
use tonic::Code;
use tonic::transport::Channel as GrpcChannel;

use crate::support::sql::{FEDERATION_TOKEN, login, run, user};
use crate::support::{TestCluster, TestNode};

const CORE_MARKER: f64 = 424.2417;
const IMPORTANT_MARKER: f64 = 3131.3119;
/// When the marked reading was taken, relative to t0.
const MARKED_AT_S: i64 = 17;

/// Three motors, one reading a second for 40 s; motor 1's reading at 17 s carries the markers.
fn readings(site: &str, t0: i64) -> Vec<Reading> {
    let mut out = Vec::new();
    for s in 0..40i64 {
        for m in 1..=3 {
            let mut r = crate::support::reading(m, site, t0 + s * 1000, s as u64);
            r.motor_id = MotorId::new(format!("{site}-M{m}")).expect("id");
            r.set(Channel::VibrationXRms, Some(1.0 + (s % 5) as f64 * 0.1));
            r.set(Channel::CurrentA, Some(10.0 + (s % 3) as f64));
            if m == 1 && s == MARKED_AT_S {
                r.set(Channel::VibrationXRms, Some(CORE_MARKER));
                r.set(Channel::CurrentA, Some(IMPORTANT_MARKER));
            }
            out.push(r);
        }
    }
    out
}

/// The shapes, with `{t}` for the table (`telemetry` or `fleet.telemetry`) and `{at}` for the
/// marked reading's time in ms.
const SHAPES: &[&str] = &[
    "SELECT * FROM {t}",
    "SELECT motor_id, vibration_x_rms FROM {t}",
    "SELECT motor_id, current_a FROM {t}",
    "SELECT motor_id, ts, max(vibration_x_rms) FROM {t} GROUP BY motor_id, ts",
    "SELECT motor_id, ts, min(current_a) FROM {t} GROUP BY motor_id, ts",
    "SELECT motor_id, ts, sum(vibration_x_rms) FROM {t} GROUP BY motor_id, ts",
    "SELECT motor_id, ts, avg(vibration_x_rms) FROM {t} GROUP BY motor_id, ts",
    "SELECT motor_id, sum(vibration_x_rms) FROM {t} GROUP BY motor_id, ts HAVING count(*) = 1",
    "SELECT sum(vibration_x_rms) FROM {t} WHERE ts = to_timestamp_millis({at})",
    "SELECT count(*) FROM {t} WHERE vibration_x_rms BETWEEN 424 AND 425",
    "SELECT count(*) FROM {t} WHERE current_a > 3000",
    "SELECT array_agg(vibration_x_rms) FROM {t}",
    "SELECT first_value(vibration_x_rms ORDER BY vibration_x_rms DESC) FROM {t}",
    "SELECT string_agg(CAST(current_a AS VARCHAR), ',') FROM {t}",
    "SELECT median(vibration_x_rms) FROM {t}",
    "SELECT approx_percentile_cont(vibration_x_rms, 0.999) FROM {t}",
    "SELECT count(DISTINCT vibration_x_rms) FROM {t}",
    "SELECT motor_id, avg(vibration_x_rms) FROM {t} GROUP BY ROLLUP(motor_id, vibration_x_rms)",
    "SELECT motor_id, avg(vibration_x_rms) FROM {t} GROUP BY GROUPING SETS ((motor_id), (ts))",
    "SELECT motor_id, avg(current_a) FROM {t} GROUP BY CUBE(motor_id, ts)",
    "SELECT motor_id, lag(vibration_x_rms) OVER (PARTITION BY motor_id ORDER BY ts) FROM {t}",
    "SELECT motor_id, avg(vibration_x_rms) OVER (PARTITION BY motor_id, ts) FROM {t}",
    "SELECT count(*) FROM {t} a JOIN {t} b ON a.vibration_x_rms = b.vibration_x_rms AND a.motor_id <> b.motor_id",
    "SELECT DISTINCT ON (motor_id) motor_id, vibration_x_rms FROM {t} ORDER BY motor_id, vibration_x_rms DESC",
    "SELECT motor_id FROM {t} UNION SELECT CAST(vibration_x_rms AS VARCHAR) FROM {t}",
    "SELECT motor_id FROM {t} WHERE vibration_x_rms > 400 INTERSECT SELECT motor_id FROM {t}",
    "SELECT motor_id FROM {t} EXCEPT SELECT motor_id FROM {t} WHERE current_a > 3000",
    "SELECT CASE WHEN vibration_x_rms > 400 THEN motor_id END FROM {t}",
    "WITH v AS (SELECT vibration_x_rms AS x, ts FROM {t}) SELECT avg(x) FROM v",
    "SELECT avg(x) FROM (SELECT vibration_x_rms AS x, motor_id, ts FROM {t}) s GROUP BY motor_id",
    "SELECT (SELECT max(vibration_x_rms) FROM {t})",
    "SELECT count(*) FROM {t} WHERE EXISTS (SELECT 1 FROM {t} WHERE vibration_x_rms > 424)",
    "SELECT DISTINCT motor_id FROM {t} WHERE motor_id IN (SELECT motor_id FROM {t} WHERE vibration_x_rms > 400)",
    "SELECT * FROM {t} a RIGHT SEMI JOIN {t} b ON a.vibration_x_rms = b.vibration_x_rms",
    "SELECT * FROM {t} a RIGHT ANTI JOIN {t} b ON a.current_a > 3000",
    "SELECT motor_id, ts FROM {t} ORDER BY vibration_x_rms DESC LIMIT 1",
    "SELECT sum(vibration_x_rms) FILTER (WHERE ts = to_timestamp_millis({at})) FROM {t}",
    "SELECT sum(CASE WHEN ts = to_timestamp_millis({at}) THEN vibration_x_rms ELSE 0 END) FROM {t}",
    "SELECT named_struct('v', vibration_x_rms)['v'] FROM {t}",
    "SELECT unnest(make_array(vibration_x_rms, current_a)) FROM {t}",
    "SELECT extra['pressure_bar'] FROM {t}",
    "SELECT count(*) FROM {t} a, {t} b WHERE a.vibration_x_rms > b.vibration_x_rms + 400",
    "EXPLAIN ANALYZE SELECT count(*) FROM {t} WHERE vibration_x_rms > 400",
    // Allowed shapes: answered, without the marker.
    "SELECT motor_id, avg(vibration_x_rms) AS v, stddev(current_a) AS s, count(*) AS n FROM {t} GROUP BY motor_id",
    "SELECT motor_id, sum(vibration_x_rms) FROM {t} WHERE ts <= to_timestamp_millis({at}) GROUP BY motor_id ORDER BY 2 DESC",
    "SELECT avg(vibration_x_rms) FROM {t} WHERE motor_id = 'site-a-M1' AND ts BETWEEN to_timestamp_millis({at}) AND to_timestamp_millis({at})",
    "SELECT motor_id, count(*) FROM {t} GROUP BY motor_id",
];

/// What an answer must not hold: a marker, or a simple function of one.
fn leak(batches: &[RecordBatch]) -> Option<String> {
    let options = FormatOptions::default();
    for batch in batches {
        for column in batch.columns() {
            let formatter = ArrayFormatter::try_new(column.as_ref(), &options).expect("formatter");
            for row in 0..column.len() {
                let text = formatter.value(row).to_string();
                if text.contains("424.24") || text.contains("3131.31") {
                    return Some(text);
                }
                if let Some(floats) = column.as_any().downcast_ref::<Float64Array>()
                    && floats.is_valid(row)
                    && [CORE_MARKER, IMPORTANT_MARKER].iter().any(|m| (floats.value(row) - m).abs() < 1e-3)
                {
                    return Some(text);
                }
            }
        }
    }
    None
}

/// Refused (permission denied, or a plan error such as an unsupported join), or answered
/// without a marker; which one, for the tally.
fn judge(sql: &str, answer: Result<Vec<RecordBatch>, tonic::Status>) -> bool {
    match answer {
        Ok(batches) => {
            if let Some(value) = leak(&batches) {
                let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches).expect("text");
                panic!("{sql}: released a planted reading ({value}):\n{text}");
            }
            true
        }
        Err(status) => {
            assert!(
                matches!(status.code(), Code::PermissionDenied | Code::InvalidArgument),
                "{sql}: refused for another reason: {status:?}"
            );
            false
        }
    }
}

#[test]
fn a_hostile_analyst_gets_no_reading_out_of_either_site() {
    let (kafka, brokers) = crate::embedded_kafka(1, 1);
    kafka.create_topic("alerts", 1).expect("topic");
    kafka.create_topic("late", 1).expect("topic");
    let sites = ["site-a", "site-b"];
    let ports: Vec<u16> = sites.iter().map(|_| crate::support::cluster::free_port()).collect();
    let t0 = (now_ms() - 120_000).div_euclid(1000) * 1000;
    let mut nodes = Vec::new();
    let mut sent = Vec::new();
    for (i, site) in sites.iter().enumerate() {
        let topic = format!("telemetry-{site}");
        kafka.create_topic(&topic, 1).expect("topic");
        let readings = readings(site, t0);
        sent.push(crate::support::sql::publish(&brokers, &topic, &readings));
        let peers = crate::support::sql::loopback_peers(site, &sites, &ports);
        nodes.push(
            TestNode::new(site, &brokers, site, &topic)
                .sql_at(
                    &format!("127.0.0.1:{}", ports[i]),
                    vec![user("root", Role::Admin, None), user("ana", Role::FleetAnalyst, None)],
                )
                .peers(peers, FEDERATION_TOKEN)
                .group_policy(5, Duration::from_secs(4)),
        );
    }
    let cluster = TestCluster::start(nodes);
    cluster.wait_until("every reading taken in", Duration::from_secs(60), |i, node| {
        node.detect_stats().engine.windows.first().map_or(0, |(_, w)| w.rows_in) >= sent[i]
    });
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let at = (t0 + MARKED_AT_S * 1000).to_string();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        // The marker is there: an admin reads it at its own site.
        let mut root = login(&addr(0), "root").await;
        let own = run(&mut root, "SELECT max(vibration_x_rms) FROM telemetry").await.expect("own site");
        assert!(leak(&own).is_some(), "the planted reading is in site-a's table");

        let mut ana = login(&addr(0), "ana").await;
        let (mut answered, mut refused) = (0, 0);
        for shape in SHAPES {
            for table in ["telemetry", "fleet.telemetry"] {
                let sql = shape.replace("{t}", table).replace("{at}", &at);
                if judge(&sql, run(&mut ana, &sql).await) {
                    answered += 1;
                } else {
                    refused += 1;
                }
            }
        }
        assert!(answered >= 8 && refused >= 70, "{answered} answered, {refused} refused");

        // The allowed shapes answer with the motors' groups; row-sized groups come back empty.
        let per_motor = run(&mut ana, "SELECT motor_id, avg(vibration_x_rms) FROM fleet.telemetry GROUP BY motor_id")
            .await
            .expect("an allowed aggregate");
        assert_eq!(per_motor.iter().map(RecordBatch::num_rows).sum::<usize>(), 6, "3 motors at each of 2 sites");
        let per_reading =
            run(&mut ana, "SELECT motor_id, ts, avg(vibration_x_rms) FROM fleet.telemetry GROUP BY motor_id, ts")
                .await
                .expect("row-sized groups, dropped");
        assert_eq!(per_reading.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);

        // motor_health: an analyst sees each motor's status and why, never a raw score.
        let statuses = run(&mut ana, "SELECT motor_id, status, reasons FROM fleet.motor_health").await.expect("status");
        assert_eq!(statuses.iter().map(RecordBatch::num_rows).sum::<usize>(), 6, "every motor of both sites");
        let scores = run(&mut ana, "SELECT motor_id, score FROM fleet.motor_health").await;
        let raw_score = scores.expect_err("a raw important score");
        assert!(matches!(raw_score.code(), Code::PermissionDenied | Code::InvalidArgument), "{raw_score:?}");
        let local = run(&mut ana, "SELECT motor_id, score FROM motor_health").await.expect_err("raw, at this site too");
        assert!(matches!(local.code(), Code::PermissionDenied | Code::InvalidArgument), "{local:?}");

        // EXPLAIN of an allowed query shows its plan; of a refused one, nothing.
        run(&mut ana, "EXPLAIN SELECT motor_id, avg(vibration_x_rms) FROM telemetry GROUP BY motor_id")
            .await
            .expect("the plan of an allowed query");
        let denied = run(&mut ana, "EXPLAIN SELECT vibration_x_rms FROM telemetry").await.expect_err("a refused plan");
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

        // Prepared statements: a parameter cannot turn a refused shape into an allowed one. Over
        // this site's table it is refused when prepared; over `fleet` each site refuses its
        // fragment when it runs.
        let refused_prepare = ana
            .prepare("SELECT count(*) FROM telemetry WHERE vibration_x_rms > $1".into(), None)
            .await
            .expect_err("a predicate on the value, prepared");
        assert!(refused_prepare.to_string().contains("may not read raw core columns"), "{refused_prepare}");
        let mut oracle = ana
            .prepare("SELECT count(*) FROM fleet.telemetry WHERE vibration_x_rms > $1".into(), None)
            .await
            .expect("planned at the coordinator; the sites decide");
        let bound = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("$1", DataType::Float64, true)])),
            vec![Arc::new(Float64Array::from(vec![400.0]))],
        )
        .expect("params");
        oracle.set_parameters(bound).expect("bind");
        let refused_run = match oracle.execute().await {
            Err(e) => e.to_string(),
            Ok(info) => {
                let ticket = info.endpoint[0].ticket.clone().expect("ticket");
                match ana.do_get(ticket).await {
                    Err(e) => e.to_string(),
                    Ok(stream) => match stream.try_collect::<Vec<_>>().await {
                        Err(e) => e.to_string(),
                        Ok(batches) => panic!("the sites answered an oracle: {batches:?}"),
                    },
                }
            }
        };
        assert!(refused_run.contains("may not read raw core columns"), "{refused_run}");
        let mut prepared = ana
            .prepare(
                "SELECT motor_id, avg(vibration_x_rms) FROM telemetry WHERE ts >= $1 GROUP BY motor_id".into(),
                None,
            )
            .await
            .expect("an allowed shape, prepared");
        let schema = Arc::new(Schema::new(vec![Field::new(
            "$1",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        )]));
        for from in [t0, t0 + MARKED_AT_S * 1000] {
            let params = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(TimestampMillisecondArray::from(vec![from]).with_timezone("UTC"))],
            )
            .expect("params");
            prepared.set_parameters(params).expect("bind");
            let info = prepared.execute().await.expect("execute");
            let batches = fetch(&mut ana, info).await;
            assert!(leak(&batches).is_none(), "a prepared aggregate released a reading");
        }
        let last = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(TimestampMillisecondArray::from(vec![t0 + 39_000]).with_timezone("UTC"))],
        )
        .expect("params");
        prepared.set_parameters(last).expect("bind");
        let info = prepared.execute().await.expect("execute");
        assert_eq!(
            fetch(&mut ana, info).await.iter().map(RecordBatch::num_rows).sum::<usize>(),
            0,
            "one reading per group: dropped"
        );

        // Metadata (information_schema and Flight SQL's calls) holds names, never values.
        let columns = run(&mut ana, "SELECT table_name, column_name FROM information_schema.columns")
            .await
            .expect("information_schema");
        assert!(leak(&columns).is_none());
        let tables = ana
            .get_tables(arrow_flight::sql::CommandGetTables { include_schema: true, ..Default::default() })
            .await
            .expect("get_tables");
        assert!(leak(&fetch(&mut ana, tables).await).is_none());
        let schemas = ana.get_db_schemas(Default::default()).await.expect("get_db_schemas");
        assert!(leak(&fetch(&mut ana, schemas).await).is_none());

        // Every refusal is audited at the site that refused it.
        let refusals =
            run(&mut root, "SELECT count(*) FROM query_audit WHERE \"user\" = 'ana' AND refused IS NOT NULL")
                .await
                .expect("audit");
        assert!(crate::support::sql::int(&refusals) >= refused as i64 / 2, "site-a audited its refusals");
        println!("sql release: {answered} answered without a planted reading, {refused} refused");
    });
    cluster.stop();
}

async fn fetch(c: &mut FlightSqlServiceClient<GrpcChannel>, info: arrow_flight::FlightInfo) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let stream = c.do_get(endpoint.ticket.expect("ticket")).await.expect("do_get");
        batches.extend(stream.try_collect::<Vec<_>>().await.expect("rows"));
    }
    batches
}
