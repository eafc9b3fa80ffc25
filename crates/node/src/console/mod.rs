//! The web console under `/console`, served by every node beside `/metrics` and the JSON API:
//! the fleet at a glance, one motor, the open alerts (acknowledge and silence), the cluster.
//!
//! - **Pages** are HTML rendered on the server from templates embedded in the binary
//!   (`crates/node/templates`, minijinja, HTML auto-escaped), from the same views as the JSON
//!   API ([`crate::views`]): every figure is a SQL query run as the signed-in user, so the
//!   grade rules decide what a page may show exactly as they decide a SQL answer.
//! - **Live**: each page holds a server-sent-event stream (`/console/events/...`) that sends
//!   the page's changing part again whenever it differs, looked at every second; the vendored
//!   htmx SSE extension swaps it in ([`assets`]).
//! - **Sessions**: signing in checks the SQL users' credentials and sets an `HttpOnly`,
//!   `SameSite=Strict` cookie holding the SQL session token (`Secure` when the listener speaks
//!   TLS); it expires as a SQL session does, and signing out ends it. Every form that changes
//!   something carries a CSRF token derived from the session (and a cross-origin `Origin` is
//!   refused), so another site cannot post a form in the user's name.

mod assets;
mod pages;
mod session;

pub use pages::router;
