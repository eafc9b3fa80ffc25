//! How the control-plane commands print what a node answered.

use anyhow::{Result, bail};
use tessera_proto::raft as pb;

/// A node's answer to a write: its log index, or the registry's refusal as the error.
pub fn written(what: &str, reply: pb::WriteResponse) -> Result<()> {
    if reply.rejected.is_empty() {
        println!("{what}: committed at log index {}", reply.log_index);
        Ok(())
    } else {
        bail!("{what}: refused by the registry (log index {}): {}", reply.log_index, reply.rejected)
    }
}

/// Voters, learners and the log index of a membership.
pub fn print_membership(m: &pb::MembershipResponse) {
    let list = |nodes: &[pb::NodeSpec]| {
        if nodes.is_empty() {
            "-".to_string()
        } else {
            nodes.iter().map(|n| format!("{} ({} {})", n.id, n.site, n.addr)).collect::<Vec<_>>().join(", ")
        }
    };
    println!("voters: {}\nlearners: {}\nmembership at log index {}", list(&m.voters), list(&m.learners), m.log_index);
}

/// Milliseconds since the epoch as an RFC 3339 UTC time.
pub fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// An optional index, `-` when unset.
pub fn opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}
