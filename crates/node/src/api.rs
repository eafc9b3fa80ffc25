//! The JSON API under `/api/v1`, served beside `/metrics` on `[http] listen` when the node
//! runs a SQL endpoint: the same views the web console draws ([`crate::views`]), with the same
//! users and roles as SQL. `docs/openapi.yaml` describes every route (a test checks it
//! against [`ROUTES`]).
//!
//! - `POST /api/v1/sessions` with `Authorization: Basic base64(user:password)` → `{"token",
//!   "user", "role"}`; later calls send `Authorization: Bearer <token>` (a session expires as
//!   a SQL session does). `DELETE /api/v1/sessions` signs the token out.
//! - `GET /api/v1/motors[?site=S][&status=T][&q=TEXT]` → every motor the caller may see, worst
//!   first.
//! - `GET /api/v1/motors/{motor}` → one motor: health, windows of the last day, alerts, and
//!   where the caller may read them its scores and newest raw readings.
//! - `GET /api/v1/fleet` → motors per site and status.
//! - `GET /api/v1/alerts[?site=S][&state=open|all]` → alerts (newest event of each) with their
//!   acknowledgements.
//! - `POST /api/v1/alerts/{alert}/acknowledge` with `{"note", "silence_minutes"}` → the
//!   acknowledgement as the control plane recorded it (site operators and admins of this
//!   node's site, for its alerts).
//! - `GET /api/v1/cluster` → sites, nodes, leader, and this node's lag and ingest rate.
//!
//! Errors are `{"error": "..."}` with 401 (no or bad credentials), 403 (refused by the grade
//! rules or the role), 404, 400 (a bad parameter), 409 (the control plane refused), 429 (too
//! many sign-ins), 503 (a site or the quorum did not answer) or 500.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::views::{FleetFilter, ViewError, Views};

/// Every route of the API: method and path (axum's `{param}` syntax), as `docs/openapi.yaml`
/// must list them.
pub const ROUTES: [(&str, &str); 9] = [
    ("post", "/api/v1/sessions"),
    ("delete", "/api/v1/sessions"),
    ("get", "/api/v1/motors"),
    ("get", "/api/v1/motors/{motor}"),
    ("get", "/api/v1/fleet"),
    ("get", "/api/v1/alerts"),
    ("post", "/api/v1/alerts/{alert}/acknowledge"),
    ("get", "/api/v1/cluster"),
    ("get", "/api/v1/openapi.yaml"),
];

/// The OpenAPI description of the API, served at `/api/v1/openapi.yaml`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.yaml");

/// The `/api/v1` routes, answering through `views`.
pub fn router(views: Arc<Views>) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/api/v1/sessions", post(sign_in).delete(sign_out))
        .route("/api/v1/motors", get(motors))
        .route("/api/v1/motors/{motor}", get(motor))
        .route("/api/v1/fleet", get(fleet))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/alerts/{alert}/acknowledge", post(acknowledge))
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/openapi.yaml", get(|| async { ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI) }))
        .with_state(views)
}

/// An API error: its HTTP status and message, as `{"error": ...}`.
struct ApiError(ViewError);

impl From<ViewError> for ApiError {
    fn from(e: ViewError) -> Self {
        ApiError(e)
    }
}

impl From<tessera_sql::SqlError> for ApiError {
    fn from(e: tessera_sql::SqlError) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "error": self.0.message }).to_string();
        let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if status == StatusCode::UNAUTHORIZED {
            let challenge = header::HeaderValue::from_static("Bearer realm=\"tessera\"");
            response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

fn json(value: &impl Serialize) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value).map_err(|e| ViewError { status: 500, message: e.to_string() })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn sign_in(State(views): State<Arc<Views>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (token, who) = views.sql().sign_in(authorization(&headers)).await?;
    json(&serde_json::json!({ "token": token, "user": who.user, "role": who.role.name() }))
}

async fn sign_out(State(views): State<Arc<Views>>, headers: HeaderMap) -> Result<Response, ApiError> {
    views.sql().caller(authorization(&headers))?;
    let token = authorization(&headers).and_then(|a| a.strip_prefix("Bearer ")).unwrap_or_default();
    views.sql().sign_out(token);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn motors(State(views): State<Arc<Views>>, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    let who = views.sql().caller(authorization(&headers))?;
    let filter = FleetFilter::parse(uri.query().unwrap_or(""))?;
    json(&views.motors(&who, &filter).await?)
}

async fn motor(
    State(views): State<Arc<Views>>,
    headers: HeaderMap,
    Path(motor): Path<String>,
) -> Result<Response, ApiError> {
    let who = views.sql().caller(authorization(&headers))?;
    json(&views.motor(&who, &motor).await?)
}

async fn fleet(State(views): State<Arc<Views>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let who = views.sql().caller(authorization(&headers))?;
    let fleet = views.fleet(&who, &FleetFilter::default()).await?;
    let rows: Vec<serde_json::Value> = fleet
        .sites
        .iter()
        .flat_map(|(site, counts)| {
            let mut by_status: Vec<_> = counts.by_status.iter().filter(|(_, n)| *n > 0).collect();
            by_status.sort_by(|a, b| a.0.cmp(&b.0));
            by_status
                .into_iter()
                .map(move |(status, n)| serde_json::json!({ "site_id": site, "status": status, "motors": n }))
        })
        .collect();
    json(&rows)
}

async fn alerts(State(views): State<Arc<Views>>, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    let who = views.sql().caller(authorization(&headers))?;
    let (mut site, mut open_only) = (None, true);
    for (key, value) in url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        match (key.as_ref(), value.as_ref()) {
            ("site", s) => {
                let id = tessera_core::SiteId::new(s).map_err(|e| ViewError::bad_request(format!("site: {e}")))?;
                site = Some(id.to_string());
            }
            ("state", "open") => open_only = true,
            ("state", "all") => open_only = false,
            ("state", other) => {
                return Err(ViewError::bad_request(format!("state: {other:?} is not open or all")).into());
            }
            (other, _) => {
                return Err(ViewError::bad_request(format!("unknown parameter {other:?} (site, state)")).into());
            }
        }
    }
    json(&views.alerts(&who, site.as_deref(), open_only).await?)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    note: String,
    #[serde(default)]
    silence_minutes: u64,
}

async fn acknowledge(
    State(views): State<Arc<Views>>,
    headers: HeaderMap,
    Path(alert): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let who = views.sql().caller(authorization(&headers))?;
    let body: AckBody = serde_json::from_slice(&body).map_err(|e| {
        ViewError::bad_request(format!("the body must be {{\"note\": ..., \"silence_minutes\": ...}}: {e}"))
    })?;
    json(&views.acknowledge(&who, &alert, &body.note, body.silence_minutes).await?)
}

async fn cluster(State(views): State<Arc<Views>>, headers: HeaderMap) -> Result<Response, ApiError> {
    views.sql().caller(authorization(&headers))?;
    json(&views.cluster().await)
}
