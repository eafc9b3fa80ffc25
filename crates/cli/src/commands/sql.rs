//! `tessera sql "…"`: one query against a node's Flight SQL endpoint, printed as a table.

use std::time::Duration;

use anyhow::{Context as _, Result};

/// `tessera sql "…"`: one query against a Flight SQL endpoint, printed as a table.
#[derive(clap::Args, Debug, Clone)]
pub struct SqlArgs {
    /// The SQL query.
    pub query: String,
    /// The endpoint, host:port.
    #[arg(long, env = "TESSERA_SQL", default_value = "127.0.0.1:50051")]
    pub at: String,
    /// User name (with `--password`), for the handshake.
    #[arg(long, env = "TESSERA_SQL_USER")]
    pub user: Option<String>,
    /// Password of `--user`.
    #[arg(long, env = "TESSERA_SQL_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// A bearer token instead of user and password.
    #[arg(long, env = "TESSERA_SQL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How long to wait for the answer.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// TLS (for an endpoint that has `[tls]`).
    #[command(flatten)]
    pub tls: crate::args::TlsArgs,
}

/// Runs `args.query` and returns its result as a text table. The server's refusal comes back
/// as an error carrying its gRPC code and message.
pub fn query_table(args: &SqlArgs) -> Result<String> {
    use arrow_flight::sql::client::FlightSqlServiceClient;
    use futures::TryStreamExt as _;
    crate::runtime()?.block_on(async {
        let channel = tessera_node::control::grpc_channel(&args.at, &args.tls.client()?, args.timeout, "SQL endpoint").await?;
        let mut client = FlightSqlServiceClient::new(channel);
        match (&args.token, &args.user, &args.password) {
            (Some(token), _, _) => client.set_token(token.clone()),
            (None, Some(user), Some(password)) => {
                client.handshake(user, password).await.map_err(|e| anyhow::anyhow!("{}: {}", args.at, flight_message(e)))?;
            }
            _ => anyhow::bail!("give --token, or --user and --password (or TESSERA_SQL_TOKEN / TESSERA_SQL_USER and TESSERA_SQL_PASSWORD)"),
        }
        let info = client.execute(args.query.clone(), None).await.map_err(|e| anyhow::anyhow!("{}", flight_message(e)))?;
        let mut batches = Vec::new();
        for endpoint in info.endpoint {
            let ticket = endpoint.ticket.context("the server sent an endpoint without a ticket")?;
            let stream = client.do_get(ticket).await.map_err(|e| anyhow::anyhow!("{}", flight_message(e)))?;
            batches.extend(stream.try_collect::<Vec<_>>().await.map_err(|e| anyhow::anyhow!("{}", flight_message(e)))?);
        }
        Ok(datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
    })
}

/// The server's words out of a client error: a gRPC status's code and message.
fn flight_message(e: arrow_flight::error::FlightError) -> String {
    match e {
        arrow_flight::error::FlightError::Tonic(status) => format!("{:?}: {}", status.code(), status.message()),
        other => other.to_string(),
    }
}

/// Runs the query and prints the table.
pub fn run(args: &SqlArgs) -> Result<()> {
    println!("{}", query_table(args)?);
    Ok(())
}
