//! Speaking to a node's Flight SQL endpoint in tests: users with one shared password, login
//! (plain or TLS), running a query to its batches or the status the server answered with, and
//! asking until the answer is as expected.

use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::array::{Int64Array, RecordBatch};
use futures::TryStreamExt as _;
use tessera_sql::{Role, UserConfig};
use tonic::transport::Channel as GrpcChannel;

/// Every test user's password.
pub(crate) const PASSWORD: &str = "correct horse";
/// The shared token of federated test sites.
pub(crate) const FEDERATION_TOKEN: &str = "federation-secret-of-the-test";

/// Publishes `readings` to `topic` at `brokers` (protobuf) and waits until they are sent; how
/// many there were.
pub(crate) fn publish(brokers: &str, topic: &str, readings: &[tessera_core::Reading]) -> u64 {
    let p =
        tessera_suite::producer(brokers, topic, tessera_workload::producer::WireFormat::Protobuf).expect("producer");
    p.send_readings(readings).expect("send");
    p.flush(Duration::from_secs(10)).expect("flush");
    readings.len() as u64
}

/// The sites of `sites` other than `site`, as federation peers on loopback (site i at
/// `ports[i]`).
pub(crate) fn loopback_peers(site: &str, sites: &[&str], ports: &[u16]) -> Vec<tessera_sql::Peer> {
    sites
        .iter()
        .zip(ports)
        .filter(|(s, _)| **s != site)
        .map(|(s, port)| tessera_sql::Peer {
            site: s.to_string(),
            addr: format!("127.0.0.1:{port}"),
            fallbacks: vec![],
        })
        .collect()
}

/// A SQL user with [`PASSWORD`].
pub(crate) fn user(name: &str, role: Role, site: Option<&str>) -> UserConfig {
    // One hash per test run is enough: Argon2id is slow on purpose.
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = HASH.get_or_init(|| tessera_sql::auth::hash_password(PASSWORD).expect("hash")).clone();
    UserConfig { name: name.into(), password_hash: hash, role, site: site.map(str::to_string) }
}

/// A client of the endpoint at `addr`, not logged in.
pub(crate) async fn client(addr: &str) -> FlightSqlServiceClient<GrpcChannel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    FlightSqlServiceClient::new(channel)
}

/// A client of the endpoint at `addr`, logged in as `name`.
pub(crate) async fn login(addr: &str, name: &str) -> FlightSqlServiceClient<GrpcChannel> {
    let mut c = client(addr).await;
    c.handshake(name, PASSWORD).await.expect("handshake");
    c
}

/// [`login`], or why not.
async fn try_login(addr: &str, name: &str) -> Result<FlightSqlServiceClient<GrpcChannel>, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).map_err(|e| e.to_string())?;
    let mut c = FlightSqlServiceClient::new(endpoint.connect().await.map_err(|e| e.to_string())?);
    c.handshake(name, PASSWORD).await.map_err(|e| e.to_string())?;
    Ok(c)
}

/// [`login`] over TLS, trusting `ca_pem`, with no client certificate (as people connect).
pub(crate) async fn login_tls(addr: &str, name: &str, ca_pem: &str) -> FlightSqlServiceClient<GrpcChannel> {
    let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca_pem));
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("https://{addr}")).expect("uri").tls_config(tls).expect("tls");
    let mut c = FlightSqlServiceClient::new(endpoint.connect().await.expect("connect"));
    c.handshake(name, PASSWORD).await.expect("handshake");
    c
}

/// Runs `sql`; the batches, or the gRPC status the server answered with.
pub(crate) async fn run(
    c: &mut FlightSqlServiceClient<GrpcChannel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let status = |e: arrow_flight::error::FlightError| match e {
        arrow_flight::error::FlightError::Tonic(status) => *status,
        other => tonic::Status::unknown(other.to_string()),
    };
    let info = c.execute(sql.to_string(), None).await.map_err(status)?;
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let stream = c.do_get(ticket).await.map_err(status)?;
    stream.try_collect().await.map_err(status)
}

/// [`run`] for a caller who takes a partial answer (`x-tessera-allow-partial`): the batches,
/// and what the answer says it is missing (its schema's `tessera.incomplete`), if anything.
pub(crate) async fn run_partial(
    c: &mut FlightSqlServiceClient<GrpcChannel>,
    sql: &str,
) -> Result<(Vec<RecordBatch>, Option<String>), tonic::Status> {
    let status = |e: arrow_flight::error::FlightError| match e {
        arrow_flight::error::FlightError::Tonic(status) => *status,
        other => tonic::Status::unknown(other.to_string()),
    };
    c.set_header(tessera_sql::identity::ALLOW_PARTIAL, "true");
    let info = c.execute(sql.to_string(), None).await.map_err(status)?;
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let mut stream = c.do_get(ticket).await.map_err(status)?;
    let mut batches = Vec::new();
    while let Some(batch) = stream.try_next().await.map_err(status)? {
        batches.push(batch);
    }
    let missing =
        stream.schema().and_then(|s| s.metadata().get(tessera_sql::identity::INCOMPLETE_METADATA_KEY).cloned());
    Ok((batches, missing))
}

/// The first column of the first row, as an integer.
pub(crate) fn int(batches: &[RecordBatch]) -> i64 {
    batches[0].column(0).as_any().downcast_ref::<Int64Array>().expect("an integer").value(0)
}

/// Asks `sql` at `addr` as `name` until `done` holds of the answer (the node may be starting,
/// or a rebalance under way: the site then answers UNAVAILABLE, or not yet for every motor),
/// within `within`.
pub(crate) async fn until(
    addr: &str,
    name: &str,
    sql: &str,
    within: Duration,
    done: impl Fn(&[RecordBatch]) -> bool,
) -> Vec<RecordBatch> {
    let until = Instant::now() + within;
    let mut last;
    loop {
        // (A node that is starting is not listening yet.)
        let answer = match try_login(addr, name).await {
            Ok(mut c) => run(&mut c, sql).await,
            Err(e) => Err(tonic::Status::unavailable(format!("connecting: {e}"))),
        };
        match answer {
            Ok(batches) if done(&batches) => return batches,
            Ok(batches) => {
                last = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{sql} at {addr}: {status}");
                last = status.message().to_string();
            }
        }
        assert!(Instant::now() < until, "{sql} at {addr} as {name}: never as expected; last answer {last}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
