//! Serving a tonic router over TLS, counting and auditing the connections refused.
//!
//! tonic could run the handshake itself, but then a refused client (no certificate, one from
//! another CA, an expired one) vanishes without a trace. Here each accepted TCP connection is
//! handshaken on a task of its own (so a slow client holds up nobody), under a deadline; a
//! failure is counted in [`Refusals`] and written to the `tessera::audit` log with the peer's
//! address and rustls's reason. Established streams go to tonic, which reads the client's
//! certificate from them (`Request::peer_certs`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Router, TcpIncoming};

/// How long a client may take to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts of what an endpoint refused.
#[derive(Debug, Default)]
pub struct Refusals {
    handshakes: AtomicU64,
    identities: AtomicU64,
}

impl Refusals {
    /// TLS handshakes that failed (no or untrusted certificate, wrong protocol, timeout).
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::Relaxed)
    }

    /// Requests refused because the certificate's identity did not fit what was claimed.
    pub fn identities(&self) -> u64 {
        self.identities.load(Ordering::Relaxed)
    }

    /// Counts and audits a request whose certificate does not fit its claim.
    pub fn refuse_identity(&self, endpoint: &str, peer: Option<SocketAddr>, why: &str) {
        self.identities.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(target: "tessera::audit", endpoint, peer = ?peer, reason = why, "refused: certificate identity");
    }
}

/// A server's TLS: the rustls configuration, what the endpoint is called in the audit log,
/// and where refusals are counted.
#[derive(Clone)]
pub struct ServerTls {
    /// rustls settings (see [`crate::TlsMaterial::server_config`]).
    pub config: Arc<rustls::ServerConfig>,
    /// The endpoint's name in the audit log ("raft", "sql").
    pub endpoint: &'static str,
    /// Shared with whoever reports the endpoint's refusals.
    pub refusals: Arc<Refusals>,
}

/// Serves `router` on `listener` until `shutdown`: over TLS when `tls` is given, in the
/// clear otherwise.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    match tls {
        None => {
            router.serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), shutdown).await
        }
        Some(tls) => {
            let mut incoming = TlsIncoming::new(listener, tls);
            let streams = futures::stream::poll_fn(move |cx| incoming.established.poll_recv(cx));
            router.serve_with_incoming_shutdown(streams, shutdown).await
        }
    }
}

/// TLS connections accepted on a listener: each TCP connection is handshaken on a task of its
/// own under a deadline, refusals counted and audited, established streams handed out in
/// order of arrival. Dropping it stops accepting.
pub struct TlsIncoming {
    established: tokio::sync::mpsc::Receiver<std::io::Result<TlsStream<TcpStream>>>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsIncoming {
    /// Starts accepting on `listener` with `tls` (on the current Tokio runtime).
    pub fn new(listener: TcpListener, tls: ServerTls) -> Self {
        let (tx, established) = tokio::sync::mpsc::channel::<std::io::Result<TlsStream<TcpStream>>>(64);
        TlsIncoming { established, acceptor: tokio::spawn(accept(listener, tls, tx)) }
    }

    /// The next established connection (never `None` while accepting goes on).
    pub async fn next(&mut self) -> Option<TlsStream<TcpStream>> {
        loop {
            match self.established.recv().await? {
                Ok(stream) => return Some(stream),
                Err(_) => continue,
            }
        }
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn accept(
    listener: TcpListener,
    tls: ServerTls,
    established: tokio::sync::mpsc::Sender<std::io::Result<TlsStream<TcpStream>>>,
) {
    let acceptor = TlsAcceptor::from(tls.config.clone());
    loop {
        let (tcp, peer) = tokio::select! {
            _ = established.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: say so, breathe, go on.
                    tracing::warn!(endpoint = tls.endpoint, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, established, tls) = (acceptor.clone(), established.clone(), tls.clone());
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            match outcome {
                Ok(Ok(stream)) => {
                    let _ = established.send(Ok(stream)).await;
                }
                Ok(Err(e)) => refuse_handshake(&tls, peer, &e.to_string()),
                Err(_) => refuse_handshake(&tls, peer, &format!("no handshake within {HANDSHAKE_TIMEOUT:?}")),
            }
        });
    }
}

fn refuse_handshake(tls: &ServerTls, peer: SocketAddr, why: &str) {
    tls.refusals.handshakes.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(target: "tessera::audit", endpoint = tls.endpoint, %peer, reason = why, "refused: TLS handshake");
}
