//! SQL benchmark: an aggregate over one hour of a 1,000-motor fleet at 10 Hz (36 M readings)
//! spread over three sites, through Flight SQL, with each site computing partial aggregates.
//!
//! `cargo bench --bench sql_federation -- [--motors 1000] [--hz 10] [--seconds 3600] [--sites 3] [--pods 3] [--runs 20] [--explain]`
//!
//! Three endpoints (one per site, each holding its motors' readings in its `telemetry` table,
//! as a node's recent-readings table does) run in this process on loopback, federated. A
//! Flight SQL client (arrow-rs) signed in as a fleet analyst sends the query to one site, so
//! every site releases its part under the group policy (`crates/sql/src/release.rs`: the
//! vibration and current columns are above an analyst's grade); latency is from the request to
//! the last result row. In the same run, for comparison: the same query on one site's own
//! `public.telemetry` (a site's fragment alone), one site's fragment in process with and
//! without the release rewrite (the enforcement's cost), and a single DataFusion context holding
//! all 36 M readings (no federation, no network); and the fleet query again with each site's
//! motors split over `--pods` nodes (the Helm chart's shape: a site's query gathers its pods'
//! partial aggregates, each pod's answer bracketed by its `partitions`, see
//! `crates/sql/src/site.rs`), the scatter-gather's cost. All three sites share this machine's cores
//! here; in a deployment each site computes its fragment on its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::array::Float64Builder;
use datafusion::arrow::array::{
    ArrayRef, Float64Array, MapBuilder, RecordBatch, StringArray, StringBuilder, TimestampMillisecondArray, UInt64Array,
};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt as _;
use tessera_sql::federation::SiteNodes;
use tessera_sql::{
    Authenticator, Catalog, ConfigUsers, Federation, FlightSqlEndpoint, Identity, LogAudit, Peer, Role, ServedTable,
    TableKind, UserConfig,
};
use tessera_stream::tables::BoundedTable;

const QUERY: &str = "SELECT motor_id, count(*) AS n, avg(temperature_c) AS temp, avg(vibration_x_rms) AS vib, sum(current_a) AS current \
                     FROM {table} WHERE ts >= to_timestamp_millis({from}) GROUP BY motor_id";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One site's readings: `motors` motors from `first`, `hz` readings a second for `seconds`.
fn site_batches(site: &str, first: u64, motors: u64, hz: u64, seconds: u64, start_ms: i64) -> Vec<RecordBatch> {
    let schema = tessera_core::telemetry_schema();
    let step_ms = 1000 / hz as i64;
    let mut batches = Vec::new();
    // One batch per 10 s of the whole site (about 10 k readings per motor-second × motors).
    for chunk in (0..seconds * hz).collect::<Vec<_>>().chunks((10 * hz) as usize) {
        let rows = chunk.len() * motors as usize;
        let (mut ids, mut ts, mut seq) = (Vec::with_capacity(rows), Vec::with_capacity(rows), Vec::with_capacity(rows));
        let mut channels: Vec<Vec<Option<f64>>> = (0..7).map(|_| Vec::with_capacity(rows)).collect();
        for &step in chunk {
            for m in first..first + motors {
                ids.push(format!("M{m:04}"));
                ts.push(start_ms + step as i64 * step_ms);
                seq.push(step);
                let wave = ((step as f64 / 50.0) + m as f64).sin();
                for (c, values) in channels.iter_mut().enumerate() {
                    values.push(Some(10.0 * (c + 1) as f64 + wave));
                }
            }
        }
        let mut extra = MapBuilder::new(None, StringBuilder::new(), Float64Builder::new());
        for _ in 0..rows {
            extra.append(true).expect("empty map");
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(StringArray::from(vec![site; rows])),
            Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")),
            Arc::new(UInt64Array::from(seq)),
        ];
        columns.extend(channels.into_iter().map(|v| Arc::new(Float64Array::from(v)) as ArrayRef));
        columns.push(Arc::new(extra.finish()));
        batches.push(RecordBatch::try_new(schema.clone(), columns).expect("telemetry batch"));
    }
    batches
}

async fn client(addr: &str) -> FlightSqlServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut c = FlightSqlServiceClient::new(channel);
    c.handshake("bench", "bench-password").await.expect("handshake");
    c
}

async fn timed(c: &mut FlightSqlServiceClient<tonic::transport::Channel>, sql: &str) -> (f64, usize) {
    let started = Instant::now();
    let info = c.execute(sql.to_string(), None).await.expect("execute");
    let mut rows = 0;
    for e in info.endpoint {
        let batches: Vec<RecordBatch> =
            c.do_get(e.ticket.expect("ticket")).await.expect("do_get").try_collect().await.expect("rows");
        rows += batches.iter().map(RecordBatch::num_rows).sum::<usize>();
    }
    (started.elapsed().as_secs_f64() * 1e3, rows)
}

fn report(name: &str, mut ms: Vec<f64>, rows: usize) -> f64 {
    ms.sort_by(f64::total_cmp);
    let p50 = percentile(&ms, 50.0);
    println!(
        "{name:<44} n={:<3} rows={rows:<5} p50 {p50:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms",
        ms.len(),
        percentile(&ms, 99.0),
        ms[ms.len() - 1]
    );
    p50
}

fn main() {
    let (motors, hz, seconds, sites, runs) =
        (arg("--motors", 1000), arg("--hz", 10), arg("--seconds", 3600), arg("--sites", 3), arg("--runs", 20) as usize);
    let start_ms = 1_700_000_000_000i64;
    let generated = Instant::now();
    let per_site = motors.div_ceil(sites);
    let data: Vec<Vec<RecordBatch>> = (0..sites)
        .map(|s| {
            let first = s * per_site;
            site_batches(&format!("site-{s}"), first, per_site.min(motors - first), hz, seconds, start_ms)
        })
        .collect();
    let readings: usize = data.iter().flatten().map(RecordBatch::num_rows).sum();
    println!(
        "# {readings} readings ({motors} motors x {hz} Hz x {seconds} s) over {sites} sites, generated in {:.1} s",
        generated.elapsed().as_secs_f64()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let hash = tessera_sql::auth::hash_password("bench-password").expect("hash");
    let users = vec![UserConfig { name: "bench".into(), password_hash: hash, role: Role::FleetAnalyst, site: None }];
    let one_pod: Vec<Vec<Vec<RecordBatch>>> = data.iter().map(|site| vec![site.clone()]).collect();
    let (addrs, site_zero) = serve(&runtime, &one_pod, &users);
    // The same readings again, each site's motors split over `pods` nodes (the chart's shape).
    let pods = arg("--pods", 3);
    let (pod_addrs, _) = if pods > 1 {
        let per_pod = per_site.div_ceil(pods);
        let split: Vec<Vec<Vec<RecordBatch>>> = (0..sites)
            .map(|s| {
                let (first, count) = (s * per_site, per_site.min(motors - s * per_site));
                (0..pods)
                    .map(|j| {
                        let from = first + j * per_pod;
                        let n = per_pod.min((first + count).saturating_sub(from));
                        site_batches(&format!("site-{s}"), from, n, hz, seconds, start_ms)
                    })
                    .collect()
            })
            .collect();
        serve(&runtime, &split, &users)
    } else {
        (Vec::new(), None)
    };

    let from = start_ms.to_string();
    let sql = |table: &str| QUERY.replace("{table}", table).replace("{from}", &from);
    runtime.block_on(async {
        let mut c = client(&addrs[0]).await;
        let (mut fleet, mut site, mut fleet_pods) = (Vec::new(), Vec::new(), Vec::new());
        let (mut fleet_rows, mut site_rows, mut fleet_pods_rows) = (0, 0, 0);
        let mut by_pods = match pod_addrs.first() {
            Some(addr) => Some(client(addr).await),
            None => None,
        };
        // One warm-up each, then alternate so that all see the same machine.
        timed(&mut c, &sql("fleet.telemetry")).await;
        timed(&mut c, &sql("public.telemetry")).await;
        if let Some(p) = &mut by_pods {
            timed(p, &sql("fleet.telemetry")).await;
        }
        for _ in 0..runs {
            let (ms, rows) = timed(&mut c, &sql("fleet.telemetry")).await;
            fleet.push(ms);
            fleet_rows = rows;
            let (ms, rows) = timed(&mut c, &sql("public.telemetry")).await;
            site.push(ms);
            site_rows = rows;
            if let Some(p) = &mut by_pods {
                let (ms, rows) = timed(p, &sql("fleet.telemetry")).await;
                fleet_pods.push(ms);
                fleet_pods_rows = rows;
            }
        }
        let site_zero = site_zero.expect("site 0");
        let analyst = Identity {
            user: "bench".into(),
            role: Role::FleetAnalyst,
            site: None,
            via_peer: false,
            fanout: Default::default(),
        };
        let (mut open, mut released, mut release_step) = (Vec::new(), Vec::new(), Vec::new());
        let (mut open_rows, mut released_rows) = (0, 0);
        // One site's fragment in process, alternating: as planned (nothing enforced), and
        // released for an analyst (checked, groups counted and measured as it runs).
        for _ in 0..runs {
            for enforce in [false, true] {
                let started = Instant::now();
                let ctx = site_zero.local_context().expect("context");
                let mut plan = site_zero.plan(&ctx, &sql("public.telemetry")).await.expect("plan");
                if enforce {
                    let releasing = Instant::now();
                    plan = site_zero.release(&analyst, &ctx, plan).expect("released");
                    release_step.push(releasing.elapsed().as_secs_f64() * 1e3);
                }
                let batches = ctx.execute_logical_plan(plan).await.expect("plan").collect().await.expect("run");
                let rows = batches.iter().map(RecordBatch::num_rows).sum();
                let ms = started.elapsed().as_secs_f64() * 1e3;
                if enforce {
                    released.push(ms);
                    released_rows = rows;
                } else {
                    open.push(ms);
                    open_rows = rows;
                }
            }
        }
        if std::env::args().any(|a| a == "--explain") {
            // Where the enforcement's cost goes: each plan's operators with their compute time.
            for enforce in [false, true] {
                let ctx = site_zero.local_context().expect("context");
                let mut plan = site_zero.plan(&ctx, &sql("public.telemetry")).await.expect("plan");
                if enforce {
                    plan = site_zero.release(&analyst, &ctx, plan).expect("released");
                }
                let analyzed =
                    ctx.execute_logical_plan(plan).await.expect("plan").explain(false, true).expect("explain");
                let batches = analyzed.collect().await.expect("run");
                println!("# EXPLAIN ANALYZE, {}", if enforce { "released" } else { "not enforced" });
                println!("{}", datafusion::arrow::util::pretty::pretty_format_batches(&batches).expect("format"));
            }
        }
        let ctx = SessionContext::new();
        let all = datafusion::datasource::MemTable::try_new(
            tessera_core::telemetry_schema(),
            vec![data.iter().flatten().cloned().collect()],
        )
        .expect("table");
        ctx.register_table("telemetry", Arc::new(all)).expect("register");
        let mut single = Vec::new();
        let mut single_rows = 0;
        for _ in 0..runs {
            let started = Instant::now();
            let batches = ctx.sql(&sql("telemetry")).await.expect("plan").collect().await.expect("run");
            single.push(started.elapsed().as_secs_f64() * 1e3);
            single_rows = batches.iter().map(RecordBatch::num_rows).sum();
        }
        let f = report("fleet.telemetry via Flight SQL (3 sites)", fleet, fleet_rows);
        if !fleet_pods.is_empty() {
            assert_eq!(fleet_pods_rows, fleet_rows, "the same motors, whatever the pods");
            let with_pods = report(&format!("  the same, {pods} pods per site"), fleet_pods, fleet_pods_rows);
            println!("# ratio of p50: {pods} pods per site / 1 pod per site = {:.2}", with_pods / f);
        }
        let s = report("public.telemetry via Flight SQL (one site)", site, site_rows);
        let without = report("one site's fragment in process, not enforced", open, open_rows);
        let with = report("one site's fragment in process, released", released, released_rows);
        report("  of which the release step (check, rewrite)", release_step, released_rows);
        let one = report("one DataFusion context, all readings", single, single_rows);
        println!(
            "# ratios of p50: federated / one context = {:.2}, federated / one site's fragment = {:.2}, \
             released / not enforced = {:.3}",
            f / one,
            f / s,
            with / without
        );
    });
}

/// Serves `data` (site → pod → readings) as Flight SQL endpoints on loopback: each site's pods
/// list each other (`site_nodes`, each pod owning "partition" j of "telemetry"), and each site
/// federates with the other sites' first pods. Returns every site's first pod's address, and
/// site 0's first pod's catalog.
fn serve(
    runtime: &tokio::runtime::Runtime,
    data: &[Vec<Vec<RecordBatch>>],
    users: &[UserConfig],
) -> (Vec<String>, Option<Catalog>) {
    let token = "bench-federation-token".to_string();
    let listeners: Vec<Vec<std::net::TcpListener>> = data
        .iter()
        .map(|pods| pods.iter().map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("port")).collect())
        .collect();
    let addrs: Vec<Vec<String>> =
        listeners.iter().map(|l| l.iter().map(|l| l.local_addr().expect("addr").to_string()).collect()).collect();
    let mut site_zero = None;
    for (s, (pods, batches)) in listeners.into_iter().zip(data).enumerate() {
        for (j, (listener, batches)) in pods.into_iter().zip(batches).enumerate() {
            let table = BoundedTable::new(tessera_core::telemetry_schema(), usize::MAX);
            batches.iter().for_each(|b| table.append(b.clone()));
            let mut tables =
                vec![ServedTable { name: "telemetry".into(), provider: table.clone(), kind: TableKind::Raw }];
            if s == 0 && j == 0 {
                site_zero = Some(Catalog::new(
                    "site-0",
                    vec![ServedTable { name: "telemetry".into(), provider: table, kind: TableKind::Raw }],
                ));
            }
            let site = format!("site-{s}");
            let peers = (0..data.len())
                .filter(|&p| p != s)
                .map(|p| Peer { site: format!("site-{p}"), addr: addrs[p][0].clone(), fallbacks: vec![] })
                .collect();
            let n = data[s].len();
            if n > 1 {
                tables.push(ServedTable {
                    name: "partitions".into(),
                    provider: ownership(n, j),
                    kind: TableKind::Cluster,
                });
            }
            let mut catalog = Catalog::new(&site, tables).with_federation(Federation {
                peers,
                token: token.clone(),
                timeout: Duration::from_secs(60),
                tls: tessera_tls::ClientTls::Plain,
            });
            if n > 1 {
                catalog = catalog.with_site_nodes(SiteNodes {
                    addrs: (0..n).filter(|&k| k != j).map(|k| addrs[s][k].clone()).collect(),
                    token: token.clone(),
                    timeout: Duration::from_secs(60),
                    tls: tessera_tls::ClientTls::Plain,
                });
            }
            let auth =
                Authenticator::new(Box::new(ConfigUsers::new(users, &[]).expect("users")), Duration::from_secs(3600))
                    .with_federation_token(&token);
            let endpoint =
                FlightSqlEndpoint::new(Arc::new(catalog), Arc::new(auth), Arc::new(LogAudit), runtime.handle().clone())
                    .expect("endpoint");
            listener.set_nonblocking(true).expect("nonblocking");
            runtime.spawn(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                tonic::transport::Server::builder()
                    .add_service(endpoint.into_service())
                    .serve_with_incoming(incoming)
                    .await
                    .expect("serve");
            });
        }
    }
    (addrs.into_iter().map(|pods| pods[0].clone()).collect(), site_zero)
}

/// Pod `j` of `pods`: it answers for "partition" `j` of a topic of `pods` partitions.
fn ownership(pods: usize, j: usize) -> Arc<tessera_sql::SnapshotTable> {
    tessera_sql::site::partitions_table(move || {
        vec![tessera_sql::site::TopicOwnership {
            topic: "telemetry".into(),
            partitions: pods as i32,
            owned: vec![j as i32],
            generation: 1,
        }]
    })
}
