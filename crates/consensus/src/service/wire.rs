//! A Raft message's payload on the wire: JSON inside `pb::RaftMessage` (and the header of a
//! snapshot stream), decoded and encoded the same way by every handler.

use tessera_proto::raft as pb;

use super::error::ServiceError;
use crate::types::NodeId;

/// Decodes a message's JSON payload.
pub(super) fn decode<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<T, ServiceError> {
    serde_json::from_slice(json).map_err(ServiceError::UndecodableMessage)
}

/// `value` as a message from node `from`.
pub(super) fn encode<T: serde::Serialize>(from: NodeId, value: &T) -> Result<pb::RaftMessage, ServiceError> {
    let json = serde_json::to_vec(value).map_err(ServiceError::Unencodable)?;
    Ok(pb::RaftMessage { from, json })
}
