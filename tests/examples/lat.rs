use std::time::Instant;
#[tokio::main]
async fn main() {
    let eps: Vec<String> = std::env::args().skip(1).collect();
    let c = skiff_proto::Client::with_config(
        &eps,
        skiff_proto::ClientConfig {
            random_start: false,
            ..Default::default()
        },
    )
    .unwrap();
    let mut l = vec![];
    for i in 0..2000 {
        let t = Instant::now();
        c.put(format!("k{}", i % 100), vec![1u8; 256])
            .await
            .unwrap();
        l.push(t.elapsed());
    }
    l.sort();
    let mut r = vec![];
    for i in 0..500 {
        let t = Instant::now();
        c.get(format!("k{}", i % 100), true).await.unwrap();
        r.push(t.elapsed());
    }
    r.sort();
    println!("stale get p50 {:?} p99 {:?}", r[250], r[495]);
    let mut r = vec![];
    for i in 0..500 {
        let t = Instant::now();
        c.get(format!("k{}", i % 100), false).await.unwrap();
        r.push(t.elapsed());
    }
    r.sort();
    println!("linearizable get p50 {:?} p99 {:?}", r[250], r[495]);
    println!(
        "put p50 {:?} p90 {:?} p99 {:?} max {:?}",
        l[1000], l[1800], l[1980], l[1999]
    );
}
#[allow(dead_code)]
fn unused() {}
