//! Cold motors: the judges' state of motors that have not reported for a while, sealed in a
//! spill file instead of kept in memory.
//!
//! A plant's condition-monitoring sensors report every few minutes to every half hour, and
//! the shift and wear judges keep about 2.5 KB of history for each motor (days of day means,
//! trend samples) that sits idle between two readings. A [`Tiered`] table keeps a motor's
//! state in memory (hot) while it reports, and moves it into the spill file (cold) once it
//! has been idle [`ColdSpill::after_ms`] of processing time; its next reading brings it back.
//! In memory a cold motor is its row: its shared id and where its bytes are (32 bytes).
//!
//! The spill file is a cache, not state:
//! - it is unlinked as soon as it is created, so nothing is left behind, even by a crash;
//! - the checkpoints hold every motor, hot or cold, and a restore fills the file again;
//! - each motor's bytes are sealed (AES-256-GCM) under a key drawn at random for the file and
//!   kept only in memory, so the file shows nothing to whoever takes the disk;
//! - space freed by motors that came back or left is reclaimed by rewriting the file once
//!   more than half of it is garbage.
//!
//! Without a spill ([`Tiered::spill_to`] never called) every motor stays hot.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StreamError;
use crate::checkpoint::{from_bytes, to_bytes};
use crate::ids::{MotorTable, shared};

/// Where cold motors go, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColdSpill {
    /// The directory of the spill files (one per judge, unlinked at once).
    pub dir: PathBuf,
    /// A motor idle this long (processing time, ms) goes cold.
    pub after_ms: i64,
}

/// A motor's state, in memory or in the spill file.
#[derive(Debug)]
enum Slot<V> {
    /// In memory; the processing time of its last use, in seconds.
    Hot { value: Box<V>, touched_s: u32 },
    /// In the spill file: `len` bytes at `at`.
    Cold { at: u64, len: u32 },
}

/// Seconds of processing time `now_ms`, as a hot slot keeps them.
fn seconds(now_ms: i64) -> u32 {
    (now_ms / 1000).clamp(0, u32::MAX as i64) as u32
}

/// The file is rewritten when it is larger than this and more than half garbage.
const COMPACT_ABOVE: u64 = 16 << 20;

/// The spill file and its key.
#[derive(Debug)]
struct Spill {
    file: File,
    dir: PathBuf,
    key: LessSafeKey,
    /// Nonces used so far (each sealing takes the next: never one twice under the key).
    sealed: u64,
    /// The file's end (with what is pending), and the bytes of it that cold motors hold.
    end: u64,
    live: u64,
    /// Sealed bytes not written yet: they go in one write of up to [`WRITE_CHUNK`] (a sweep
    /// moves thousands of motors; a write each spent most of its time in the kernel).
    pending: Vec<u8>,
    after_ms: i64,
}

/// Sealed motors are written in chunks of about this many bytes.
const WRITE_CHUNK: usize = 1 << 20;

fn io_error(action: &'static str) -> impl FnOnce(std::io::Error) -> StreamError {
    move |source| StreamError::Spill { action, source }
}

/// A file in `dir` that no name refers to.
fn unlinked_file(dir: &Path) -> std::io::Result<File> {
    static MADE: AtomicU64 = AtomicU64::new(0);
    loop {
        let name = format!("tessera-cold-{}-{}", std::process::id(), MADE.fetch_add(1, Ordering::Relaxed));
        let path = dir.join(name);
        match OpenOptions::new().read(true).write(true).create_new(true).open(&path) {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

impl Spill {
    fn create(spill: &ColdSpill) -> Result<Self, StreamError> {
        std::fs::create_dir_all(&spill.dir).map_err(io_error("creating its directory"))?;
        let file = unlinked_file(&spill.dir).map_err(io_error("creating it"))?;
        let mut key = [0u8; 32];
        let sealing = || std::io::Error::other("no key for sealing");
        SystemRandom::new().fill(&mut key).map_err(|_| sealing()).map_err(io_error("drawing its key"))?;
        let key = UnboundKey::new(&AES_256_GCM, &key).map_err(|_| sealing()).map_err(io_error("drawing its key"))?;
        Ok(Self {
            file,
            dir: spill.dir.clone(),
            key: LessSafeKey::new(key),
            sealed: 0,
            end: 0,
            live: 0,
            pending: Vec::new(),
            after_ms: spill.after_ms,
        })
    }

    /// Seals `bytes` and appends them (nonce, then sealed bytes): where they went. They are
    /// in the file once [`Self::flush`] has run.
    fn put(&mut self, mut bytes: Vec<u8>) -> Result<(u64, u32), StreamError> {
        self.sealed += 1;
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..8].copy_from_slice(&self.sealed.to_le_bytes());
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut bytes)
            .map_err(|_| std::io::Error::other("sealing failed"))
            .map_err(io_error("sealing a motor"))?;
        let (at, len) = (self.end, (NONCE_LEN + bytes.len()) as u32);
        self.pending.extend_from_slice(&nonce);
        self.pending.extend_from_slice(&bytes);
        self.end += u64::from(len);
        self.live += u64::from(len);
        if self.pending.len() >= WRITE_CHUNK {
            self.flush()?;
        }
        Ok((at, len))
    }

    /// Writes what [`Self::put`] holds back.
    fn flush(&mut self) -> Result<(), StreamError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let at = self.end - self.pending.len() as u64;
        self.file.write_all_at(&self.pending, at).map_err(io_error("writing motors"))?;
        self.pending.clear();
        if self.pending.capacity() > 2 * WRITE_CHUNK {
            self.pending.shrink_to(WRITE_CHUNK);
        }
        Ok(())
    }

    /// The sealed bytes at `at`, as written.
    fn read(&self, at: u64, len: u32) -> Result<Vec<u8>, StreamError> {
        let mut blob = vec![0; len as usize];
        self.file.read_exact_at(&mut blob, at).map_err(io_error("reading a motor"))?;
        Ok(blob)
    }

    /// The bytes [`Self::put`] sealed at `at`.
    fn get(&self, at: u64, len: u32) -> Result<Vec<u8>, StreamError> {
        let mut blob = self.read(at, len)?;
        let nonce = Nonce::try_assume_unique_for_key(&blob[..NONCE_LEN.min(blob.len())])
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "a motor's bytes are cut short"))
            .map_err(io_error("opening a motor"))?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut blob[NONCE_LEN..])
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "a motor's bytes do not open"))
            .map_err(io_error("opening a motor"))?
            .len();
        blob.copy_within(NONCE_LEN..NONCE_LEN + plain, 0);
        blob.truncate(plain);
        Ok(blob)
    }

    /// `len` bytes of the file no longer hold a motor.
    fn free(&mut self, len: u32) {
        self.live -= u64::from(len);
    }
}

/// A per-motor table of a judge whose idle motors go cold (see the module docs).
#[derive(Debug)]
pub struct Tiered<V> {
    rows: MotorTable<Slot<V>>,
    spill: Option<Spill>,
    /// When idle motors are next looked for (processing time, ms).
    next_sweep_ms: i64,
    hot: usize,
}

impl<V> Default for Tiered<V> {
    fn default() -> Self {
        Self { rows: MotorTable::new(), spill: None, next_sweep_ms: i64::MIN, hot: 0 }
    }
}

impl<V: Serialize + DeserializeOwned + Clone> Tiered<V> {
    /// An empty table whose motors all stay hot until [`Self::spill_to`].
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on, motors idle `spill.after_ms` go into a spill file in `spill.dir`, made
    /// now. Set once, before the first reading.
    pub fn spill_to(&mut self, spill: &ColdSpill) -> Result<(), StreamError> {
        if self.spill.is_some() {
            return Err(StreamError::Checkpoint("the cold motors' spill is set once, before any input".into()));
        }
        self.spill = Some(Spill::create(spill)?);
        Ok(())
    }

    /// How many motors.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there is no motor.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// How many motors are in memory.
    pub fn hot_len(&self) -> usize {
        self.hot
    }

    /// The spill file's size and the bytes of it that cold motors hold (0, 0 without one).
    pub fn spill_bytes(&self) -> (u64, u64) {
        self.spill.as_ref().map_or((0, 0), |s| (s.end, s.live))
    }

    /// The motor's state at processing time `now_ms`, made by `make` if it has none, brought
    /// back into memory if it was cold.
    pub fn entry(&mut self, motor: &str, now_ms: i64, make: impl FnOnce() -> V) -> Result<&mut V, StreamError> {
        let touched_s = seconds(now_ms);
        let mut made = false;
        let slot = self.rows.entry(motor, || {
            made = true;
            Slot::Hot { value: Box::new(make()), touched_s }
        });
        if made {
            self.hot += 1;
        }
        if let Slot::Cold { at, len } = *slot {
            let spill = self.spill.as_mut().expect("a cold motor is in the spill file");
            let value: V = from_bytes(&spill.get(at, len)?)?;
            spill.free(len);
            *slot = Slot::Hot { value: Box::new(value), touched_s };
            self.hot += 1;
        }
        match slot {
            Slot::Hot { value, touched_s: t } => {
                *t = touched_s;
                Ok(value)
            }
            Slot::Cold { .. } => unreachable!("brought back above"),
        }
    }

    /// The motor's state (decoded from the spill file if it is cold), or `None`.
    pub fn get(&self, motor: &str) -> Result<Option<V>, StreamError> {
        self.rows.get(motor).map(|slot| self.value_of(slot)).transpose()
    }

    fn value_of(&self, slot: &Slot<V>) -> Result<V, StreamError> {
        match slot {
            Slot::Hot { value, .. } => Ok(V::clone(value)),
            Slot::Cold { at, len } => {
                from_bytes(&self.spill.as_ref().expect("a cold motor is in the spill file").get(*at, *len)?)
            }
        }
    }

    /// Moves the motors idle since `after_ms` before `now_ms` that `may_cool` accepts into
    /// the spill file; at most every quarter of `after_ms` (the call is cheap otherwise).
    /// Then rewrites the file if it is mostly garbage.
    pub fn sweep(&mut self, now_ms: i64, may_cool: impl Fn(&V) -> bool) -> Result<(), StreamError> {
        let Some(spill) = &mut self.spill else { return Ok(()) };
        if now_ms < self.next_sweep_ms {
            return Ok(());
        }
        self.next_sweep_ms = now_ms + (spill.after_ms / 4).max(1_000);
        // Used last at or before this second: idle long enough.
        let idle_before = now_ms.div_euclid(1000) - spill.after_ms / 1000;
        let mut cooled = 0;
        for (_, slot) in self.rows.iter_mut() {
            let Slot::Hot { value, touched_s } = slot else { continue };
            if i64::from(*touched_s) > idle_before || !may_cool(value) {
                continue;
            }
            let (at, len) = spill.put(to_bytes(&**value)?)?;
            *slot = Slot::Cold { at, len };
            cooled += 1;
        }
        self.hot -= cooled;
        spill.flush()?;
        self.compact_if_mostly_garbage()
    }

    /// Rewrites the spill file with only what cold motors hold, if it is larger than
    /// [`COMPACT_ABOVE`] and more than half garbage. The sealed bytes move as they are.
    fn compact_if_mostly_garbage(&mut self) -> Result<(), StreamError> {
        let Some(spill) = &mut self.spill else { return Ok(()) };
        if spill.end <= COMPACT_ABOVE || spill.end <= 2 * spill.live {
            return Ok(());
        }
        let file = unlinked_file(&spill.dir).map_err(io_error("creating its new file"))?;
        let (mut end, mut chunk) = (0u64, Vec::with_capacity(WRITE_CHUNK));
        let write = |chunk: &mut Vec<u8>, end: u64| {
            file.write_all_at(chunk, end - chunk.len() as u64).map_err(io_error("rewriting motors"))?;
            chunk.clear();
            Ok::<(), StreamError>(())
        };
        for (_, slot) in self.rows.iter_mut() {
            let Slot::Cold { at, len } = slot else { continue };
            chunk.extend_from_slice(&spill.read(*at, *len)?);
            *at = end;
            end += u64::from(*len);
            if chunk.len() >= WRITE_CHUNK {
                write(&mut chunk, end)?;
            }
        }
        write(&mut chunk, end)?;
        (spill.file, spill.end, spill.live) = (file, end, end);
        Ok(())
    }

    /// The state of the motors `include` accepts, sorted by motor (cold ones decoded).
    pub fn collect(&self, include: &dyn Fn(&str) -> bool) -> Result<Vec<(String, V)>, StreamError> {
        let mut motors = self
            .rows
            .iter()
            .filter(|(m, _)| include(m))
            .map(|(m, slot)| Ok((m.to_string(), self.value_of(slot)?)))
            .collect::<Result<Vec<_>, StreamError>>()?;
        motors.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(motors)
    }

    /// Takes over `motors` (a checkpoint's, or a partition handed over): straight into the
    /// spill file when there is one (their next readings bring them back), else into memory.
    /// A motor already here gets the state given.
    pub fn adopt(&mut self, motors: Vec<(String, V)>, now_ms: i64) -> Result<(), StreamError> {
        for (motor, value) in motors {
            let slot = match &mut self.spill {
                Some(spill) => {
                    let (at, len) = spill.put(to_bytes(&value)?)?;
                    Slot::Cold { at, len }
                }
                None => Slot::Hot { value: Box::new(value), touched_s: seconds(now_ms) },
            };
            self.set(&motor, slot);
        }
        self.spill.as_mut().map_or(Ok(()), Spill::flush)
    }

    /// Puts `slot` in the motor's row, in place of the one it had.
    fn set(&mut self, motor: &str, slot: Slot<V>) {
        self.hot += usize::from(matches!(slot, Slot::Hot { .. }));
        match self.rows.get_mut(motor) {
            Some(old) => {
                let old = std::mem::replace(old, slot);
                self.forget(&old);
            }
            None => self.rows.insert(shared(motor), slot),
        }
    }

    /// Takes over `motors` into memory, whether or not there is a spill file (the next
    /// sweeps move them once they are idle).
    pub fn adopt_hot(&mut self, motors: Vec<(String, V)>, now_ms: i64) {
        for (motor, value) in motors {
            self.set(&motor, Slot::Hot { value: Box::new(value), touched_s: seconds(now_ms) });
        }
    }

    /// Accounts for a slot that is gone.
    fn forget(&mut self, slot: &Slot<V>) {
        match slot {
            Slot::Hot { .. } => self.hot -= 1,
            Slot::Cold { len, .. } => self.spill.as_mut().expect("a cold motor is in the spill file").free(*len),
        }
    }

    /// Keeps the motors `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let (mut hot, mut freed) = (0, 0u64);
        self.rows.retain(|motor, slot| {
            let kept = keep(motor);
            if !kept {
                match slot {
                    Slot::Hot { .. } => hot += 1,
                    Slot::Cold { len, .. } => freed += u64::from(*len),
                }
            }
            kept
        });
        self.hot -= hot;
        if let Some(spill) = &mut self.spill {
            spill.live -= freed;
        }
    }

    /// The motors in memory.
    pub fn hot_values(&self) -> impl Iterator<Item = &V> {
        self.rows.values().filter_map(|slot| match slot {
            Slot::Hot { value, .. } => Some(&**value),
            Slot::Cold { .. } => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spill(dir: &Path) -> ColdSpill {
        ColdSpill { dir: dir.to_path_buf(), after_ms: 60_000 }
    }

    #[test]
    fn idle_motors_go_cold_and_come_back_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let mut table: Tiered<Vec<f64>> = Tiered::new();
        table.spill_to(&spill(dir.path())).unwrap();
        for m in 0..100 {
            table.entry(&format!("M{m}"), 0, Vec::new).unwrap().extend([m as f64, 0.5]);
        }
        table.entry("M7", 50_000, Vec::new).unwrap().push(7.7);
        assert_eq!(table.hot_len(), 100);
        // The first sweep at 61 s: M7 was used 11 s ago, the others 61 s ago.
        table.sweep(61_000, |_| true).unwrap();
        assert_eq!(table.hot_len(), 1, "only M7 stays in memory");
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "the spill file has no name");
        let (size, live) = table.spill_bytes();
        assert!(size > 0 && size == live);
        assert_eq!(table.get("M3").unwrap(), Some(vec![3.0, 0.5]), "read from the file");
        // A reading brings a motor back; its bytes in the file are garbage from then on.
        table.entry("M3", 62_000, Vec::new).unwrap().push(3.3);
        assert_eq!(table.hot_len(), 2);
        assert!(table.spill_bytes().1 < live);
        let all = table.collect(&|_| true).unwrap();
        assert_eq!(all.len(), 100);
        assert_eq!(all.iter().find(|(m, _)| m == "M3").unwrap().1, vec![3.0, 0.5, 3.3]);
        assert_eq!(all.iter().find(|(m, _)| m == "M7").unwrap().1, vec![7.0, 0.5, 7.7]);
        assert_eq!(all.iter().find(|(m, _)| m == "M99").unwrap().1, vec![99.0, 0.5]);
        // Motors leave, hot and cold.
        table.retain(|m| m != "M3" && m != "M4");
        assert_eq!((table.len(), table.hot_len()), (98, 1));
        assert_eq!(table.get("M4").unwrap(), None);
    }

    #[test]
    fn a_motor_that_may_not_cool_stays_and_sweeps_wait_a_quarter_of_the_idle_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut table: Tiered<u32> = Tiered::new();
        table.spill_to(&spill(dir.path())).unwrap();
        *table.entry("open", 0, || 1).unwrap() = 1;
        table.entry("quiet", 0, || 0).unwrap();
        table.entry("later", 45_000, || 0).unwrap();
        table.sweep(10_000, |v| *v == 0).unwrap(); // none has been idle a minute
        assert_eq!(table.hot_len(), 3);
        table.sweep(100_000, |v| *v == 0).unwrap();
        assert_eq!(table.hot_len(), 2, "quiet goes; the one with an open alert stays, and later is not idle yet");
        table.sweep(110_000, |v| *v == 0).unwrap();
        assert_eq!(table.hot_len(), 2, "later is idle now, but the next sweep is due a quarter minute on, at 115 s");
        table.sweep(115_000, |v| *v == 0).unwrap();
        assert_eq!(table.hot_len(), 1);
        assert_eq!(table.hot_values().copied().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn adopted_motors_go_straight_to_the_file_and_garbage_is_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let mut table: Tiered<Vec<u8>> = Tiered::new();
        table.spill_to(&spill(dir.path())).unwrap();
        let big = |m: u16| vec![m as u8; 64 << 10];
        table.adopt((0..300u16).map(|m| (format!("M{m}"), big(m))).collect(), 0).unwrap();
        assert_eq!((table.len(), table.hot_len()), (300, 0), "adopted cold");
        let (size, _) = table.spill_bytes();
        assert!(size > COMPACT_ABOVE);
        // A motor handed over again replaces its state.
        table.adopt(vec![("M1".into(), vec![9])], 0).unwrap();
        assert_eq!(table.get("M1").unwrap(), Some(vec![9]));
        // Most motors leave: the next sweep rewrites the file with what is left.
        table.retain(|m| m[1..].parse::<u32>().unwrap() < 20);
        table.sweep(0, |_| true).unwrap();
        let (size, live) = table.spill_bytes();
        assert_eq!(size, live, "rewritten");
        assert!(size < 20 * (65 << 10));
        for m in 2..20u16 {
            assert_eq!(table.get(&format!("M{m}")).unwrap(), Some(big(m)), "M{m} moved intact");
        }
    }

    /// As whoever takes the disk: the file holds no motor's bytes in clear, and bytes changed
    /// in it are refused, not read as state.
    #[test]
    fn the_spill_file_shows_nothing_and_refuses_changed_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut table: Tiered<String> = Tiered::new();
        table.spill_to(&spill(dir.path())).unwrap();
        let secret = "bearing temperature 87.25 on line 4 ".repeat(20);
        table.adopt((0..10).map(|m| (format!("M{m}"), format!("{m} {secret}"))).collect(), 0).unwrap();
        let spill = table.spill.as_ref().unwrap();
        let mut file = vec![0; spill.end as usize];
        spill.file.read_exact_at(&mut file, 0).unwrap();
        let clear = "bearing temperature".as_bytes();
        assert!(!file.windows(clear.len()).any(|w| w == clear), "no motor's bytes in clear");
        // One byte changed in M3's sealed bytes.
        let Some(Slot::Cold { at, .. }) = table.rows.get("M3") else { panic!("M3 is cold") };
        let at = *at + 20;
        let mut byte = [0u8];
        spill.file.read_exact_at(&mut byte, at).unwrap();
        spill.file.write_all_at(&[byte[0] ^ 1], at).unwrap();
        let err = table.get("M3").expect_err("changed bytes do not open");
        assert!(err.to_string().contains("do not open"), "{err}");
        assert_eq!(table.get("M4").unwrap(), Some(format!("4 {secret}")), "the others still open");
    }

    #[test]
    fn without_a_spill_every_motor_stays_in_memory() {
        let mut table: Tiered<u8> = Tiered::new();
        *table.entry("M1", 0, || 0).unwrap() += 1;
        table.sweep(i64::MAX / 2, |_| true).unwrap();
        assert_eq!((table.hot_len(), table.spill_bytes()), (1, (0, 0)));
        table.adopt(vec![("M2".into(), 5)], 0).unwrap();
        assert_eq!(table.hot_len(), 2);
    }
}
