//! Compiles /proto/*.proto with protox (pure Rust: no `protoc` needed) and generates prost
//! types and tonic services.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not baked in with env!(): a build script compiled in one checkout may be
    // reused from a shared target directory by another.
    let proto_dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = ["telemetry.proto", "raft.proto"].map(|f| proto_dir.join(f));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let descriptors = protox::compile(&files, [&proto_dir])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
