//! `berth-sys`: the low-level host helpers both binaries use, so each is
//! written once: mountinfo parsing, where cgroup v2 is mounted, the default
//! `PATH`, the monotonic clock, clone3(2), mount_setattr(2), pidfds, xattrs and thread stacks. Nothing here knows about CRI, OCI
//! or gRPC.

pub mod cgroup;
pub mod clock;
pub mod clone;
pub mod env;
pub mod fork;
pub mod idmap;
pub mod mount;
pub mod mountinfo;
pub mod pidfd;
pub mod thread;
pub mod xattr;
