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
pub(crate) mod seccomp;
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

/// What a CRI container's spec has beyond oci-spec's default one (which
/// already has mounts, namespaces, capabilities, masked paths): a seccomp
/// profile with argument filters, resources, rlimits, devices, sysctls,
/// annotations. Each is code of its own in the decoder, paged in by
/// [`prewarm`] before a pod's first container needs it.
const SAMPLE_SPEC_PARTS: &str = r#"{
  "process": {
    "args": ["sh", "-c", "true"], "env": ["PATH=/usr/bin:/bin", "HOSTNAME=sample"], "cwd": "/",
    "user": {"uid": 0, "gid": 0, "additionalGids": [10, 20]},
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}],
    "noNewPrivileges": true, "oomScoreAdj": 1000, "apparmorProfile": "berth-default"
  },
  "hostname": "sample",
  "annotations": {"io.kubernetes.cri.container-type": "container"},
  "linux": {
    "cgroupsPath": "/kubepods/pod/container",
    "resources": {
      "memory": {"limit": 1073741824, "swap": 1073741824},
      "cpu": {"shares": 1024, "quota": 100000, "period": 100000},
      "pids": {"limit": 1024},
      "unified": {"memory.oom.group": "1"},
      "devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]
    },
    "sysctl": {"net.ipv4.ping_group_range": "0 2147483647"},
    "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438, "uid": 0, "gid": 0}],
    "seccomp": {
      "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "architectures": ["SCMP_ARCH_X86_64"],
      "syscalls": [
        {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}
      ]
    }
  }
}"#;

/// oci-spec's default spec with [`SAMPLE_SPEC_PARTS`] laid over it.
fn sample_spec() -> Option<oci_spec::runtime::Spec> {
    fn overlay(base: &mut serde_json::Value, top: serde_json::Value) {
        match (base, top) {
            (serde_json::Value::Object(b), serde_json::Value::Object(t)) => {
                for (k, v) in t {
                    overlay(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, t) => *b = t,
        }
    }
    let mut spec = serde_json::to_value(oci_spec::runtime::Spec::default()).ok()?;
    overlay(&mut spec, serde_json::from_str(SAMPLE_SPEC_PARTS).ok()?);
    serde_json::from_value(spec).ok()
}

/// Encodes and decodes a representative init config once, and says
/// whether it round-tripped. Under emulation the first (de)serialisation
/// in a process costs more than the work itself (serde's code paged in,
/// the allocator grown), so the fork server does it at its start and the
/// shim while the pod's network is set up, not during a pod's first
/// CreateContainer. The sample is a CRI container's spec in all but its
/// size, so the decoders of every part a real one has are paged in.
pub fn prewarm() -> bool {
    prewarm_config().is_some()
}

/// [`prewarm`]'s round trip: the decoded sample, when it round-tripped.
fn prewarm_config() -> Option<InitConfig> {
    let cfg = InitConfig {
        spec: sample_spec()?,
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
    let json = serde_json::to_vec(&cfg).ok()?;
    serde_json::from_slice::<InitConfig>(&json).ok()
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
    run(cfg, sync, start, times, None)
}

/// The rest of init, once its config is decoded: here from [`main`], or
/// in a child of the pod's fork server (`crate::zygote`), which decoded
/// the config before its clone, compiled the spec's seccomp profile
/// (`seccomp`; None: init compiles it) and put the sync and start pipes at
/// their numbers.
pub fn run(
    cfg: InitConfig,
    mut sync: Reporter,
    mut start: std::fs::File,
    mut times: sync::InitTimes,
    seccomp: Option<seccomp::Compiled>,
) -> ! {
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
    // While parked, after the ready report (so beside the reply to
    // Create): what Start need not wait for. A failure is Start's, as
    // before.
    let settled = settles_while_parked(&cfg, &prepared).then(|| process::settle(&syscall::Linux, &cfg.spec));

    if !sync::wait_for_start(&mut start) {
        // The shim gave up on us (Delete before Start, or the shim died).
        std::process::exit(1);
    }
    let started = sync::StartTimes {
        woke: sync::mono_ns(),
        ..Default::default()
    };
    drop(start);
    if let Err(e) = crate::init::hooks::before_exec(&cfg) {
        fail(&mut sync, e);
    }
    if let Some(Err(e)) = &settled {
        sync.fail(&format!("{e:#}"));
        std::process::exit(127)
    }

    let mut report = |line: &str, t: &sync::StartTimes| sync.identity_at(line, t);
    match process::exec(
        &syscall::Linux,
        &cfg.spec,
        &prepared,
        seccomp.as_ref(),
        settled.as_ref().and_then(|s| s.as_ref().ok()),
        started,
        &mut report,
    ) {
        Ok(never) => match never {},
        Err(e) => {
            sync.fail(&format!("{e:#}"));
            std::process::exit(127)
        }
    }
}

/// Whether [`process::settle`] may run while the init is parked: no
/// startContainer hook runs before the exec (it would inherit the
/// settings) and no user namespace is still to be entered (joining one
/// resets the bounding set).
fn settles_while_parked(cfg: &InitConfig, prepared: &rootfs::Prepared) -> bool {
    prepared.userns.is_none() && !hooks::runs_at_start(cfg)
}

#[cfg(test)]
mod tests {
    /// Only an init with no startContainer hook to run and no user
    /// namespace to enter settles its process while parked.
    #[test]
    fn settles_while_parked_only_without_start_hooks_or_a_user_namespace() {
        let mut cfg = super::prewarm_config().expect("the sample");
        let none = super::rootfs::Prepared::default();
        assert!(super::settles_while_parked(&cfg, &none));

        let userns = super::rootfs::Prepared {
            userns: Some(tempfile::tempfile().unwrap()),
            ..Default::default()
        };
        assert!(!super::settles_while_parked(&cfg, &userns));

        let hook = serde_json::json!({"startContainer": [{"path": "/bin/true"}]});
        cfg.spec.set_hooks(Some(serde_json::from_value(hook).unwrap()));
        cfg.hook_state = crate::hooks::State::for_spec(&cfg.spec, "c1", "/run/b");
        assert!(cfg.hook_state.is_some());
        assert!(!super::settles_while_parked(&cfg, &none));
        // Hooks of other moments run elsewhere, before the park or after the exec.
        let hook = serde_json::json!({"poststart": [{"path": "/bin/true"}]});
        cfg.spec.set_hooks(Some(serde_json::from_value(hook).unwrap()));
        assert!(super::settles_while_parked(&cfg, &none));
    }

    /// The sample is not decoded into defaults: every part it adds to the
    /// default spec comes back from the round trip, so its decoders ran.
    #[test]
    fn the_prewarm_sample_has_every_part_a_cri_spec_has() {
        let cfg = super::prewarm_config().expect("the sample round-trips");
        let spec = &cfg.spec;
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.rlimits().as_ref().map(Vec::len), Some(1));
        assert_eq!(process.user().additional_gids().as_deref(), Some(&[10, 20][..]));
        let linux = spec.linux().as_ref().unwrap();
        let seccomp = linux.seccomp().as_ref().expect("seccomp");
        let rules = seccomp.syscalls().as_ref().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[1].args().as_ref().map(Vec::len), Some(1));
        let res = linux.resources().as_ref().unwrap();
        assert_eq!(res.memory().as_ref().and_then(|m| m.limit()), Some(1 << 30));
        assert_eq!(res.pids().as_ref().map(|p| p.limit()), Some(1024));
        assert!(res.cpu().is_some() && res.unified().is_some());
        assert_eq!(linux.devices().as_ref().map(Vec::len), Some(1));
        assert!(linux.sysctl().is_some() && spec.annotations().is_some());
        assert!(
            spec.mounts().as_ref().is_some_and(|m| m.len() >= 5),
            "the default's mounts stay"
        );
    }
}
