//! Where a node records what people do about alerts, and reads what the control plane knows
//! for the console's cluster page: through its own Raft member when it runs one, else through
//! the admin API of `[control] admin` (a node of a site with several pods, only some of which
//! are members). Either way the acknowledgement is a Raft command in the audit log, and every
//! node of every site reads it back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_consensus::{AlertDesk, Command, DeskError, Outcome};
use tessera_proto::raft as pb;
use tessera_tls::ClientTls;
use tokio::sync::Mutex;

/// An acknowledgement as the control plane holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckEntry {
    /// Who (the user and the node they signed in at).
    pub by: String,
    /// When (ms since the Unix epoch).
    pub at_ms: i64,
    /// Why.
    pub note: String,
    /// Silenced until (ms since the Unix epoch), if silenced.
    pub silence_until_ms: Option<i64>,
}

/// The control plane's view for the cluster page.
#[derive(Debug, Clone, Default)]
pub struct ControlView {
    /// `(site, name, motors)`.
    pub sites: Vec<(String, String, usize)>,
    /// `(id, site, address, voter)` of every member.
    pub members: Vec<(u64, String, String, bool)>,
    /// The term, as the answering member sees it.
    pub term: Option<u64>,
    /// The leader, as the answering member sees it.
    pub leader: Option<u64>,
}

/// How long a remote read serves every console before it is made again.
const REMOTE_FRESH: Duration = Duration::from_millis(500);

/// A node's way to the control plane for the console and the API.
#[derive(Clone)]
pub enum Desk {
    /// The node's own Raft member.
    Member(AlertDesk),
    /// The admin API of another node (`[control] admin`).
    Remote(Arc<Remote>),
}

/// The admin API of another node, with the last reads shared by every console for
/// [`REMOTE_FRESH`].
pub struct Remote {
    admin: String,
    tls: ClientTls,
    timeout: Duration,
    /// Who this node says it is, without TLS (with it, its certificate says).
    actor: String,
    /// The connection, kept while it works.
    connection: Mutex<Option<AdminClient>>,
    acks: Mutex<Option<(Instant, BTreeMap<String, AckEntry>)>>,
    view: Mutex<Option<(Instant, ControlView)>>,
}

type AdminClient = tessera_proto::raft::cluster_admin_client::ClusterAdminClient<tonic::transport::Channel>;

impl Desk {
    /// Through the admin API at `admin`, as a node of `site`.
    pub fn remote(admin: &str, tls: ClientTls, timeout: Duration, site: &str) -> Self {
        Desk::Remote(Arc::new(Remote {
            admin: admin.to_string(),
            tls,
            timeout,
            actor: format!("a node of site {site}"),
            connection: Mutex::new(None),
            acks: Mutex::new(None),
            view: Mutex::new(None),
        }))
    }

    /// Records `command` (an acknowledgement) for `user`.
    pub async fn record(&self, user: &str, command: Command) -> Result<Outcome, DeskError> {
        match self {
            Desk::Member(desk) => desk.record(user, command).await,
            Desk::Remote(remote) => {
                let Command::AcknowledgeAlert { alert, motor, site, note, silence_until_ms } = command else {
                    return Err(DeskError::Refused("only alert acknowledgements go through the alert desk".into()));
                };
                let request = pb::AcknowledgeAlertRequest {
                    alert,
                    motor: motor.to_string(),
                    site: site.to_string(),
                    note,
                    silence_until_ms,
                    user: user.to_string(),
                    actor: remote.actor.clone(),
                };
                let mut client = remote.client().await?;
                let reply = client.acknowledge_alert(request).await.map_err(refusal)?.into_inner();
                *remote.acks.lock().await = None;
                Ok(if reply.rejected.is_empty() { Outcome::Applied } else { Outcome::Rejected(reply.rejected) })
            }
        }
    }

    /// Every acknowledgement, by alert id.
    pub async fn acks(&self) -> Result<BTreeMap<String, AckEntry>, DeskError> {
        match self {
            Desk::Member(desk) => Ok(desk.registry().with(|applied| {
                applied
                    .registry
                    .acks
                    .iter()
                    .map(|(alert, a)| {
                        let entry = AckEntry {
                            by: a.by.clone(),
                            at_ms: a.at_ms,
                            note: a.note.clone(),
                            silence_until_ms: a.silence_until_ms,
                        };
                        (alert.clone(), entry)
                    })
                    .collect()
            })),
            Desk::Remote(remote) => {
                let mut cached = remote.acks.lock().await;
                if let Some((at, acks)) = cached.as_ref()
                    && at.elapsed() < REMOTE_FRESH
                {
                    return Ok(acks.clone());
                }
                let mut client = remote.client().await?;
                let list = client
                    .list_acknowledgements(pb::ListAcknowledgementsRequest {})
                    .await
                    .map_err(refusal)?
                    .into_inner()
                    .acknowledgements;
                let acks: BTreeMap<String, AckEntry> = list
                    .into_iter()
                    .map(|a| {
                        let entry =
                            AckEntry { by: a.by, at_ms: a.at_ms, note: a.note, silence_until_ms: a.silence_until_ms };
                        (a.alert, entry)
                    })
                    .collect();
                *cached = Some((Instant::now(), acks.clone()));
                Ok(acks)
            }
        }
    }

    /// Sites, members, term and leader.
    pub async fn control_view(&self) -> Result<ControlView, DeskError> {
        match self {
            Desk::Member(desk) => {
                let status = desk.status();
                Ok(desk.registry().with(|applied| {
                    let reg = &applied.registry;
                    let membership = applied.membership.membership();
                    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
                    ControlView {
                        sites: reg
                            .sites
                            .iter()
                            .map(|(id, s)| (id.to_string(), s.name.clone(), reg.motors_of(id).count()))
                            .collect(),
                        members: membership
                            .nodes()
                            .map(|(id, m)| (*id, m.site.clone(), m.addr.clone(), voters.contains(id)))
                            .collect(),
                        term: Some(status.term),
                        leader: status.leader,
                    }
                }))
            }
            Desk::Remote(remote) => {
                let mut cached = remote.view.lock().await;
                if let Some((at, view)) = cached.as_ref()
                    && at.elapsed() < REMOTE_FRESH
                {
                    return Ok(view.clone());
                }
                let mut client = remote.client().await?;
                let status = client.status(pb::StatusRequest {}).await.map_err(refusal)?.into_inner();
                let sites = client.list_sites(pb::ListSitesRequest {}).await.map_err(refusal)?.into_inner().sites;
                let member = |n: pb::NodeSpec, voter: bool| (n.id, n.site, n.addr, voter);
                let view = ControlView {
                    sites: sites.into_iter().map(|s| (s.site, s.name, s.motors as usize)).collect(),
                    members: status
                        .voters
                        .into_iter()
                        .map(|n| member(n, true))
                        .chain(status.learners.into_iter().map(|n| member(n, false)))
                        .collect(),
                    term: Some(status.term),
                    leader: status.leader_id,
                };
                *cached = Some((Instant::now(), view.clone()));
                Ok(view)
            }
        }
    }
}

impl Remote {
    /// A client of the admin API (the kept connection, else a new one; tonic reconnects a
    /// kept channel by itself when the node comes back).
    async fn client(&self) -> Result<AdminClient, DeskError> {
        let mut kept = self.connection.lock().await;
        if let Some(client) = kept.as_ref() {
            return Ok(client.clone());
        }
        let client = super::admin_client(&self.admin, &self.tls, self.timeout)
            .await
            .map_err(|e| DeskError::Unavailable(format!("the control plane at {}: {e}", self.admin)))?;
        *kept = Some(client.clone());
        Ok(client)
    }
}

/// A refusal from the admin API as the desk's error.
fn refusal(status: tonic::Status) -> DeskError {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => DeskError::Unavailable(status.message().into()),
        _ => DeskError::Refused(status.message().into()),
    }
}

/// Keeps `notifier`'s silences those of the control plane, read through `desk` every `every`
/// (while it cannot be read, the silences known last stay).
pub async fn keep_silences(desk: Desk, notifier: crate::notify::Notifier, every: Duration) {
    let mut failing = false;
    loop {
        match desk.acks().await {
            Ok(acks) => {
                failing = false;
                let now = tessera_core::now_ms();
                let silences = acks
                    .into_iter()
                    .filter_map(|(alert, a)| {
                        a.silence_until_ms.filter(|until| *until > now).map(|until| (alert, until))
                    })
                    .collect();
                notifier.set_silences(silences);
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "alert silences cannot be read; the last known stay");
            }
            Err(_) => {}
        }
        tokio::time::sleep(every).await;
    }
}
