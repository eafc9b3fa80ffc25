//! The Raft transport's client side: openraft's RPCs sent over tonic gRPC (proto/raft.proto).
//!
//! Each RPC carries openraft's message as JSON and the sender's id. Every call has a deadline
//! (openraft's per-RPC time to live); an unreachable peer is reported as `Unreachable`, so
//! openraft backs off instead of retrying in a tight loop. [`Partition`] is the fault-injection
//! switch: peers in it are neither called nor answered.
//!
//! With `[tls]`, every connection is mTLS: this node presents its certificate, and the peer's
//! server must prove the name `node-<id>.tessera` of the node the membership says is there.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream, StreamExt as _};
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RPCTypes, RaftNetworkV2};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tessera_proto::raft::raft_transport_client::RaftTransportClient;
use tessera_proto::raft::{RaftMessage, SnapshotChunk};
use tessera_tls::{ClientTls, TlsError};
use tonic::transport::Channel;

use crate::types::{Member, NodeId, TypeConfig};

/// Largest snapshot chunk sent in one gRPC message.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// How long connecting to a peer may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The set of peers this node is cut off from (fault injection; empty in production).
#[derive(Clone, Default)]
pub struct Partition(Arc<RwLock<BTreeSet<NodeId>>>);

impl Partition {
    /// Whether messages to or from `node` are dropped.
    pub fn blocks(&self, node: NodeId) -> bool {
        self.0.read().unwrap_or_else(|p| p.into_inner()).contains(&node)
    }

    /// Cuts this node off from exactly `nodes` (an empty set heals the partition).
    pub fn set(&self, nodes: impl IntoIterator<Item = NodeId>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = nodes.into_iter().collect();
    }
}

/// A lazily connecting gRPC channel to node `id` at `addr` (reconnects by itself after a
/// failure); over TLS, the server must prove it is node `id`.
pub(crate) fn channel_to(tls: &ClientTls, id: NodeId, addr: &str) -> Result<Channel, tessera_tls::TlsError> {
    let tls = tls.clone().expecting(tessera_tls::pki::node_server_name(id));
    Ok(tls.endpoint(addr, CONNECT_TIMEOUT)?.http2_keep_alive_interval(Duration::from_secs(10)).connect_lazy())
}

/// Creates connections to peers for openraft.
#[derive(Clone)]
pub struct Network {
    me: NodeId,
    partition: Partition,
    tls: ClientTls,
}

impl Network {
    /// The transport of node `me`, obeying `partition`, connecting with `tls`.
    pub fn new(me: NodeId, partition: Partition, tls: ClientTls) -> Self {
        Self { me, partition, tls }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Connection {
        Connection {
            me: self.me,
            target,
            client: channel_to(&self.tls, target, &node.addr).map(RaftTransportClient::new).map_err(Arc::new),
            partition: self.partition.clone(),
        }
    }
}

/// One peer's connection.
pub struct Connection {
    me: NodeId,
    target: NodeId,
    /// The client, or why none could be made for the peer's address (reported on each send).
    client: Result<RaftTransportClient<Channel>, Arc<TlsError>>,
    partition: Partition,
}

/// Why a message did not reach a peer, as openraft's RPC error records it (as text: openraft
/// keeps a cause as `AnyError`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

impl Connection {
    fn client(&self) -> Result<RaftTransportClient<Channel>, RPCError<TypeConfig>> {
        if self.partition.blocks(self.target) {
            return Err(unreachable(format!("partitioned from node {} (fault injection)", self.target)));
        }
        self.client.clone().map_err(|e| unreachable(format!("bad address for node {}: {e}", self.target)))
    }

    fn message<T: Serialize>(&self, value: &T) -> Result<RaftMessage, RPCError<TypeConfig>> {
        let json = serde_json::to_vec(value).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        Ok(RaftMessage { from: self.me, json })
    }

    fn status_error(&self, action: RPCTypes, option: &RPCOption, status: tonic::Status) -> RPCError<TypeConfig> {
        status_error(self.me, self.target, action, option.hard_ttl(), status)
    }

    /// Sends one unary RPC and decodes the answer.
    async fn call<Req, Resp, F, Fut>(
        &self,
        action: RPCTypes,
        req: &Req,
        option: RPCOption,
        send: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftTransportClient<Channel>, tonic::Request<RaftMessage>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let client = self.client()?;
        let mut request = tonic::Request::new(self.message(req)?);
        request.set_timeout(option.hard_ttl());
        let reply = send(client, request).await.map_err(|s| self.status_error(action, &option, s))?;
        serde_json::from_slice(&reply.into_inner().json).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

/// openraft's error for a call from `me` to `target` that ended with `status`.
fn status_error(
    me: NodeId,
    target: NodeId,
    action: RPCTypes,
    ttl: Duration,
    status: tonic::Status,
) -> RPCError<TypeConfig> {
    match status.code() {
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Timeout(Timeout { action, id: me, target, timeout: ttl })
        }
        tonic::Code::Unavailable => unreachable(format!("node {target}: {}", status.message())),
        _ => RPCError::Network(NetworkError::new(&TransportError(format!(
            "node {target}: {:?}: {}",
            status.code(),
            status.message()
        )))),
    }
}

fn unreachable(why: String) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&TransportError(why)))
}

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RPCTypes::AppendEntries, &rpc, option, |mut c, r| async move { c.append_entries(r).await }).await
    }

    /// Pipelined: every request goes out on one gRPC stream as soon as openraft has it, and
    /// the answers come back in order. An answer that has not come within the RPC's soft TTL
    /// of its request ends the stream with a timeout (openraft then opens a new one).
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>, RPCError<TypeConfig>>,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            let mut client = self.client()?;
            let (me, target, ttl) = (self.me, self.target, option.soft_ttl());
            // When each request still unanswered was sent, oldest first.
            let sent: Arc<std::sync::Mutex<VecDeque<Instant>>> = Arc::default();
            let sending = sent.clone();
            let requests = input.filter_map(move |request| {
                let message = serde_json::to_vec(&request).ok().map(|json| RaftMessage { from: me, json });
                if message.is_some() {
                    sending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push_back(Instant::now());
                }
                futures::future::ready(message)
            });
            let reply = client
                .stream_append(tonic::Request::new(requests))
                .await
                .map_err(|s| status_error(me, target, RPCTypes::AppendEntries, ttl, s))?;
            let answers = futures::stream::unfold(Some(reply.into_inner()), move |inbound| {
                let sent = sent.clone();
                async move {
                    let mut inbound = inbound?;
                    loop {
                        match tokio::time::timeout(ttl, inbound.next()).await {
                            Ok(None) => return None,
                            Ok(Some(Ok(message))) => {
                                sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop_front();
                                let answer = serde_json::from_slice(&message.json)
                                    .map_err(|e| RPCError::Network(NetworkError::new(&e)));
                                return Some((answer, Some(inbound)));
                            }
                            Ok(Some(Err(status))) => {
                                return Some((
                                    Err(status_error(me, target, RPCTypes::AppendEntries, ttl, status)),
                                    None,
                                ));
                            }
                            Err(_) => {
                                let oldest =
                                    sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).front().copied();
                                if oldest.is_some_and(|at| at.elapsed() >= ttl) {
                                    let late =
                                        Timeout { action: RPCTypes::AppendEntries, id: me, target, timeout: ttl };
                                    return Some((Err(RPCError::Timeout(late)), None));
                                }
                            }
                        }
                    }
                }
            });
            let answers: BoxStream<'s, _> = Box::pin(answers);
            Ok(answers)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RPCTypes::Vote, &rpc, option, |mut c, r| async move { c.vote(r).await }).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RPCTypes::Vote, &rpc, option, |mut c, r| async move { c.pre_vote(r).await }).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self.client()?;
        let header =
            serde_json::to_vec(&(&vote, &snapshot.meta)).map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let mut chunks: Vec<SnapshotChunk> = snapshot
            .snapshot
            .chunks(SNAPSHOT_CHUNK_BYTES)
            .map(|data| SnapshotChunk { from: self.me, header: Vec::new(), data: data.to_vec() })
            .collect();
        if chunks.is_empty() {
            chunks.push(SnapshotChunk { from: self.me, header: Vec::new(), data: Vec::new() });
        }
        chunks[0].header = header;
        let mut request = tonic::Request::new(futures::stream::iter(chunks));
        request.set_timeout(option.hard_ttl());
        let send = client.install_snapshot(request);
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            reply = send => reply.map_err(|s| StreamingError::from(self.status_error(RPCTypes::InstallSnapshot, &option, s)))?,
        };
        serde_json::from_slice(&reply.into_inner().json).map_err(|e| StreamingError::Network(NetworkError::new(&e)))
    }
}
