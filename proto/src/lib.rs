//! Wire definitions for Berth.
//!
//! * [`cri`]: the Kubernetes CRI v1 API (`runtime.v1`), wire-compatible with
//!   k8s.io/cri-api v0.35, which kubelet and crictl speak to `berthd`.
//! * [`shim`]: Berth's internal API between `berthd` and the per-pod `berth-shim`.
//! * [`fast`]: the framing of that API's fast path (Create and Start).
#![forbid(unsafe_code)]
#![allow(clippy::all, missing_docs)]

/// CRI v1 messages and the RuntimeService / ImageService clients and servers.
pub mod cri {
    tonic::include_proto!("runtime.v1");
}

/// The daemon<->shim API (package `berth.shim.v1`).
pub mod shim {
    tonic::include_proto!("berth.shim.v1");
}

pub mod fast;
