fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "skiff/v1/kv.proto",
        "skiff/v1/cluster.proto",
        "skiff/v1/raft.proto",
        "skiff/v1/objects.proto",
        "skiff/v1/node.proto",
        "skiff/v1/auth.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    // A watch event's object is encoded once and shared by every watcher that gets it.
    tonic_prost_build::configure()
        .bytes(".skiff.v1.ObjectEvent.object")
        .compile_protos(&protos, &["."])?;
    Ok(())
}
