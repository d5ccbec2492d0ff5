//! `berth-shim exec`: a process joining a running container (ExecSync,
//! ExecStream).
//!
//! The shim clones it straight into the container's PID namespace; as a
//! fresh single-threaded process it then joins the container's cgroup and
//! its ipc, uts, net, cgroup and mount namespaces, and becomes the
//! container's user exactly like the container's own first process.
//!
//! The namespaces are joined through a pidfd of the container's process
//! (fd [`fds::TARGET`], made by the clone that created it), all in one
//! `setns(2)`, never through `/proc/<pid>/ns`: once the container's process
//! has exited and been reaped its pid may belong to any process on the
//! node, whose namespaces an exec must never enter.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};
use serde::{Deserialize, Serialize};

use super::process;
use super::rootfs::Prepared;
use crate::sync::{self, fds, Reporter};

/// What the shim hands the exec stage on fd 3.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExecConfig {
    /// The pid of the container's first process, whose namespaces and
    /// cgroup we join; read only through /proc and checked against the
    /// pidfd on fd [`fds::TARGET`].
    pub target_pid: i32,
    /// The container's spec with the exec'd command as its process.
    pub spec: oci_spec::runtime::Spec,
    /// Where cgroup v2 is mounted on the host (the shim's, from berthd).
    pub cgroup_root: PathBuf,
}

fn join(cgroup_root: &std::path::Path, target: i32, pidfd: &File) -> Result<()> {
    // The container's cgroup, as the host sees it (before the cgroup ns).
    // Read by pid, so it counts only if the pidfd's process is still there
    // afterwards: a pid is reused only after its process was reaped.
    let cg = std::fs::read_to_string(format!("/proc/{target}/cgroup"));
    berth_sys::pidfd::send_signal(pidfd.as_fd(), 0).context("the container's process has exited")?;
    let cg = cg.context("read the container's cgroup")?;
    if let Some(path) = cg.lines().find_map(|l| l.strip_prefix("0::")) {
        let procs = berth_sys::cgroup::dir(cgroup_root, std::path::Path::new(path)).join("cgroup.procs");
        std::fs::write(&procs, b"0").with_context(|| format!("join cgroup {}", procs.display()))?;
    }
    // Every namespace at once, of exactly that process (ESRCH once it has
    // exited); the mount namespace goes with them, after which the host's
    // /proc and /sys/fs/cgroup are out of sight.
    let all = CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWCGROUP
        | CloneFlags::CLONE_NEWNS;
    setns(pidfd, all).context("join the container's namespaces (its process has exited?)")?;
    Ok(())
}

/// Entry point of `berth-shim exec`. Never returns.
pub fn main() -> ! {
    // SAFETY: the shim put exactly these descriptors at these numbers
    // before exec (exec.rs), and nothing else in this fresh process owns them.
    let (mut config_in, sync, target) = unsafe {
        (
            sync::inherit(fds::CONFIG),
            sync::inherit(fds::SYNC),
            sync::inherit(fds::TARGET),
        )
    };
    // /dev/null, unused here, but not to be passed on either.
    sync::close_on_exec(fds::START);
    let mut sync = Reporter::new(sync);
    let mut raw = Vec::new();
    // Before anything of the container is in reach (see not_dumpable).
    let result: Result<std::convert::Infallible> = super::not_dumpable()
        .and_then(|()| config_in.read_to_end(&mut raw).context("read exec config"))
        .and_then(|_| serde_json::from_slice::<ExecConfig>(&raw).context("parse exec config"))
        .and_then(|cfg| {
            // Opened by pid before `join` checks the pidfd.
            let userns = crate::userns::open_of_target(&cfg.spec, cfg.target_pid)?;
            join(&cfg.cgroup_root, cfg.target_pid, &target)?;
            // A terminal from the container's own devpts (now in sight),
            // sent to the shim on fd 0, as the container's init does.
            if super::wants_terminal(&cfg.spec) {
                super::console::setup().context("terminal")?;
            }
            let cwd = cfg
                .spec
                .process()
                .as_ref()
                .map(|p| p.cwd().clone())
                .unwrap_or_else(|| PathBuf::from("/"));
            let mut report = |line: &str, _: &crate::sync::StartTimes| sync.identity(line);
            let prepared = Prepared {
                cwd,
                cwd_fd: None,
                userns,
                times: Default::default(),
            };
            let times = crate::sync::StartTimes::default();
            match process::exec(
                &super::syscall::Linux,
                &cfg.spec,
                &prepared,
                None,
                None,
                times,
                &mut report,
            )? {}
        });
    let Err(e) = result;
    sync.fail(&format!("{e:#}"));
    std::process::exit(127)
}
