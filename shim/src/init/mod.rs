//! `berth-shim init`: the container's first stage.
//!
//! Runs as a fresh single-threaded process (pid 1 of the container's PID
//! namespace when it has one). Order matters and follows the kernel's rules:
//! 1. join the pod's namespaces (net, ipc, uts) by path, and the cgroup;
//! 2. unshare mount (+ cgroup) namespaces, so every mount below is private to
//!    the container and disappears with it — nothing to clean up on the host;
//! 3. mount the root filesystem and the spec's mounts, pivot_root into it;
//! 4. report "ready" and park until the shim says start;
//! 5. switch user and capabilities, then exec the user's process.
//!
//! Any failure is written to the sync pipe as `E<message>` so the shim can
//! return it to berthd verbatim.

pub mod console;
pub mod exec;
#[cfg(test)]
mod fake;
pub mod hooks;
mod inroot;
pub(crate) mod mounts;
mod process;
mod rootfs;
pub(crate) use rootfs::DEFAULT_DEVICES;
mod seccomp;
pub mod syscall;

use std::io::Read;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::sync::{self, fds, Reporter};

/// What the shim hands the init stage on fd 3.
#[derive(Debug, Serialize, Deserialize)]
pub struct InitConfig {
    /// The OCI runtime spec berthd generated.
    pub spec: oci_spec::runtime::Spec,
    /// Mount point of the root filesystem (inside the container's mount ns).
    pub rootfs_dir: PathBuf,
    /// Mounts making up the rootfs, applied in order at `rootfs_dir`.
    pub rootfs_mounts: Vec<RootfsMount>,
    /// Where cgroup v2 is mounted on the host (the shim's, from berthd).
    pub cgroup_root: PathBuf,
    /// The state the spec's hooks get (None: the spec has none).
    #[serde(default)]
    pub hook_state: Option<crate::hooks::State>,
    /// The shim cloned init straight into the container's cgroup
    /// (`crate::spawn::clone_into`): no join needed.
    #[serde(default)]
    pub in_cgroup: bool,
}

/// One rootfs mount (e.g. overlay with lowerdir/upperdir/workdir options).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootfsMount {
    /// Filesystem type.
    pub fstype: String,
    /// Mount source.
    pub source: String,
    /// Options, e.g. `lowerdir=...`.
    pub options: Vec<String>,
}

/// Encodes and decodes a representative init config once, and says
/// whether it round-tripped. Under emulation the first (de)serialisation
/// in a process costs more than the work itself (serde's code paged in,
/// the allocator grown), so the fork server does it at its start and the
/// shim while the pod's network is set up, not during a pod's first
/// CreateContainer.
pub fn prewarm() -> bool {
    let cfg = InitConfig {
        spec: oci_spec::runtime::Spec::default(),
        rootfs_dir: PathBuf::from("/run/berth/bundle/rootfs"),
        rootfs_mounts: vec![RootfsMount {
            fstype: "overlay".into(),
            source: "overlay".into(),
            options: vec!["lowerdir=/a:/b".into(), "upperdir=/c".into(), "workdir=/d".into()],
        }],
        cgroup_root: PathBuf::from(berth_sys::cgroup::DEFAULT_ROOT),
        hook_state: None,
        in_cgroup: false,
    };
    serde_json::to_vec(&cfg).is_ok_and(|json| serde_json::from_slice::<InitConfig>(&json).is_ok())
}

/// Whether the spec's process wants a terminal (init and exec stages open
/// one inside; the shim then gets the master over the console socket).
pub fn wants_terminal(spec: &oci_spec::runtime::Spec) -> bool {
    spec.process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false)
}

/// Clears the dumpable flag: from here until the exec of the container's
/// process (which sets it again by the kernel's rules), a process in the
/// container with our uid but not CAP_SYS_PTRACE can neither ptrace this
/// stage nor open its `/proc/<pid>/exe`, `mem`, `environ` or fds, which
/// the CVE-2019-5736 exploit used to reach the runtime's binary. The
/// kernel only clears it by itself on a uid change, so a root container's
/// stages would otherwise stay dumpable.
pub(crate) fn not_dumpable() -> anyhow::Result<()> {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        anyhow::bail!("PR_SET_DUMPABLE: {}", std::io::Error::from(e));
    }
    Ok(())
}

/// Entry point of `berth-shim init`. Never returns.
pub fn main() -> ! {
    let mut times = sync::InitTimes {
        main: sync::mono_ns(),
        ..Default::default()
    };
    // SAFETY: the shim put exactly these descriptors at these numbers
    // before exec (spawn.rs), and nothing else in this fresh process owns them.
    let (mut config_in, sync, start) = unsafe {
        (
            sync::inherit(fds::CONFIG),
            sync::inherit(fds::SYNC),
            sync::inherit(fds::START),
        )
    };
    let mut sync = Reporter::new(sync);

    let fail = |sync: &mut Reporter, msg: String| -> ! {
        sync.fail(&msg);
        std::process::exit(1)
    };

    if let Err(e) = not_dumpable() {
        fail(&mut sync, format!("{e:#}"));
    }

    let mut raw = Vec::new();
    if let Err(e) = config_in.read_to_end(&mut raw) {
        fail(&mut sync, format!("read init config: {e}"));
    }
    drop(config_in);
    times.read = sync::mono_ns();
    let cfg: InitConfig = match serde_json::from_slice(&raw) {
        Ok(c) => c,
        Err(e) => fail(&mut sync, format!("parse init config: {e}")),
    };
    times.config = sync::mono_ns();
    run(cfg, sync, start, times)
}

/// The rest of init, once its config is decoded: here from [`main`], or
/// in a child of the pod's fork server (`crate::zygote`), which decoded
/// the config before its clone and put the sync and start pipes at their
/// numbers.
pub fn run(cfg: InitConfig, mut sync: Reporter, mut start: std::fs::File, mut times: sync::InitTimes) -> ! {
    let fail = |sync: &mut Reporter, msg: String| -> ! {
        sync.fail(&msg);
        std::process::exit(1)
    };
    if let Err(e) = not_dumpable() {
        fail(&mut sync, format!("{e:#}"));
    }
    let prepared = match rootfs::prepare(&syscall::Linux, &cfg) {
        Ok(p) => p,
        Err(e) => fail(&mut sync, format!("{e:#}")),
    };
    times.rootfs_steps = prepared.times;
    times.rootfs = sync::mono_ns();
    if wants_terminal(&cfg.spec) {
        if let Err(e) = console::setup() {
            fail(&mut sync, format!("terminal: {e:#}"));
        }
    } else if let Err(e) = nix::unistd::setsid() {
        // A session of its own, as runc's init makes one: CRIU refuses to
        // checkpoint a process whose session leader is outside its PID
        // namespace (the shim's session), and the shim's job control is
        // none of the container's business.
        fail(&mut sync, format!("setsid: {e}"));
    }
    times.ready = sync::mono_ns();
    if sync.ready_at(times).is_err() {
        std::process::exit(1);
    }

    if !sync::wait_for_start(&mut start) {
        // The shim gave up on us (Delete before Start, or the shim died).
        std::process::exit(1);
    }
    drop(start);
    if let Err(e) = crate::init::hooks::before_exec(&cfg) {
        fail(&mut sync, e);
    }

    let mut report = |line: &str| sync.identity(line);
    match process::exec(&syscall::Linux, &cfg.spec, &prepared, &mut report) {
        Ok(never) => match never {},
        Err(e) => {
            sync.fail(&format!("{e:#}"));
            std::process::exit(127)
        }
    }
}
