//! The JSON API under `/api/v1` (issue 24, first routes), served beside `/metrics` on
//! `[http] listen` when the node runs a SQL endpoint. Same users and roles as SQL, and the same
//! path: every answer is a SQL query run as the caller through the Flight SQL endpoint
//! (release by the grade rules, federation over the sites, query limits, audit).
//!
//! - `POST /api/v1/sessions` with `Authorization: Basic base64(user:password)` → `{"token",
//!   "user", "role"}`; later calls send `Authorization: Bearer <token>` (a session expires as
//!   a SQL session does).
//! - `GET /api/v1/motors[?site=S][&status=T]` → every motor the caller may see across the
//!   fleet (the `fleet` schema with federation, else this site's): id, site, status (healthy / watch / warning / critical / silent), the query behind
//!   its score, reasons, open alerts, last reading; worst first.
//! - `GET /api/v1/fleet` → motors per site and status.
//!
//! Errors are `{"error": "..."}` with 401 (no or bad credentials), 403 (refused by the grade
//! rules), 400 (a bad parameter), 429 (too many sign-ins), 503 (a site did not answer) or 500.
//! The listener has no TLS yet, so a node with `[tls]` does not serve the API (its users'
//! passwords would otherwise cross the network in the clear, next to a SQL endpoint that
//! speaks TLS). Not here yet: TLS, motor detail, alerts, acknowledge and silence, OpenAPI.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use datafusion::arrow::array::RecordBatch;
use tessera_sql::service::FlightSqlEndpoint;

/// A motor's statuses, worst first (the order the API sorts by).
pub const STATUSES: [&str; 5] = ["critical", "silent", "warning", "watch", "healthy"];

/// The `/api/v1` routes, answering through `sql`.
pub fn router(sql: Arc<FlightSqlEndpoint>) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/api/v1/sessions", post(sign_in))
        .route("/api/v1/motors", get(motors))
        .route("/api/v1/fleet", get(fleet))
        .with_state(sql)
}

/// An API error: its HTTP status and message, as `{"error": ...}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.1 }).to_string();
        let mut response = (self.0, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            let challenge = header::HeaderValue::from_static("Bearer realm=\"tessera\"");
            response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let status = match s.code() {
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable | Code::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, s.message().to_string())
    }
}

impl From<tessera_sql::SqlError> for ApiError {
    fn from(e: tessera_sql::SqlError) -> Self {
        tonic::Status::from(e).into()
    }
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

async fn sign_in(State(sql): State<Arc<FlightSqlEndpoint>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (token, who) = sql.sign_in(authorization(&headers)).await?;
    let body = serde_json::json!({ "token": token, "user": who.user, "role": who.role.name() }).to_string();
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn motors(State(sql): State<Arc<FlightSqlEndpoint>>, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    let who = sql.caller(authorization(&headers))?;
    let (mut site, mut status) = (None, None);
    for (key, value) in url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "site" => site = Some(value.into_owned()),
            "status" => status = Some(value.into_owned()),
            other => {
                return Err(ApiError(StatusCode::BAD_REQUEST, format!("unknown parameter {other:?} (site, status)")));
            }
        }
    }
    let mut conditions = Vec::new();
    if let Some(site) = &site {
        // A site id has no quote in it (checked here), so it can be a literal.
        let site = tessera_core::SiteId::new(site.clone())
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("site: {e}")))?;
        conditions.push(format!("site_id = '{}'", site.as_str()));
    }
    if let Some(status) = &status {
        let status = STATUSES.iter().find(|s| **s == status.as_str()).ok_or_else(|| {
            ApiError(StatusCode::BAD_REQUEST, format!("status: {status:?} is not one of {}", STATUSES.join(", ")))
        })?;
        conditions.push(format!("status = '{status}'"));
    }
    let filter = if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
    let rank: Vec<String> = STATUSES.iter().enumerate().map(|(i, s)| format!("WHEN '{s}' THEN {i}")).collect();
    let query = format!(
        "SELECT motor_id, site_id, status, score_query, reasons, alerts_open, last_reading \
         FROM {}.motor_health{filter} ORDER BY CASE status {} END, site_id, motor_id",
        sql.fleet_schema(),
        rank.join(" ")
    );
    json_rows(&sql.query(&who, &query).await?)
}

async fn fleet(State(sql): State<Arc<FlightSqlEndpoint>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let who = sql.caller(authorization(&headers))?;
    let query = format!(
        "SELECT site_id, status, count(*) AS motors FROM {}.motor_health GROUP BY site_id, status ORDER BY site_id, status",
        sql.fleet_schema()
    );
    json_rows(&sql.query(&who, &query).await?)
}

/// Batches as a JSON array of row objects.
fn json_rows(batches: &[RecordBatch]) -> Result<Response, ApiError> {
    let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    writer.write_batches(&refs).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    writer.finish().map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut body = writer.into_inner();
    if body.is_empty() {
        body = b"[]".to_vec();
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
