//! The store's engine under a power cut (the suite's FUSE filesystem, which drops whatever was
//! not fsynced): with large values, a write that `sync` returned for must survive the cut,
//! while other writers rewrite the same nodes without waiting for syncs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use skiff_chaos::powercut::PowerCutMount;
use skiff_raft::engine::{Engine, SledEngine, WriteBatch};

/// ConfigMaps near the API's size limit: 16 to a node would make nodes of several MiB, over
/// sled's blob threshold, if the engine stored them whole.
const VALUE_BYTES: usize = 512 << 10;

/// Busy writes per synced one: enough to rewrite every busy key several times over the run
/// (nodes freed and segments reused under the syncs), bounded so that a slow machine writes
/// no more than a fast one.
const BUSY_PER_SYNC: usize = 16;

fn key(i: u8) -> Vec<u8> {
    format!("/registry/core/configmaps/default/big-{i:03}").into_bytes()
}

/// A key between the synced ones, rewritten while they are synced.
fn busy_key(i: u8) -> Vec<u8> {
    let mut k = key(i);
    k.extend_from_slice(b"-busy");
    k
}

/// Tells the busy writer to stop when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn put(engine: &SledEngine, key: Vec<u8>, value: Vec<u8>) {
    let mut batch = WriteBatch::default();
    batch.put_raw(key, value);
    engine.write(batch).expect("write");
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
        let done = AtomicBool::new(false);
        let synced = AtomicUsize::new(0);
        std::thread::scope(|s| {
            // Keys between the synced ones, rewritten while the syncs run: their nodes hold
            // synced values too.
            s.spawn(|| {
                let mut puts = 0usize;
                while !done.load(Ordering::Relaxed) {
                    // Spread over the syncs rather than flooding the filesystem.
                    if puts >= BUSY_PER_SYNC * (synced.load(Ordering::Relaxed) + 1) {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        continue;
                    }
                    let i = (puts % written as usize) as u8;
                    let round = (puts / written as usize) as u8;
                    put(
                        &engine,
                        busy_key(i),
                        vec![round; VALUE_BYTES / 2 + i as usize],
                    );
                    puts += 1;
                }
            });
            // Set even when a write below panics: the busy writer waits on the syncs.
            let _stop = StopOnDrop(&done);
            for i in 0..written {
                put(&engine, key(i), vec![i; VALUE_BYTES]);
                engine.sync().expect("sync");
                synced.fetch_add(1, Ordering::Relaxed);
            }
        });
        let blobs = std::fs::read_dir(dir.join("store/blobs")).map_or(0, |d| d.count());
        assert_eq!(blobs, 0, "sled wrote nodes as blob files it never fsyncs");
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
        let value = engine
            .get(&busy_key(i))
            .expect("an unsynced value reads back whole or not at all");
        if let Some(v) = value {
            assert_eq!(v.len(), VALUE_BYTES / 2 + i as usize, "{i}-busy");
            assert!(
                v.iter().all(|b| *b == v[0]),
                "{i}-busy is one write's bytes"
            );
        }
    }
}
