//! The store's engine under a power cut (the suite's FUSE filesystem, which drops whatever was
//! not fsynced): large values make sled write whole nodes as blob files beside its data file,
//! and a write that `sync` returned for must survive the cut with them.

use skiff_chaos::powercut::PowerCutMount;
use skiff_raft::engine::{Engine, SledEngine, WriteBatch};

/// ConfigMaps near the API's size limit: 16 to a node make nodes of several MiB, over sled's
/// blob threshold.
const VALUE_BYTES: usize = 512 << 10;

fn key(i: u8) -> Vec<u8> {
    format!("/registry/core/configmaps/default/big-{i:03}").into_bytes()
}

#[test]
fn large_values_written_and_synced_survive_a_power_cut() {
    let base = tempfile::tempdir().expect("tempdir");
    let mount = PowerCutMount::mount(&base.path().join("backing"), &base.path().join("disk"))
        .expect("the power-cut filesystem mounts (needs /dev/fuse and root)");
    let dir = mount.mountpoint().join("state");
    let written = 40u8;
    {
        let engine = SledEngine::open(&dir).expect("open");
        for i in 0..written {
            let mut batch = WriteBatch::default();
            batch.put_raw(key(i), vec![i; VALUE_BYTES]);
            engine.write(batch).expect("write");
            engine.sync().expect("sync");
        }
        let blobs = std::fs::read_dir(dir.join("blobs")).map_or(0, |d| d.count());
        assert!(blobs > 0, "no blob files: the test does not exercise them");
        // The process dies here: what it wrote after the last sync is not durable.
    }
    let lost = mount.cut();
    eprintln!("the power cut dropped unsynced data of {lost} files");
    let engine = SledEngine::open(&dir).expect("the store opens after the power cut");
    for i in 0..written {
        let value = engine.get(&key(i)).expect("read after the power cut");
        assert!(
            value.as_deref() == Some(&vec![i; VALUE_BYTES][..]),
            "value {i}, synced before the cut, came back as {:?} bytes",
            value.map(|v| v.len())
        );
    }
}
