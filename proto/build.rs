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
    tonic_prost_build::configure().compile_protos(&protos, &["."])?;
    Ok(())
}
