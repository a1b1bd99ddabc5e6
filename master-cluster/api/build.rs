//! Generates the gRPC contract from `proto/` with a vendored protoc: nothing to install. A
//! `PROTOC` in the environment wins over the vendored one.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed=PROTOC");
    println!("cargo:rerun-if-changed=proto");
    let mut config = tonic_prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    tonic_prost_build::configure().compile_with_config(
        config,
        &[
            "proto/slapcluster/v1/raft.proto",
            "proto/slapcluster/v1/node.proto",
            "proto/slapcluster/v1/user.proto",
            "proto/slapcluster/v1/admin.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
