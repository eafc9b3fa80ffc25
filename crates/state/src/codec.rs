//! The checkpoint file format: a versioned, length-prefixed little-endian layout ending in a
//! checksum of everything before it.
//!
//! ```text
//! "TSCK" | version u16 | id u64 | created_ms i64
//! | offsets u32 | { topic (u32 len, utf-8) | partition i32 | next_offset i64 } ...
//! | sections u32 | { name (u32 len, utf-8) | data (u64 len, bytes) } ...
//! | xxh3_64 of all the above, u64
//! ```

use xxhash_rust::xxh3::xxh3_64;

const MAGIC: &[u8; 4] = b"TSCK";
const VERSION: u16 = 1;

/// Where reading resumes in one Kafka partition: the next offset to read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The first offset the state does not cover (what a consumer commits).
    pub next_offset: i64,
}

/// A node's state and the input positions it covers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Grows with every checkpoint of a store.
    pub id: u64,
    /// When it was taken (processing time, epoch ms).
    pub created_ms: i64,
    /// The input positions the state covers.
    pub offsets: Vec<SourceOffset>,
    /// Named state sections, opaque here (each owner encodes its own).
    pub sections: Vec<(String, Vec<u8>)>,
}

impl Checkpoint {
    /// The section called `name`.
    pub fn section(&self, name: &str) -> Option<&[u8]> {
        self.sections.iter().find(|(n, _)| n == name).map(|(_, data)| data.as_slice())
    }

    /// The file bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let size = 64
            + self.offsets.iter().map(|o| o.topic.len() + 16).sum::<usize>()
            + self.sections.iter().map(|(n, d)| n.len() + d.len() + 12).sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&(self.offsets.len() as u32).to_le_bytes());
        for o in &self.offsets {
            put_text(&mut out, &o.topic);
            out.extend_from_slice(&o.partition.to_le_bytes());
            out.extend_from_slice(&o.next_offset.to_le_bytes());
        }
        out.extend_from_slice(&(self.sections.len() as u32).to_le_bytes());
        for (name, data) in &self.sections {
            put_text(&mut out, name);
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
            out.extend_from_slice(data);
        }
        let sum = xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Decodes file bytes; the error says what is wrong.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        let Some(body_len) = bytes.len().checked_sub(8) else {
            return Err(format!("{} bytes, shorter than any checkpoint", bytes.len()));
        };
        let (body, sum) = bytes.split_at(body_len);
        let stored = u64::from_le_bytes(sum.try_into().expect("8 bytes"));
        if xxh3_64(body) != stored {
            return Err("checksum mismatch (torn or damaged write)".into());
        }
        let mut r = Reader { bytes: body, at: 0 };
        if r.take(4)? != MAGIC {
            return Err("not a checkpoint file (bad magic)".into());
        }
        let version = u16::from_le_bytes(r.array()?);
        if version != VERSION {
            return Err(format!("format version {version}, this build reads {VERSION}"));
        }
        let id = u64::from_le_bytes(r.array()?);
        let created_ms = i64::from_le_bytes(r.array()?);
        let offsets = (0..u32::from_le_bytes(r.array()?))
            .map(|_| {
                Ok(SourceOffset {
                    topic: r.text()?,
                    partition: i32::from_le_bytes(r.array()?),
                    next_offset: i64::from_le_bytes(r.array()?),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let sections = (0..u32::from_le_bytes(r.array()?))
            .map(|_| {
                let name = r.text()?;
                let len =
                    usize::try_from(u64::from_le_bytes(r.array()?)).map_err(|_| "section too large".to_string())?;
                Ok((name, r.take(len)?.to_vec()))
            })
            .collect::<Result<Vec<_>, String>>()?;
        if r.at != body.len() {
            return Err(format!("{} bytes after the last section", body.len() - r.at));
        }
        Ok(Self { id, created_ms, offsets, sections })
    }
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// A bounds-checked cursor over the body.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn text(&mut self) -> Result<String, String> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| format!("text at byte {} is not utf-8", self.at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            id: 7,
            created_ms: 1_760_000_000_000,
            offsets: vec![
                SourceOffset { topic: "telemetry".into(), partition: 0, next_offset: 1_234 },
                SourceOffset { topic: "telemetry".into(), partition: 5, next_offset: 0 },
            ],
            sections: vec![("windows".into(), vec![1, 2, 3]), ("detectors".into(), Vec::new())],
        }
    }

    #[test]
    fn round_trips() {
        let c = sample();
        assert_eq!(Checkpoint::decode(&c.encode()), Ok(c.clone()));
        assert_eq!(c.section("windows"), Some(&[1u8, 2, 3][..]));
        assert_eq!(c.section("missing"), None);
        let empty = Checkpoint::default();
        assert_eq!(Checkpoint::decode(&empty.encode()), Ok(empty));
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_caught() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(Checkpoint::decode(&bytes[..len]).is_err(), "truncated to {len} bytes");
        }
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert!(Checkpoint::decode(&damaged).is_err(), "byte {i} flipped");
        }
    }

    #[test]
    fn another_version_is_refused_by_name() {
        let mut bytes = sample().encode();
        bytes[4] = 9;
        let body = bytes.len() - 8;
        let sum = xxh3_64(&bytes[..body]).to_le_bytes();
        bytes[body..].copy_from_slice(&sum);
        assert_eq!(Checkpoint::decode(&bytes), Err("format version 9, this build reads 1".into()));
    }
}
