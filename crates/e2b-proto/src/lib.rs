//! E2B's in-sandbox API ("envd") as protobuf messages and Connect service traits, generated at
//! build time from sbx's own `.proto` files (`proto/`), whose packages, names and field
//! numbers follow the E2B SDKs' wire contract. Kept apart from `sbx-e2b` so that the
//! generated code compiles once.

#![allow(refining_impl_trait_internal, refining_impl_trait_reachable)]
#![allow(clippy::all)]

connectrpc::include_generated!();

/// The compiled `FileDescriptorSet` of `proto/` (with its imports), for the test that compares
/// it with the descriptors the E2B SDK ships.
pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envd.fds.bin"));
