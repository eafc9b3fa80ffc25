//! Alerts that reach people: every alert event a node emits also goes to the receivers of
//! `[notify]` — Alertmanager (its v2 API, `POST /api/v2/alerts`) and generic webhooks (the
//! event's JSON, as on the alerts topic) — from a task of its own, so a slow or absent receiver
//! never holds detection up.
//!
//! Nothing is lost while a receiver is down, up to a bound. Each receiver has a queue; a send
//! that fails is retried with exponential back-off (`retry_min` doubling up to `retry_max`),
//! oldest first. When a queue is full its oldest entry is dropped and counted
//! (`tessera_notify_dropped_total{receiver}`); so is a request the receiver refuses as it is
//! (a 4xx answer other than 429), which sending again could not mend.
//! - Alertmanager: an alert is its newest state. The queue holds one entry per alert id (a newer
//!   event replaces a queued one), so its bound counts distinct alerts. An open alert is sent
//!   again every `resend` (Alertmanager resolves an alert it has not heard of within its
//!   `resolve_timeout`, 5 min by default); a closed one is sent once more with `endsAt`, which
//!   resolves it. Labels: `alertname` (the query), `query`, `motor`, `site`, `severity`;
//!   annotations: the alert id, scores and the window.
//! - Webhook: every event, in order.
//!
//! An alert someone silenced in the control plane (the console's or the API's acknowledge with
//! a silence; see [`Notifier::set_silences`]) is not sent while its silence lasts: its open
//! and update events are skipped (counted in `tessera_notify_silenced_total`) and Alertmanager
//! is not sent it again; its close still goes, so receivers resolve it.
//!
//! What leaves: the columns of the `alerts` table (id, query, motor, site, state, severity,
//! scores, window times), never the window's feature values (window values, `important` in
//! `motor_windows`). A receiver is outside the site, so a node refuses to start `[notify]`
//! when its grade map holds any of those `alerts` columns above `general`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_core::{ConfigError, DataGrade, GradeMap, LiveGrades, ensure};
use tessera_stream::{AlertEvent, AlertState};

use crate::lifecycle::Shutdown;

/// The `[notify]` section: where alert events go besides the alerts topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Alertmanager base URLs (`http://alertmanager:9093`); alerts are posted to
    /// `<url>/api/v2/alerts`.
    pub alertmanager: Vec<String>,
    /// URLs that receive each alert event as JSON (`POST`).
    pub webhooks: Vec<String>,
    /// Entries a receiver holds while it cannot be reached (distinct alerts for Alertmanager,
    /// events for a webhook); beyond it the oldest is dropped and counted.
    pub queue: usize,
    /// How long one request may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The first retry's delay after a failed send; it doubles up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_min: Duration,
    /// The longest delay between retries.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// How often open alerts are sent to Alertmanager again.
    #[serde(with = "humantime_serde")]
    pub resend: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            alertmanager: Vec::new(),
            webhooks: Vec::new(),
            queue: 10_000,
            timeout: Duration::from_secs(5),
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            resend: Duration::from_secs(60),
        }
    }
}

impl NotifyConfig {
    /// Checks the values (field names relative to the section).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, urls) in [("alertmanager", &self.alertmanager), ("webhooks", &self.webhooks)] {
            for u in urls {
                let parsed = url::Url::parse(u).map_err(|e| ConfigError::new(field, format!("{u}: {e}")))?;
                ensure(
                    matches!(parsed.scheme(), "http" | "https"),
                    field,
                    &format!("{u}: must be an http:// or https:// URL"),
                )?;
            }
        }
        ensure(self.queue > 0, "queue", "must be at least 1")?;
        ensure(!self.timeout.is_zero(), "timeout", "must be more than 0")?;
        ensure(!self.retry_min.is_zero(), "retry_min", "must be more than 0")?;
        ensure(self.retry_max >= self.retry_min, "retry_max", "must be at least retry_min")?;
        ensure(!self.resend.is_zero(), "resend", "must be more than 0")
    }

    /// True if any receiver is configured.
    pub fn enabled(&self) -> bool {
        !self.alertmanager.is_empty() || !self.webhooks.is_empty()
    }
}

/// What a receiver is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Alertmanager,
    Webhook,
}

/// One receiver's counters, read at each scrape.
#[derive(Debug, Default)]
pub struct ReceiverCounts {
    /// Events handed to the receiver's queue.
    pub queued: AtomicU64,
    /// Events delivered (an Alertmanager resend counts again).
    pub sent: AtomicU64,
    /// Requests that failed (each is retried).
    pub failed: AtomicU64,
    /// Entries dropped from a full queue.
    pub dropped: AtomicU64,
}

impl ReceiverCounts {
    /// Queued, sent, failed and dropped, now.
    pub fn snapshot(&self) -> [u64; 4] {
        [&self.queued, &self.sent, &self.failed, &self.dropped].map(|c| c.load(Ordering::Relaxed))
    }
}

/// A receiver's queue. For Alertmanager, `alerts` holds each alert's newest event (and
/// whether it still has to be sent), `order` the alerts in the order they last changed; for a
/// webhook, `events` in order.
#[derive(Debug, Default)]
struct Queue {
    events: VecDeque<AlertEvent>,
    alerts: HashMap<String, (u64, AlertEvent, bool)>,
    order: BTreeMap<u64, String>,
    next_seq: u64,
}

struct Receiver {
    kind: Kind,
    url: String,
    queue: Mutex<Queue>,
    wake: tokio::sync::Notify,
    counts: Arc<ReceiverCounts>,
    silences: Silences,
}

/// Silenced alerts: alert id → silenced until (ms since the Unix epoch).
#[derive(Debug, Clone, Default)]
struct Silences(Arc<std::sync::RwLock<HashMap<String, i64>>>);

impl Silences {
    fn holds(&self, alert: &str, now_ms: i64) -> bool {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(alert).is_some_and(|until| *until > now_ms)
    }
}

impl Receiver {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `event`, dropping the oldest entry beyond `bound`.
    fn push(&self, event: &AlertEvent, bound: usize) {
        self.counts.queued.fetch_add(1, Ordering::Relaxed);
        let mut q = self.lock();
        let mut dropped = 0;
        match self.kind {
            Kind::Webhook => {
                q.events.push_back(event.clone());
                while q.events.len() > bound {
                    q.events.pop_front();
                    dropped += 1;
                }
            }
            Kind::Alertmanager => {
                let seq = q.next_seq;
                q.next_seq += 1;
                if let Some((old, _, _)) = q.alerts.insert(event.alert_id.clone(), (seq, event.clone(), true)) {
                    q.order.remove(&old);
                }
                q.order.insert(seq, event.alert_id.clone());
                while q.alerts.len() > bound {
                    let (_, id) = q.order.pop_first().expect("order holds every alert");
                    q.alerts.remove(&id);
                    dropped += 1;
                }
            }
        }
        drop(q);
        if dropped > 0 {
            self.counts.dropped.fetch_add(dropped, Ordering::Relaxed);
            tracing::warn!(receiver = %self.url, dropped, "notify queue full: oldest entries dropped");
        }
        self.wake.notify_one();
    }

    /// What to send next: up to `max` entries, oldest first, with the sequence numbers that
    /// identify them (for [`Self::sent`]); empty if nothing waits.
    fn next(&self, max: usize) -> Vec<(u64, AlertEvent)> {
        let q = self.lock();
        match self.kind {
            Kind::Webhook => q.events.iter().take(1).map(|e| (0, e.clone())).collect(),
            Kind::Alertmanager => (q.order.values())
                .filter_map(|id| q.alerts.get(id))
                .filter(|(_, _, due)| *due)
                .take(max)
                .map(|(seq, e, _)| (*seq, e.clone()))
                .collect(),
        }
    }

    /// Marks `batch` delivered: a webhook's first event leaves; an alert is no longer due
    /// (unless it changed meanwhile), and a closed one is forgotten.
    fn sent(&self, batch: &[(u64, AlertEvent)]) {
        self.counts.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.settle(batch);
    }

    /// Takes `batch` off the queue (see [`Self::sent`]), uncounted.
    fn settle(&self, batch: &[(u64, AlertEvent)]) {
        let mut q = self.lock();
        match self.kind {
            Kind::Webhook => {
                q.events.pop_front();
            }
            Kind::Alertmanager => {
                for (seq, e) in batch {
                    let Some(entry) = q.alerts.get_mut(&e.alert_id) else { continue };
                    if entry.0 != *seq {
                        continue; // a newer event replaced it: still due
                    }
                    if e.state == AlertState::Close {
                        q.alerts.remove(&e.alert_id);
                        q.order.remove(seq);
                    } else {
                        entry.2 = false;
                    }
                }
            }
        }
    }

    /// Drops `batch` unsent (counted as dropped): the grades no longer let it leave.
    fn discard(&self, batch: &[(u64, AlertEvent)]) {
        self.settle(batch);
        self.counts.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut q = self.lock();
        for (seq, e) in batch {
            if q.alerts.get(&e.alert_id).is_some_and(|(s, _, _)| s == seq) {
                q.alerts.remove(&e.alert_id);
                q.order.remove(seq);
            }
        }
    }

    /// Makes every open alert due again (the periodic resend), but a silenced one.
    fn resend_open(&self) {
        let now = tessera_core::now_ms();
        let mut q = self.lock();
        for (id, (_, _, due)) in q.alerts.iter_mut() {
            if !self.silences.holds(id, now) {
                *due = true;
            }
        }
        let any = !q.alerts.is_empty();
        drop(q);
        if any {
            self.wake.notify_one();
        }
    }

    fn body(&self, batch: &[(u64, AlertEvent)]) -> Vec<u8> {
        match self.kind {
            // The alerts table's columns: the window's features stay home.
            Kind::Webhook => {
                serde_json::to_vec(&AlertEvent { features: BTreeMap::new(), ..batch[0].1.clone() }).unwrap_or_default()
            }
            Kind::Alertmanager => {
                let alerts: Vec<serde_json::Value> = batch.iter().map(|(_, e)| alertmanager_alert(e)).collect();
                serde_json::to_vec(&alerts).unwrap_or_default()
            }
        }
    }

    fn endpoint(&self) -> String {
        match self.kind {
            Kind::Webhook => self.url.clone(),
            Kind::Alertmanager => format!("{}/api/v2/alerts", self.url.trim_end_matches('/')),
        }
    }
}

/// The `alerts` columns a notification carries (each must be graded `general`).
pub const SENT_COLUMNS: [&str; 12] = [
    "alert_id",
    "query",
    "motor_id",
    "site_id",
    "state",
    "severity",
    "score",
    "peak_score",
    "window_start",
    "window_end",
    "opened_window_start",
    "emitted_at",
];

/// Why notifications may not leave under `grades` (an `alerts` column they carry is graded
/// above `general`), or `None`.
fn withheld(grades: &GradeMap) -> Option<String> {
    let column = SENT_COLUMNS.iter().find(|c| grades.grade("alerts", c) > DataGrade::General)?;
    Some(format!(
        "alerts.{column} is graded {:?}: notifications would carry it out of the site",
        grades.grade("alerts", column)
    ))
}

/// An alert event as Alertmanager's v2 API takes it.
fn alertmanager_alert(e: &AlertEvent) -> serde_json::Value {
    let time = |ms: i64| chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339();
    let mut alert = serde_json::json!({
        "labels": {
            "alertname": e.query,
            "query": e.query,
            "motor": e.motor_id,
            "site": e.site_id,
            "severity": e.severity.as_str(),
        },
        "annotations": {
            "alert_id": e.alert_id,
            "summary": format!("{} on motor {} (site {})", e.query, e.motor_id, e.site_id),
            "peak_score": format!("{:.3}", e.peak_score),
            "score": e.score.map(|s| format!("{s:.3}")).unwrap_or_default(),
            "window": format!("{} – {}", time(e.window_start_ms), time(e.window_end_ms)),
        },
        "startsAt": time(e.opened_window_start_ms),
    });
    if e.state == AlertState::Close {
        alert["endsAt"] = serde_json::Value::String(time(e.emitted_at_ms.max(e.window_end_ms)));
    }
    alert
}

/// The node's alert notifier: cheap to share; [`Notifier::notify`] never blocks on a receiver.
#[derive(Clone)]
pub struct Notifier {
    receivers: Arc<Vec<Arc<Receiver>>>,
    bound: usize,
    silences: Silences,
    silenced: Arc<AtomicU64>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").field("receivers", &self.receivers.len()).finish()
    }
}

impl Notifier {
    /// Starts a sender task per receiver on `runtime`; they end when `stop` fires (what is
    /// queued then is not sent: the alerts topic holds every event).
    /// Refused (naming `notify`) if `grades` holds a column that would leave above `general`;
    /// should the cluster's policy raise one later, what is due then is dropped (counted), not
    /// sent.
    pub fn start(
        config: &NotifyConfig,
        grades: &LiveGrades,
        runtime: &tokio::runtime::Handle,
        stop: Shutdown,
    ) -> Result<Self, ConfigError> {
        if let Some(why) = withheld(&grades.current()) {
            return Err(ConfigError::new("notify", why));
        }
        let client = (reqwest::Client::builder().timeout(config.timeout).build())
            .map_err(|e| ConfigError::new("notify", format!("the HTTP client: {e}")))?;
        let silences = Silences::default();
        let receivers: Vec<Arc<Receiver>> = (config.alertmanager.iter().map(|u| (Kind::Alertmanager, u)))
            .chain(config.webhooks.iter().map(|u| (Kind::Webhook, u)))
            .map(|(kind, url)| {
                Arc::new(Receiver {
                    kind,
                    url: url.clone(),
                    queue: Mutex::default(),
                    wake: tokio::sync::Notify::new(),
                    counts: Arc::default(),
                    silences: silences.clone(),
                })
            })
            .collect();
        for r in &receivers {
            runtime.spawn(deliver(r.clone(), client.clone(), config.clone(), grades.clone(), stop.clone()));
        }
        Ok(Self { receivers: Arc::new(receivers), bound: config.queue, silences, silenced: Arc::default() })
    }

    /// The alerts silenced now, each until when (ms since the Unix epoch), as the control
    /// plane holds them; replaces what was set before.
    pub fn set_silences(&self, silences: HashMap<String, i64>) {
        *self.silences.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = silences;
    }

    /// Events not sent because their alert was silenced.
    pub fn silenced(&self) -> u64 {
        self.silenced.load(Ordering::Relaxed)
    }

    /// Hands an event to every receiver (unless its alert is silenced and it does not close it).
    pub fn notify(&self, event: &AlertEvent) {
        if event.state != AlertState::Close && self.silences.holds(&event.alert_id, tessera_core::now_ms()) {
            self.silenced.fetch_add(1, Ordering::Relaxed);
            return;
        }
        for r in self.receivers.iter() {
            r.push(event, self.bound);
        }
    }

    /// Each receiver's URL, kind (`alertmanager` or `webhook`) and counters.
    pub fn counts(&self) -> Vec<(String, &'static str, Arc<ReceiverCounts>)> {
        (self.receivers.iter())
            .map(|r| {
                let kind = if r.kind == Kind::Alertmanager { "alertmanager" } else { "webhook" };
                (r.url.clone(), kind, r.counts.clone())
            })
            .collect()
    }
}

/// Alerts per Alertmanager request.
const BATCH: usize = 64;

/// One receiver's sender: sends what is due, retries with back-off, resends open alerts.
async fn deliver(r: Arc<Receiver>, client: reqwest::Client, config: NotifyConfig, grades: LiveGrades, stop: Shutdown) {
    let mut backoff = config.retry_min;
    let mut resend = tokio::time::interval(config.resend);
    resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resend.tick().await; // the first tick is now
    loop {
        let batch = r.next(BATCH);
        if batch.is_empty() {
            tokio::select! {
                _ = r.wake.notified() => {}
                _ = resend.tick(), if r.kind == Kind::Alertmanager => r.resend_open(),
                _ = stop.clone().wait() => return,
            }
            continue;
        }
        if let Some(why) = withheld(&grades.current()) {
            tracing::error!(receiver = %r.url, %why, dropped = batch.len(), "alert notifications withheld");
            r.discard(&batch);
            continue;
        }
        let result = client
            .post(r.endpoint())
            .header("content-type", "application/json")
            .body(r.body(&batch))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        match result {
            Ok(_) => {
                r.sent(&batch);
                backoff = config.retry_min;
            }
            // Refused as it is (4xx other than 429): sending it again cannot help, and it would
            // hold up everything queued behind it. Dropped, counted and logged.
            Err(error) if error.status().is_some_and(|s| s.is_client_error() && s.as_u16() != 429) => {
                r.counts.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(receiver = %r.url, %error, dropped = batch.len(), "alert notification refused; dropped");
                r.discard(&batch);
            }
            Err(error) => {
                r.counts.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(receiver = %r.url, %error, retry_in = ?backoff, "alert notification failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.clone().wait() => return,
                }
                backoff = (backoff * 2).min(config.retry_max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tessera_stream::Severity;

    use super::*;

    /// A grade map that raises an alerts column is refused: the column would leave the site.
    #[test]
    fn a_raised_alerts_column_keeps_notifications_off() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (_trigger, stop) = crate::lifecycle::shutdown_signal();
        let config = NotifyConfig { webhooks: vec!["http://127.0.0.1:1/".into()], ..Default::default() };
        let mut grades = GradeMap::builtin();
        grades.set("alerts", Some("score"), DataGrade::Important);
        let e = Notifier::start(&config, &LiveGrades::new(grades), runtime.handle(), stop).unwrap_err();
        assert!(e.to_string().contains("notify") && e.to_string().contains("alerts.score"), "{e}");
    }

    fn event(motor: &str, state: AlertState) -> AlertEvent {
        AlertEvent {
            alert_id: tessera_stream::alerts::alert_id("q", motor, 0),
            query: "q".into(),
            motor_id: motor.into(),
            site_id: "site-a".into(),
            state,
            severity: Severity::Warning,
            score: Some(4.0),
            peak_score: 4.0,
            window_start_ms: 0,
            window_end_ms: 10_000,
            opened_window_start_ms: 0,
            emitted_at_ms: 10_000,
            features: BTreeMap::from([("vib".to_string(), 2.5)]),
        }
    }

    fn receiver(kind: Kind) -> Receiver {
        Receiver {
            kind,
            url: "http://127.0.0.1:1".into(),
            queue: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            counts: Arc::default(),
            silences: Silences::default(),
        }
    }

    /// A silenced alert's open and update events are not sent and Alertmanager is not sent it
    /// again while the silence lasts; its close goes; an ended silence is no silence.
    #[test]
    fn a_silenced_alert_is_not_sent_until_it_closes_or_the_silence_ends() {
        let r = Arc::new(receiver(Kind::Alertmanager));
        let notifier = Notifier {
            receivers: Arc::new(vec![r.clone()]),
            bound: 10,
            silences: r.silences.clone(),
            silenced: Arc::default(),
        };
        notifier.notify(&event("m1", AlertState::Open));
        notifier.notify(&event("m2", AlertState::Open));
        let due = r.next(10);
        r.sent(&due);
        let now = tessera_core::now_ms();
        let m1 = event("m1", AlertState::Open).alert_id;
        let m2 = event("m2", AlertState::Open).alert_id;
        notifier.set_silences(HashMap::from([(m1.clone(), now + 60_000), (m2.clone(), now - 1)]));
        notifier.notify(&event("m1", AlertState::Update));
        assert_eq!(notifier.silenced(), 1);
        r.resend_open();
        let due = r.next(10);
        assert_eq!(due.iter().map(|(_, e)| e.motor_id.as_str()).collect::<Vec<_>>(), ["m2"], "m2's silence ended");
        r.sent(&due);
        notifier.notify(&event("m1", AlertState::Close));
        let due = r.next(10);
        assert_eq!(
            due.iter().map(|(_, e)| (e.motor_id.as_str(), e.state)).collect::<Vec<_>>(),
            [("m1", AlertState::Close)]
        );
    }

    /// Alertmanager's queue keeps each alert's newest state, oldest change first; a full queue
    /// drops its oldest alert and counts it; a close that was sent forgets the alert, an open
    /// one waits for the next resend.
    #[test]
    fn alertmanager_queue_keeps_each_alerts_newest_state_within_its_bound() {
        let r = receiver(Kind::Alertmanager);
        r.push(&event("m1", AlertState::Open), 2);
        r.push(&event("m2", AlertState::Open), 2);
        r.push(&event("m1", AlertState::Update), 2); // replaces m1's open, now the newest
        let due = r.next(10);
        let states: Vec<(&str, AlertState)> = due.iter().map(|(_, e)| (e.motor_id.as_str(), e.state)).collect();
        assert_eq!(states, [("m2", AlertState::Open), ("m1", AlertState::Update)]);
        r.push(&event("m3", AlertState::Open), 2); // beyond the bound: m2 (the oldest) goes
        assert_eq!(r.counts.dropped.load(Ordering::Relaxed), 1);
        let due = r.next(10);
        assert_eq!(due.iter().map(|(_, e)| e.motor_id.as_str()).collect::<Vec<_>>(), ["m1", "m3"]);
        r.sent(&due);
        assert!(r.next(10).is_empty(), "sent: nothing due until the resend");
        r.resend_open();
        assert_eq!(r.next(10).len(), 2, "open alerts are sent again");
        r.push(&event("m1", AlertState::Close), 2);
        let due: Vec<_> = r.next(10).into_iter().filter(|(_, e)| e.motor_id == "m1").collect();
        r.sent(&due);
        r.resend_open();
        assert_eq!(r.next(10).iter().map(|(_, e)| e.motor_id.as_str()).collect::<Vec<_>>(), ["m3"], "m1 closed");
    }

    /// A webhook gets every event in order, one at a time; a full queue drops the oldest.
    #[test]
    fn webhook_queue_keeps_every_event_in_order_within_its_bound() {
        let r = receiver(Kind::Webhook);
        for state in [AlertState::Open, AlertState::Update, AlertState::Close] {
            r.push(&event("m1", state), 2);
        }
        assert_eq!(r.counts.dropped.load(Ordering::Relaxed), 1);
        let first = r.next(10);
        assert_eq!(first[0].1.state, AlertState::Update);
        r.sent(&first);
        assert_eq!(r.next(10)[0].1.state, AlertState::Close);
    }

    /// The labels and times Alertmanager reads; a close carries `endsAt`, which resolves it.
    #[test]
    fn an_alert_event_becomes_an_alertmanager_alert() {
        let open = alertmanager_alert(&event("m1", AlertState::Open));
        assert_eq!(open["labels"]["alertname"], "q");
        assert_eq!(open["labels"]["motor"], "m1");
        assert_eq!(open["labels"]["site"], "site-a");
        assert_eq!(open["labels"]["severity"], "warning");
        assert_eq!(open["startsAt"], "1970-01-01T00:00:00+00:00");
        assert!(open.get("endsAt").is_none());
        let close = alertmanager_alert(&event("m1", AlertState::Close));
        assert_eq!(close["endsAt"], "1970-01-01T00:00:10+00:00");
    }

    #[test]
    fn config_errors_name_the_field() {
        let bad = NotifyConfig { alertmanager: vec!["ftp://x".into()], ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("alertmanager"));
        let bad = NotifyConfig { retry_max: Duration::from_millis(1), ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("retry_max"));
        assert!(NotifyConfig::default().validate().is_ok());
        assert!(!NotifyConfig::default().enabled());
    }

    /// Accepts HTTP/1.1 POSTs on `listener` (keep-alive), passes each body on, and answers
    /// the `n`th request (from 0) with `status(n)`, e.g. `"200 OK"`.
    fn serve(
        listener: std::net::TcpListener,
        bodies: std::sync::mpsc::Sender<String>,
        status: impl Fn(usize) -> &'static str + Send + Sync + 'static,
    ) {
        use std::io::{BufRead as _, Read as _, Write as _};
        let status = Arc::new(status);
        let answered = Arc::new(AtomicU64::new(0));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (bodies, status, answered) = (bodies.clone(), status.clone(), answered.clone());
                std::thread::spawn(move || {
                    let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
                    let mut stream = stream;
                    loop {
                        let mut length = 0;
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0; length];
                        reader.read_exact(&mut body).expect("body");
                        let _ = bodies.send(String::from_utf8_lossy(&body).into_owned());
                        let n = answered.fetch_add(1, Ordering::Relaxed) as usize;
                        let _ = write!(stream, "HTTP/1.1 {}\r\ncontent-length: 0\r\n\r\n", status(n));
                    }
                });
            }
        });
    }

    /// A notifier under `grades` whose one receiver is a webhook [`serve`]d here, answering
    /// the `n`th request with `status(n)`: the notifier, the bodies received, its stop, and
    /// the runtime its sender runs on (kept for the test's length).
    fn with_webhook(
        grades: &LiveGrades,
        status: impl Fn(usize) -> &'static str + Send + Sync + 'static,
    ) -> (Notifier, std::sync::mpsc::Receiver<String>, crate::lifecycle::ShutdownTrigger, tokio::runtime::Runtime) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = std::sync::mpsc::channel();
        serve(listener, tx, status);
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (trigger, stop) = crate::lifecycle::shutdown_signal();
        let config = NotifyConfig { webhooks: vec![format!("http://127.0.0.1:{port}/")], ..Default::default() };
        let notifier = Notifier::start(&config, grades, runtime.handle(), stop).unwrap();
        (notifier, rx, trigger, runtime)
    }

    /// A webhook that is down when the events come gets them all, in order, once it is up.
    #[test]
    fn a_webhook_down_at_first_gets_every_event_in_order() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (trigger, stop) = crate::lifecycle::shutdown_signal();
        let config = NotifyConfig {
            webhooks: vec![format!("http://127.0.0.1:{port}/hook")],
            retry_min: Duration::from_millis(20),
            retry_max: Duration::from_millis(100),
            ..Default::default()
        };
        let notifier = Notifier::start(&config, &LiveGrades::new(GradeMap::builtin()), runtime.handle(), stop).unwrap();
        for state in [AlertState::Open, AlertState::Update, AlertState::Close] {
            notifier.notify(&event("m1", state));
        }
        let counts = notifier.counts()[0].2.clone();
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while counts.failed.load(Ordering::Relaxed) < 2 {
            assert!(std::time::Instant::now() < until, "no retries while the webhook is down");
            std::thread::sleep(Duration::from_millis(10));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        serve(std::net::TcpListener::bind(("127.0.0.1", port)).expect("the webhook's port"), tx, |_| "200 OK");
        let states: Vec<String> = (0..3)
            .map(|_| {
                let body = rx.recv_timeout(Duration::from_secs(20)).expect("an event");
                let e: AlertEvent = serde_json::from_str(&body).expect("the event's JSON");
                assert!(e.features.is_empty(), "features stay home: {body}");
                e.state.as_str().to_string()
            })
            .collect();
        assert_eq!(states, ["open", "update", "close"]);
        while counts.sent.load(Ordering::Relaxed) < 3 {
            assert!(std::time::Instant::now() < until, "the third answer was not counted");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(counts.dropped.load(Ordering::Relaxed), 0);
        trigger.trigger();
    }

    /// A policy that raises an alerts column while the node runs stops what is due from
    /// leaving: dropped and counted, never sent.
    #[test]
    fn a_policy_raised_while_running_withholds_notifications() {
        let grades = LiveGrades::new(GradeMap::builtin());
        let (notifier, rx, trigger, _runtime) = with_webhook(&grades, |_| "200 OK");
        notifier.notify(&event("m1", AlertState::Open));
        rx.recv_timeout(Duration::from_secs(20)).expect("sent while the grades allow it");
        let mut raised = GradeMap::builtin();
        raised.set("alerts", Some("motor_id"), DataGrade::Important);
        assert!(grades.apply_policy(&raised));
        notifier.notify(&event("m1", AlertState::Close));
        let counts = notifier.counts()[0].2.clone();
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while counts.dropped.load(Ordering::Relaxed) < 1 {
            assert!(std::time::Instant::now() < until, "the withheld event was not counted");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "nothing left once the grade was raised");
        assert_eq!(counts.sent.load(Ordering::Relaxed), 1);
        trigger.trigger();
    }

    /// A receiver that refuses a request as it is (400) gets the next one: the refused entry
    /// is dropped and counted, not retried ahead of everything else.
    #[test]
    fn a_refused_request_is_dropped_not_retried_forever() {
        let grades = LiveGrades::new(GradeMap::builtin());
        let (notifier, rx, trigger, _runtime) =
            with_webhook(&grades, |n| if n == 0 { "400 Bad Request" } else { "200 OK" });
        notifier.notify(&event("m1", AlertState::Open));
        notifier.notify(&event("m1", AlertState::Close));
        let states: Vec<AlertState> = (0..2)
            .map(|_| {
                serde_json::from_str::<AlertEvent>(&rx.recv_timeout(Duration::from_secs(20)).unwrap()).unwrap().state
            })
            .collect();
        assert_eq!(states, [AlertState::Open, AlertState::Close], "the refused open is not sent again");
        let counts = notifier.counts()[0].2.clone();
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while counts.sent.load(Ordering::Relaxed) < 1 {
            assert!(std::time::Instant::now() < until, "the close was not counted as sent");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(counts.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(counts.failed.load(Ordering::Relaxed), 1);
        trigger.trigger();
    }
}
