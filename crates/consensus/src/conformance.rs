//! openraft's storage conformance suite, run against the redb log store and state machine.

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use tempfile::TempDir;

use crate::log_store::LogStore;
use crate::state_machine::StateMachine;
use crate::types::TypeConfig;

struct RedbStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RedbStores {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let io = |e: std::io::Error| StorageError::read(TypeConfig::err_from_error(&e));
        let dir = TempDir::new().map_err(io)?;
        let log = LogStore::open(&dir.path().join("log.redb")).map_err(io)?;
        let sm = StateMachine::open(&dir.path().join("state.redb"), &dir.path().join("snapshots")).map_err(io)?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_stores_pass_openraft_storage_suite() {
    Suite::test_all(RedbStores).await.expect("openraft storage conformance suite");
}
