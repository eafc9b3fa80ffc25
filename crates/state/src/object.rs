//! One partition's checkpoints in an object store that every node of the site reaches (S3 or
//! a compatible service in production; local files or memory in tests), so that a partition's
//! state follows it to whichever node the consumer group gives it, without a shared volume.
//!
//! Names under the partition's prefix: `checkpoint-<epoch, 10 digits>-<id, 20 digits>.tsck`
//! and `claim-<epoch, 10 digits>`. An owner *claims* the partition when it opens the store:
//! it takes an epoch above every epoch stored and writes its claim. Fencing, in two parts:
//! - before each write an owner lists the claims, and one above its own epoch means the
//!   partition has a newer owner: the write is refused ([`StateError::Fenced`]);
//! - the newest checkpoint is the highest `(epoch, id)`, so a write that raced past that
//!   check (a paused zombie) never outranks anything the newer owner writes.
//!
//! A put is atomic in an object store (readers see the whole object or none), and S3 and its
//! peers acknowledge a put once it is durable; the local-file store writes a temporary file
//! and renames it (without fsync: use `dir` for a node's own disk).

use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

use crate::store::{encode_and_seal, none_readable, unseal_and_decode};
use crate::{Checkpoint, Loaded, PartitionStore, Result, Sealer, Skipped, StateError, WriteStats};

const CHECKPOINT: &str = "checkpoint-";
const CLAIM: &str = "claim-";
const SUFFIX: &str = ".tsck";

/// One partition's checkpoints under `prefix` in an object store, held by one owner.
#[derive(Debug)]
pub struct ObjectCheckpointStore {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    keep: usize,
    /// This owner's claim.
    epoch: u64,
    newest: Option<u64>,
    sealer: Option<Arc<dyn Sealer>>,
    runtime: Arc<tokio::runtime::Runtime>,
}

/// What is stored under a partition's prefix.
#[derive(Debug, Default)]
struct Listing {
    /// `(epoch, id)` of every checkpoint, ascending.
    checkpoints: Vec<(u64, u64)>,
    /// Every claim's epoch, ascending.
    claims: Vec<u64>,
}

impl Listing {
    fn highest_epoch(&self) -> u64 {
        let from_checkpoints = self.checkpoints.iter().map(|c| c.0).max().unwrap_or(0);
        from_checkpoints.max(self.claims.last().copied().unwrap_or(0))
    }
}

impl ObjectCheckpointStore {
    /// Claims the partition under `prefix` (an epoch above any stored) and opens its store,
    /// keeping the newest `keep` checkpoints (at least 2). The calls run on `runtime`.
    pub fn claim(
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
        keep: usize,
        runtime: Arc<tokio::runtime::Runtime>,
    ) -> Result<Self> {
        let mut opened = Self { store, prefix, keep: keep.max(2), epoch: 0, newest: None, sealer: None, runtime };
        let listing = opened.list()?;
        opened.epoch = listing.highest_epoch() + 1;
        opened.newest = listing.checkpoints.iter().map(|c| c.1).max();
        let claim = opened.prefix.clone().join(format!("{CLAIM}{:010}", opened.epoch));
        opened.block_on("put", &claim, opened.store.put(&claim, PutPayload::from_static(b"")))?;
        Ok(opened)
    }

    /// Seals every checkpoint written from now on, and opens sealed ones on load.
    pub fn with_sealer(mut self, sealer: Arc<dyn Sealer>) -> Self {
        self.sealer = Some(sealer);
        self
    }

    /// This owner's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The newest checkpoint under `prefix` that decodes, read without claiming anything (a
    /// monitor or a test may read while the owner writes).
    pub fn read_latest(
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
        sealer: Option<Arc<dyn Sealer>>,
        runtime: Arc<tokio::runtime::Runtime>,
    ) -> Result<Option<Loaded>> {
        let reader = Self { store, prefix, keep: 2, epoch: 0, newest: None, sealer, runtime };
        reader.latest()
    }

    fn name_of(&self, (epoch, id): (u64, u64)) -> ObjectPath {
        self.prefix.clone().join(format!("{CHECKPOINT}{epoch:010}-{id:020}{SUFFIX}"))
    }

    fn shown(&self, name: &ObjectPath) -> std::path::PathBuf {
        format!("{}/{name}", self.store).into()
    }

    fn block_on<T>(
        &self,
        op: &'static str,
        name: &ObjectPath,
        call: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T> {
        self.runtime.block_on(call).map_err(|cause| StateError::Remote {
            op,
            name: self.shown(name),
            cause: Box::new(cause),
        })
    }

    fn list(&self) -> Result<Listing> {
        let listed: Vec<object_store::ObjectMeta> =
            self.block_on("list", &self.prefix, self.store.list(Some(&self.prefix)).try_collect())?;
        let mut listing = Listing::default();
        for meta in listed {
            let Some(name) = meta.location.filename() else { continue };
            if let Some(claim) = name.strip_prefix(CLAIM).and_then(|e| e.parse().ok()) {
                listing.claims.push(claim);
            } else if let Some((epoch, id)) = name
                .strip_prefix(CHECKPOINT)
                .and_then(|n| n.strip_suffix(SUFFIX))
                .and_then(|n| n.split_once('-'))
                .and_then(|(e, i)| Some((e.parse().ok()?, i.parse().ok()?)))
            {
                listing.checkpoints.push((epoch, id));
            }
        }
        listing.checkpoints.sort_unstable();
        listing.claims.sort_unstable();
        Ok(listing)
    }

    /// Removes all but the newest `keep` checkpoints, and the claims of earlier owners.
    fn prune(&self, listing: &Listing) -> Result<()> {
        let old = &listing.checkpoints[..listing.checkpoints.len().saturating_sub(self.keep)];
        for &c in old {
            let name = self.name_of(c);
            self.block_on("delete", &name, self.store.delete(&name))?;
        }
        for &claim in listing.claims.iter().filter(|&&e| e < self.epoch) {
            let name = self.prefix.clone().join(format!("{CLAIM}{claim:010}"));
            self.block_on("delete", &name, self.store.delete(&name))?;
        }
        Ok(())
    }
}

impl PartitionStore for ObjectCheckpointStore {
    fn newest(&self) -> Option<u64> {
        self.newest
    }

    fn write(&mut self, checkpoint: &Checkpoint) -> Result<WriteStats> {
        if let Some(newest) = self.newest.filter(|&n| checkpoint.id <= n) {
            return Err(StateError::NotNewer { id: checkpoint.id, newest });
        }
        let started = Instant::now();
        let listing = self.list()?;
        if let Some(&newer) = listing.claims.iter().find(|&&e| e > self.epoch) {
            return Err(StateError::Fenced { prefix: self.prefix.to_string(), epoch: self.epoch, newer });
        }
        let name = self.name_of((self.epoch, checkpoint.id));
        let bytes = encode_and_seal(checkpoint, self.sealer.as_deref())
            .map_err(|reason| StateError::Corrupt { path: self.shown(&name), reason })?;
        let size = bytes.len() as u64;
        self.block_on("put", &name, self.store.put(&name, PutPayload::from(bytes)))?;
        self.newest = Some(checkpoint.id);
        let mut listing = listing;
        listing.checkpoints.push((self.epoch, checkpoint.id));
        listing.checkpoints.sort_unstable();
        self.prune(&listing)?;
        Ok(WriteStats { path: self.shown(&name), bytes: size, elapsed: started.elapsed() })
    }

    fn latest(&self) -> Result<Option<Loaded>> {
        let mut skipped = Vec::new();
        for (epoch, id) in self.list()?.checkpoints.into_iter().rev() {
            let name = self.name_of((epoch, id));
            let path = self.shown(&name);
            let got = match self.runtime.block_on(async { self.store.get(&name).await?.bytes().await }) {
                Ok(bytes) => bytes,
                // Pruned between listing and reading: an older one follows.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(cause) => return Err(StateError::Remote { op: "get", name: path, cause: Box::new(cause) }),
            };
            match unseal_and_decode(got.to_vec(), self.sealer.as_deref(), id) {
                Ok(checkpoint) => return Ok(Some(Loaded { checkpoint, path, skipped })),
                Err(reason) => skipped.push(Skipped { path, reason }),
            }
        }
        none_readable(skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SourceOffset;

    fn checkpoint(id: u64, next_offset: i64) -> Checkpoint {
        Checkpoint {
            id,
            created_ms: id as i64,
            offsets: vec![SourceOffset { topic: "telemetry".into(), partition: 0, next_offset }],
            sections: vec![("engine".into(), vec![id as u8; 100])],
        }
    }

    fn runtime() -> Arc<tokio::runtime::Runtime> {
        Arc::new(tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap())
    }

    /// Two owners of one partition, on local files: the one that claimed it later wins; the
    /// earlier one's writes are refused from then on, and one that raced past the check never
    /// outranks the newer owner's checkpoints.
    #[test]
    fn a_newer_owner_fences_the_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let (rt, prefix) = (runtime(), ObjectPath::from("telemetry/0"));
        let claim = || ObjectCheckpointStore::claim(store.clone(), prefix.clone(), 2, rt.clone()).unwrap();
        let latest = || ObjectCheckpointStore::read_latest(store.clone(), prefix.clone(), None, rt.clone()).unwrap();

        let mut old = claim();
        assert_eq!(old.epoch(), 1);
        assert!(old.latest().unwrap().is_none());
        old.write(&checkpoint(1, 100)).unwrap();
        old.write(&checkpoint(2, 200)).unwrap();

        let mut new = claim();
        assert_eq!(new.epoch(), 2);
        assert_eq!(new.latest().unwrap().unwrap().checkpoint, checkpoint(2, 200), "the state follows the partition");
        let refused = old.write(&checkpoint(3, 300)).unwrap_err();
        assert!(matches!(refused, StateError::Fenced { epoch: 1, newer: 2, .. }), "{refused}");
        assert!(refused.to_string().contains("a newer owner"), "{refused}");
        assert_eq!(latest().unwrap().checkpoint, checkpoint(2, 200), "the refused write left nothing");

        // A zombie's write that got past the check (put straight into the store here).
        let zombie = new.name_of((1, 9));
        let bytes = encode_and_seal(&checkpoint(9, 900), None).unwrap();
        rt.block_on(store.put(&zombie, PutPayload::from(bytes))).unwrap();
        new.write(&checkpoint(3, 250)).unwrap();
        assert_eq!(latest().unwrap().checkpoint, checkpoint(3, 250), "epoch first: the zombie's id 9 loses");

        let third = claim();
        assert_eq!(third.epoch(), 3);
        assert_eq!(third.latest().unwrap().unwrap().checkpoint, checkpoint(3, 250));
    }

    /// Old checkpoints and earlier owners' claims are pruned; a sealed checkpoint needs the key.
    #[test]
    fn old_checkpoints_and_claims_are_pruned_and_sealing_holds() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let (rt, prefix) = (runtime(), ObjectPath::from("telemetry/4"));
        let mut first = ObjectCheckpointStore::claim(store.clone(), prefix.clone(), 2, rt.clone()).unwrap();
        first.write(&checkpoint(1, 1)).unwrap();
        let mut owner = ObjectCheckpointStore::claim(store.clone(), prefix.clone(), 2, rt.clone())
            .unwrap()
            .with_sealer(Arc::new(crate::store::tests::Xor(7)));
        for id in 2..=5 {
            owner.write(&checkpoint(id, id as i64)).unwrap();
        }
        let listing = owner.list().unwrap();
        assert_eq!(listing.checkpoints, vec![(2, 4), (2, 5)]);
        assert_eq!(listing.claims, vec![2], "the first owner's claim is gone");
        assert_eq!(owner.latest().unwrap().unwrap().checkpoint, checkpoint(5, 5));
        let err = ObjectCheckpointStore::read_latest(store, prefix, None, rt).unwrap_err().to_string();
        assert!(err.contains("key-encryption key"), "{err}");
    }
}
