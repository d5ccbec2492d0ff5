//! Compiles the .proto files with protox (a pure-Rust protobuf compiler), so a
//! fresh machine builds with `cargo build` alone and never needs a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["cri/v1/api.proto", "shim/v1/shim.proto"];
    for f in files {
        println!("cargo:rerun-if-changed=proto/{f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
