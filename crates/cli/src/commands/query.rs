//! `tessera query …`: continuous queries registered once, run by every site on its own motors.

use anyhow::Result;
use clap::Subcommand;
use tessera_node::control::{check_query, status_error};
use tessera_proto::raft as pb;

use crate::args::AdminArgs;
use crate::output::{OutputArgs, OutputFormat, Rows, utc, written};

/// `tessera query …`
#[derive(Subcommand, Debug)]
#[allow(missing_docs)] // variant fields are documented by their flags' help
pub enum QueryCommand {
    /// Register (or replace) a continuous query cluster-wide: every node configured with
    /// `[control] admin` runs it (read at the node's start).
    Register {
        #[command(flatten)]
        admin: AdminArgs,
        /// Its name.
        name: String,
        /// Its SQL.
        sql: String,
    },
    /// The registered queries.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Drop a query.
    Drop {
        #[command(flatten)]
        admin: AdminArgs,
        /// Its name.
        name: String,
    },
}

/// Runs a `tessera query` command.
pub fn run(command: QueryCommand) -> Result<()> {
    crate::runtime()?.block_on(query(command))
}

async fn query(command: QueryCommand) -> Result<()> {
    match command {
        QueryCommand::Register { admin, name, sql } => {
            check_query(&name, &sql)?;
            let req = pb::RegisterQueryRequest { name: name.clone(), sql, actor: admin.actor() };
            let reply = admin.client().await?.register_query(req).await.map_err(|s| status_error(&admin.at, s))?;
            written(&format!("query {name}"), reply.into_inner())?;
        }
        QueryCommand::List { admin, output } => {
            let reply = admin
                .client()
                .await?
                .list_queries(pb::ListQueriesRequest {})
                .await
                .map_err(|s| status_error(&admin.at, s))?;
            let queries = reply.into_inner().queries;
            if queries.is_empty() && output.output == OutputFormat::Table {
                println!("no queries registered");
                return Ok(());
            }
            let mut rows = Rows::new(&["name", "version", "registered_by", "registered_at", "sql"]);
            for q in queries {
                rows.push(vec![
                    q.name.into(),
                    q.version.into(),
                    q.registered_by.into(),
                    utc(q.registered_at_ms).into(),
                    q.sql.into(),
                ]);
            }
            rows.print(output.output)?;
        }
        QueryCommand::Drop { admin, name } => {
            let req = pb::DropQueryRequest { name: name.clone(), actor: admin.actor() };
            let reply = admin.client().await?.drop_query(req).await.map_err(|s| status_error(&admin.at, s))?;
            written(&format!("drop query {name}"), reply.into_inner())?;
        }
    }
    Ok(())
}
