//! The last step of the init stage: become the user's process.
//!
//! Order (as the kernel requires): rlimits and oom score while still
//! privileged; drop the bounding set while CAP_SETPCAP is still effective;
//! switch groups then gid then uid with KEEPCAPS so permitted capabilities
//! survive a non-root uid; set the capability sets; no_new_privs; exec.

use std::collections::HashSet;
use std::convert::Infallible;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::Spec;

use super::rootfs::Prepared;

/// Default PATH when the spec's environment has none (Docker's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The kernel's view of our identity: `I<uid> <gid> <g1,g2,...>` from
/// /proc/self/status (real uid/gid; all supplementary groups).
pub fn identity_line() -> Result<String> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let field = |name: &str| -> Result<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("/proc/self/status has no {name}"))
    };
    let first = |v: String| v.split_whitespace().next().unwrap_or("").to_string();
    let uid = first(field("Uid:")?);
    let gid = first(field("Gid:")?);
    let groups = field("Groups:")?;
    let groups: Vec<&str> = groups.split_whitespace().collect();
    Ok(crate::sync::identity_line(&uid, &gid, &groups))
}

/// Applies identity and privileges and execs the process. Returns only on
/// error. `report` receives [`identity_line`] right before the exec.
pub fn exec(spec: &Spec, prepared: &Prepared, report: &mut dyn FnMut(&str)) -> Result<Infallible> {
    let process = spec.process().clone().context("spec has no process")?;
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        bail!("spec has no process args");
    }
    let env = process.env().clone().unwrap_or_default();

    for rl in process.rlimits().clone().unwrap_or_default() {
        let res = rlimit_resource(&rl.typ().to_string())?;
        let lim = libc::rlimit {
            rlim_cur: rl.soft(),
            rlim_max: rl.hard(),
        };
        // SAFETY: plain syscall with a valid pointer.
        if unsafe { libc::setrlimit(res, &lim) } != 0 {
            bail!("setrlimit {:?}: {}", rl.typ(), std::io::Error::last_os_error());
        }
    }
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string()).context("write oom_score_adj")?;
    }
    if let Some(profile) = process.apparmor_profile() {
        set_apparmor_exec_profile(profile)?;
    }

    // Seccomp while still privileged (installing a filter needs
    // CAP_SYS_ADMIN or no_new_privs, and no_new_privs is the spec's choice):
    // nothing below uses a syscall a profile may reasonably deny.
    if let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        let filters = super::seccomp::compile(profile)?;
        super::seccomp::apply(&filters)?;
    }

    let caps_spec = process.capabilities().clone();
    if let Some(c) = &caps_spec {
        let keep = to_caps(c.bounding().as_ref())?;
        for cap in caps::all() {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap)
                    .with_context(|| format!("drop {cap} from bounding set"))?;
            }
        }
    }

    let user = process.user();
    let mut groups: Vec<Gid> = user
        .additional_gids()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(Gid::from_raw)
        .collect();
    groups.dedup();
    nix::unistd::setgroups(&groups).context("setgroups")?;
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        bail!("PR_SET_KEEPCAPS: {}", std::io::Error::last_os_error());
    }
    let gid = Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid).context("setresgid")?;
    let uid = Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid).context("setresuid")?;

    if let Some(c) = &caps_spec {
        let permitted = to_caps(c.permitted().as_ref())?;
        let effective = to_caps(c.effective().as_ref())?;
        let inheritable = to_caps(c.inheritable().as_ref())?;
        set_capabilities(&effective, &permitted, &inheritable)?;
        for cap in to_caps(c.ambient().as_ref())? {
            caps::raise(None, CapSet::Ambient, cap).with_context(|| format!("raise ambient {cap}"))?;
        }
    }
    if process.no_new_privileges().unwrap_or(false) {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            bail!("PR_SET_NO_NEW_PRIVS: {}", std::io::Error::last_os_error());
        }
    }

    match &prepared.cwd_fd {
        Some(fd) => nix::unistd::fchdir(fd),
        None => nix::unistd::chdir(&prepared.cwd),
    }
    .with_context(|| format!("chdir to working directory {}", prepared.cwd.display()))?;

    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let program = find_program(&args[0], &path_var)?;
    let c_prog = CString::new(program.as_os_str().as_encoded_bytes())?;
    let c_args: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()?;
    let c_env: Vec<CString> = env
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()?;
    report(&identity_line()?);
    let err = nix::unistd::execve(&c_prog, &c_args, &c_env).unwrap_err();
    bail!("exec {:?}: {err}", args[0])
}

/// Asks AppArmor to confine the process in `profile` from its next execve
/// (berthd checked that the profile is loaded). The per-LSM file exists
/// since Linux 5.8; older kernels only have the shared one.
fn set_apparmor_exec_profile(profile: &str) -> Result<()> {
    let cmd = format!("exec {profile}");
    let mut last = None;
    for attr in ["/proc/self/attr/apparmor/exec", "/proc/self/attr/exec"] {
        match std::fs::write(attr, &cmd) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    bail!(
        "set AppArmor profile {profile:?}: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    )
}

/// Finds `name` like execvp does: a name with a slash is used as is,
/// otherwise the first executable match in `path_var`.
pub fn find_program(name: &str, path_var: &str) -> Result<PathBuf> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok() && candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("executable file {name:?} not found in $PATH ({path_var})")
}

/// Writes the effective, permitted and inheritable sets in one capset(2).
/// Setting them one at a time (as the caps crate does) fails with EPERM
/// whenever the still-full effective set is not a subset of a shrunk permitted
/// set, so the three must change together.
fn set_capabilities(
    effective: &CapsHashSet,
    permitted: &CapsHashSet,
    inheritable: &CapsHashSet,
) -> Result<()> {
    let mask = |set: &CapsHashSet| set.iter().fold(0u64, |m, c| m | c.bitmask());
    let (e, p, i) = (mask(effective), mask(permitted), mask(inheritable));
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522,
        pid: 0,
    }; // _LINUX_CAPABILITY_VERSION_3
    let data = [
        Data {
            effective: e as u32,
            permitted: p as u32,
            inheritable: i as u32,
        },
        Data {
            effective: (e >> 32) as u32,
            permitted: (p >> 32) as u32,
            inheritable: (i >> 32) as u32,
        },
    ];
    // SAFETY: capset(2) reads a v3 header and two data structs we own.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    if rc != 0 {
        bail!(
            "capset(effective={e:#x}, permitted={p:#x}, inheritable={i:#x}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn to_caps(list: Option<&HashSet<oci_spec::runtime::Capability>>) -> Result<CapsHashSet> {
    let mut out = CapsHashSet::new();
    for c in list.into_iter().flatten() {
        // oci-spec's names are CAP_*; caps parses the same spelling.
        let name = c.to_string();
        let name = if name.starts_with("CAP_") {
            name
        } else {
            format!("CAP_{name}")
        };
        out.insert(Capability::from_str(&name).map_err(|e| anyhow::anyhow!("capability {name}: {e}"))?);
    }
    Ok(out)
}

fn rlimit_resource(name: &str) -> Result<libc::__rlimit_resource_t> {
    let n = name.to_ascii_uppercase();
    Ok(match n.trim_start_matches("RLIMIT_") {
        "AS" => libc::RLIMIT_AS,
        "CORE" => libc::RLIMIT_CORE,
        "CPU" => libc::RLIMIT_CPU,
        "DATA" => libc::RLIMIT_DATA,
        "FSIZE" => libc::RLIMIT_FSIZE,
        "LOCKS" => libc::RLIMIT_LOCKS,
        "MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "NICE" => libc::RLIMIT_NICE,
        "NOFILE" => libc::RLIMIT_NOFILE,
        "NPROC" => libc::RLIMIT_NPROC,
        "RSS" => libc::RLIMIT_RSS,
        "RTPRIO" => libc::RLIMIT_RTPRIO,
        "RTTIME" => libc::RLIMIT_RTTIME,
        "SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "STACK" => libc::RLIMIT_STACK,
        _ => bail!("unknown rlimit {name}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("tool");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let path = format!("/nonexistent:{}", dir.path().display());
        assert_eq!(find_program("tool", &path).unwrap(), bin);
        assert_eq!(find_program("/bin/x", "").unwrap(), PathBuf::from("/bin/x"));
        let err = find_program("missing", &path).unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");
    }

    #[test]
    fn rlimit_names() {
        assert_eq!(rlimit_resource("RLIMIT_NOFILE").unwrap(), libc::RLIMIT_NOFILE);
        assert!(rlimit_resource("RLIMIT_BOGUS").is_err());
    }
}
