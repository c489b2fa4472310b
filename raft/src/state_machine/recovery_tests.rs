//! A crash that splits an apply: the state machine starts again from its snapshot.

use std::path::Path;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

use super::spaces::{ApplyingSpace, KvSpace, StoredKv, APPLIED_KEY};
use super::{StateMachineConfig, StateMachineStore};
use crate::engine::{Engine, SledEngine, WriteBatch};
use crate::keyspace::TypedRead;
use crate::mvcc::Txn;
use crate::types::{Request, TypeConfig, Write};

fn open(dir: &Path) -> StateMachineStore<SledEngine> {
    StateMachineStore::open(
        SledEngine::open(&dir.join("state")).expect("open engine"),
        dir.join("snapshot.bin"),
        StateMachineConfig::default(),
    )
    .expect("open state machine")
}

fn put(index: u64, key: &str, value: &str) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request {
            time_ms: 1,
            writes: vec![Write {
                request_id: u128::from(index),
                txn: Txn::put(key, value),
            }],
        }),
    }
}

fn value(sm: &StateMachineStore<SledEngine>, key: &str) -> Option<Vec<u8>> {
    sm.shared
        .engine
        .get_in::<KvSpace>(&key.as_bytes().to_vec())
        .expect("read")
        .map(|kv| kv.value)
}

/// What a crash in the middle of an apply leaves: the marker and some of the writes.
fn split_apply(sm: &StateMachineStore<SledEngine>, index: u64) {
    let mut b = WriteBatch::default();
    b.put::<ApplyingSpace>(&APPLIED_KEY, &index);
    b.put::<KvSpace>(
        &b"a".to_vec(),
        &StoredKv {
            value: b"half".to_vec(),
            create_revision: 1,
            mod_revision: 99,
            version: 9,
        },
    );
    sm.shared.engine.write_in_order(b).expect("write");
    sm.shared.sync().expect("sync");
}

#[tokio::test]
async fn a_split_apply_restarts_from_the_snapshot_and_a_clean_stop_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut sm = open(dir.path());
        sm.apply(vec![put(1, "a", "1")]).await.expect("apply");
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("snapshot");
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(1));
        sm.apply(vec![put(2, "a", "2"), put(3, "b", "1")])
            .await
            .expect("apply");
        sm.shared.sync().expect("sync");
    }
    {
        // Whole applies survive a restart as they are.
        let mut sm = open(dir.path());
        let (applied, _) = sm.applied_state().await.expect("state");
        assert_eq!(applied.map(|l| l.index), Some(3));
        assert_eq!(value(&sm, "a").as_deref(), Some(&b"2"[..]));
        split_apply(&sm, 4);
    }
    let mut sm = open(dir.path());
    let (applied, _) = sm.applied_state().await.expect("state");
    assert_eq!(applied.map(|l| l.index), Some(1), "back at the snapshot");
    assert_eq!(value(&sm, "a").as_deref(), Some(&b"1"[..]));
    assert_eq!(value(&sm, "b"), None);
    assert_eq!(sm.shared.revision(), 1);
    let marker = sm
        .shared
        .engine
        .get_in::<ApplyingSpace>(&APPLIED_KEY)
        .expect("read");
    assert_eq!(marker, None);
    // Raft re-applies the log after the snapshot: the same results as the first time.
    let out = sm
        .apply(vec![put(2, "a", "2"), put(3, "b", "1")])
        .await
        .expect("re-apply");
    assert_eq!(out[1].results[0].revision, 3);
    assert_eq!(value(&sm, "a").as_deref(), Some(&b"2"[..]));
}

#[tokio::test]
async fn a_split_apply_before_any_snapshot_starts_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut sm = open(dir.path());
        sm.apply(vec![put(1, "a", "1")]).await.expect("apply");
        split_apply(&sm, 2);
    }
    let mut sm = open(dir.path());
    let (applied, _) = sm.applied_state().await.expect("state");
    assert_eq!(applied, None);
    assert_eq!(value(&sm, "a"), None);
    assert_eq!(sm.shared.revision(), 0);
}
