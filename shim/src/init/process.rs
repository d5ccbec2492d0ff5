//! The last step of the init stage: become the user's process.
//!
//! Order (as the kernel requires): rlimits and oom score while still
//! privileged; drop the bounding set while CAP_SETPCAP is still effective;
//! switch groups then gid then uid with KEEPCAPS so permitted capabilities
//! survive a non-root uid; set the capability sets; no_new_privs; exec.

use std::collections::HashSet;
use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use caps::{Capability, CapsHashSet};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::Spec;

use super::rootfs::Prepared;
use super::syscall::Syscall;
use crate::sync::{mono_ns, StartTimes};

/// PATH when the spec's environment has none (Docker's default).
use berth_sys::env::DEFAULT_PATH;

/// The kernel's view of our identity (`crate::sync::identity_line`): the
/// real uid and gid and all supplementary groups, read back after the
/// changes rather than assumed from the spec.
pub fn identity_line(sys: &dyn Syscall) -> Result<String> {
    let (uid, gid, groups) = sys.credentials().context("read back our uid, gid and groups")?;
    let groups: Vec<String> = groups.iter().map(u32::to_string).collect();
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    Ok(crate::sync::identity_line(
        &uid.to_string(),
        &gid.to_string(),
        &groups,
    ))
}

/// The process's settings that need no Start: its limits, OOM score,
/// AppArmor exec profile and capability bounding set. They change nothing
/// the init itself does before its exec (the bounding set only caps what
/// an exec may gain; the effective set is untouched), so a parked init
/// applies them while it waits for Start, and a Start is left with what
/// must follow it (as runc's init, which is done with them before it
/// waits on its exec FIFO). Only when no startContainer hook runs before
/// the exec (a hook runs with the runtime's privilege and would inherit
/// them) and no user namespace is still to be entered (joining one resets
/// the bounding set); `exec` is then told they are `settled`. The
/// program's PATH lookup is made ahead too ([`look_up_ahead`]).
pub fn settle(sys: &dyn Syscall, spec: &Spec) -> Result<Settled> {
    let process = spec.process().as_ref().context("spec has no process")?;
    limits(sys, process)?;
    drop_bounding(sys, process)?;
    Ok(Settled {
        program: look_up_ahead(sys, process),
    })
}

/// What [`settle`] did ahead of Start, for [`exec`].
#[derive(Debug, Default)]
pub struct Settled {
    /// Where the PATH lookup made while parked found the program.
    program: Option<PathBuf>,
}

/// The program as the PATH lookup finds it while parked, as root; None
/// when there is nothing to look up (a name with a slash) or it cannot be
/// done ahead (a relative PATH entry depends on a working directory that
/// is not ours yet).
///
/// Why root's lookup may stand for the user's: root may run every file
/// (access(2) X_OK: any execute bit) the user may, through any directory
/// the user may search, so no PATH entry before root's match holds a
/// program the user may run. Root's match is then the user's first match
/// whenever the user may run it, which is all Start checks: one access and
/// one stat, where a full lookup costs them per PATH entry (each a lookup
/// through the overlay, most of them misses). When the user may not,
/// Start looks up in full as before. As with runc's init, which looks the
/// program up before it waits for its start, a program put in an earlier
/// PATH entry between Create and Start is not seen.
fn look_up_ahead(sys: &dyn Syscall, process: &oci_spec::runtime::Process) -> Option<PathBuf> {
    let name = process.args().as_ref()?.first()?;
    if name.contains('/') {
        return None;
    }
    let env = process.env().clone().unwrap_or_default();
    let path_var = path_var(&env);
    if path_var.split(':').any(|d| !d.is_empty() && !d.starts_with('/')) {
        return None;
    }
    find_program(sys, name, path_var).ok()
}

/// The PATH the program is looked up in: the spec's, else the default.
fn path_var(env: &[String]) -> &str {
    env.iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
}

/// Limits, OOM score and AppArmor exec profile (see [`settle`]).
fn limits(sys: &dyn Syscall, process: &oci_spec::runtime::Process) -> Result<()> {
    for rl in process.rlimits().clone().unwrap_or_default() {
        let res = rlimit_resource(&rl.typ().to_string())?;
        if let Err(e) = sys.setrlimit(res, rl.soft(), rl.hard()) {
            bail!("setrlimit {:?}: {e}", rl.typ());
        }
    }
    if let Some(adj) = process.oom_score_adj() {
        sys.write_file(Path::new("/proc/self/oom_score_adj"), adj.to_string().as_bytes())
            .context("write oom_score_adj")?;
    }
    if let Some(profile) = process.apparmor_profile() {
        set_apparmor_exec_profile(sys, profile)?;
    }
    Ok(())
}

/// Drops from the bounding set every capability the spec's set leaves
/// out (needs CAP_SETPCAP, so before the identity change).
fn drop_bounding(sys: &dyn Syscall, process: &oci_spec::runtime::Process) -> Result<()> {
    if let Some(c) = process.capabilities() {
        let keep = to_caps(c.bounding().as_ref())?;
        // In the kernel's order (caps::all() is a hash set): the same
        // calls every time.
        let mut all: Vec<Capability> = caps::all().into_iter().collect();
        all.sort_by_key(|c| c.index());
        for cap in all {
            if !keep.contains(&cap) {
                sys.drop_bounding(cap)
                    .with_context(|| format!("drop {cap} from bounding set"))?;
            }
        }
    }
    Ok(())
}

/// Applies identity and privileges and execs the process. Returns only on
/// error. The spec's seccomp profile is `seccomp` when it was compiled
/// ahead (else it is compiled here). `settled`: what [`settle`] did
/// already. `report` receives [`identity_line`] right before the exec,
/// with `times` marked from here on (`woke` is the caller's).
pub fn exec(
    sys: &dyn Syscall,
    spec: &Spec,
    prepared: &Prepared,
    seccomp: Option<&super::seccomp::Compiled>,
    settled: Option<&Settled>,
    mut times: StartTimes,
    report: &mut dyn FnMut(&str, &StartTimes),
) -> Result<Infallible> {
    let process = spec.process().clone().context("spec has no process")?;
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        bail!("spec has no process args");
    }
    let env = process.env().clone().unwrap_or_default();

    if settled.is_none() {
        limits(sys, &process)?;
    }

    if let Some(u) = &prepared.userns {
        crate::userns::enter(sys, u)?;
    }
    // Seccomp while still privileged (installing a filter needs
    // CAP_SYS_ADMIN or no_new_privs, and no_new_privs is the spec's choice):
    // nothing below uses a syscall a profile may reasonably deny.
    times.seccomp = mono_ns();
    if let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        let compiled;
        let filters = match seccomp {
            Some(Ok(program)) => program.as_ref(),
            Some(Err(e)) => bail!("{e}"),
            None => {
                compiled = super::seccomp::compile(profile)?;
                &compiled
            }
        };
        sys.seccomp(filters)?;
    }
    times.privileges = mono_ns();

    if settled.is_none() {
        drop_bounding(sys, &process)?;
    }
    let caps_spec = process.capabilities().clone();

    let user = process.user();
    let mut groups: Vec<Gid> = user
        .additional_gids()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(Gid::from_raw)
        .collect();
    groups.dedup();
    sys.setgroups(&groups).context("setgroups")?;
    if let Err(e) = sys.set_keepcaps() {
        bail!("PR_SET_KEEPCAPS: {e}");
    }
    sys.setresgid(Gid::from_raw(user.gid())).context("setresgid")?;
    sys.setresuid(Uid::from_raw(user.uid())).context("setresuid")?;

    if let Some(c) = &caps_spec {
        let permitted = to_caps(c.permitted().as_ref())?;
        let effective = to_caps(c.effective().as_ref())?;
        let inheritable = to_caps(c.inheritable().as_ref())?;
        set_capabilities(sys, &effective, &permitted, &inheritable)?;
        // Ambient capabilities in a fixed order (the set is unordered).
        let mut ambient: Vec<Capability> = to_caps(c.ambient().as_ref())?.into_iter().collect();
        ambient.sort_by_key(|c| c.index());
        for cap in ambient {
            sys.raise_ambient(cap)
                .with_context(|| format!("raise ambient {cap}"))?;
        }
    }
    if process.no_new_privileges().unwrap_or(false) {
        if let Err(e) = sys.set_no_new_privs() {
            bail!("PR_SET_NO_NEW_PRIVS: {e}");
        }
    }

    times.lookup = mono_ns();
    match &prepared.cwd_fd {
        Some(fd) => sys.fchdir(fd.as_fd()),
        None => sys.chdir(&prepared.cwd),
    }
    .with_context(|| format!("chdir to working directory {}", prepared.cwd.display()))?;

    let program = match settled.and_then(|s| s.program.as_deref()) {
        Some(found) if sys.is_executable(found) => found.to_path_buf(),
        _ => find_program(sys, &args[0], path_var(&env))?,
    };
    let c_prog = CString::new(program.as_os_str().as_encoded_bytes())?;
    let c_args: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()?;
    let c_env: Vec<CString> = env
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()?;
    times.identity = mono_ns();
    let line = identity_line(sys)?;
    times.exec = mono_ns();
    report(&line, &times);
    let err = sys.execve(&c_prog, &c_args, &c_env);
    bail!("exec {:?}: {err}", args[0])
}

/// Asks AppArmor to confine the process in `profile` from its next execve
/// (berthd checked that the profile is loaded). The per-LSM file exists
/// since Linux 5.8; older kernels only have the shared one.
fn set_apparmor_exec_profile(sys: &dyn Syscall, profile: &str) -> Result<()> {
    let cmd = format!("exec {profile}");
    let mut last = None;
    for attr in ["/proc/self/attr/apparmor/exec", "/proc/self/attr/exec"] {
        match sys.write_file(Path::new(attr), cmd.as_bytes()) {
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
pub fn find_program(sys: &dyn Syscall, name: &str, path_var: &str) -> Result<PathBuf> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        if sys.is_executable(&candidate) {
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
    sys: &dyn Syscall,
    effective: &CapsHashSet,
    permitted: &CapsHashSet,
    inheritable: &CapsHashSet,
) -> Result<()> {
    let mask = |set: &CapsHashSet| set.iter().fold(0u64, |m, c| m | c.bitmask());
    let (e, p, i) = (mask(effective), mask(permitted), mask(inheritable));
    if let Err(err) = sys.capset(e, p, i) {
        bail!("capset(effective={e:#x}, permitted={p:#x}, inheritable={i:#x}): {err}");
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
    use crate::init::fake::{position, Call, Fake};

    #[test]
    fn finds_programs_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("tool");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let path = format!("/nonexistent:{}", dir.path().display());
        let sys = crate::init::syscall::Linux;
        assert_eq!(find_program(&sys, "tool", &path).unwrap(), bin);
        assert_eq!(find_program(&sys, "/bin/x", "").unwrap(), PathBuf::from("/bin/x"));
        let err = find_program(&sys, "missing", &path).unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");
    }

    fn exec_with(sys: &Fake, spec: serde_json::Value) -> (String, Vec<Call>) {
        exec_compiled(sys, spec, None)
    }

    /// [`exec_with`], with the seccomp profile compiled ahead (`seccomp`).
    fn exec_compiled(
        sys: &Fake,
        spec: serde_json::Value,
        seccomp: Option<&crate::init::seccomp::Compiled>,
    ) -> (String, Vec<Call>) {
        let spec: Spec = serde_json::from_value(spec).expect("spec");
        let prepared = Prepared {
            cwd: PathBuf::from("/work"),
            cwd_fd: None,
            userns: None,
            times: Default::default(),
        };
        let mut report = |line: &str, t: &StartTimes| {
            // Each mark is taken after the one before it.
            let marks = [t.woke, t.seccomp, t.privileges, t.lookup, t.identity, t.exec];
            assert!(marks.windows(2).all(|w| w[0] <= w[1]), "{marks:?}");
            assert!(t.woke > 0, "the caller's wake is kept");
            sys.note(Call::Report(line.to_string()))
        };
        let woke = StartTimes {
            woke: mono_ns(),
            ..Default::default()
        };
        let err = match exec(sys, &spec, &prepared, seccomp, None, woke, &mut report) {
            Ok(never) => match never {},
            Err(e) => format!("{e:#}"),
        };
        (err, sys.calls())
    }

    /// Limits while privileged, the bounding set while CAP_SETPCAP is
    /// still there, groups then gid then uid with KEEPCAPS, the capability
    /// sets in one capset, no_new_privs, the cwd, the identity report, exec.
    #[test]
    fn identity_and_privileges_change_in_the_kernels_order() {
        let mut sys = Fake::default();
        sys.executables.insert(PathBuf::from("/usr/bin/tool"));
        let chown = Capability::CAP_CHOWN.bitmask();
        let (err, calls) = exec_with(
            &sys,
            serde_json::json!({
                "ociVersion": "1.0.2",
                "process": {
                    "cwd": "/work",
                    "args": ["tool", "-v"],
                    "env": ["PATH=/bin:/usr/bin"],
                    "user": {"uid": 1000, "gid": 3000, "additionalGids": [10, 10, 20]},
                    "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"],
                                     "permitted": ["CAP_CHOWN"], "ambient": ["CAP_CHOWN"]},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 2048}],
                    "oomScoreAdj": 5,
                    "noNewPrivileges": true,
                },
            }),
        );
        assert_eq!(err, "exec \"tool\": ENOEXEC: Exec format error");
        let want = [
            Call::Setrlimit(libc::RLIMIT_NOFILE, 1024, 2048),
            Call::Write("/proc/self/oom_score_adj".into(), "5".into()),
            Call::DropBounding(Capability::CAP_SYS_ADMIN),
            Call::Setgroups(vec![10, 20]),
            Call::Keepcaps,
            Call::Setresgid(3000),
            Call::Setresuid(1000),
            Call::Capset(chown, chown, 0),
            Call::RaiseAmbient(Capability::CAP_CHOWN),
            Call::NoNewPrivs,
            Call::Chdir("/work".into()),
            Call::Report("I1000 3000 10,20\n".into()),
            Call::Execve("/usr/bin/tool".into(), vec!["tool".into(), "-v".into()]),
        ];
        let at: Vec<usize> = want.iter().map(|w| position(&calls, w)).collect();
        assert!(
            at.windows(2).all(|w| w[0] < w[1]),
            "out of order: {at:?}\n{calls:#?}"
        );
        let dropped = calls
            .iter()
            .filter(|c| matches!(c, Call::DropBounding(_)))
            .count();
        assert_eq!(dropped, caps::all().len() - 1, "every capability but CAP_CHOWN");
        assert!(!calls.contains(&Call::DropBounding(Capability::CAP_CHOWN)));
        let last_drop = calls
            .iter()
            .rposition(|c| matches!(c, Call::DropBounding(_)))
            .unwrap();
        assert!(last_drop < position(&calls, &Call::Setresuid(1000)));
    }

    /// A spec with every setting [`settle`] applies.
    fn settling_spec() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "cwd": "/work",
                "args": ["tool"],
                "env": ["PATH=/usr/bin"],
                "user": {"uid": 1000, "gid": 3000},
                "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"],
                                 "permitted": ["CAP_CHOWN"]},
                "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 2048}],
                "oomScoreAdj": 5,
            },
        })
    }

    /// Settled while parked then exec'd, an init makes exactly the calls
    /// one exec alone makes, in the same order, and the exec after Start
    /// makes none of the settled ones again.
    #[test]
    fn settling_ahead_leaves_the_same_calls_and_start_the_rest() {
        let mut whole = Fake::default();
        whole.executables.insert(PathBuf::from("/usr/bin/tool"));
        let (err_whole, calls_whole) = exec_with(&whole, settling_spec());

        let mut split = Fake::default();
        split.executables.insert(PathBuf::from("/usr/bin/tool"));
        let (err, settled, _, _) = settle_then_exec(&split, settling_spec());
        let calls = split.calls();
        assert_eq!(err, err_whole);
        assert_eq!(calls, calls_whole);
        let after_start = &calls[settled..];
        assert!(
            !after_start
                .iter()
                .any(|c| matches!(c, Call::Setrlimit(..) | Call::Write(..) | Call::DropBounding(_))),
            "{after_start:#?}"
        );
        assert!(
            settled > caps::all().len() / 2,
            "limits, OOM score and bounding set: {settled}"
        );
    }

    /// Settles `spec` while "parked", then execs it after "Start": what
    /// was exec'd (or the error), how many calls the settling made, and
    /// the PATH lookups made before and after Start.
    fn settle_then_exec(sys: &Fake, spec: serde_json::Value) -> (String, usize, Vec<PathBuf>, Vec<PathBuf>) {
        let spec: Spec = serde_json::from_value(spec).unwrap();
        let ahead = settle(sys, &spec).unwrap();
        let settled = sys.calls().len();
        let parked = sys.lookups.take();
        let prepared = Prepared {
            cwd: PathBuf::from("/work"),
            ..Default::default()
        };
        let mut report = |line: &str, _: &StartTimes| sys.note(Call::Report(line.to_string()));
        let out = match exec(
            sys,
            &spec,
            &prepared,
            None,
            Some(&ahead),
            StartTimes::default(),
            &mut report,
        ) {
            Ok(never) => match never {},
            Err(e) => format!("{e:#}"),
        };
        (out, settled, parked, sys.lookups.take())
    }

    fn tool_spec(path: &str) -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"cwd": "/", "args": ["tool"], "env": [format!("PATH={path}")],
                        "user": {"uid": 1000, "gid": 1000}},
        })
    }

    /// The PATH lookup is made while parked; Start only checks that the
    /// user may run what it found, and execs that.
    #[test]
    fn the_program_is_looked_up_while_parked_and_checked_once_at_start() {
        let mut sys = Fake::default();
        sys.executables.insert(PathBuf::from("/c/tool"));
        let (out, _, parked, started) = settle_then_exec(&sys, tool_spec("/a:/b:/c"));
        assert!(
            out.starts_with("exec \"tool\""),
            "exec'd, not a lookup error: {out}"
        );
        let paths = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(parked, paths(&["/a/tool", "/b/tool", "/c/tool"]));
        assert_eq!(started, paths(&["/c/tool"]));
        assert!(sys
            .calls()
            .contains(&Call::Execve("/c/tool".into(), vec!["tool".into()])));
    }

    /// Root's first match is one the user may not run: Start looks the
    /// program up again as the user, and execs the user's first match,
    /// as an exec with no lookup ahead does.
    #[test]
    fn a_match_only_root_may_run_is_looked_up_again_as_the_user() {
        let fake = || {
            let mut sys = Fake::default();
            sys.executables.insert(PathBuf::from("/a/tool"));
            sys.executables.insert(PathBuf::from("/c/tool"));
            sys.root_only.insert(PathBuf::from("/a/tool"));
            sys
        };
        let sys = fake();
        let (_, _, parked, started) = settle_then_exec(&sys, tool_spec("/a:/b:/c"));
        let paths = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(parked, paths(&["/a/tool"]));
        assert_eq!(started, paths(&["/a/tool", "/a/tool", "/b/tool", "/c/tool"]));
        let whole = fake();
        let (_, calls_whole) = exec_with(&whole, tool_spec("/a:/b:/c"));
        let execve = |calls: Vec<Call>| {
            calls
                .into_iter()
                .filter(|c| matches!(c, Call::Execve(..)))
                .collect::<Vec<_>>()
        };
        assert_eq!(execve(sys.calls()), execve(calls_whole));
        assert_eq!(
            execve(sys.calls()),
            [Call::Execve("/c/tool".into(), vec!["tool".into()])]
        );
    }

    /// Nothing is looked up ahead for a name with a slash, or when a PATH
    /// entry is relative (it depends on the working directory, set at
    /// Start); Start then looks up as it always did.
    #[test]
    fn no_lookup_ahead_for_a_path_or_a_relative_path_entry() {
        let mut sys = Fake::default();
        sys.executables.insert(PathBuf::from("bin/tool"));
        let (out, _, parked, started) = settle_then_exec(&sys, tool_spec("/a:bin"));
        assert!(
            out.starts_with("exec \"tool\""),
            "exec'd, not a lookup error: {out}"
        );
        assert!(parked.is_empty(), "{parked:?}");
        assert_eq!(started, [PathBuf::from("/a/tool"), PathBuf::from("bin/tool")]);

        let sys = Fake::default();
        let mut spec = tool_spec("/a");
        spec["process"]["args"] = serde_json::json!(["/opt/tool"]);
        let (_, _, parked, _) = settle_then_exec(&sys, spec);
        assert!(parked.is_empty(), "{parked:?}");
    }

    /// A command not found is reported before anything is exec'd or any
    /// identity reported; without a spec PATH the default one is searched.
    #[test]
    fn a_missing_program_fails_before_exec() {
        let sys = Fake::default();
        let (err, calls) = exec_with(
            &sys,
            serde_json::json!({
                "ociVersion": "1.0.2",
                "process": {"cwd": "/", "args": ["nope"], "user": {"uid": 0, "gid": 0}},
            }),
        );
        assert_eq!(
            err,
            format!("executable file \"nope\" not found in $PATH ({DEFAULT_PATH})")
        );
        assert!(!calls
            .iter()
            .any(|c| matches!(c, Call::Execve(..) | Call::Report(_))));
        // No capabilities in the spec: the sets are left as they are.
        assert!(!calls
            .iter()
            .any(|c| matches!(c, Call::Capset(..) | Call::DropBounding(_))));
    }

    /// A profile compiled ahead is the filter installed, with no compile
    /// here: the spec's own profile below would not even compile. A
    /// profile that failed ahead fails the exec with its message, before
    /// any identity changes.
    #[test]
    fn a_profile_compiled_ahead_is_installed_as_it_is() {
        let sys = Fake::default();
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"cwd": "/", "args": ["/bin/tool"], "user": {"uid": 0, "gid": 0}},
            "linux": {"seccomp": {"defaultAction": "SCMP_ACT_NOTIFY"}},
        });
        let (err, calls) = exec_with(&sys, spec.clone());
        assert!(err.contains("not supported"), "compiled here, and refused: {err}");
        assert!(!calls.iter().any(|c| matches!(c, Call::Seccomp(_))));

        let ahead: crate::init::seccomp::Compiled = Ok(std::sync::Arc::new(
            crate::init::seccomp::compile(
                &serde_json::from_value(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW"})).unwrap(),
            )
            .unwrap(),
        ));
        let len = ahead.as_ref().unwrap().len();
        let (_, calls) = exec_compiled(&Fake::default(), spec.clone(), Some(&ahead));
        assert!(calls.contains(&Call::Seccomp(len)), "{calls:?}");

        let failed: crate::init::seccomp::Compiled = Err("seccomp: the profile is bad".into());
        let (err, calls) = exec_compiled(&Fake::default(), spec, Some(&failed));
        assert_eq!(err, "seccomp: the profile is bad");
        assert!(!calls
            .iter()
            .any(|c| matches!(c, Call::Seccomp(_) | Call::Setresuid(_) | Call::Execve(..))));
    }

    #[test]
    fn rlimit_names() {
        assert_eq!(rlimit_resource("RLIMIT_NOFILE").unwrap(), libc::RLIMIT_NOFILE);
        assert!(rlimit_resource("RLIMIT_BOGUS").is_err());
    }
}
