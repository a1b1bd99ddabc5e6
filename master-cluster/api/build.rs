//! Generates the gRPC contract from `proto/` with a vendored protoc: nothing to install. A
//! `PROTOC` in the environment wins over the vendored one.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed=PROTOC");
    println!("cargo:rerun-if-changed=proto");
    let mut config = tonic_prost_build::Config::new();
    // The codec counts a request's elements before decoding it: it needs each message's
    // name (prost's `Name`) and the schema (which fields hold messages).
    config.enable_type_names();
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR unset")?);
    config.file_descriptor_set_path(out.join("descriptors.bin"));
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    tonic_prost_build::configure()
        // Malformed requests answer InvalidArgument, not Internal (src/codec.rs).
        .codec_path("crate::codec::Codec")
        .compile_with_config(
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
