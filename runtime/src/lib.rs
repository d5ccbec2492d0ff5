//! berthd's modules, as a library.
//!
//! The daemon is `main.rs`; this library exists so the libFuzzer targets in
//! `runtime/fuzz` (a crate outside the workspace, built by cargo-fuzz) can
//! call the same parsers and checks berthd runs on hostile input, through
//! [`fuzzing`]. It is named `berthd` like the binary, so module paths (and
//! with them tracing targets such as `berthd::image`) stay what they were.

pub mod blocking;
pub mod cdi;
pub mod cgroup;
pub mod checkpoint;
pub mod config;
pub mod container;
mod crash;
pub mod cri;
pub mod error;
pub mod events;
pub mod fuzzing;
pub mod host_check;
pub mod image;
pub mod metrics;
pub mod net;
pub mod observe;
mod readiness;
pub mod rollback;
pub mod sandbox;
pub mod service;
mod shim_client;
mod shim_fast;
mod shim_fork;
mod shim_ready;
mod shim_start_load;
pub mod stats;
pub mod store;
pub mod stream;
pub mod threads;
