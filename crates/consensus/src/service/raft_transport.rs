//! The Raft transport's server side: AppendEntries, Vote, PreVote and InstallSnapshot from the
//! other members, and the two requests a follower sends its leader (a forwarded write, a read
//! index). Over mTLS a message must come from the node its certificate names, and the vote it
//! carries must be that node's (a snapshot's too); anything else is refused with
//! `PERMISSION_DENIED`, counted and audited. A forwarded write is authorized again here for the
//! principal the follower names (see [`super::authorize`]); a snapshot larger than the node's
//! `max_snapshot_bytes` is refused before it is buffered whole.

use futures::StreamExt;
use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use tessera_proto::raft as pb;
use tessera_tls::PeerIdentity;
use tonic::{Request as GrpcRequest, Response, Status, Streaming};

use super::authorize::{Action, Principal, principal_of};
use super::error::ServiceError;
use super::quorum::Shared;
use super::wire::{decode, encode};
use crate::types::{NodeId, Request, TypeConfig};

/// The node id in the vote a Raft message carries (`vote.leader_id.node_id`: the candidate
/// of a vote request, the leader of an append), if it carries one.
fn vote_node(json: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    value.pointer("/vote/leader_id/node_id")?.as_u64()
}

/// The Raft transport's server side.
pub(crate) struct TransportService(pub(crate) Shared);

/// The proven sender of a transport call: its certificate's holder (the forwarding header, if
/// any, names whom a forwarded write is for, not who sends it), or plaintext without TLS.
fn proven_sender<T>(request: &GrpcRequest<T>, tls_required: bool) -> Result<Principal, ServiceError> {
    if !tls_required {
        return Ok(Principal::Plaintext);
    }
    match PeerIdentity::of_request(request) {
        None => Err(ServiceError::NoClientCertificate),
        Some(Err(e)) => Err(ServiceError::UnprovenIdentity(e)),
        Some(Ok(identity)) => Ok(Principal::of_identity(identity)),
    }
}

/// Checks that a Raft message from node `claimed` may come from `sender` (the caller at
/// `peer`): over mTLS, the certificate must be `claimed`'s, and so must the vote it carries
/// (`json`), if any; and this node must not be cut off from `claimed` (fault injection). A
/// refusal of the sender is counted and audited.
fn check_message(
    shared: &Shared,
    sender: &Principal,
    peer: Option<std::net::SocketAddr>,
    claimed: NodeId,
    json: Option<&[u8]>,
) -> Result<(), ServiceError> {
    let refuse = |why: String| {
        shared.refusals.refuse_identity("raft", peer, &why);
        ServiceError::MessageRefused { node: shared.me, why }
    };
    shared.allow(sender, Action::Raft { from: claimed }).map_err(|e| refuse(e.to_string()))?;
    if let (Principal::Node { id, .. }, Some(voter)) = (sender, json.and_then(vote_node))
        && voter != *id
    {
        return Err(refuse(format!("node {id} sent a vote of node {voter}")));
    }
    if shared.partition.blocks(claimed) {
        return Err(ServiceError::Partitioned { node: shared.me, from: claimed });
    }
    Ok(())
}

impl TransportService {
    /// The proven sender of `request` ([`proven_sender`]); a refusal is counted and audited.
    fn sender<T>(&self, request: &GrpcRequest<T>) -> Result<Principal, ServiceError> {
        proven_sender(request, self.0.tls_required).inspect_err(|e| {
            self.0.refusals.refuse_identity("raft", request.remote_addr(), &e.to_string());
        })
    }

    /// [`check_message`] for a unary call: `request` carries a message of node `claimed`.
    fn check_sender<T>(
        &self,
        request: &GrpcRequest<T>,
        claimed: NodeId,
        json: Option<&[u8]>,
    ) -> Result<(), ServiceError> {
        check_message(&self.0, &self.sender(request)?, request.remote_addr(), claimed, json)
    }
}

#[tonic::async_trait]
impl pb::raft_transport_server::RaftTransport for TransportService {
    async fn append_entries(&self, request: GrpcRequest<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
        self.check_sender(&request, request.get_ref().from, Some(&request.get_ref().json))?;
        let message = request.into_inner();
        let reply =
            self.0.raft.append_entries(decode(&message.json)?).await.map_err(|e| ServiceError::Raft(Box::new(e)))?;
        Ok(Response::new(encode(self.0.me, &reply)?))
    }

    type StreamAppendStream = futures::stream::BoxStream<'static, Result<pb::RaftMessage, Status>>;

    async fn stream_append(
        &self,
        request: GrpcRequest<Streaming<pb::RaftMessage>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        // Every message is checked as a unary AppendEntries is (its sender, the vote it
        // carries, a partition); the first refusal ends the stream with its status.
        let peer = request.remote_addr();
        let sender = self.sender(&request)?;
        let shared = self.0.clone();
        let (refused_tx, refused_rx) = tokio::sync::oneshot::channel::<Status>();
        let checked = request.into_inner().scan(Some(refused_tx), move |refused_tx, message| {
            let Ok(m) = message else { return futures::future::ready(None) }; // the sender went away
            let checked = check_message(&shared, &sender, peer, m.from, Some(&m.json))
                .and_then(|()| decode::<openraft::raft::AppendEntriesRequest<TypeConfig>>(&m.json))
                .map_err(Status::from);
            futures::future::ready(match checked {
                Ok(request) => Some(request),
                Err(status) => {
                    if let Some(tx) = refused_tx.take() {
                        let _ = tx.send(status);
                    }
                    None
                }
            })
        });
        let me = self.0.me;
        let answers = self.0.raft.stream_append(checked).map(move |answer| match answer {
            Ok(result) => encode(me, &result).map_err(Status::from),
            Err(fatal) => Err(Status::from(ServiceError::Fatal(Box::new(fatal)))),
        });
        // After the last answer, the refusal that ended the input, if one did.
        let refusal = futures::stream::once(refused_rx).filter_map(|r| async move { r.ok().map(Err) });
        Ok(Response::new(Box::pin(answers.chain(refusal))))
    }

    async fn vote(&self, request: GrpcRequest<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
        self.check_sender(&request, request.get_ref().from, Some(&request.get_ref().json))?;
        let message = request.into_inner();
        let reply = self.0.raft.vote(decode(&message.json)?).await.map_err(|e| ServiceError::Raft(Box::new(e)))?;
        Ok(Response::new(encode(self.0.me, &reply)?))
    }

    async fn pre_vote(&self, request: GrpcRequest<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
        self.check_sender(&request, request.get_ref().from, Some(&request.get_ref().json))?;
        let message = request.into_inner();
        let reply = self.0.raft.pre_vote(decode(&message.json)?).await.map_err(|e| ServiceError::Raft(Box::new(e)))?;
        Ok(Response::new(encode(self.0.me, &reply)?))
    }

    async fn install_snapshot(
        &self,
        request: GrpcRequest<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let peer = request.remote_addr();
        let sender = self.sender(&request)?;
        let refuse = |why: String| {
            self.0.refusals.refuse_identity("raft", peer, &why);
            ServiceError::MessageRefused { node: self.0.me, why }
        };
        let mut chunks = request.into_inner();
        let mut header: Option<(VoteOf<TypeConfig>, SnapshotMetaOf<TypeConfig>)> = None;
        let mut from = None;
        let mut data = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            if *from.get_or_insert(chunk.from) != chunk.from {
                return Err(
                    refuse(format!("a snapshot stream of node {from:?} has a chunk of node {}", chunk.from)).into()
                );
            }
            check_message(&self.0, &sender, peer, chunk.from, None)?;
            if header.is_none() {
                let (vote, meta): (VoteOf<TypeConfig>, SnapshotMetaOf<TypeConfig>) = decode(&chunk.header)?;
                // The vote must be the sender's own: a leader installs its own snapshots.
                let leader = vote.leader_id().node_id;
                if leader != chunk.from {
                    return Err(
                        refuse(format!("node {} sent a snapshot under node {leader}'s vote", chunk.from)).into()
                    );
                }
                header = Some((vote, meta));
            }
            if (data.len() + chunk.data.len()) as u64 > self.0.max_snapshot_bytes {
                return Err(ServiceError::SnapshotTooLarge { limit: self.0.max_snapshot_bytes }.into());
            }
            data.extend_from_slice(&chunk.data);
        }
        let (vote, meta) = header.ok_or(ServiceError::SnapshotWithoutHeader)?;
        let snapshot = SnapshotOf::<TypeConfig, Vec<u8>> { meta, snapshot: data };
        let reply =
            self.0.raft.install_full_snapshot(vote, snapshot).await.map_err(|e| ServiceError::Fatal(Box::new(e)))?;
        Ok(Response::new(encode(self.0.me, &reply)?))
    }

    async fn forward_write(
        &self,
        request: GrpcRequest<pb::RaftMessage>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        self.check_sender(&request, request.get_ref().from, None)?;
        // The write is for whom the forwarding node names (a node only for itself), and the
        // leader decides again whether they may make it.
        let who = principal_of(&request, self.0.tls_required).inspect_err(|e| {
            self.0.refusals.refuse_identity("raft", request.remote_addr(), &e.to_string());
        })?;
        let peer = request.remote_addr();
        let message = request.into_inner();
        let mut forwarded: Request = decode(&message.json)?;
        // The audit log records the principal, not the name a forwarding node wrote.
        if let Some(actor) = who.actor() {
            forwarded.actor = actor;
        }
        forwarded.check().map_err(ServiceError::from)?;
        self.0.allow(&who, Action::Write(&forwarded.command)).inspect_err(|e| {
            self.0.refusals.refuse_identity("raft", peer, &e.to_string());
        })?;
        Ok(Response::new(self.0.write(forwarded, &who, true).await?))
    }

    async fn read_index(&self, request: GrpcRequest<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
        self.check_sender(&request, request.get_ref().from, None)?;
        let index = tokio::time::timeout(self.0.write_timeout, self.0.read_index())
            .await
            .map_err(|_| self.0.no_quorum("the read index was"))?
            .map_err(|e| ServiceError::ReadIndex { node: self.0.me, source: Box::new(e) })?;
        Ok(Response::new(encode(self.0.me, &index)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vote_a_raft_message_carries_names_its_node() {
        let vote = VoteOf::<TypeConfig>::new(3, 2);
        let request = openraft::raft::VoteRequest::<TypeConfig>::new(vote, None);
        assert_eq!(vote_node(&serde_json::to_vec(&request).unwrap()), Some(2));
        assert_eq!(vote_node(b"{\"vote\":{}}"), None);
    }
}
