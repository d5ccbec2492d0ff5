//! What a container created from a checkpoint keeps until its Start runs
//! the restore (`restore.rs`); a module of its own so the table can hold
//! it without depending on the restore.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use berth_proto::shim::RootfsMount;

/// What Start needs to restore a container, made at Create.
pub struct Pending {
    /// CRIU's images.
    pub images_dir: PathBuf,
    /// The node's criu.
    pub criu: PathBuf,
    /// The container's bundle dir (rootfs, CRIU's log and pidfile).
    pub bundle: PathBuf,
    /// The container's rootfs mounts.
    pub rootfs: Vec<RootfsMount>,
    /// The dump's names of stdin, stdout, stderr.
    pub stdio_names: Vec<String>,
    /// The restored process's stdin, stdout, stderr (the child's ends).
    pub child_stdio: [OwnedFd; 3],
    /// The shim's ends of stdout and stderr, for the log copiers.
    pub stdout: OwnedFd,
    /// See `stdout`.
    pub stderr: OwnedFd,
}
