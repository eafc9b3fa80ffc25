//! The replicated state machine on disk: the registry and the audit log in one redb file, and
//! snapshots as files beside it.
//!
//! Applying a batch of entries is one durable redb transaction that writes the new registry,
//! the last applied log id and membership, and the batch's audit records together; only after
//! it commits are the results handed back to the proposers and the in-memory copy (which
//! serves reads) replaced. A snapshot is the registry plus the whole audit log up to its last
//! log id, written to a temporary file, fsynced and renamed; only the newest is kept.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::log_store::{decode, encode, io_error};
use crate::registry::{AuditRecord, Registry};
use crate::types::{Outcome, TypeConfig};

const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const APPLIED: &str = "applied";
const SNAPSHOT_SUFFIX: &str = ".snapshot";

/// The state machine's state: the registry and how far the log has been applied.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    /// The last log id applied.
    pub last_applied: Option<LogIdOf<TypeConfig>>,
    /// The last membership applied.
    pub membership: StoredMembershipOf<TypeConfig>,
    /// The registry.
    pub registry: Registry,
}

/// What a snapshot holds besides its metadata.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    applied: Applied,
    audit: Vec<AuditRecord>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMetaOf<TypeConfig>,
    body: SnapshotBody,
}

/// A read-only handle on the applied state, for the admin API (cheap to clone).
#[derive(Clone)]
pub struct RegistryView {
    db: Arc<Database>,
    applied: Arc<RwLock<Applied>>,
}

impl RegistryView {
    /// A copy of the applied state as of now (callers that need a linearizable read wait for
    /// Raft's read barrier first).
    pub fn applied(&self) -> Applied {
        self.applied.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads `f` from the applied state without copying it.
    pub fn with<T>(&self, f: impl FnOnce(&Applied) -> T) -> T {
        f(&self.applied.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Up to `limit` audit records with index ≥ `from`, oldest first.
    pub fn audit(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>, io::Error> {
        let tx = self.db.begin_read().map_err(io_error)?;
        let table = tx.open_table(AUDIT).map_err(io_error)?;
        let mut records = Vec::new();
        for item in table.range(from..).map_err(io_error)?.take(limit) {
            records.push(decode(item.map_err(io_error)?.1.value())?);
        }
        Ok(records)
    }

    /// How many audit records there are.
    pub fn audit_len(&self) -> Result<u64, io::Error> {
        let tx = self.db.begin_read().map_err(io_error)?;
        tx.open_table(AUDIT).map_err(io_error)?.len().map_err(io_error)
    }
}

/// The state machine of one node.
#[derive(Clone)]
pub struct StateMachine {
    view: RegistryView,
    snapshot_dir: PathBuf,
}

impl StateMachine {
    /// Opens (or creates) the state file at `path`, with snapshots in `snapshot_dir`.
    pub fn open(path: &Path, snapshot_dir: &Path) -> Result<Self, io::Error> {
        fs::create_dir_all(snapshot_dir)?;
        let db = Database::create(path).map_err(io_error)?;
        let tx = db.begin_write().map_err(io_error)?;
        let applied = {
            let state = tx.open_table(STATE).map_err(io_error)?;
            tx.open_table(AUDIT).map_err(io_error)?;
            let stored = state.get(APPLIED).map_err(io_error)?;
            stored.map(|v| decode::<Applied>(v.value())).transpose()?.unwrap_or_default()
        };
        tx.commit().map_err(io_error)?;
        Ok(Self {
            view: RegistryView { db: Arc::new(db), applied: Arc::new(RwLock::new(applied)) },
            snapshot_dir: snapshot_dir.to_path_buf(),
        })
    }

    /// A read-only handle on the applied state.
    pub fn view(&self) -> RegistryView {
        self.view.clone()
    }

    fn current(&self) -> Applied {
        self.view.applied()
    }

    /// Durably replaces the stored state: `applied`, plus `audit` records (after deleting every
    /// stored record when `replace_audit`).
    async fn store(&self, applied: Applied, audit: Vec<AuditRecord>, replace_audit: bool) -> Result<(), io::Error> {
        let db = self.view.db.clone();
        let applied_bytes = encode(&applied)?;
        let audit_bytes = audit.iter().map(|r| Ok((r.index, encode(r)?))).collect::<Result<Vec<_>, io::Error>>()?;
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_write().map_err(io_error)?;
            {
                let mut state = tx.open_table(STATE).map_err(io_error)?;
                state.insert(APPLIED, applied_bytes.as_slice()).map_err(io_error)?;
                let mut table = tx.open_table(AUDIT).map_err(io_error)?;
                if replace_audit {
                    table.retain(|_, _| false).map_err(io_error)?;
                }
                for (index, bytes) in &audit_bytes {
                    table.insert(*index, bytes.as_slice()).map_err(io_error)?;
                }
            }
            tx.commit().map_err(io_error)
        })
        .await
        .map_err(io_error)??;
        *self.view.applied.write().unwrap_or_else(|p| p.into_inner()) = applied;
        Ok(())
    }

    fn snapshot_path(&self, meta: &SnapshotMetaOf<TypeConfig>) -> PathBuf {
        // Zero-padded index first, so that name order is log order.
        let name = match &meta.last_log_id {
            Some(id) => format!("{:020}-{}{SNAPSHOT_SUFFIX}", id.index(), id.committed_leader_id()),
            None => format!("{:020}-none{SNAPSHOT_SUFFIX}", 0),
        };
        self.snapshot_dir.join(name)
    }

    /// Writes a snapshot file atomically (temporary file, fsync, rename, directory fsync) and
    /// removes the older ones.
    fn write_snapshot_file(&self, file: &SnapshotFile) -> Result<(), io::Error> {
        let path = self.snapshot_path(&file.meta);
        let tmp = path.with_extension("tmp");
        let bytes = encode(file)?;
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        fs::File::open(&self.snapshot_dir)?.sync_all()?;
        for entry in fs::read_dir(&self.snapshot_dir)? {
            let other = entry?.path();
            if other != path
                && other
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy() < path.file_name().unwrap_or_default().to_string_lossy())
            {
                fs::remove_file(other)?;
            }
        }
        Ok(())
    }

    fn newest_snapshot_file(&self) -> Result<Option<SnapshotFile>, io::Error> {
        let mut newest: Option<PathBuf> = None;
        for entry in fs::read_dir(&self.snapshot_dir)? {
            let path = entry?.path();
            if path.to_string_lossy().ends_with(SNAPSHOT_SUFFIX) && newest.as_ref().is_none_or(|n| path > *n) {
                newest = Some(path);
            }
        }
        newest.map(|p| decode(&fs::read(&p)?)).transpose()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Vec<u8>>, io::Error> {
        let applied = self.current();
        let upto = applied.last_applied.as_ref().map_or(0, |id| id.index());
        // Audit records committed after `applied` was read belong to a later snapshot.
        let audit = self.view.audit(0, usize::MAX)?.into_iter().filter(|r| r.index <= upto).collect();
        let meta = SnapshotMetaOf::<TypeConfig> {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
        };
        let file = SnapshotFile { meta, body: SnapshotBody { applied, audit } };
        let this = self.clone();
        let (file, data) = tokio::task::spawn_blocking(move || {
            this.write_snapshot_file(&file)?;
            let data = encode(&file.body)?;
            Ok::<_, io::Error>((file, data))
        })
        .await
        .map_err(io_error)??;
        Ok(SnapshotOf::<TypeConfig, Vec<u8>> { meta: file.meta, snapshot: data })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        let applied = self.current();
        Ok((applied.last_applied, applied.membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut next = self.current();
        let mut audit = Vec::new();
        let mut replies = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            let outcome = match &entry.payload {
                EntryPayload::Blank => Outcome::Nothing,
                EntryPayload::Normal(request) => {
                    let (outcome, record) = next.registry.apply(log_id.index(), request);
                    audit.push(record);
                    outcome
                }
                EntryPayload::Membership(membership) => {
                    next.membership = StoredMembershipOf::<TypeConfig>::new(Some(log_id), membership.clone());
                    Outcome::Nothing
                }
            };
            next.last_applied = Some(log_id);
            if let Some(responder) = responder {
                replies.push((responder, outcome));
            }
        }
        self.store(next, audit, false).await?;
        for (responder, outcome) in replies {
            responder.send(outcome);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let body: SnapshotBody = decode(&snapshot)?;
        if body.applied.last_applied != meta.last_log_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot body is at {:?}, its metadata says {:?}",
                    body.applied.last_applied, meta.last_log_id
                ),
            ));
        }
        self.store(body.applied.clone(), body.audit.clone(), true).await?;
        let file = SnapshotFile { meta: meta.clone(), body };
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.write_snapshot_file(&file)).await.map_err(io_error)?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<TypeConfig, Vec<u8>>>, io::Error> {
        Ok(match self.newest_snapshot_file()? {
            Some(file) => Some(SnapshotOf::<TypeConfig, Vec<u8>> { snapshot: encode(&file.body)?, meta: file.meta }),
            None => None,
        })
    }
}
