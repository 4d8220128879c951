//! Compiles `proto/` (with protox: no system `protoc`) and generates the messages and the
//! Connect service traits from it; the descriptor set is kept for the drift test.

use std::path::PathBuf;

const FILES: [&str; 2] = ["process/process.proto", "filesystem/filesystem.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .open_files(FILES)?
        .encode_file_descriptor_set();
    let path = out.join("envd.fds.bin");
    std::fs::write(&path, descriptors)?;
    for file in FILES {
        println!("cargo:rerun-if-changed=proto/{file}");
    }
    connectrpc_build::Config::new()
        .descriptor_set(&path)
        .files(&FILES)
        .include_file("_connectrpc.rs")
        .compile()?;
    Ok(())
}
