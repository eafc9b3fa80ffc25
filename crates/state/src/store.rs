//! The checkpoint directory: atomic, durable writes; loading the newest valid checkpoint;
//! pruning old ones.
//!
//! Files are `checkpoint-<id, 20 digits>.tsck`; a write goes through `.tmp-checkpoint-<id>`,
//! which a crash may leave behind and the next [`CheckpointStore::open`] removes.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Checkpoint, Result, StateError};

const PREFIX: &str = "checkpoint-";
const SUFFIX: &str = ".tsck";
const TEMP_PREFIX: &str = ".tmp-checkpoint-";

/// What one write cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteStats {
    /// The file written.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Encoding, writing, syncing and renaming.
    pub elapsed: Duration,
}

/// A checkpoint file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

/// The newest valid checkpoint, and the newer files skipped on the way to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// Its file.
    pub path: PathBuf,
    /// Newer files that did not decode (a crash mid-write cannot cause this, as writes are
    /// renamed into place; damage after the fact can).
    pub skipped: Vec<Skipped>,
}

/// Seals checkpoint files before they are written and opens them when read (authenticated
/// encryption under a site key; the store crate provides one).
pub trait Sealer: Send + Sync + std::fmt::Debug {
    /// The sealed form of `plain`.
    fn seal(&self, plain: &[u8]) -> std::result::Result<Vec<u8>, String>;
    /// The plain form of `sealed`; an error if it was not sealed by this site's key or was
    /// altered.
    fn open(&self, sealed: &[u8]) -> std::result::Result<Vec<u8>, String>;
}

/// The first bytes of a sealed checkpoint file.
const SEALED_MAGIC: &[u8] = b"TSCKSEAL1";

/// A directory of checkpoints on the node's own disk.
#[derive(Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    keep: usize,
    newest: Option<u64>,
    sealer: Option<Arc<dyn Sealer>>,
}

impl crate::PartitionStore for CheckpointStore {
    fn newest(&self) -> Option<u64> {
        CheckpointStore::newest(self)
    }
    fn write(&mut self, checkpoint: &Checkpoint) -> Result<WriteStats> {
        CheckpointStore::write(self, checkpoint)
    }
    fn latest(&self) -> Result<Option<Loaded>> {
        CheckpointStore::latest(self)
    }
}

impl CheckpointStore {
    /// Opens (creating it if needed) the store in `dir`, keeping the newest `keep` checkpoints
    /// (at least 2, so that a damaged newest file still leaves one to fall back on). Removes
    /// temporary files an interrupted write left.
    pub fn open(dir: impl Into<PathBuf>, keep: usize) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| StateError::Io {
            op: "create directory",
            path: dir.clone(),
            cause: source,
        })?;
        for entry in read_dir(&dir)? {
            if entry.file_name().to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX)) {
                let path = entry.path();
                fs::remove_file(&path).map_err(|source| StateError::Io { op: "remove", path, cause: source })?;
            }
        }
        let mut store = Self { dir, keep: keep.max(2), newest: None, sealer: None };
        store.newest = store.ids()?.last().copied();
        Ok(store)
    }

    /// Seals every checkpoint written from now on, and opens sealed ones on load.
    pub fn with_sealer(mut self, sealer: Arc<dyn Sealer>) -> Self {
        self.sealer = Some(sealer);
        self
    }

    /// The newest id stored (also a file that does not decode): the next write needs a higher one.
    pub fn newest(&self) -> Option<u64> {
        self.newest
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The ids stored, oldest first.
    pub fn ids(&self) -> Result<Vec<u64>> {
        let mut ids: Vec<u64> = read_dir(&self.dir)?
            .iter()
            .filter_map(|e| {
                e.file_name().to_str().and_then(|n| n.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?.parse().ok())
            })
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Writes `checkpoint` durably: when this returns `Ok`, it survives a crash or power loss,
    /// and the offsets it names may be committed. On error nothing changed: the previous
    /// checkpoints are intact, and the caller must not commit.
    pub fn write(&mut self, checkpoint: &Checkpoint) -> Result<WriteStats> {
        if let Some(newest) = self.newest.filter(|&n| checkpoint.id <= n) {
            return Err(StateError::NotNewer { id: checkpoint.id, newest });
        }
        let started = Instant::now();
        let bytes = encode_and_seal(checkpoint, self.sealer.as_deref())
            .map_err(|reason| StateError::Corrupt { path: self.path_of(checkpoint.id), reason })?;
        let temp = self.dir.join(format!("{TEMP_PREFIX}{}", checkpoint.id));
        let path = self.path_of(checkpoint.id);
        let written = write_synced(&temp, &bytes).and_then(|()| {
            fs::rename(&temp, &path).map_err(|source| StateError::Io {
                op: "rename",
                path: temp.clone(),
                cause: source,
            })?;
            sync_dir(&self.dir)
        });
        if let Err(e) = written {
            // Best effort: the temporary file is garbage either way, and `open` removes it.
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        self.newest = Some(checkpoint.id);
        self.prune()?;
        Ok(WriteStats { path, bytes: bytes.len() as u64, elapsed: started.elapsed() })
    }

    /// The newest checkpoint that decodes; `None` for an empty store. A store whose files all
    /// fail to decode is an error, not an empty store: starting from nothing would silently drop
    /// the state those files held.
    pub fn latest(&self) -> Result<Option<Loaded>> {
        Self::read_latest_sealed(&self.dir, self.sealer.as_deref())
    }

    /// [`Self::latest`] of the store in `dir`, without opening it: nothing in the directory
    /// changes, so another process (a monitor, a test) may read while the owner writes. A file
    /// pruned between listing and reading is passed over.
    pub fn read_latest(dir: &Path) -> Result<Option<Loaded>> {
        Self::read_latest_sealed(dir, None)
    }

    /// [`Self::read_latest`], opening sealed files with `sealer` (without one, a sealed file is
    /// skipped as unreadable).
    pub fn read_latest_sealed(dir: &Path, sealer: Option<&dyn Sealer>) -> Result<Option<Loaded>> {
        let reader = Self { dir: dir.to_path_buf(), keep: 2, newest: None, sealer: None };
        let mut skipped = Vec::new();
        for id in reader.ids()?.into_iter().rev() {
            let path = reader.path_of(id);
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(StateError::Io { op: "read", path, cause: source }),
            };
            match unseal_and_decode(bytes, sealer, id) {
                Ok(checkpoint) => return Ok(Some(Loaded { checkpoint, path, skipped })),
                Err(reason) => skipped.push(Skipped { path, reason }),
            }
        }
        none_readable(skipped)
    }

    fn path_of(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{PREFIX}{id:020}{SUFFIX}"))
    }

    /// Removes all but the newest `keep` checkpoints.
    fn prune(&self) -> Result<()> {
        let ids = self.ids()?;
        for &id in &ids[..ids.len().saturating_sub(self.keep)] {
            let path = self.path_of(id);
            fs::remove_file(&path).map_err(|source| StateError::Io { op: "remove", path, cause: source })?;
        }
        Ok(())
    }
}

/// The end of a search for the newest checkpoint that found none usable: an empty store, or
/// (`skipped` not empty) an error naming the newest file, never a fresh start.
pub(crate) fn none_readable(skipped: Vec<Skipped>) -> Result<Option<Loaded>> {
    match skipped.into_iter().next() {
        None => Ok(None),
        Some(newest) => Err(StateError::Corrupt {
            path: newest.path,
            reason: format!("no checkpoint in the store decodes; the newest: {}", newest.reason),
        }),
    }
}

/// The bytes stored for `checkpoint`: encoded, and sealed when there is a sealer.
pub(crate) fn encode_and_seal(
    checkpoint: &Checkpoint,
    sealer: Option<&dyn Sealer>,
) -> std::result::Result<Vec<u8>, String> {
    let bytes = checkpoint.encode();
    match sealer {
        None => Ok(bytes),
        Some(sealer) => {
            let sealed = sealer.seal(&bytes).map_err(|reason| format!("sealing failed: {reason}"))?;
            Ok([SEALED_MAGIC, &sealed].concat())
        }
    }
}

/// The checkpoint stored as `bytes` under the name of checkpoint `id`, or why it cannot be
/// used.
pub(crate) fn unseal_and_decode(
    bytes: Vec<u8>,
    sealer: Option<&dyn Sealer>,
    id: u64,
) -> std::result::Result<Checkpoint, String> {
    let bytes = match (bytes.strip_prefix(SEALED_MAGIC), sealer) {
        (None, _) => bytes,
        (Some(sealed), Some(sealer)) => {
            sealer.open(sealed).map_err(|reason| format!("sealed, and does not open: {reason}"))?
        }
        (Some(_), None) => return Err("sealed; reading it needs the site's key-encryption key".into()),
    };
    match Checkpoint::decode(&bytes)? {
        checkpoint if checkpoint.id == id => Ok(checkpoint),
        checkpoint => Err(format!("holds id {}, not the {id} of its name", checkpoint.id)),
    }
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let io = |source| StateError::Io { op: "list", path: dir.to_path_buf(), cause: source };
    fs::read_dir(dir).map_err(io)?.collect::<std::io::Result<Vec<_>>>().map_err(io)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |op| move |source| StateError::Io { op, path: path.to_path_buf(), cause: source };
    let mut file = File::create(path).map_err(io("create"))?;
    file.write_all(bytes).map_err(io("write"))?;
    file.sync_all().map_err(io("sync"))
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    let io = |op| move |source| StateError::Io { op, path: dir.to_path_buf(), cause: source };
    File::open(dir).map_err(io("open directory"))?.sync_all().map_err(io("sync directory"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::SourceOffset;

    fn checkpoint(id: u64) -> Checkpoint {
        Checkpoint {
            id,
            created_ms: 1_000 * id as i64,
            offsets: vec![SourceOffset { topic: "telemetry".into(), partition: 3, next_offset: 100 * id as i64 }],
            sections: vec![("windows".into(), vec![id as u8; 1_000])],
        }
    }

    /// A toy sealer for the store's own tests (the real one, AES-GCM, is in `tessera-store`).
    #[derive(Debug)]
    pub(crate) struct Xor(pub(crate) u8);

    impl Sealer for Xor {
        fn seal(&self, plain: &[u8]) -> std::result::Result<Vec<u8>, String> {
            Ok(plain.iter().map(|b| b ^ self.0).chain([self.0]).collect())
        }
        fn open(&self, sealed: &[u8]) -> std::result::Result<Vec<u8>, String> {
            match sealed.split_last() {
                Some((&k, body)) if k == self.0 => Ok(body.iter().map(|b| b ^ self.0).collect()),
                _ => Err("another key".into()),
            }
        }
    }

    #[test]
    fn sealed_checkpoints_load_only_with_the_sealer() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CheckpointStore::open(dir.path(), 2).unwrap().with_sealer(Arc::new(Xor(0x5a)));
        store.write(&checkpoint(1)).unwrap();
        let bytes = fs::read(store.path_of(1)).unwrap();
        assert!(
            bytes.starts_with(SEALED_MAGIC) && !bytes.windows(8).any(|w| w == [1u8; 8]),
            "the state is not in the clear"
        );
        assert_eq!(store.latest().unwrap().unwrap().checkpoint, checkpoint(1));
        let err = CheckpointStore::read_latest(dir.path()).unwrap_err().to_string();
        assert!(err.contains("needs the site's key-encryption key"), "{err}");
        let err = CheckpointStore::read_latest_sealed(dir.path(), Some(&Xor(1))).unwrap_err().to_string();
        assert!(err.contains("does not open"), "{err}");
    }

    #[test]
    fn writes_load_back_newest_first_and_old_ones_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CheckpointStore::open(dir.path(), 2).unwrap();
        assert_eq!(store.latest().unwrap(), None);
        for id in 1..=4 {
            let stats = store.write(&checkpoint(id)).unwrap();
            assert!(stats.bytes > 1_000 && stats.path.exists());
        }
        assert_eq!(store.ids().unwrap(), [3, 4]);
        let loaded = store.latest().unwrap().unwrap();
        assert_eq!((loaded.checkpoint, loaded.skipped), (checkpoint(4), vec![]));
        // Reopened, the store knows its newest id.
        let mut reopened = CheckpointStore::open(dir.path(), 2).unwrap();
        assert!(matches!(reopened.write(&checkpoint(4)), Err(StateError::NotNewer { id: 4, newest: 4 })));
        reopened.write(&checkpoint(5)).unwrap();
    }

    #[test]
    fn an_interrupted_write_leaves_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CheckpointStore::open(dir.path(), 2).unwrap();
        store.write(&checkpoint(1)).unwrap();
        // What a crash between write and rename leaves: a temporary file, never loaded.
        fs::write(dir.path().join(format!("{TEMP_PREFIX}2")), &checkpoint(2).encode()[..100]).unwrap();
        let store = CheckpointStore::open(dir.path(), 2).unwrap();
        assert_eq!(store.latest().unwrap().unwrap().checkpoint, checkpoint(1));
        assert!(!dir.path().join(format!("{TEMP_PREFIX}2")).exists(), "open removes leftovers");
    }

    #[test]
    fn a_damaged_newest_file_falls_back_to_the_one_before_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CheckpointStore::open(dir.path(), 3).unwrap();
        for id in 1..=3 {
            store.write(&checkpoint(id)).unwrap();
        }
        let newest = store.path_of(3);
        let bytes = fs::read(&newest).unwrap();
        fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
        let loaded = store.latest().unwrap().unwrap();
        assert_eq!(loaded.checkpoint, checkpoint(2));
        assert_eq!(loaded.skipped.len(), 1);
        assert_eq!(loaded.skipped[0].path, newest);
        assert!(loaded.skipped[0].reason.contains("checksum"), "{}", loaded.skipped[0].reason);
        // A file renamed to another id is refused too.
        fs::rename(store.path_of(2), store.path_of(3)).unwrap();
        let loaded = store.latest().unwrap().unwrap();
        assert_eq!(loaded.checkpoint, checkpoint(1));
        assert!(loaded.skipped[0].reason.contains("holds id 2"), "{}", loaded.skipped[0].reason);
    }

    #[test]
    fn a_store_with_nothing_readable_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CheckpointStore::open(dir.path(), 2).unwrap();
        store.write(&checkpoint(1)).unwrap();
        fs::write(store.path_of(1), b"garbage").unwrap();
        let err = store.latest().unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("no checkpoint in the store decodes"), "{err}");
    }

    #[test]
    fn a_failed_write_names_the_file_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CheckpointStore::open(dir.path(), 2).unwrap();
        store.write(&checkpoint(1)).unwrap();
        // Something in the way of the temporary file: its creation fails.
        let blocker = dir.path().join(format!("{TEMP_PREFIX}2"));
        fs::create_dir(&blocker).unwrap();
        let err = store.write(&checkpoint(2)).unwrap_err();
        match &err {
            StateError::Io { op, path, .. } => assert_eq!((*op, path), ("create", &blocker)),
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains(".tmp-checkpoint-2"), "{err}");
        assert_eq!(store.latest().unwrap().unwrap().checkpoint, checkpoint(1));
        fs::remove_dir(&blocker).unwrap();
        store.write(&checkpoint(2)).unwrap();
        assert_eq!(store.latest().unwrap().unwrap().checkpoint, checkpoint(2));
    }
}
