//! The work the consumer thread hands the decoder thread: chunks of messages copied out of
//! Kafka (one arena per chunk, no allocation per message), and the orders to flush, to send a
//! barrier or to send assigned partitions' checkpoints, kept in order with the chunks.

use std::ops::Range;
use std::time::Instant;

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Headers};

use super::downstream::{Barrier, PartitionStart};

/// One item on the queue from the consumer thread to the decoder thread.
pub(super) enum Work {
    /// Messages to decode.
    Chunk(Chunk),
    /// Flush every shard's open batch now.
    Drain,
    /// Flush every shard's open batch, then send the barrier.
    Barrier(Barrier),
    /// Send the assigned partitions' checkpoints downstream.
    Assigned(Vec<PartitionStart>),
}

/// Messages copied out of Kafka, ready for decoding.
#[derive(Default)]
pub(super) struct Chunk {
    /// The chunk's number in the [`OffsetTracker`](crate::offsets::OffsetTracker).
    pub(super) id: u64,
    /// Every key, payload and header of the chunk's messages, end to end.
    pub(super) data: Vec<u8>,
    pub(super) messages: Vec<MessageMeta>,
    /// (name, value) of every header, as ranges of `data`.
    pub(super) headers: Vec<(Range<usize>, Option<Range<usize>>)>,
}

/// One message of a [`Chunk`]; the ranges are into the chunk's `data` (`headers` into its
/// `headers`).
pub(super) struct MessageMeta {
    /// The topic's index in the config's topics.
    pub(super) topic: usize,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) key: Option<Range<usize>>,
    pub(super) payload: Range<usize>,
    pub(super) headers: Range<usize>,
    pub(super) content_type: Option<Range<usize>>,
}

/// The chunk being filled by the consumer thread.
#[derive(Default)]
pub(super) struct OpenChunk {
    pub(super) chunk: Chunk,
    /// The last offset of each (topic index, partition) in the chunk.
    pub(super) last_offsets: Vec<((usize, i32), i64)>,
    /// The entry of `last_offsets` the previous message updated (a fetch's messages come
    /// partition by partition, so it is usually the next one's too).
    last_entry: usize,
    /// When its first message came.
    pub(super) opened_at: Option<Instant>,
}

impl OpenChunk {
    /// Copies `m`, of the config's topic `topic`, arrived at `now`, into the chunk.
    pub(super) fn push(&mut self, m: &BorrowedMessage<'_>, topic: usize, now: Instant) {
        let c = &mut self.chunk;
        let mut put = |bytes: &[u8]| {
            let start = c.data.len();
            c.data.extend_from_slice(bytes);
            start..c.data.len()
        };
        let key = m.key().map(&mut put);
        let payload = put(m.payload().unwrap_or_default());
        let header_start = c.headers.len();
        let mut content_type = None;
        if let Some(headers) = m.headers() {
            for h in headers.iter() {
                let name = put(h.key.as_bytes());
                let value = h.value.map(&mut put);
                if h.key.eq_ignore_ascii_case("content-type") {
                    content_type = value.clone();
                }
                c.headers.push((name, value));
            }
        }
        c.messages.push(MessageMeta {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            key,
            payload,
            headers: header_start..c.headers.len(),
            content_type,
        });
        let tp = (topic, m.partition());
        if self.last_offsets.get(self.last_entry).is_none_or(|(k, _)| *k != tp) {
            self.last_entry = match self.last_offsets.iter().position(|(k, _)| *k == tp) {
                Some(i) => i,
                None => {
                    self.last_offsets.push((tp, m.offset()));
                    self.last_offsets.len() - 1
                }
            };
        }
        let last = &mut self.last_offsets[self.last_entry].1;
        *last = (*last).max(m.offset());
        self.opened_at.get_or_insert(now);
    }
}
