//! What the JSON API ([`crate::api`]) and the web console ([`crate::console`]) show: the fleet,
//! one motor, the open alerts and the cluster, each gathered the same way for both.
//!
//! Every view of data is a SQL query run as the caller through the Flight SQL endpoint
//! ([`FlightSqlEndpoint::query`]): released by the grade rules, federated over the sites
//! (the `fleet` schema), within the query limits, audited. So a fleet analyst sees through
//! the console exactly what SQL lets them see, and a site operator their site. What the
//! control plane holds (acknowledgements, sites, nodes, the leader) comes from this node's
//! applied registry, and this node's own counters from its [`NodeProbe`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};
use tessera_consensus::{Command, DeskError, Outcome};
use tessera_sql::service::FlightSqlEndpoint;
use tessera_sql::{Identity, Role};

use crate::control::desk::{AckEntry, Desk};
use crate::observe::NodeProbe;

/// A motor's statuses, worst first (the order every view sorts by).
pub const STATUSES: [&str; 5] = ["critical", "silent", "warning", "watch", "healthy"];

/// How far back the motor view's charts reach: a day, drawn as the last hour and the day.
const DAY_MS: i64 = 24 * 3600 * 1000;
/// Most windows the motor view reads per query (a day of 10 s windows is 8,640).
const MAX_WINDOWS: usize = 20_000;
/// Most raw readings the motor view lists.
const MAX_READINGS: usize = 20;
/// Most alert events of one motor the motor view lists.
const MAX_MOTOR_ALERTS: usize = 200;
/// Longest note on an acknowledgement, in bytes (the control plane's own limit).
pub const MAX_NOTE_BYTES: usize = tessera_consensus::types::MAX_NOTE_BYTES;
/// Longest silence, in minutes (a week).
pub const MAX_SILENCE_MINUTES: u64 = 7 * 24 * 60;

/// Why a view could not be made: an HTTP status and a message for the person.
#[derive(Debug)]
pub struct ViewError {
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, readable.
    pub message: String,
}

impl ViewError {
    /// A caller's mistake (400).
    pub fn bad_request(message: impl Into<String>) -> Self {
        ViewError { status: 400, message: message.into() }
    }

    fn internal(message: impl std::fmt::Display) -> Self {
        ViewError { status: 500, message: message.to_string() }
    }
}

impl From<tonic::Status> for ViewError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let status = match s.code() {
            Code::Unauthenticated => 401,
            Code::PermissionDenied => 403,
            Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition => 400,
            Code::ResourceExhausted => 429,
            Code::Unavailable | Code::DeadlineExceeded => 503,
            _ => 500,
        };
        ViewError { status, message: s.message().to_string() }
    }
}

impl From<tessera_sql::SqlError> for ViewError {
    fn from(e: tessera_sql::SqlError) -> Self {
        tonic::Status::from(e).into()
    }
}

/// One motor's row of the `motor_health` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MotorRow {
    /// The motor.
    pub motor_id: String,
    /// Its site.
    pub site_id: String,
    /// healthy / watch / warning / critical / silent.
    pub status: String,
    /// The query behind the status's score (the score itself is `important`: see
    /// [`MotorView::scores`]).
    #[serde(default)]
    pub score_query: Option<String>,
    /// Why, in words (the channels responsible).
    #[serde(default)]
    pub reasons: String,
    /// Alerts open on it.
    #[serde(default)]
    pub alerts_open: u32,
    /// Its newest reading's time.
    #[serde(default)]
    pub last_reading: Option<String>,
}

/// Motors per status, worst first, with the total.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// `(status, motors)` for every status, worst first.
    pub by_status: Vec<(String, usize)>,
    /// All motors.
    pub total: usize,
}

impl Counts {
    fn of<'a>(rows: impl Iterator<Item = &'a MotorRow>) -> Self {
        let mut n = [0usize; STATUSES.len()];
        let mut total = 0;
        for r in rows {
            total += 1;
            if let Some(i) = STATUSES.iter().position(|s| *s == r.status) {
                n[i] += 1;
            }
        }
        Counts { by_status: STATUSES.iter().zip(n).map(|(s, n)| (s.to_string(), n)).collect(), total }
    }
}

/// Which motors the fleet view shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetFilter {
    /// Only this site's.
    pub site: Option<String>,
    /// Only those with this status.
    pub status: Option<String>,
    /// Only those whose id, site or reasons contain this text (case-insensitive).
    pub text: Option<String>,
}

impl FleetFilter {
    /// The filter from a query string (`site`, `status`, `q`); an unknown key or status is an
    /// error that names it.
    pub fn parse(query: &str) -> Result<Self, ViewError> {
        let mut f = FleetFilter::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let value = value.trim().to_string();
            let value = (!value.is_empty()).then_some(value);
            match key.as_ref() {
                "site" => f.site = value,
                "status" => f.status = value,
                "q" => f.text = value,
                other => return Err(ViewError::bad_request(format!("unknown parameter {other:?} (site, status, q)"))),
            }
        }
        if let Some(site) = &f.site {
            tessera_core::SiteId::new(site.clone()).map_err(|e| ViewError::bad_request(format!("site: {e}")))?;
        }
        if let Some(status) = &f.status
            && !STATUSES.contains(&status.as_str())
        {
            return Err(ViewError::bad_request(format!("status: {status:?} is not one of {}", STATUSES.join(", "))));
        }
        Ok(f)
    }

    fn keeps(&self, r: &MotorRow) -> bool {
        let text = self.text.as_deref().map(str::to_lowercase);
        self.status.as_deref().is_none_or(|s| s == r.status)
            && text
                .as_deref()
                .is_none_or(|t| [&r.motor_id, &r.site_id, &r.reasons].iter().any(|v| v.to_lowercase().contains(t)))
    }
}

/// The fleet: every motor the caller may see, worst first, and the counts.
#[derive(Debug, Clone, Serialize)]
pub struct FleetView {
    /// The motors the filter keeps, worst first (then by site and id).
    pub motors: Vec<MotorRow>,
    /// Counts over every motor the caller may see, per site (before the status and text
    /// filters, so the page can say what the filter hides).
    pub sites: BTreeMap<String, Counts>,
    /// Counts over every site.
    pub all: Counts,
    /// The filter the motors were chosen by.
    pub filter: FleetFilter,
}

/// One window of one query on the motor view's charts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowPoint {
    /// The query.
    pub query: String,
    /// The window's start.
    pub window_start: String,
    /// Its score, if any.
    #[serde(default)]
    pub score: Option<f64>,
    /// The features the query computed (the window's aggregates).
    #[serde(default)]
    pub features: BTreeMap<String, Option<f64>>,
}

#[derive(Deserialize)]
struct Scores {
    #[serde(default)]
    score: Option<f64>,
    #[serde(default)]
    time_to_threshold_s: Option<f64>,
}

/// An alert as the views list it: its newest event, and its acknowledgement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertRow {
    /// Its id.
    pub alert_id: String,
    /// The query that raised it.
    pub query: String,
    /// The motor.
    pub motor_id: String,
    /// Its site.
    pub site_id: String,
    /// open / update / close (its newest event).
    pub state: String,
    /// Its severity.
    pub severity: String,
    /// The newest window's score.
    #[serde(default)]
    pub score: Option<f64>,
    /// The highest score while open.
    pub peak_score: f64,
    /// When the first window above threshold started.
    pub opened_window_start: String,
    /// The newest event's time.
    pub emitted_at: String,
    /// Who acknowledged it, when, why, and until when it is silenced.
    #[serde(default, skip_deserializing)]
    pub acknowledged: Option<Ack>,
}

/// An acknowledgement as the views show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ack {
    /// Who (the user and the node they signed in at).
    pub by: String,
    /// When (ms since the Unix epoch).
    pub at_ms: i64,
    /// Why.
    pub note: String,
    /// Silenced until (ms since the Unix epoch), if silenced.
    pub silence_until_ms: Option<i64>,
}

impl From<&AckEntry> for Ack {
    fn from(a: &AckEntry) -> Self {
        Ack { by: a.by.clone(), at_ms: a.at_ms, note: a.note.clone(), silence_until_ms: a.silence_until_ms }
    }
}

/// One motor: its health, its windows over the last day, its alerts.
#[derive(Debug, Clone, Serialize)]
pub struct MotorView {
    /// Its `motor_health` row (the general columns, as anyone who may see the motor sees them).
    pub health: MotorRow,
    /// Its score and estimated time to threshold (`important`), where the caller may read
    /// them: at the motor's own site, for its operators and admins.
    pub scores: Option<(Option<f64>, Option<f64>)>,
    /// Its newest raw readings (`SELECT` of the telemetry channels), or why the caller sees
    /// none (the grade rules' refusal, or the motor being another site's).
    pub readings: Result<Vec<serde_json::Map<String, serde_json::Value>>, String>,
    /// Its windows of the last day (relative to its newest window), oldest first.
    pub windows: Vec<WindowPoint>,
    /// Its alerts (newest event of each), newest first.
    pub alerts: Vec<AlertRow>,
}

/// A node of the cluster as the cluster view lists it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRow {
    /// Its Raft id.
    pub id: u64,
    /// Its site.
    pub site: String,
    /// Its gRPC address.
    pub addr: String,
    /// Whether it votes (else a learner).
    pub voter: bool,
    /// Whether it leads.
    pub leader: bool,
}

/// The cluster as this node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// This node's site.
    pub site: String,
    /// This node's Raft id, if it runs a member.
    pub node_id: Option<u64>,
    /// The Raft term.
    pub term: Option<u64>,
    /// The leader, if known.
    pub leader: Option<u64>,
    /// Sites by id, with their names and motors.
    pub sites: Vec<(String, String, usize)>,
    /// The control plane's members.
    pub nodes: Vec<NodeRow>,
    /// Why the control plane could not be read, if it could not.
    pub control_error: Option<String>,
    /// This node's consumer lag (messages behind the high watermarks).
    pub consumer_lag: u64,
    /// This node's ingest rate (readings/s since the previous look; `None` the first time).
    pub ingest_rate: Option<f64>,
    /// Readings accepted and rejected here since the start.
    pub readings_accepted: u64,
    /// See `readings_accepted`.
    pub readings_rejected: u64,
    /// Alerts open at this node.
    pub alerts_open: u64,
    /// Kafka partitions this node holds.
    pub partitions_owned: u64,
    /// Why this node is not ready (`None`: ready).
    pub not_ready: Option<String>,
}

/// The views of one node, for every caller.
pub struct Views {
    sql: Arc<FlightSqlEndpoint>,
    desk: Option<Desk>,
    probe: NodeProbe,
    /// The previous ingest look: (time ms, readings accepted).
    last_ingest: Mutex<Option<(i64, u64)>>,
}

/// A string as a SQL literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Batches as rows of `T` (through Arrow's JSON writer, the same encoding the API sends).
fn rows<T: for<'de> Deserialize<'de>>(batches: &[RecordBatch]) -> Result<Vec<T>, ViewError> {
    serde_json::from_slice(&json_array(batches)?).map_err(ViewError::internal)
}

/// Batches as a JSON array of row objects.
pub fn json_array(batches: &[RecordBatch]) -> Result<Vec<u8>, ViewError> {
    let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    writer.write_batches(&refs).map_err(ViewError::internal)?;
    writer.finish().map_err(ViewError::internal)?;
    let body = writer.into_inner();
    Ok(if body.is_empty() { b"[]".to_vec() } else { body })
}

/// Milliseconds since the Unix epoch of an RFC 3339 time as the JSON writer writes it.
pub fn time_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .or_else(|| chrono::DateTime::parse_from_rfc3339(&format!("{text}Z")).ok())
        .map(|t| t.timestamp_millis())
}

impl Views {
    /// The views answered through `sql`, recording acknowledgements through `desk` (a node
    /// without a Raft member cannot), with this node's counters from `probe`.
    pub fn new(sql: Arc<FlightSqlEndpoint>, desk: Option<Desk>, probe: NodeProbe) -> Self {
        Views { sql, desk, probe, last_ingest: Mutex::new(None) }
    }

    /// The SQL endpoint (for signing in and out).
    pub fn sql(&self) -> &Arc<FlightSqlEndpoint> {
        &self.sql
    }

    /// This node's site.
    pub fn site(&self) -> &str {
        &self.probe.site
    }

    /// The `motor_health` query of the general columns (a fleet's colours): what anyone who
    /// may see a motor may read. Its score and time to threshold are `important`, read apart
    /// where allowed ([`MotorView::scores`]).
    fn health_query(&self, condition: &str) -> String {
        let rank: Vec<String> = STATUSES.iter().enumerate().map(|(i, s)| format!("WHEN '{s}' THEN {i}")).collect();
        format!(
            "SELECT motor_id, site_id, status, score_query, reasons, alerts_open, last_reading FROM {}.motor_health{condition} ORDER BY CASE status {} END, site_id, motor_id",
            self.sql.fleet_schema(),
            rank.join(" ")
        )
    }

    /// Every motor `who` may see (of `filter.site`'s, if set), worst first.
    pub async fn motors(&self, who: &Identity, filter: &FleetFilter) -> Result<Vec<MotorRow>, ViewError> {
        let condition = filter.site.as_deref().map(|s| format!(" WHERE site_id = {}", literal(s))).unwrap_or_default();
        let all: Vec<MotorRow> = rows(&self.sql.query(who, &self.health_query(&condition)).await?)?;
        Ok(all.into_iter().filter(|r| filter.keeps(r)).collect())
    }

    /// The fleet view for `who`.
    pub async fn fleet(&self, who: &Identity, filter: &FleetFilter) -> Result<FleetView, ViewError> {
        let site_only = FleetFilter { site: filter.site.clone(), ..FleetFilter::default() };
        let every = self.motors(who, &site_only).await?;
        let mut per_site: BTreeMap<String, Vec<&MotorRow>> = BTreeMap::new();
        for r in &every {
            per_site.entry(r.site_id.clone()).or_default().push(r);
        }
        let sites = per_site.into_iter().map(|(site, rows)| (site, Counts::of(rows.into_iter()))).collect();
        let all = Counts::of(every.iter());
        let motors = every.iter().filter(|r| filter.keeps(r)).cloned().collect();
        Ok(FleetView { motors, sites, all, filter: filter.clone() })
    }

    /// One motor's view for `who`; 404 when they may see no such motor.
    pub async fn motor(&self, who: &Identity, motor: &str) -> Result<MotorView, ViewError> {
        let id = tessera_core::MotorId::new(motor).map_err(|e| ViewError::bad_request(format!("motor: {e}")))?;
        let m = literal(id.as_str());
        let health: Vec<MotorRow> =
            rows(&self.sql.query(who, &self.health_query(&format!(" WHERE motor_id = {m}"))).await?)?;
        let Some(health) = health.into_iter().next() else {
            return Err(ViewError { status: 404, message: format!("no motor {motor} that you may see") });
        };
        let fleet = self.sql.fleet_schema();
        let windows = format!(
            "SELECT query, window_start, score, features FROM {fleet}.motor_windows WHERE motor_id = {m} \
             ORDER BY window_start DESC LIMIT {MAX_WINDOWS}"
        );
        let mut windows: Vec<WindowPoint> = rows(&self.sql.query(who, &windows).await?)?;
        windows.reverse();
        if let Some(newest) = windows.last().and_then(|w| time_ms(&w.window_start)) {
            windows.retain(|w| time_ms(&w.window_start).is_some_and(|t| t > newest - DAY_MS));
        }
        let alerts = format!(
            "SELECT alert_id, query, motor_id, site_id, state, severity, score, peak_score, opened_window_start, \
             emitted_at FROM {fleet}.alerts WHERE motor_id = {m} ORDER BY emitted_at DESC LIMIT {MAX_MOTOR_ALERTS}"
        );
        let alerts = self.with_acks(newest_per_alert(rows(&self.sql.query(who, &alerts).await?)?)).await;
        let (scores, readings) = if health.site_id == self.site() {
            let scores = format!("SELECT score, time_to_threshold_s FROM motor_health WHERE motor_id = {m}");
            let scores = match self.sql.query(who, &scores).await {
                Ok(batches) => rows::<Scores>(&batches)?.into_iter().next().map(|s| (s.score, s.time_to_threshold_s)),
                Err(_) => None,
            };
            let channels: Vec<&str> = tessera_core::Channel::ALL.iter().map(|c| c.name()).collect();
            let raw = format!(
                "SELECT ts, {} FROM telemetry WHERE motor_id = {m} ORDER BY ts DESC LIMIT {MAX_READINGS}",
                channels.join(", ")
            );
            let readings = match self.sql.query(who, &raw).await {
                Ok(batches) => Ok(rows(&batches)?),
                Err(refused) => Err(ViewError::from(refused).message),
            };
            (scores, readings)
        } else {
            let why = format!("raw readings stay at their site: open this motor at a node of site {}", health.site_id);
            (None, Err(why))
        };
        Ok(MotorView { health, scores, readings, windows, alerts })
    }

    /// Alerts fleet-wide (of `site`, if set): open only, or every alert's newest event.
    pub async fn alerts(
        &self,
        who: &Identity,
        site: Option<&str>,
        open_only: bool,
    ) -> Result<Vec<AlertRow>, ViewError> {
        let condition = site.map(|s| format!(" WHERE site_id = {}", literal(s))).unwrap_or_default();
        let query = format!(
            "SELECT alert_id, query, motor_id, site_id, state, severity, score, peak_score, opened_window_start, \
             emitted_at FROM {}.alerts{condition} ORDER BY emitted_at DESC",
            self.sql.fleet_schema()
        );
        let mut alerts = self.with_acks(newest_per_alert(rows(&self.sql.query(who, &query).await?)?)).await;
        if open_only {
            alerts.retain(|a| a.state != "close");
        }
        Ok(alerts)
    }

    /// `alerts` with their acknowledgements (none shown while the control plane cannot be
    /// read: the alerts themselves are the sites' and still listed).
    async fn with_acks(&self, mut alerts: Vec<AlertRow>) -> Vec<AlertRow> {
        let acks = match &self.desk {
            Some(desk) => desk.acks().await.unwrap_or_else(|e| {
                tracing::debug!(error = %e, "acknowledgements not read");
                Default::default()
            }),
            None => Default::default(),
        };
        for a in &mut alerts {
            a.acknowledged = acks.get(&a.alert_id).map(Ack::from);
        }
        alerts
    }

    /// Acknowledges (and, for `silence_minutes` > 0, silences) alert `alert_id` for `who`, in
    /// the control plane. Only a site operator or an admin of this node's site may, only for an
    /// alert of this site that they can see.
    pub async fn acknowledge(
        &self,
        who: &Identity,
        alert_id: &str,
        note: &str,
        silence_minutes: u64,
    ) -> Result<Ack, ViewError> {
        let forbidden = |message: String| ViewError { status: 403, message };
        if !matches!(who.role, Role::SiteOperator | Role::Admin) {
            return Err(forbidden(format!("a {} reads alerts; a site's operators acknowledge them", who.role.name())));
        }
        let home = who.at_home(self.site()).site.unwrap_or_default();
        if home != self.site() {
            return Err(forbidden(format!(
                "you act for site {home}; acknowledge its alerts at one of its nodes (this is site {})",
                self.site()
            )));
        }
        let note = note.trim();
        if note.is_empty() || note.len() > MAX_NOTE_BYTES {
            return Err(ViewError::bad_request(format!("note: say why, in 1 to {MAX_NOTE_BYTES} bytes")));
        }
        if silence_minutes > MAX_SILENCE_MINUTES {
            return Err(ViewError::bad_request(format!("silence_minutes: at most {MAX_SILENCE_MINUTES} (a week)")));
        }
        let Some(desk) = &self.desk else {
            return Err(ViewError {
                status: 503,
                message: "this node runs no control-plane member ([raft]): acknowledge at one that does".into(),
            });
        };
        let query = format!(
            "SELECT alert_id, query, motor_id, site_id, state, severity, score, peak_score, opened_window_start, \
             emitted_at FROM alerts WHERE alert_id = {} ORDER BY emitted_at DESC LIMIT 1",
            literal(alert_id)
        );
        let found: Vec<AlertRow> = rows(&self.sql.query(who, &query).await?)?;
        let Some(alert) = found.into_iter().next() else {
            return Err(ViewError { status: 404, message: format!("no alert {alert_id} at site {}", self.site()) });
        };
        let at = tessera_core::now_ms();
        let silence_until_ms = (silence_minutes > 0).then(|| at + silence_minutes as i64 * 60_000);
        let command = Command::AcknowledgeAlert {
            alert: alert.alert_id.clone(),
            motor: tessera_core::MotorId::new(alert.motor_id.clone()).map_err(ViewError::internal)?,
            site: tessera_core::SiteId::new(alert.site_id.clone()).map_err(ViewError::internal)?,
            note: note.to_string(),
            silence_until_ms,
        };
        match desk.record(&who.user, command).await {
            Ok(Outcome::Applied | Outcome::Nothing) => {}
            Ok(Outcome::Rejected(why)) => return Err(ViewError { status: 409, message: why }),
            Err(DeskError::Refused(why)) => return Err(forbidden(why)),
            Err(DeskError::Unavailable(why)) => return Err(ViewError { status: 503, message: why }),
        }
        let acks = desk.acks().await.map_err(|e| ViewError { status: 503, message: e.to_string() })?;
        acks.get(&alert.alert_id)
            .map(Ack::from)
            .ok_or_else(|| ViewError::internal("the acknowledgement was committed but is not applied here yet"))
    }

    /// The cluster as this node sees it (the control plane's sites and members, and this
    /// node's own counters).
    pub async fn cluster(&self) -> ClusterView {
        let i = self.probe.ingest.snapshot();
        let d = self.probe.detect.stats();
        let now = tessera_core::now_ms();
        let ingest_rate = {
            let mut last = self.last_ingest.lock().unwrap_or_else(|p| p.into_inner());
            let rate = last
                .filter(|(t, _)| now - t >= 500)
                .map(|(t, n)| i.readings_accepted.saturating_sub(n) as f64 * 1000.0 / (now - t) as f64);
            if last.is_none_or(|(t, _)| now - t >= 500) {
                *last = Some((now, i.readings_accepted));
            }
            rate
        };
        let status = self.probe.raft.as_ref().map(tessera_consensus::RaftStatus::of);
        let (control, control_error) = match &self.desk {
            Some(desk) => match desk.control_view().await {
                Ok(view) => (view, None),
                Err(e) => (Default::default(), Some(e.to_string())),
            },
            None => (Default::default(), Some("this node knows no control plane ([raft] or [control] admin)".into())),
        };
        let nodes = control
            .members
            .into_iter()
            .map(|(id, site, addr, voter)| NodeRow { id, site, addr, voter, leader: control.leader == Some(id) })
            .collect();
        ClusterView {
            site: self.probe.site.clone(),
            node_id: status.as_ref().map(|s| s.node_id),
            term: control.term,
            leader: control.leader,
            sites: control.sites,
            nodes,
            control_error,
            consumer_lag: i.consumer_lag,
            ingest_rate,
            readings_accepted: i.readings_accepted,
            readings_rejected: i.readings_rejected,
            alerts_open: d.engine.alerts_open,
            partitions_owned: d.partitions_owned as u64,
            not_ready: self.probe.ready().err(),
        }
    }
}

/// Each alert's newest event (the input is newest first), in that order.
fn newest_per_alert(events: Vec<AlertRow>) -> Vec<AlertRow> {
    let mut seen = std::collections::HashSet::new();
    events.into_iter().filter(|e| seen.insert(e.alert_id.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(motor: &str, site: &str, status: &str, reasons: &str) -> MotorRow {
        MotorRow {
            motor_id: motor.into(),
            site_id: site.into(),
            status: status.into(),
            score_query: None,
            reasons: reasons.into(),
            alerts_open: 0,
            last_reading: None,
        }
    }

    #[test]
    fn a_fleet_filter_names_what_it_does_not_know_and_keeps_by_status_and_text() {
        assert!(FleetFilter::parse("site=a&status=warning&q=").is_ok());
        assert!(FleetFilter::parse("colour=red").unwrap_err().message.contains("\"colour\""));
        assert!(FleetFilter::parse("status=fine").unwrap_err().message.contains("critical, silent"));
        assert!(FleetFilter::parse("site=a%20b").unwrap_err().message.starts_with("site:"));
        let f = FleetFilter::parse("q=Bearing").unwrap();
        assert!(f.keeps(&row("M1", "a", "warning", "vibration drift (bearing)")));
        assert!(!f.keeps(&row("M2", "a", "warning", "temperature rise")));
        let f = FleetFilter::parse("status=healthy").unwrap();
        assert!(!f.keeps(&row("M1", "a", "warning", "")));
        let counts = Counts::of([row("M1", "a", "warning", ""), row("M2", "a", "healthy", "")].iter());
        assert_eq!(counts.total, 2);
        assert_eq!(counts.by_status[2], ("warning".to_string(), 1));
    }

    #[test]
    fn a_literal_cannot_end_early_and_times_read_back() {
        assert_eq!(literal("M1' OR '1'='1"), "'M1'' OR ''1''=''1'");
        assert_eq!(time_ms("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(time_ms("1970-01-01T00:00:01.5"), Some(1500));
    }

    #[test]
    fn each_alert_keeps_its_newest_event() {
        let event = |id: &str, state: &str| AlertRow {
            alert_id: id.into(),
            query: "q".into(),
            motor_id: "M1".into(),
            site_id: "a".into(),
            state: state.into(),
            severity: "warning".into(),
            score: None,
            peak_score: 1.0,
            opened_window_start: String::new(),
            emitted_at: String::new(),
            acknowledged: None,
        };
        let newest = newest_per_alert(vec![event("x", "close"), event("y", "open"), event("x", "open")]);
        assert_eq!(
            newest.iter().map(|a| (a.alert_id.as_str(), a.state.as_str())).collect::<Vec<_>>(),
            [("x", "close"), ("y", "open")]
        );
    }
}
