//! The console's routes: sign-in and sign-out, the four pages, the live-update streams and the
//! assets. Each page is a view of [`crate::views`] rendered into a template; its changing part
//! is a separate template that the page includes and its event stream sends again.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine as _;
use minijinja::{Environment, Value, context};
use serde::Serialize;
use tessera_sql::{Identity, Role};

use super::session;
use crate::views::{FleetFilter, MotorView, STATUSES, ViewError, Views, time_ms};

/// How often a live page looks for a change.
const LIVE_EVERY: Duration = Duration::from_secs(1);

/// What every console route shares.
struct Console {
    views: Arc<Views>,
    templates: Environment<'static>,
    /// Cookies only over TLS.
    secure: bool,
    /// The live parts rendered last, by who sees them and what they show: consoles of one
    /// user on one view share a render within [`LIVE_EVERY`].
    live: std::sync::Mutex<HashMap<String, (std::time::Instant, String)>>,
}

type Shared = State<Arc<Console>>;

/// The `/console` routes over `views`; `secure`: the listener speaks TLS.
pub fn router(views: Arc<Views>, secure: bool) -> axum::Router {
    use axum::routing::{get, post};
    let console = Arc::new(Console { views, templates: templates(), secure, live: Default::default() });
    axum::Router::new()
        .route("/", get(|| async { Redirect::to("/console/fleet") }))
        .route("/console", get(|| async { Redirect::to("/console/fleet") }))
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/fleet", get(fleet_page))
        .route("/console/motors/{motor}", get(motor_page))
        .route("/console/alerts", get(alerts_page))
        .route("/console/alerts/{alert}/acknowledge", post(acknowledge))
        .route("/console/cluster", get(cluster_page))
        .route("/console/events/{page}", get(events))
        .route("/console/events/motor/{motor}", get(motor_events))
        .route("/console/assets/{name}", get(super::assets::asset))
        .with_state(console)
}

fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    let files = [
        ("base.html", include_str!("../../templates/base.html")),
        ("sign_in.html", include_str!("../../templates/sign_in.html")),
        ("error.html", include_str!("../../templates/error.html")),
        ("fleet.html", include_str!("../../templates/fleet.html")),
        ("fleet_board.html", include_str!("../../templates/fleet_board.html")),
        ("motor.html", include_str!("../../templates/motor.html")),
        ("motor_panel.html", include_str!("../../templates/motor_panel.html")),
        ("alerts.html", include_str!("../../templates/alerts.html")),
        ("alerts_rows.html", include_str!("../../templates/alerts_rows.html")),
        ("cluster.html", include_str!("../../templates/cluster.html")),
        ("cluster_panel.html", include_str!("../../templates/cluster_panel.html")),
    ];
    for (name, text) in files {
        env.add_template(name, text).unwrap_or_else(|e| panic!("the console template {name} does not parse: {e}"));
    }
    env.add_filter("ms_time", |ms: i64| rfc3339(ms));
    env.add_filter("segment", |text: &str| segment(text));
    env
}

/// `text` percent-encoded as one URL path segment (or query value): every byte but the
/// unreserved ones, `/` included, so an id cannot reach another route.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `ms` since the Unix epoch as RFC 3339 UTC, to the second.
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// A duration in seconds as days, hours and minutes.
fn span(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match (s / 86_400, s % 86_400 / 3600, s % 3600 / 60) {
        (0, 0, m) => format!("{m} min"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

/// Who is signed in: the session token and its identity.
struct SignedIn {
    token: String,
    who: Identity,
}

/// Why a page is not drawn: sign in (again), or an error page.
enum PageError {
    SignIn { next: String, why: &'static str },
    View(ViewError),
    Render(minijinja::Error),
}

impl From<ViewError> for PageError {
    fn from(e: ViewError) -> Self {
        PageError::View(e)
    }
}

impl From<minijinja::Error> for PageError {
    fn from(e: minijinja::Error) -> Self {
        PageError::Render(e)
    }
}

impl Console {
    /// The signed-in user behind `headers`' cookie, or where to send them to sign in.
    fn signed_in(&self, headers: &HeaderMap, uri: &Uri) -> Result<SignedIn, PageError> {
        let next = uri.path_and_query().map_or("/console/fleet", |p| p.as_str()).to_string();
        let Some(token) = session::token(headers) else {
            return Err(PageError::SignIn { next, why: "" });
        };
        match self.views.sql().caller(Some(&format!("Bearer {token}"))) {
            Ok(who) => Ok(SignedIn { token, who }),
            Err(e) if e.to_string().contains("expired") => Err(PageError::SignIn { next, why: "expired" }),
            Err(_) => Err(PageError::SignIn { next, why: "unknown" }),
        }
    }

    /// Renders `template` for `user` with the layout's context and `extra`.
    fn render(&self, template: &str, page: &str, user: &SignedIn, extra: Value) -> Result<String, PageError> {
        let base = context! {
            page => page,
            user => user.who.user,
            role => user.who.role.name(),
            node_site => self.views.site(),
            csrf => session::csrf(&user.token),
            can_ack => matches!(user.who.role, Role::SiteOperator | Role::Admin)
                && user.who.at_home(self.views.site()).site.as_deref() == Some(self.views.site()),
            updated => rfc3339(tessera_core::now_ms()),
        };
        Ok(self.templates.get_template(template)?.render(context! { ..base, ..extra })?)
    }

    fn respond(&self, result: Result<String, PageError>, headers: &HeaderMap) -> Response {
        match result {
            Ok(html) => Html(html).into_response(),
            Err(PageError::SignIn { next, why }) => {
                let next = url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>();
                let mut response = Redirect::to(&format!("/console/sign-in?next={next}&why={why}")).into_response();
                if why == "expired" || why == "unknown" {
                    set(&mut response, &session::clear_cookie(self.secure));
                }
                response
            }
            Err(PageError::View(e)) => self.error_page(headers, e),
            Err(PageError::Render(e)) => {
                tracing::error!(error = %e, "a console page failed to render");
                (StatusCode::INTERNAL_SERVER_ERROR, "the page failed to render (see the node's log)\n").into_response()
            }
        }
    }

    fn error_page(&self, headers: &HeaderMap, e: ViewError) -> Response {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let token = session::token(headers).unwrap_or_default();
        let who = self.views.sql().caller(Some(&format!("Bearer {token}")));
        let html = match who {
            Ok(who) => {
                let user = SignedIn { token, who };
                let extra = context! { status => status.as_u16(), message => e.message };
                self.render("error.html", "", &user, extra).ok()
            }
            Err(_) => None,
        };
        (status, Html(html.unwrap_or(e.message))).into_response()
    }
}

fn set(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// Only a console path is a place to go back to after signing in (no open redirect).
fn safe_next(next: &str) -> &str {
    if next.starts_with("/console/") && !next.starts_with("/console//") && !next.contains('\\') {
        next
    } else {
        "/console/fleet"
    }
}

fn form(body: &Bytes) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

async fn sign_in_page(State(c): Shared, uri: Uri) -> Response {
    let params: BTreeMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let message = match params.get("why").map(String::as_str) {
        Some("expired") => "Your session has expired: sign in again.",
        Some("unknown") => "Your session is no longer valid: sign in again.",
        Some("signed-out") => "You have signed out.",
        _ => "",
    };
    let next = safe_next(params.get("next").map_or("", String::as_str));
    sign_in_form(&c, StatusCode::OK, message, next)
}

fn sign_in_form(c: &Console, status: StatusCode, message: &str, next: &str) -> Response {
    let html = c
        .templates
        .get_template("sign_in.html")
        .and_then(|t| t.render(context! { message => message, next => next, node_site => c.views.site() }));
    match html {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn sign_in(State(c): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let f = form(&body);
    let next = safe_next(f.get("next").map_or("", String::as_str)).to_string();
    // A sign-in has no session yet: only the origin is checked.
    if let Err(why) = session::same_origin(&headers) {
        return sign_in_form(&c, StatusCode::FORBIDDEN, &why, &next);
    }
    let (user, password) = (f.get("user").map_or("", String::as_str), f.get("password").map_or("", String::as_str));
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    match c.views.sql().sign_in(Some(&format!("Basic {basic}"))).await {
        Ok((token, who)) => {
            tracing::info!(target: "tessera::audit", user = %who.user, role = who.role.name(), "signed in to the console");
            let mut response = Redirect::to(&next).into_response();
            *response.status_mut() = StatusCode::SEE_OTHER;
            set(&mut response, &session::set_cookie(&token, c.secure));
            response
        }
        Err(e) => {
            let status = StatusCode::from_u16(ViewError::from(e).status).unwrap_or(StatusCode::UNAUTHORIZED);
            let message = if status == StatusCode::TOO_MANY_REQUESTS {
                "Too many sign-ins under way: try again in a moment."
            } else {
                "Wrong user or password."
            };
            sign_in_form(&c, status, message, &next)
        }
    }
}

async fn sign_out(State(c): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let f = form(&body);
    if let Some(token) = session::token(&headers) {
        if let Err(why) = session::same_origin_with_csrf(&headers, &token, f.get("csrf").map(String::as_str)) {
            return c.error_page(&headers, ViewError { status: 403, message: why });
        }
        c.views.sql().sign_out(&token);
    }
    let mut response = Redirect::to("/console/sign-in?why=signed-out").into_response();
    *response.status_mut() = StatusCode::SEE_OTHER;
    set(&mut response, &session::clear_cookie(c.secure));
    response
}

/// The query string as it was (to hand on to the page's event stream).
fn query_suffix(uri: &Uri) -> String {
    uri.query().map(|q| format!("?{q}")).unwrap_or_default()
}

async fn fleet_board(
    c: &Console,
    user: &SignedIn,
    filter: &FleetFilter,
    template: &str,
    query: &str,
) -> Result<String, PageError> {
    let fleet = c.views.fleet(&user.who, filter).await?;
    let site_choices: Vec<&String> = fleet.sites.keys().collect();
    let extra = context! {
        fleet => Value::from_serialize(&fleet),
        filter => Value::from_serialize(filter),
        statuses => STATUSES,
        site_choices => Value::from_serialize(&site_choices),
        query => query,
    };
    c.render(template, "fleet", user, extra)
}

async fn fleet_page(State(c): Shared, headers: HeaderMap, uri: Uri) -> Response {
    let page = async {
        let user = c.signed_in(&headers, &uri)?;
        let query = uri.query().unwrap_or("");
        let mut filter = FleetFilter::parse(query)?;
        // A site operator starts at their own site (choosing "all" shows every site they may see).
        let site_chosen = url::form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == "site");
        if !site_chosen && user.who.role == Role::SiteOperator {
            filter.site = user.who.site.clone();
        }
        let suffix = match (&filter.site, site_chosen) {
            (Some(site), false) => format!("?site={}", segment(site)),
            _ => query_suffix(&uri),
        };
        fleet_board(&c, &user, &filter, "fleet.html", &suffix).await
    };
    c.respond(page.await, &headers)
}

/// The motor view's windows as chart series per query: `t` (seconds), `score`, and each
/// feature (absent values as null), for `console.js`.
fn chart_data(view: &MotorView) -> String {
    #[derive(Serialize, Default)]
    struct Series {
        t: Vec<f64>,
        score: Vec<Option<f64>>,
        features: BTreeMap<String, Vec<Option<f64>>>,
    }
    let mut by_query: BTreeMap<&str, Series> = BTreeMap::new();
    for w in &view.windows {
        let Some(t) = time_ms(&w.window_start) else { continue };
        let s = by_query.entry(&w.query).or_default();
        let n = s.t.len();
        s.t.push(t as f64 / 1000.0);
        s.score.push(w.score);
        for (name, value) in &w.features {
            s.features.entry(name.clone()).or_insert_with(|| vec![None; n]).push(*value);
        }
        for values in s.features.values_mut() {
            values.resize(n + 1, None);
        }
    }
    // In a <script> element: no `<` may end it early.
    serde_json::to_string(&by_query).unwrap_or_else(|_| "{}".into()).replace('<', "\\u003c")
}

async fn motor_panel(c: &Console, user: &SignedIn, motor: &str, template: &str) -> Result<String, PageError> {
    let view = c.views.motor(&user.who, motor).await?;
    let reading_columns: Vec<String> = match &view.readings {
        Ok(rows) => rows.first().map(|r| r.keys().cloned().collect()).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let extra = context! {
        chart_data => Value::from_safe_string(chart_data(&view)),
        ttt => view.scores.and_then(|(_, t)| t).map(span),
        readings => Value::from_serialize(view.readings.as_ref().ok()),
        readings_error => view.readings.as_ref().err(),
        reading_columns => reading_columns,
        view => Value::from_serialize(&view),
    };
    c.render(template, "fleet", user, extra)
}

async fn motor_page(State(c): Shared, headers: HeaderMap, uri: Uri, Path(motor): Path<String>) -> Response {
    let page = async {
        let user = c.signed_in(&headers, &uri)?;
        motor_panel(&c, &user, &motor, "motor.html").await
    };
    c.respond(page.await, &headers)
}

fn open_only(uri: &Uri) -> Result<bool, ViewError> {
    let mut open = true;
    for (key, value) in url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        match (key.as_ref(), value.as_ref()) {
            ("state", "all") => open = false,
            ("state", "open") => open = true,
            ("acknowledged", _) => {}
            (k, v) => return Err(ViewError::bad_request(format!("unknown parameter {k}={v} (state=open|all)"))),
        }
    }
    Ok(open)
}

async fn alerts_rows(
    c: &Console,
    user: &SignedIn,
    open: bool,
    template: &str,
    flash: &str,
) -> Result<String, PageError> {
    let alerts = c.views.alerts(&user.who, None, open).await?;
    let query = if open { "" } else { "?state=all" };
    let extra =
        context! { alerts => Value::from_serialize(&alerts), open_only => open, flash => flash, query => query };
    c.render(template, "alerts", user, extra)
}

async fn alerts_page(State(c): Shared, headers: HeaderMap, uri: Uri) -> Response {
    let page = async {
        let user = c.signed_in(&headers, &uri)?;
        let open = open_only(&uri)?;
        let acknowledged: Option<String> = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "acknowledged")
            .map(|(_, v)| v.into_owned());
        let flash = acknowledged.map(|a| format!("Alert {a} acknowledged.")).unwrap_or_default();
        alerts_rows(&c, &user, open, "alerts.html", &flash).await
    };
    c.respond(page.await, &headers)
}

async fn acknowledge(
    State(c): Shared,
    headers: HeaderMap,
    uri: Uri,
    Path(alert): Path<String>,
    body: Bytes,
) -> Response {
    let done = async {
        let user = c.signed_in(&headers, &uri)?;
        let f = form(&body);
        session::same_origin_with_csrf(&headers, &user.token, f.get("csrf").map(String::as_str))
            .map_err(|message| ViewError { status: 403, message })?;
        let note = f.get("note").map_or("", String::as_str);
        let minutes = f.get("silence_minutes").map_or(Ok(0), |m| {
            m.parse::<u64>().map_err(|_| ViewError::bad_request(format!("silence_minutes: {m:?} is not a number")))
        })?;
        c.views.acknowledge(&user.who, &alert, note, minutes).await?;
        Ok::<_, PageError>(())
    };
    match done.await {
        Ok(()) => {
            let alert = url::form_urlencoded::byte_serialize(alert.as_bytes()).collect::<String>();
            let mut response = Redirect::to(&format!("/console/alerts?acknowledged={alert}")).into_response();
            *response.status_mut() = StatusCode::SEE_OTHER;
            response
        }
        Err(e) => c.respond(Err(e), &headers),
    }
}

async fn cluster_page(State(c): Shared, headers: HeaderMap, uri: Uri) -> Response {
    let page = async {
        let user = c.signed_in(&headers, &uri)?;
        c.render("cluster.html", "cluster", &user, context! { c => Value::from_serialize(c.views.cluster().await) })
    };
    c.respond(page.await, &headers)
}

/// What one live stream sends again: a page's changing part.
#[derive(Clone)]
enum Live {
    Fleet(FleetFilter),
    Motor(String),
    Alerts(bool),
    Cluster,
}

impl Live {
    /// The event name the page's `sse-swap` listens for.
    fn event(&self) -> &'static str {
        match self {
            Live::Fleet(_) => "board",
            Live::Motor(_) => "panel",
            Live::Alerts(_) => "alerts",
            Live::Cluster => "cluster",
        }
    }

    /// What a render depends on besides the data: the user (whose grants decide what it shows),
    /// the view, and for parts with forms the session (their CSRF token).
    fn key(&self, user: &SignedIn) -> String {
        let who = format!("{}\u{0}{}", user.who.user, user.who.role.name());
        match self {
            Live::Fleet(filter) => format!("{who}\u{0}fleet\u{0}{filter:?}"),
            Live::Motor(motor) => format!("{who}\u{0}motor\u{0}{motor}"),
            Live::Alerts(open) => format!("{who}\u{0}alerts\u{0}{open}\u{0}{}", session::csrf(&user.token)),
            Live::Cluster => format!("{who}\u{0}cluster"),
        }
    }

    /// The part, rendered again unless a console of the same user on the same view did so
    /// within the last [`LIVE_EVERY`].
    async fn render_shared(&self, c: &Console, user: &SignedIn) -> Result<String, PageError> {
        let key = self.key(user);
        let fresh = |at: &std::time::Instant| at.elapsed() < LIVE_EVERY;
        if let Some((_, html)) = c.live.lock().unwrap_or_else(|p| p.into_inner()).get(&key).filter(|(at, _)| fresh(at))
        {
            return Ok(html.clone());
        }
        let html = self.render(c, user).await?;
        let mut cache = c.live.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 1024 {
            cache.retain(|_, (at, _)| fresh(at));
        }
        cache.insert(key, (std::time::Instant::now(), html.clone()));
        Ok(html)
    }

    async fn render(&self, c: &Console, user: &SignedIn) -> Result<String, PageError> {
        match self {
            Live::Fleet(filter) => fleet_board(c, user, filter, "fleet_board.html", "").await,
            Live::Motor(motor) => motor_panel(c, user, motor, "motor_panel.html").await,
            Live::Alerts(open) => alerts_rows(c, user, *open, "alerts_rows.html", "").await,
            Live::Cluster => {
                let view = Value::from_serialize(c.views.cluster().await);
                c.render("cluster_panel.html", "cluster", user, context! { c => view })
            }
        }
    }
}

async fn events(State(c): Shared, headers: HeaderMap, uri: Uri, Path(page): Path<String>) -> Response {
    let live = match page.as_str() {
        "fleet" => FleetFilter::parse(uri.query().unwrap_or("")).map(Live::Fleet),
        "alerts" => open_only(&uri).map(Live::Alerts),
        "cluster" => Ok(Live::Cluster),
        other => Err(ViewError { status: 404, message: format!("no live page {other}") }),
    };
    match live {
        Ok(live) => stream(c, headers, uri, live),
        Err(e) => (StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST), e.message).into_response(),
    }
}

async fn motor_events(State(c): Shared, headers: HeaderMap, uri: Uri, Path(motor): Path<String>) -> Response {
    stream(c, headers, uri, Live::Motor(motor))
}

/// The event stream of `live`: its part again each time it changes (looked at every
/// [`LIVE_EVERY`]); when the session ends, a last part that says so, and the end.
fn stream(c: Arc<Console>, headers: HeaderMap, uri: Uri, live: Live) -> Response {
    let user = match c.signed_in(&headers, &uri) {
        Ok(user) => user,
        Err(_) => return (StatusCode::UNAUTHORIZED, "sign in first\n").into_response(),
    };
    struct Turn {
        c: Arc<Console>,
        user: SignedIn,
        live: Live,
        last: String,
        ended: bool,
    }
    let start = Turn { c, user, live, last: String::new(), ended: false };
    let events = futures::stream::unfold(start, |mut s| async move {
        if s.ended {
            return None;
        }
        let mut first = s.last.is_empty();
        loop {
            if !first {
                tokio::time::sleep(LIVE_EVERY).await;
            }
            first = false;
            if s.c.views.sql().caller(Some(&format!("Bearer {}", s.user.token))).is_err() {
                s.ended = true;
                let html = "<p class=\"error\" id=\"session-ended\">Your session has ended: \
                            <a href=\"/console/sign-in?why=expired\">sign in again</a>.</p>";
                let event = Event::default().event(s.live.event()).data(html);
                return Some((Ok::<_, Infallible>(event), s));
            }
            let html = match s.live.render_shared(&s.c, &s.user).await {
                Ok(html) => html,
                Err(PageError::View(e)) => format!("<p class=\"error\">{}</p>", minijinja::HtmlEscape(&e.message)),
                Err(PageError::Render(e)) => {
                    format!("<p class=\"error\">{}</p>", minijinja::HtmlEscape(&e.to_string()))
                }
                Err(PageError::SignIn { .. }) => continue,
            };
            // Only the time of the update changed: nothing to send.
            let settled = strip_updated(&html);
            if settled != strip_updated(&s.last) {
                s.last = html.clone();
                let event = Event::default().event(s.live.event()).data(html);
                return Some((Ok(event), s));
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

/// A part without its `<time class="updated">` stamp, to tell whether anything else changed.
fn strip_updated(html: &str) -> String {
    const OPEN: &str = "<time class=\"updated\">";
    match html.split_once(OPEN) {
        Some((before, rest)) => {
            format!("{before}{}", rest.split_once("</time>").map_or("", |(_, after)| after))
        }
        None => html.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_motor_id_carrying_html_is_shown_as_text() {
        let evil = "<img/src=x/onerror=alert(1)>\"'";
        let row = crate::views::MotorRow {
            motor_id: evil.into(),
            site_id: "site-a".into(),
            status: "warning".into(),
            score_query: None,
            reasons: evil.into(),
            alerts_open: 1,
            last_reading: None,
        };
        let fleet = crate::views::FleetView {
            motors: vec![row],
            sites: Default::default(),
            all: Default::default(),
            filter: FleetFilter::default(),
        };
        let html = templates()
            .get_template("fleet_board.html")
            .and_then(|t| {
                t.render(context! { fleet => Value::from_serialize(&fleet), statuses => STATUSES, updated => "now" })
            })
            .expect("renders");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;img"), "{html}");
        assert!(html.contains("href=\"/console/motors/%3Cimg%2Fsrc%3Dx%2Fonerror"), "one path segment: {html}");
    }

    #[test]
    fn every_template_parses_and_only_console_paths_are_places_to_return_to() {
        let env = templates();
        assert!(env.get_template("fleet_board.html").is_ok());
        assert_eq!(safe_next("/console/motors/M1"), "/console/motors/M1");
        for evil in ["https://evil.example/", "//evil.example/", "/console//evil.example", "/api/v1/fleet"] {
            assert_eq!(safe_next(evil), "/console/fleet", "{evil}");
        }
        assert_eq!(span(90_061.0), "1 d 1 h");
        assert_eq!(span(3_660.0), "1 h 1 min");
        assert_eq!(strip_updated("<p>x <time class=\"updated\">2026</time></p><a>"), "<p>x </p><a>");
    }
}
