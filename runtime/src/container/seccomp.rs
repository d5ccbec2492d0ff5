//! Which seccomp profile a container gets, as the OCI `linux.seccomp` that
//! berth-shim compiles and installs.
//!
//! * `RuntimeDefault` (or the old `runtime/default`, `docker/default`): the
//!   syscalls Docker's default profile keeps from a container — module and
//!   kexec loading, keyrings, mounts and namespaces, clock setting, reboot,
//!   bpf/perf, userfaultfd, io_uring, obsolete ones, and clone(2) with
//!   namespace flags — fail with EPERM (clone3 with ENOSYS, so the C library
//!   falls back to the filterable clone). As in Docker,
//!   the ones a capability stands for are allowed when the container has it
//!   (e.g. mount with CAP_SYS_ADMIN). Written as a deny list: everything else
//!   behaves as Docker's allow list allows it.
//! * `Unconfined`, or nothing asked: no filter. Privileged containers are
//!   never filtered (CRI says so).
//! * `Localhost`: an OCI/Docker-format JSON profile at an absolute path on
//!   the node, read at CreateContainer; a missing or invalid file is an
//!   InvalidArgument naming it.

use berth_proto::cri;
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder, LinuxSeccompOperator,
    LinuxSyscall,
};
use serde_json::Value;

use crate::error::{Error, Result};

/// Denied syscalls and the capability that lifts the denial (None: always).
const DENIED: &[(&str, Option<&str>)] = &[
    ("acct", Some("CAP_SYS_PACCT")),
    ("add_key", None),
    ("bpf", Some("CAP_SYS_ADMIN")),
    ("clock_adjtime", Some("CAP_SYS_TIME")),
    ("clock_settime", Some("CAP_SYS_TIME")),
    ("create_module", None),
    ("delete_module", Some("CAP_SYS_MODULE")),
    ("fanotify_init", Some("CAP_SYS_ADMIN")),
    ("finit_module", Some("CAP_SYS_MODULE")),
    ("fsconfig", Some("CAP_SYS_ADMIN")),
    ("fsmount", Some("CAP_SYS_ADMIN")),
    ("fsopen", Some("CAP_SYS_ADMIN")),
    ("fspick", Some("CAP_SYS_ADMIN")),
    ("get_kernel_syms", None),
    ("init_module", Some("CAP_SYS_MODULE")),
    ("ioperm", Some("CAP_SYS_RAWIO")),
    ("iopl", Some("CAP_SYS_RAWIO")),
    ("kcmp", Some("CAP_SYS_PTRACE")),
    ("kexec_file_load", None),
    ("kexec_load", None),
    ("keyctl", None),
    ("lookup_dcookie", Some("CAP_SYS_ADMIN")),
    ("mount", Some("CAP_SYS_ADMIN")),
    ("mount_setattr", Some("CAP_SYS_ADMIN")),
    ("move_mount", Some("CAP_SYS_ADMIN")),
    ("name_to_handle_at", Some("CAP_SYS_ADMIN")),
    ("nfsservctl", None),
    ("open_by_handle_at", Some("CAP_DAC_READ_SEARCH")),
    ("open_tree", Some("CAP_SYS_ADMIN")),
    ("perf_event_open", Some("CAP_SYS_ADMIN")),
    ("pivot_root", Some("CAP_SYS_ADMIN")),
    ("process_vm_readv", Some("CAP_SYS_PTRACE")),
    ("process_vm_writev", Some("CAP_SYS_PTRACE")),
    ("query_module", None),
    ("quotactl", Some("CAP_SYS_ADMIN")),
    ("reboot", Some("CAP_SYS_BOOT")),
    ("request_key", None),
    ("setns", Some("CAP_SYS_ADMIN")),
    ("settimeofday", Some("CAP_SYS_TIME")),
    ("swapoff", Some("CAP_SYS_ADMIN")),
    ("swapon", Some("CAP_SYS_ADMIN")),
    ("syslog", Some("CAP_SYSLOG")),
    ("umount2", Some("CAP_SYS_ADMIN")),
    ("unshare", Some("CAP_SYS_ADMIN")),
    ("uselib", None),
    ("userfaultfd", None),
    ("ustat", None),
    ("vm86", None),
    ("vm86old", None),
    ("_sysctl", None),
    ("sysfs", None),
    // io_uring bypasses seccomp for the operations it performs (Docker
    // blocks it since 25.0).
    ("io_uring_setup", None),
    ("io_uring_enter", None),
    ("io_uring_register", None),
    ("mbind", Some("CAP_SYS_NICE")),
    ("migrate_pages", Some("CAP_SYS_NICE")),
    ("move_pages", Some("CAP_SYS_NICE")),
    ("set_mempolicy", Some("CAP_SYS_NICE")),
    ("quotactl_fd", Some("CAP_SYS_ADMIN")),
    ("vhangup", Some("CAP_SYS_TTY_CONFIG")),
];

/// clone(2) flags that create namespaces: refused without CAP_SYS_ADMIN, as
/// unshare(2) is (otherwise `clone(CLONE_NEWUSER)` would get round it).
const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// The ABIs of the node berthd is built for, in libseccomp's names (the
/// profile's `architectures`, as Docker's lists them). berth-shim filters
/// each of them with the same rules whatever a profile lists; this is what
/// a reader of the spec sees.
pub(super) fn node_architectures() -> &'static [Arch] {
    if cfg!(target_arch = "x86_64") {
        &[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        &[Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        &[]
    }
}

/// A rule: `names` fail with `errno`, if `args` match.
fn errno_rule(names: Vec<String>, errno: i32, args: Option<Vec<LinuxSeccompArg>>) -> LinuxSyscall {
    let mut rule = LinuxSyscall::default();
    rule.set_names(names);
    rule.set_action(LinuxSeccompAction::ScmpActErrno);
    rule.set_errno_ret(Some(errno as u32));
    rule.set_args(args);
    rule
}

/// The runtime default profile for a container with capabilities `caps`.
pub fn runtime_default(caps: &[String]) -> LinuxSeccomp {
    let names: Vec<String> = DENIED
        .iter()
        .filter(|(_, cap)| cap.is_none_or(|c| !caps.iter().any(|have| have == c)))
        .map(|(n, _)| n.to_string())
        .collect();
    let mut syscalls = vec![errno_rule(names, libc::EPERM, None)];
    if !caps.iter().any(|c| c == "CAP_SYS_ADMIN") {
        // One rule a flag: a rule's conditions are ANDed, rules are ORed.
        for &flag in CLONE_NAMESPACE_FLAGS {
            let arg = LinuxSeccompArgBuilder::default()
                .index(0_usize)
                .value(flag)
                .value_two(flag)
                .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                .build()
                .expect("every field of a seccomp argument is given");
            syscalls.push(errno_rule(vec!["clone".into()], libc::EPERM, Some(vec![arg])));
        }
        // clone3 passes its flags in memory, which seccomp cannot read:
        // ENOSYS makes the C library fall back to clone, filtered above.
        syscalls.push(errno_rule(vec!["clone3".into()], libc::ENOSYS, None));
    }
    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActAllow);
    profile.set_architectures(Some(node_architectures().to_vec()));
    profile.set_syscalls(Some(syscalls));
    profile
}

/// The `linux.seccomp` for a container, or None for no filter. Reads the
/// deprecated `seccomp_profile_path` too: older kubelets still send only it.
#[allow(deprecated)]
pub fn profile(
    sc: Option<&cri::LinuxContainerSecurityContext>,
    caps: &[String],
) -> Result<Option<LinuxSeccomp>> {
    let Some(sc) = sc else { return Ok(None) };
    if sc.privileged {
        return Ok(None);
    }
    let (kind, path) = match (&sc.seccomp, sc.seccomp_profile_path.as_str()) {
        (Some(p), _) => match cri::security_profile::ProfileType::try_from(p.profile_type) {
            Ok(cri::security_profile::ProfileType::RuntimeDefault) => ("default", String::new()),
            Ok(cri::security_profile::ProfileType::Unconfined) => ("unconfined", String::new()),
            Ok(cri::security_profile::ProfileType::Localhost) => ("localhost", p.localhost_ref.clone()),
            Err(_) => {
                return Err(Error::InvalidArgument(format!(
                    "unknown seccomp profile type {}",
                    p.profile_type
                )))
            }
        },
        (None, "" | "unconfined") => ("unconfined", String::new()),
        (None, "runtime/default" | "docker/default") => ("default", String::new()),
        (None, other) => match other.strip_prefix("localhost/") {
            Some(p) => ("localhost", p.to_string()),
            None => {
                return Err(Error::InvalidArgument(format!(
                    "seccomp profile {other:?} is not understood"
                )))
            }
        },
    };
    match kind {
        "unconfined" => Ok(None),
        "default" => Ok(Some(runtime_default(caps))),
        _ => {
            if !path.starts_with('/') {
                return Err(Error::InvalidArgument(format!(
                    "seccomp localhost profile {path:?} must be an absolute path on the node"
                )));
            }
            let text = std::fs::read(&path)
                .map_err(|e| Error::InvalidArgument(format!("seccomp localhost profile {path}: {e}")))?;
            let v: Value = serde_json::from_slice(&text)
                .map_err(|e| Error::InvalidArgument(format!("seccomp localhost profile {path}: {e}")))?;
            // Fields oci-spec does not know (Docker's archMap, comments)
            // are dropped here: the shim never read them.
            let profile = serde_json::from_value::<LinuxSeccomp>(v).map_err(|e| {
                Error::InvalidArgument(format!(
                    "seccomp localhost profile {path} is not an OCI/Docker profile: {e}"
                ))
            })?;
            Ok(Some(profile))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The profile as the shim receives it, for JSON-shaped assertions.
    fn as_json(p: LinuxSeccomp) -> Value {
        serde_json::to_value(p).unwrap()
    }

    #[allow(deprecated)]
    fn sc(
        p: Option<cri::SecurityProfile>,
        path: &str,
        privileged: bool,
    ) -> cri::LinuxContainerSecurityContext {
        cri::LinuxContainerSecurityContext {
            seccomp: p,
            seccomp_profile_path: path.into(),
            privileged,
            ..Default::default()
        }
    }

    fn names(v: &Value) -> Vec<String> {
        serde_json::from_value(v["syscalls"][0]["names"].clone()).unwrap()
    }

    #[test]
    fn profiles_by_kind() {
        let rd = Some(cri::SecurityProfile::default());
        let p = as_json(profile(Some(&sc(rd.clone(), "", false)), &[]).unwrap().unwrap());
        assert!(names(&p).contains(&"mount".to_string()) && names(&p).contains(&"keyctl".to_string()));
        // CAP_SYS_ADMIN lifts the mount family, not keyctl.
        let p = as_json(
            profile(Some(&sc(rd.clone(), "", false)), &["CAP_SYS_ADMIN".into()])
                .unwrap()
                .unwrap(),
        );
        assert!(!names(&p).contains(&"mount".to_string()) && names(&p).contains(&"keyctl".to_string()));
        let clone_rules = |p: &Value| {
            p["syscalls"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["names"][0] == "clone" || s["names"][0] == "clone3")
                .count()
        };
        assert_eq!(clone_rules(&p), 0, "CAP_SYS_ADMIN may create namespaces");
        let plain = as_json(runtime_default(&[]));
        assert_eq!(clone_rules(&plain), CLONE_NAMESPACE_FLAGS.len() + 1);
        let user_ns = plain["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["args"][0]["value"] == libc::CLONE_NEWUSER as u64)
            .expect("a CLONE_NEWUSER rule");
        assert_eq!(user_ns["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        // The node's own ABIs, never a fixed list.
        #[cfg(target_arch = "aarch64")]
        assert_eq!(
            plain["architectures"],
            json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            plain["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        // The whole profile is valid OCI.
        serde_json::from_value::<oci_spec::runtime::LinuxSeccomp>(plain).unwrap();
        assert!(
            profile(Some(&sc(rd, "", true)), &[]).unwrap().is_none(),
            "privileged: none"
        );
        assert!(profile(None, &[]).unwrap().is_none());
        assert!(profile(Some(&sc(None, "", false)), &[]).unwrap().is_none());
        assert!(profile(Some(&sc(None, "runtime/default", false)), &[])
            .unwrap()
            .is_some());
        let unconfined = cri::SecurityProfile {
            profile_type: 1,
            ..Default::default()
        };
        assert!(profile(Some(&sc(Some(unconfined), "", false)), &[])
            .unwrap()
            .is_none());
    }

    #[test]
    fn localhost_profiles_are_read_and_checked() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("p.json");
        std::fs::write(
            &f,
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
        )
        .unwrap();
        let lh = |r: &str| {
            Some(cri::SecurityProfile {
                profile_type: 2,
                localhost_ref: r.into(),
            })
        };
        let p = profile(Some(&sc(lh(f.to_str().unwrap()), "", false)), &[])
            .unwrap()
            .unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        let e = profile(Some(&sc(lh("/nonexistent.json"), "", false)), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent.json"), "{e}");
        std::fs::write(&f, r#"{"syscalls": 5}"#).unwrap();
        assert!(profile(Some(&sc(lh(f.to_str().unwrap()), "", false)), &[]).is_err());
        assert!(profile(Some(&sc(lh("relative.json"), "", false)), &[]).is_err());
    }
}
