//! `berth-shim exec`: a process joining a running container (ExecSync,
//! ExecStream).
//!
//! The shim clones it straight into the container's PID namespace; as a
//! fresh single-threaded process it then joins the container's cgroup and
//! its ipc, uts, net, cgroup and mount namespaces (mount last: after it, the
//! host's /proc and /sys/fs/cgroup are out of sight), and becomes the
//! container's user exactly like the container's own first process.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::path::PathBuf;

use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};
use serde::{Deserialize, Serialize};

use super::process;
use super::rootfs::Prepared;
use crate::spawn::fds;

/// What the shim hands the exec stage on fd 3.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExecConfig {
    /// The container's first process, whose namespaces and cgroup we join.
    pub target_pid: i32,
    /// The container's spec with the exec'd command as its process.
    pub spec: oci_spec::runtime::Spec,
}

fn join(target: i32) -> Result<()> {
    // Open every namespace before entering any: /proc/<pid> is the host's
    // view and stops being reachable once we are in the container's mounts.
    let kinds = [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    let files: Vec<(File, CloneFlags, &str)> = kinds
        .iter()
        .map(|(k, f)| {
            File::open(format!("/proc/{target}/ns/{k}"))
                .map(|file| (file, *f, *k))
                .with_context(|| format!("open {k} namespace of pid {target}"))
        })
        .collect::<Result<_>>()?;
    // The container's cgroup, as the host sees it (before the cgroup ns).
    let cg =
        std::fs::read_to_string(format!("/proc/{target}/cgroup")).context("read the container's cgroup")?;
    if let Some(path) = cg.lines().find_map(|l| l.strip_prefix("0::")) {
        let procs = PathBuf::from("/sys/fs/cgroup")
            .join(path.trim_start_matches('/'))
            .join("cgroup.procs");
        std::fs::write(&procs, b"0").with_context(|| format!("join cgroup {}", procs.display()))?;
    }
    for (file, flag, kind) in files {
        setns(&file, flag).with_context(|| format!("setns {kind}"))?;
    }
    Ok(())
}

/// Entry point of `berth-shim exec`. Never returns.
pub fn main() -> ! {
    // SAFETY: the shim put exactly these descriptors at these numbers before exec.
    let (mut config_in, mut sync) = unsafe { (File::from_raw_fd(fds::CONFIG), File::from_raw_fd(fds::SYNC)) };
    for fd in [fds::CONFIG, fds::SYNC, fds::START] {
        let _ = nix::fcntl::fcntl(
            // SAFETY: these descriptors are ours for the life of the process.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
    let mut raw = Vec::new();
    // Before anything of the container is in reach (see not_dumpable).
    let result: Result<std::convert::Infallible> = super::not_dumpable()
        .and_then(|()| config_in.read_to_end(&mut raw).context("read exec config"))
        .and_then(|_| serde_json::from_slice::<ExecConfig>(&raw).context("parse exec config"))
        .and_then(|cfg| {
            join(cfg.target_pid)?;
            // A terminal from the container's own devpts (now in sight),
            // sent to the shim on fd 0, as the container's init does.
            let terminal = cfg
                .spec
                .process()
                .as_ref()
                .and_then(|p| p.terminal())
                .unwrap_or(false);
            if terminal {
                super::console::setup().context("terminal")?;
            }
            let cwd = cfg
                .spec
                .process()
                .as_ref()
                .map(|p| p.cwd().clone())
                .unwrap_or_else(|| PathBuf::from("/"));
            let mut report = |line: &str| {
                let _ = sync.write_all(line.as_bytes());
            };
            match process::exec(&cfg.spec, &Prepared { cwd, cwd_fd: None }, &mut report)? {}
        });
    let Err(e) = result;
    let _ = sync.write_all(format!("E{e:#}").as_bytes());
    std::process::exit(127)
}
