use skiff_raft::engine::{Engine, SledEngine, WriteBatch};
use std::time::Instant;
fn main() {
    let dir = tempfile::tempdir().unwrap();
    let e = SledEngine::open(dir.path()).unwrap();
    let mut w = vec![];
    let mut s = vec![];
    for i in 0..2000u64 {
        let mut b = WriteBatch::default();
        b.put_raw(i.to_be_bytes().to_vec(), vec![7u8; 400]);
        let t = Instant::now();
        e.write(b).unwrap();
        w.push(t.elapsed());
        let t = Instant::now();
        e.sync().unwrap();
        s.push(t.elapsed());
    }
    w.sort();
    s.sort();
    println!(
        "write p50 {:?} p99 {:?} max {:?}",
        w[1000], w[1980], w[1999]
    );
    println!(
        "sync  p50 {:?} p99 {:?} max {:?}",
        s[1000], s[1980], s[1999]
    );
}
