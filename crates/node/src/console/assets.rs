//! The console's static files, embedded in the binary: its own stylesheet and chart script,
//! and the vendored front end from the npm registry at pinned versions (htmx and its SSE
//! extension for live updates, uPlot for charts; see `crates/node/assets/vendor/README.md`).

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `(name, content type, bytes)` of every file served under `/console/assets/`.
const FILES: [(&str, &str, &[u8]); 6] = [
    ("console.css", "text/css; charset=utf-8", include_bytes!("../../assets/console.css")),
    ("console.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/console.js")),
    ("htmx.min.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/vendor/htmx.min.js")),
    ("htmx-ext-sse.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/vendor/htmx-ext-sse.js")),
    ("uPlot.iife.min.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/vendor/uPlot.iife.min.js")),
    ("uPlot.min.css", "text/css; charset=utf-8", include_bytes!("../../assets/vendor/uPlot.min.css")),
];

/// Serves one embedded file (cached for a day: they change only with the binary).
pub(super) async fn asset(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => {
            ([(header::CONTENT_TYPE, *content_type), (header::CACHE_CONTROL, "public, max-age=86400")], *bytes)
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}
