//! openraft's storage conformance suite against the sled-backed log store and state machine.

use openraft::testing::{StoreBuilder, Suite};
use skiff_raft::engine::SledEngine;
use skiff_raft::log_store::LogStore;
use skiff_raft::state_machine::{StateMachineConfig, StateMachineStore};
use skiff_raft::types::{StorageError, TypeConfig};
use tempfile::TempDir;

struct SledBuilder;

type Ls = LogStore<SledEngine>;
type Sm = StateMachineStore<SledEngine>;

impl StoreBuilder<TypeConfig, Ls, Sm, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, Ls, Sm), StorageError> {
        let dir = TempDir::new().expect("temp dir");
        let log =
            LogStore::new(SledEngine::open(&dir.path().join("log")).expect("open log engine"));
        let sm = StateMachineStore::open(
            SledEngine::open(&dir.path().join("state")).expect("open state engine"),
            dir.path().join("snapshot.bin"),
            StateMachineConfig::default(),
        )
        .expect("open state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_store_passes_openraft_storage_suite() {
    Suite::test_all(SledBuilder).expect("openraft storage suite");
}
