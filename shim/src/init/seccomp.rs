//! The OCI `linux.seccomp` profile as seccomp BPF (via the `seccompiler`
//! crate, Firecracker's pure-Rust compiler: no libseccomp C dependency).
//!
//! An OCI profile has one default action and groups of syscalls with their
//! own actions. seccompiler builds filters with one match action each, so a
//! profile becomes a stack of filters: one per non-default action (listed
//! syscalls -> that action, others allow) plus, when the default is not
//! "allow", one that turns every syscall not explicitly allowed into the
//! default action. The kernel runs every filter and takes the most
//! restrictive answer, which is the profile's meaning. Syscall names this
//! architecture does not have (profiles are written for several) are skipped.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use seccompiler::{BpfProgram, TargetArch};
use serde_json::{json, Value};

const ARCH: TargetArch = TargetArch::x86_64;

/// seccompiler's JSON for one action (`None` for allow).
fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<Option<Value>> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => None,
        LinuxSeccompAction::ScmpActErrno => Some(json!({"errno": errno.unwrap_or(libc::EPERM as u32)})),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => Some(json!("kill_thread")),
        LinuxSeccompAction::ScmpActKillProcess => Some(json!("kill_process")),
        LinuxSeccompAction::ScmpActTrap => Some(json!("trap")),
        LinuxSeccompAction::ScmpActLog => Some(json!("log")),
        LinuxSeccompAction::ScmpActTrace => Some(json!({"trace": errno.unwrap_or(0)})),
        other => bail!("seccomp action {other:?} is not supported"),
    })
}

/// Whether seccompiler knows `name` on this architecture.
fn known(name: &str) -> bool {
    let probe =
        json!({"p": {"mismatch_action": "allow", "filter_action": "trap", "filter": [{"syscall": name}]}});
    seccompiler::compile_from_json(probe.to_string().as_bytes(), ARCH).is_ok()
}

fn rule(name: &str, args: Option<&Vec<oci_spec::runtime::LinuxSeccompArg>>) -> Result<Value> {
    let Some(args) = args.filter(|a| !a.is_empty()) else {
        return Ok(json!({"syscall": name}));
    };
    let conds: Vec<Value> = args
        .iter()
        .map(|a| {
            let op = match a.op() {
                LinuxSeccompOperator::ScmpCmpEq => json!("eq"),
                LinuxSeccompOperator::ScmpCmpNe => json!("ne"),
                LinuxSeccompOperator::ScmpCmpLt => json!("lt"),
                LinuxSeccompOperator::ScmpCmpLe => json!("le"),
                LinuxSeccompOperator::ScmpCmpGt => json!("gt"),
                LinuxSeccompOperator::ScmpCmpGe => json!("ge"),
                LinuxSeccompOperator::ScmpCmpMaskedEq => json!({"masked_eq": a.value()}),
            };
            let val = if a.op() == LinuxSeccompOperator::ScmpCmpMaskedEq {
                a.value_two().unwrap_or(0)
            } else {
                a.value()
            };
            json!({"index": a.index(), "type": "qword", "op": op, "val": val})
        })
        .collect();
    Ok(json!({"syscall": name, "args": conds}))
}

/// Compiles the profile into the filters to install, in order.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<BpfProgram>> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    // action JSON (as a string key, to group) -> rules
    let mut groups: BTreeMap<String, (Value, Vec<Value>)> = BTreeMap::new();
    let mut allowed: Vec<Value> = Vec::new();
    for s in profile.syscalls().clone().unwrap_or_default() {
        let act = action(s.action(), s.errno_ret())?;
        for name in s.names() {
            if !known(name) {
                continue;
            }
            let r = rule(name, s.args().as_ref())?;
            match &act {
                None => allowed.push(r),
                Some(a) => groups
                    .entry(a.to_string())
                    .or_insert_with(|| (a.clone(), vec![]))
                    .1
                    .push(r),
            }
        }
    }
    let mut filters = serde_json::Map::new();
    for (i, (_, (act, rules))) in groups.into_iter().enumerate() {
        if Some(&act) == default.as_ref() {
            continue; // already what the default filter does to them
        }
        filters.insert(
            format!("g{i}"),
            json!({"mismatch_action": "allow", "filter_action": act, "filter": rules}),
        );
    }
    if let Some(d) = &default {
        filters.insert(
            "default".into(),
            json!({"mismatch_action": d, "filter_action": "allow", "filter": allowed}),
        );
    }
    let map = seccompiler::compile_from_json(Value::Object(filters).to_string().as_bytes(), ARCH)
        .context("compile seccomp profile")?;
    Ok(map.into_values().filter(|p| !p.is_empty()).collect())
}

/// Installs the filters on the calling thread (inherited across exec).
pub fn apply(programs: &[BpfProgram]) -> Result<()> {
    for p in programs {
        seccompiler::apply_filter(p).context("install seccomp filter")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(v: Value) -> LinuxSeccomp {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn denylist_and_allowlist_profiles_compile() {
        let deny = profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mount", "keyctl", "no_such_syscall_on_x86"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        }));
        assert_eq!(compile(&deny).unwrap().len(), 1);
        let allow = profile(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
                {"names": ["ptrace"], "action": "SCMP_ACT_KILL_PROCESS"}
            ]
        }));
        assert_eq!(compile(&allow).unwrap().len(), 2, "kill group + default filter");
        // One syscall in several argument rules (ORed), as the runtime
        // default refuses each namespace flag of clone(2).
        let flags = profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                 "args": [{"index": 0, "value": 0x10000000, "valueTwo": 0x10000000, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                 "args": [{"index": 0, "value": 0x40000000, "valueTwo": 0x40000000, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
            ]
        }));
        assert_eq!(compile(&flags).unwrap().len(), 2, "EPERM group + ENOSYS group");
        assert!(known("openat") && !known("no_such_syscall_on_x86"));
        let bad = profile(json!({"defaultAction": "SCMP_ACT_NOTIFY"}));
        assert!(compile(&bad).is_err());
    }
}
