//! Compiles /proto/*.proto with protox (pure Rust: no `protoc` needed) and generates prost
//! types (and tonic services, once there are any).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let files = ["telemetry.proto"].map(|f| format!("{proto_dir}/{f}"));
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(&files, [proto_dir])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
