//! Compiles the protocol (proto/fabric/v1/*.proto) with protox (no `protoc` needed) and
//! generates the prost messages and tonic clients and servers into OUT_DIR.

const PROTOS: &[&str] = &[
    "proto/fabric/v1/common.proto",
    "proto/fabric/v1/value.proto",
    "proto/fabric/v1/scheduler.proto",
    "proto/fabric/v1/data.proto",
    "proto/fabric/v1/journal.proto",
    "proto/fabric/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        // `bytes` fields as `bytes::Bytes`: chunks and packed lists are sliced, not copied.
        .bytes(".fabric.v1")
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
