//! The Raft transport's client side: openraft's RPCs sent over tonic gRPC (proto/raft.proto).
//!
//! Each RPC carries openraft's message as JSON and the sender's id. Every call has a deadline
//! (openraft's per-RPC time to live); an unreachable peer is reported as `Unreachable`, so
//! openraft backs off instead of retrying in a tight loop. [`Partition`] is the fault-injection
//! switch: peers in it are neither called nor answered.
//!
//! With `[tls]`, every connection is mTLS: this node presents its certificate, and the peer's
//! server must prove the name `node-<id>.tessera` of the node the membership says is there.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::alias::{SnapshotOf, VoteOf};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
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
        match status.code() {
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                RPCError::Timeout(Timeout { action, id: self.me, target: self.target, timeout: option.hard_ttl() })
            }
            tonic::Code::Unavailable => unreachable(format!("node {}: {}", self.target, status.message())),
            _ => RPCError::Network(NetworkError::new(&TransportError(format!(
                "node {}: {:?}: {}",
                self.target,
                status.code(),
                status.message()
            )))),
        }
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
