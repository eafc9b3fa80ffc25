//! The Raft transport's server side: AppendEntries, Vote, PreVote and InstallSnapshot from the
//! other members, and the two requests a follower sends its leader (a forwarded write, a read
//! index). Over mTLS a message must come from the node its certificate names, and the vote it
//! carries must be that node's; anything else is refused with `PERMISSION_DENIED`, counted
//! and audited.

use futures::StreamExt;
use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use tessera_proto::raft as pb;
use tessera_tls::PeerIdentity;
use tonic::{Request as GrpcRequest, Response, Status, Streaming};

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

impl TransportService {
    /// Over mTLS, checks that the message from `claimed` (and, if given, the vote it carries)
    /// comes from the node the client certificate names.
    fn check_sender<T>(
        &self,
        request: &GrpcRequest<T>,
        claimed: NodeId,
        json: Option<&[u8]>,
    ) -> Result<(), ServiceError> {
        if !self.0.tls_required {
            return Ok(());
        }
        let refuse = |why: String| {
            self.0.refusals.refuse_identity("raft", request.remote_addr(), &why);
            ServiceError::MessageRefused { node: self.0.me, why }
        };
        let proven = match PeerIdentity::of_request(request) {
            None => return Err(refuse("no client certificate".into())),
            Some(Err(e)) => return Err(refuse(e.to_string())),
            Some(Ok(PeerIdentity::Node { id, .. })) => id,
            Some(Ok(other)) => return Err(refuse(format!("{other} is not a node; only nodes speak Raft"))),
        };
        if proven != claimed {
            return Err(refuse(format!("the certificate is node {proven}'s, the message claims node {claimed}")));
        }
        if let Some(voter) = json.and_then(vote_node)
            && voter != proven
        {
            return Err(refuse(format!("node {proven} sent a vote of node {voter}")));
        }
        Ok(())
    }

    /// Refuses a message from a node this one is cut off from (fault injection).
    fn refuse_partitioned(&self, from: NodeId) -> Result<(), ServiceError> {
        if self.0.partition.blocks(from) { Err(ServiceError::Partitioned { node: self.0.me, from }) } else { Ok(()) }
    }
}

#[tonic::async_trait]
impl pb::raft_transport_server::RaftTransport for TransportService {
    async fn append_entries(&self, request: GrpcRequest<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
        self.check_sender(&request, request.get_ref().from, Some(&request.get_ref().json))?;
        let message = request.into_inner();
        self.refuse_partitioned(message.from)?;
        let reply =
            self.0.raft.append_entries(decode(&message.json)?).await.map_err(|e| ServiceError::Raft(Box::new(e)))?;
        Ok(Response::new(encode(self.0.me, &reply)?))
    }

    async fn vote(&self, request: GrpcRequest<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
        self.check_sender(&request, request.get_ref().from, Some(&request.get_ref().json))?;
        let message = request.into_inner();
        self.refuse_partitioned(message.from)?;
        let reply = self.0.raft.vote(decode(&message.json)?).await.map_err(|e| ServiceError::Raft(Box::new(e)))?;
        Ok(Response::new(encode(self.0.me, &reply)?))
    }

    async fn pre_vote(&self, request: GrpcRequest<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
        self.check_sender(&request, request.get_ref().from, Some(&request.get_ref().json))?;
        let message = request.into_inner();
        self.refuse_partitioned(message.from)?;
        let reply = self.0.raft.pre_vote(decode(&message.json)?).await.map_err(|e| ServiceError::Raft(Box::new(e)))?;
        Ok(Response::new(encode(self.0.me, &reply)?))
    }

    async fn install_snapshot(
        &self,
        request: GrpcRequest<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let proven =
            if self.0.tls_required { Some((PeerIdentity::of_request(&request), request.remote_addr())) } else { None };
        let mut chunks = request.into_inner();
        let mut header: Option<(VoteOf<TypeConfig>, SnapshotMetaOf<TypeConfig>)> = None;
        let mut data = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            if let Some((identity, peer)) = &proven {
                let ok = matches!(identity, Some(Ok(PeerIdentity::Node { id, .. })) if *id == chunk.from);
                if !ok {
                    let why = format!(
                        "a snapshot chunk claiming node {} from a client whose certificate is not that node's",
                        chunk.from
                    );
                    self.0.refusals.refuse_identity("raft", *peer, &why);
                    return Err(ServiceError::NotAllowed { why }.into());
                }
            }
            self.refuse_partitioned(chunk.from)?;
            if header.is_none() {
                header = Some(decode(&chunk.header)?);
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
        let message = request.into_inner();
        self.refuse_partitioned(message.from)?;
        let request: Request = decode(&message.json)?;
        request.check().map_err(ServiceError::from)?;
        Ok(Response::new(self.0.write(request, true).await?))
    }

    async fn read_index(&self, request: GrpcRequest<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
        self.check_sender(&request, request.get_ref().from, None)?;
        self.refuse_partitioned(request.get_ref().from)?;
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
