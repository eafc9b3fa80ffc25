//! `tessera cluster …`: membership, status, sites, motors, policies, grades, releases and the
//! audit log, through any control-plane node's admin API (`--at`, or `TESSERA__CLIENT__ADMIN`).

use anyhow::Result;
use clap::Subcommand;
use tessera_node::control::{parse_node_spec, status_error};
use tessera_proto::raft as pb;

use crate::args::{AdminArgs, ReadArgs};
use crate::output::{Cell, OutputArgs, OutputFormat, Rows, opt, print_membership, utc, written};

/// `tessera cluster …`
#[derive(Subcommand, Debug)]
#[allow(missing_docs)] // variant fields are documented by their flags' help
pub enum ClusterCommand {
    /// Make the given nodes the cluster's first members (run once, against one of them): a
    /// bounded set of them (3–7, spread over sites) votes, the rest are learners.
    Init {
        #[command(flatten)]
        admin: AdminArgs,
        /// A member, as ID=SITE@HOST:PORT (repeat; each site should run at least one).
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
    },
    /// Add a node as a learner; once caught up, the leader promotes it if the voter set needs
    /// it (a site without a voter, a down voter to replace).
    AddNode {
        #[command(flatten)]
        admin: AdminArgs,
        /// The node, as ID=SITE@HOST:PORT.
        node: String,
        /// Never let it vote (the voter policy then excludes it).
        #[arg(long)]
        learner_only: bool,
    },
    /// Remove a node from the cluster (a voter is first replaced by a healthy learner; refused
    /// if fewer than 3 voters would remain).
    RemoveNode {
        #[command(flatten)]
        admin: AdminArgs,
        /// Its Raft id.
        id: u64,
    },
    /// Who votes: every member's role, and the voter policy.
    Voters {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        read: ReadArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Set the voter policy (it replaces the one before): how many members vote, and members
    /// that always (when healthy) or never vote. The leader rebalances the voters to it.
    SetVoters {
        #[command(flatten)]
        admin: AdminArgs,
        /// How many voters: 3, 5 or 7 (fewer while fewer members are healthy).
        #[arg(long, default_value_t = 5)]
        target: u32,
        /// A member that votes whenever it is healthy (repeat).
        #[arg(long = "pin")]
        pinned: Vec<u64>,
        /// A member that never votes (repeat).
        #[arg(long = "exclude")]
        excluded: Vec<u64>,
    },
    /// The node's view of the cluster.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Sites with their motor counts and nodes.
    Sites {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        read: ReadArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Add (or rename) a site.
    AddSite {
        #[command(flatten)]
        admin: AdminArgs,
        /// Its id.
        site: String,
        /// Its name.
        name: String,
    },
    /// Make a site the owner of motors.
    AssignMotors {
        #[command(flatten)]
        admin: AdminArgs,
        /// The site.
        site: String,
        /// Motor ids.
        #[arg(required = true)]
        motors: Vec<String>,
    },
    /// Define a plant's own machine class by its vibration zone boundaries (ISO 20816's zones
    /// A–D; the ISO classes I–IV are built in).
    DefineMachineClass {
        #[command(flatten)]
        admin: AdminArgs,
        /// Its name.
        class: String,
        /// The A/B, B/C and C/D boundaries, velocity RMS in mm/s, rising (e.g. 1.4 3.5 9).
        #[arg(num_args = 3, required = true)]
        boundaries_mm_s: Vec<f64>,
    },
    /// Give motors a machine class (I, II, III, IV or a defined one): the vibration zones the
    /// wear judge uses for them.
    SetMachineClass {
        #[command(flatten)]
        admin: AdminArgs,
        /// The class; `default` gives the motors back to the node's configured class.
        class: String,
        /// Motor ids.
        #[arg(required = true)]
        motors: Vec<String>,
    },
    /// Set a data grade's rule for one stage.
    SetPolicy {
        #[command(flatten)]
        admin: AdminArgs,
        /// general | important | core
        grade: String,
        /// generation | transmission | storage | use | migration | destruction
        stage: String,
        /// The rule.
        rule: String,
    },
    /// Grade a stream's default or one of its columns cluster-wide (nodes raise their config's
    /// grades to it, never lower them).
    SetGrade {
        #[command(flatten)]
        admin: AdminArgs,
        /// The stream (telemetry, motor_windows, alerts, late_events, ...).
        stream: String,
        /// general | important | core
        grade: String,
        /// The column; without it, the stream's default.
        #[arg(long)]
        column: Option<String>,
    },
    /// Ask for an export bundle's key to be released to a target site once `k` of its
    /// custodian sites approve.
    RequestRelease {
        #[command(flatten)]
        admin: AdminArgs,
        /// The export's id.
        bundle: String,
        /// The site whose data it holds.
        #[arg(long)]
        source: String,
        /// The site that will import it.
        #[arg(long)]
        target: String,
        /// Approvals needed (at least 2).
        #[arg(long)]
        k: u32,
        /// A site holding a share (repeat).
        #[arg(long = "custodian", required = true)]
        custodians: Vec<String>,
    },
    /// Approve a release for a custodian site (over mTLS: with a node certificate of that site).
    ApproveRelease {
        #[command(flatten)]
        admin: AdminArgs,
        /// The export's id.
        bundle: String,
        /// The approving site.
        #[arg(long)]
        site: String,
    },
    /// Release requests and their approvals.
    Releases {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        read: ReadArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// The grades set cluster-wide.
    Grades {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        read: ReadArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// The audit log: who did what, when.
    Audit {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        read: ReadArgs,
        #[command(flatten)]
        output: OutputArgs,
        /// From this log index on.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// At most this many records.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Fault injection (nodes started with --fault-injection only): cut the node off from these
    /// nodes' Raft traffic; none heals it.
    Partition {
        #[command(flatten)]
        admin: AdminArgs,
        /// Node ids to cut off from.
        blocked: Vec<u64>,
    },
}

/// Runs a `tessera cluster` command.
pub fn run(command: ClusterCommand) -> anyhow::Result<()> {
    crate::runtime()?.block_on(cluster(command))
}

async fn cluster(command: ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Init { admin, nodes } => {
            let nodes = nodes.iter().map(|n| parse_node_spec(n)).collect::<Result<Vec<_>, _>>()?;
            let reply = admin.client().await?.init(pb::InitRequest { nodes, actor: admin.actor() }).await;
            print_membership(&reply.map_err(|s| status_error(&admin.at, s))?.into_inner());
        }
        ClusterCommand::AddNode { admin, node, learner_only } => {
            let node = Some(parse_node_spec(&node)?);
            let reply =
                admin.client().await?.add_node(pb::AddNodeRequest { node, learner_only, actor: admin.actor() }).await;
            print_membership(&reply.map_err(|s| status_error(&admin.at, s))?.into_inner());
        }
        ClusterCommand::RemoveNode { admin, id } => {
            let reply = admin.client().await?.remove_node(pb::RemoveNodeRequest { id, actor: admin.actor() }).await;
            print_membership(&reply.map_err(|s| status_error(&admin.at, s))?.into_inner());
        }
        ClusterCommand::Voters { admin, read, output } => {
            let mut client = admin.client().await?;
            let status =
                client.status(pb::StatusRequest {}).await.map_err(|s| status_error(&admin.at, s))?.into_inner();
            let policy = client
                .get_voter_policy(read.request(pb::GetVoterPolicyRequest {}))
                .await
                .map_err(|s| status_error(&admin.at, s))?;
            read.note(&policy);
            let policy = policy.into_inner();
            let mut rows = Rows::new(&["node_id", "site", "addr", "role", "policy"]);
            let roles =
                status.voters.iter().map(|n| (n, "voter")).chain(status.learners.iter().map(|n| (n, "learner")));
            let mut members: Vec<_> = roles.collect();
            members.sort_by_key(|(n, _)| n.id);
            for (n, role) in members {
                let say = if policy.pinned.contains(&n.id) {
                    Cell::from("pinned")
                } else if policy.excluded.contains(&n.id) {
                    Cell::from("excluded")
                } else {
                    Cell::Null
                };
                rows.push(vec![n.id.into(), n.site.clone().into(), n.addr.clone().into(), role.into(), say]);
            }
            if output.output == OutputFormat::Table {
                println!("target: {} voters ({} now)", policy.target, status.voters.len());
            }
            rows.print(output.output)?;
        }
        ClusterCommand::SetVoters { admin, target, pinned, excluded } => {
            let policy = Some(pb::VoterPolicy { target, pinned, excluded });
            let req = pb::SetVoterPolicyRequest { policy, actor: admin.actor() };
            let reply = admin.client().await?.set_voter_policy(req).await.map_err(|s| status_error(&admin.at, s))?;
            written("voter policy", reply.into_inner())?;
        }
        ClusterCommand::Status { admin, output } => {
            let s = admin
                .client()
                .await?
                .status(pb::StatusRequest {})
                .await
                .map_err(|s| status_error(&admin.at, s))?
                .into_inner();
            if output.output != OutputFormat::Table {
                let nodes = |nodes: &[pb::NodeSpec]| {
                    nodes.iter().map(|n| format!("{}={}@{}", n.id, n.site, n.addr)).collect::<Vec<_>>().join(" ")
                };
                let mut rows = Rows::new(&[
                    "node_id",
                    "role",
                    "term",
                    "leader_id",
                    "leader_addr",
                    "last_log_index",
                    "applied_index",
                    "snapshot_index",
                    "purged_index",
                    "voters",
                    "learners",
                    "sites",
                    "motors",
                    "queries",
                    "audit_records",
                ]);
                rows.push(vec![
                    s.node_id.into(),
                    s.role.clone().into(),
                    s.term.into(),
                    s.leader_id.into(),
                    s.leader_id.map(|_| s.leader_addr.clone()).into(),
                    s.last_log_index.into(),
                    s.applied_index.into(),
                    s.snapshot_index.into(),
                    s.purged_index.into(),
                    nodes(&s.voters).into(),
                    nodes(&s.learners).into(),
                    s.sites.into(),
                    s.motors.into(),
                    s.queries.into(),
                    s.audit_records.into(),
                ]);
                return rows.print(output.output);
            }
            println!("node {}: {} in term {}", s.node_id, s.role, s.term);
            match s.leader_id {
                Some(id) => println!("leader: {id} at {}", s.leader_addr),
                None => println!("leader: none known"),
            }
            println!(
                "log: last {}, applied {}, snapshot {}, purged {}",
                opt(s.last_log_index),
                opt(s.applied_index),
                opt(s.snapshot_index),
                opt(s.purged_index)
            );
            print_membership(&pb::MembershipResponse { voters: s.voters, learners: s.learners, log_index: 0 });
            println!(
                "registry: {} sites, {} motors, {} queries, {} audit records",
                s.sites, s.motors, s.queries, s.audit_records
            );
        }
        ClusterCommand::Sites { admin, read, output } => {
            let reply = admin
                .client()
                .await?
                .list_sites(read.request(pb::ListSitesRequest {}))
                .await
                .map_err(|s| status_error(&admin.at, s))?;
            read.note(&reply);
            let mut rows = Rows::new(&["site", "name", "motors", "nodes"]);
            for site in reply.into_inner().sites {
                let nodes = site.nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" ");
                rows.push(vec![site.site.into(), site.name.into(), site.motors.into(), nodes.into()]);
            }
            rows.print(output.output)?;
        }
        ClusterCommand::AddSite { admin, site, name } => {
            let req = pb::AddSiteRequest { site: site.clone(), name, actor: admin.actor() };
            let reply = admin.client().await?.add_site(req).await.map_err(|s| status_error(&admin.at, s))?;
            written(&format!("site {site}"), reply.into_inner())?;
        }
        ClusterCommand::AssignMotors { admin, site, motors } => {
            let n = motors.len();
            let req = pb::AssignMotorsRequest { site: site.clone(), motors, actor: admin.actor() };
            let reply = admin.client().await?.assign_motors(req).await.map_err(|s| status_error(&admin.at, s))?;
            written(&format!("{n} motors to {site}"), reply.into_inner())?;
        }
        ClusterCommand::DefineMachineClass { admin, class, boundaries_mm_s } => {
            let req = pb::DefineMachineClassRequest { class: class.clone(), boundaries_mm_s, actor: admin.actor() };
            let reply =
                admin.client().await?.define_machine_class(req).await.map_err(|s| status_error(&admin.at, s))?;
            written(&format!("machine class {class}"), reply.into_inner())?;
        }
        ClusterCommand::SetMachineClass { admin, class, motors } => {
            let n = motors.len();
            let class = if class == "default" { String::new() } else { class };
            let what = format!("{n} motors' machine class");
            let req = pb::SetMachineClassRequest { motors, class, actor: admin.actor() };
            let reply = admin.client().await?.set_machine_class(req).await.map_err(|s| status_error(&admin.at, s))?;
            written(&what, reply.into_inner())?;
        }
        ClusterCommand::SetPolicy { admin, grade, stage, rule } => {
            let req = pb::SetPolicyRequest { grade: grade.clone(), stage: stage.clone(), rule, actor: admin.actor() };
            let reply = admin.client().await?.set_policy(req).await.map_err(|s| status_error(&admin.at, s))?;
            written(&format!("policy {grade}/{stage}"), reply.into_inner())?;
        }
        ClusterCommand::SetGrade { admin, stream, grade, column } => {
            let what = format!("grade of {stream}.{}", column.as_deref().unwrap_or("*"));
            let req = pb::SetGradeRequest { stream, column: column.unwrap_or_default(), grade, actor: admin.actor() };
            let reply = admin.client().await?.set_grade(req).await.map_err(|s| status_error(&admin.at, s))?;
            written(&what, reply.into_inner())?;
        }
        ClusterCommand::RequestRelease { admin, bundle, source, target, k, custodians } => {
            let what = format!("release request for bundle {bundle}");
            let req = pb::RequestReleaseRequest { bundle, source, target, k, custodians, actor: admin.actor() };
            let reply = admin.client().await?.request_release(req).await.map_err(|s| status_error(&admin.at, s))?;
            written(&what, reply.into_inner())?;
        }
        ClusterCommand::ApproveRelease { admin, bundle, site } => {
            let what = format!("approval of bundle {bundle} by {site}");
            let req = pb::ApproveReleaseRequest { bundle, site, actor: admin.actor() };
            let reply = admin.client().await?.approve_release(req).await.map_err(|s| status_error(&admin.at, s))?;
            written(&what, reply.into_inner())?;
        }
        ClusterCommand::Releases { admin, read, output } => {
            let reply = admin
                .client()
                .await?
                .list_releases(read.request(pb::ListReleasesRequest {}))
                .await
                .map_err(|s| status_error(&admin.at, s))?;
            read.note(&reply);
            let mut rows =
                Rows::new(&["bundle", "source", "target", "state", "approvals", "k", "approved_by", "custodians"]);
            for r in reply.into_inner().releases {
                let state = if r.released { "released" } else { "pending" };
                rows.push(vec![
                    r.bundle.into(),
                    r.source.into(),
                    r.target.into(),
                    state.into(),
                    (r.approvals.len() as u64).into(),
                    u64::from(r.k).into(),
                    r.approvals.join(" ").into(),
                    r.custodians.join(" ").into(),
                ]);
            }
            rows.print(output.output)?;
        }
        ClusterCommand::Grades { admin, read, output } => {
            let reply = admin
                .client()
                .await?
                .list_grades(read.request(pb::ListGradesRequest {}))
                .await
                .map_err(|s| status_error(&admin.at, s))?;
            read.note(&reply);
            let mut rows = Rows::new(&["stream", "column", "grade", "set_by", "set_at"]);
            for g in reply.into_inner().grades {
                let column = if g.column.is_empty() { "*".to_string() } else { g.column };
                rows.push(vec![
                    g.stream.into(),
                    column.into(),
                    g.grade.into(),
                    g.set_by.into(),
                    utc(g.set_at_ms).into(),
                ]);
            }
            rows.print(output.output)?;
        }
        ClusterCommand::Audit { admin, read, output, from, limit } => {
            let req = read.request(pb::ListAuditRequest { from_index: from, limit });
            let reply = admin.client().await?.list_audit(req).await.map_err(|s| status_error(&admin.at, s))?;
            read.note(&reply);
            let mut rows = Rows::new(&["index", "at", "actor", "action", "refused"]);
            for e in reply.into_inner().entries {
                let refused = Cell::from((!e.rejected.is_empty()).then_some(e.rejected));
                rows.push(vec![e.index.into(), utc(e.at_ms).into(), e.actor.into(), e.action.into(), refused]);
            }
            rows.print(output.output)?;
        }
        ClusterCommand::Partition { admin, blocked } => {
            let req = pb::SetPartitionRequest { blocked: blocked.clone() };
            admin.client().await?.set_partition(req).await.map_err(|s| status_error(&admin.at, s))?;
            println!("node at {}: cut off from {blocked:?}", admin.at);
        }
    }
    Ok(())
}
