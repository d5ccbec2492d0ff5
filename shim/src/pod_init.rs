//! `berth-shim pod-init`: PID 1 of a pod's shared PID namespace
//! (`shareProcessNamespace`). It only reaps: orphans anywhere in the pod are
//! re-parented to it. Being PID 1, it ignores every signal it has no handler
//! for, so nothing inside the pod can kill it. It lives exactly as long as
//! its shim: fd 3 is the read end of a pipe only the shim holds open, and
//! EOF there (the shim exited, however it died) ends it, which ends the
//! namespace.
//!
//! Every container of the pod sees it as `/proc/1`, so before anything else
//! it gives up all it holds of the node (see [`confine`]): a container with
//! CAP_SYS_PTRACE reading `/proc/1/root`, or a `workingDir: /proc/1/cwd`,
//! finds an empty read-only directory and nothing else.

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{Gid, Uid};

/// The pipe from the shim.
pub const LIFELINE_FD: i32 = 3;

/// The unprivileged identity it runs as (the overflow user "nobody").
const NOBODY: u32 = 65534;

/// A mount namespace of its own whose root is an empty read-only tmpfs,
/// the node's mounts detached; then uid/gid nobody, no capabilities in any
/// set, no new privileges, and not dumpable (no core, no ptrace by uid).
fn confine() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("unshare mount namespace")?;
    // Nothing done here may reach the node's mounts.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("make / private")?;
    // Any directory serves as the mount point (the mount is ours alone);
    // /proc exists on every node Berth runs on.
    mount(
        Some("none"),
        "/proc",
        Some("tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=4k,mode=0555"),
    )
    .context("mount the empty root")?;
    nix::unistd::chdir("/proc").context("chdir to the empty root")?;
    nix::unistd::pivot_root(".", ".").context("pivot_root")?;
    umount2(".", MntFlags::MNT_DETACH).context("detach the node's root")?;
    nix::unistd::chdir("/").context("chdir /")?;

    nix::unistd::setgroups(&[]).context("setgroups")?;
    nix::unistd::setresgid(
        Gid::from_raw(NOBODY),
        Gid::from_raw(NOBODY),
        Gid::from_raw(NOBODY),
    )
    .context("setresgid")?;
    // Changing every uid away from 0 clears the permitted and effective
    // sets; the bounding and ambient sets and the inheritable set go too.
    for cap in caps::all() {
        caps::drop(None, caps::CapSet::Bounding, cap).with_context(|| format!("drop {cap}"))?;
    }
    caps::clear(None, caps::CapSet::Ambient).context("clear ambient")?;
    caps::clear(None, caps::CapSet::Inheritable).context("clear inheritable")?;
    nix::unistd::setresuid(
        Uid::from_raw(NOBODY),
        Uid::from_raw(NOBODY),
        Uid::from_raw(NOBODY),
    )
    .context("setresuid")?;
    for set in [caps::CapSet::Effective, caps::CapSet::Permitted] {
        anyhow::ensure!(caps::read(None, set)?.is_empty(), "{set:?} capabilities remain");
    }
    if let Err(e) = nix::sys::prctl::set_no_new_privs() {
        anyhow::bail!("PR_SET_NO_NEW_PRIVS: {}", std::io::Error::from(e));
    }
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        anyhow::bail!("PR_SET_DUMPABLE: {}", std::io::Error::from(e));
    }
    Ok(())
}

/// Never returns.
pub fn main() -> ! {
    if let Err(e) = confine() {
        // Better no shared PID namespace than one whose PID 1 opens the node.
        eprintln!("berth-shim pod-init: {e:#}");
        std::process::exit(1);
    }
    loop {
        let mut pfd = libc::pollfd {
            fd: LIFELINE_FD,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one pollfd we own.
        let n = unsafe { libc::poll(&mut pfd, 1, 500) };
        if n > 0 && pfd.revents & (libc::POLLHUP | libc::POLLIN | libc::POLLERR | libc::POLLNVAL) != 0 {
            std::process::exit(0);
        }
        // Reap whatever orphans arrived.
        loop {
            // SAFETY: waitpid(2) with a null status pointer.
            let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
        }
    }
}
