//! The devhost: a local WebAssembly host with Spin 4.1's interfaces, to run and test Spin apps
//! without the Spin CLI. See README.md for what it supports and how it differs from Spin.

mod bindings;
pub mod compose;
mod host;
mod instances;
mod kv;
pub mod manifest;
mod pg;
mod pg3;
mod server;
pub mod spin_version;

pub use host::{Ctx, Devhost, DevhostOptions, HttpFlavour, StoreHandle, component_world};
pub use instances::InstanceReuse;
pub use server::ServeHandle;
pub use spin_version::SpinVersion;
