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

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::error::NodeError;
use crate::lifecycle::Shutdown;

/// The `[console]` section: where the web console and the JSON API are served on a listener
/// of their own. With `[tls]`, it speaks HTTPS with the node's certificate (browsers must trust
/// the cluster CA, or an ingress terminates TLS with its own), and it is the only place they
/// are served. Unset: without `[tls]` they are served beside `/metrics` on `[http] listen`;
/// with it, nowhere.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// The listen address, e.g. `0.0.0.0:8443`.
    pub listen: Option<SocketAddr>,
}

/// A TLS listener as axum serves one: connections whose handshake succeeded.
struct HttpsListener {
    incoming: tessera_tls::TlsIncoming,
    addr: SocketAddr,
}

impl axum::serve::Listener for HttpsListener {
    type Io = tessera_tls::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.next().await {
            Some(stream) => {
                let peer = stream.get_ref().0.peer_addr().unwrap_or(self.addr);
                (stream, peer)
            }
            // Accepting has stopped: the node is stopping.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// Serves `app` (the console and the API) on `listener` until `shutdown`: HTTPS with `tls`,
/// plain HTTP otherwise.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<tessera_tls::ServerTls>,
    shutdown: Shutdown,
) -> Result<(), NodeError> {
    let addr = listener.local_addr().map_err(|source| NodeError::Io { what: "the console's address", source })?;
    tracing::info!(%addr, https = tls.is_some(), "web console and JSON API serving");
    let served = match tls {
        Some(tls) => {
            let https = HttpsListener { incoming: tessera_tls::TlsIncoming::new(listener, tls), addr };
            axum::serve(https, app).with_graceful_shutdown(shutdown.wait()).await
        }
        None => axum::serve(listener, app).with_graceful_shutdown(shutdown.wait()).await,
    };
    served.map_err(|source| NodeError::Io { what: "the web console stopped", source })
}
