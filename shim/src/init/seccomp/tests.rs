//! The generated programs run through a small classic-BPF interpreter, per
//! ABI, as the kernel would run them on `seccomp_data`.

use oci_spec::runtime::LinuxSeccomp;
use serde_json::{json, Value};

use super::abi::{Abi, X32_SYSCALL_BIT};
use super::bpf::{self, AND, JA, JEQ, JGE, JGT, JSET, LD_ABS, RET};
use super::*;

const ALLOW: u32 = 0x7fff_0000;
const LOG: u32 = 0x7ffc_0000;
const KILL_PROCESS: u32 = 0x8000_0000;
const KILL_THREAD: u32 = 0;
const fn errno(e: i32) -> u32 {
    0x0005_0000 | e as u32
}

/// Runs `prog` on one `seccomp_data`; returns its SECCOMP_RET_* value.
fn run(prog: &Program, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    let (mut acc, mut pc) = (0u32, 0usize);
    loop {
        let i = prog.0[pc];
        pc += 1;
        let k = i.k;
        let jump = |cond: bool| usize::from(if cond { i.jt } else { i.jf });
        match i.code {
            LD_ABS => {
                let k = k as usize;
                acc = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
            }
            AND => acc &= k,
            JA => pc += k as usize,
            JEQ => pc += jump(acc == k),
            JGT => pc += jump(acc > k),
            JGE => pc += jump(acc >= k),
            JSET => pc += jump(acc & k != 0),
            RET => return k,
            other => panic!("unexpected BPF opcode {other:#x}"),
        }
    }
}

fn call(prog: &Program, abi: Abi, name: &str, args: [u64; 6]) -> u32 {
    let nr = abi
        .number(name)
        .unwrap_or_else(|| panic!("{abi:?} has no {name}"));
    run(prog, abi.audit_arch(), nr, args)
}

fn profile(v: Value) -> LinuxSeccomp {
    serde_json::from_value(v).unwrap()
}

/// The shape of the runtime default: a deny list with clone's namespace
/// flags refused by argument, clone3 answered ENOSYS.
fn deny_list() -> LinuxSeccomp {
    profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["keyctl", "unshare", "mount", "socket", "no_such_call"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 0, "value": 0x1000_0000, "valueTwo": 0x1000_0000, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["acct"], "action": "SCMP_ACT_LOG"}
        ]
    }))
}

#[test]
fn every_x86_abi_gets_the_same_rules() {
    let abis = [Abi::X86_64, Abi::X32, Abi::I386];
    let p = compile_for(&deny_list(), &abis).unwrap();
    for abi in abis {
        for name in ["keyctl", "unshare", "mount"] {
            assert_eq!(call(&p, abi, name, [0; 6]), errno(1), "{abi:?} {name}");
        }
        assert_eq!(call(&p, abi, "clone3", [0; 6]), errno(38), "{abi:?}");
        assert_eq!(
            call(&p, abi, "clone", [0x1000_0000 | 0x11, 0, 0, 0, 0, 0]),
            errno(1),
            "{abi:?}"
        );
        assert_eq!(call(&p, abi, "clone", [0x11, 0, 0, 0, 0, 0]), ALLOW, "{abi:?}");
        assert_eq!(call(&p, abi, "getpid", [0; 6]), ALLOW, "{abi:?}");
        assert_eq!(call(&p, abi, "acct", [0; 6]), LOG, "{abi:?}: SCMP_ACT_LOG logs");
    }
    // The numbers that differ per ABI are what today's single-ABI filter
    // missed: i386 keyctl is 288, x32 keyctl is 250 with the x32 bit.
    assert_eq!(run(&p, Abi::I386.audit_arch(), 288, [0; 6]), errno(1));
    assert_eq!(
        run(&p, Abi::X86_64.audit_arch(), 250 | X32_SYSCALL_BIT, [0; 6]),
        errno(1)
    );
    // ...and i386's 250 (fadvise64) or an x32 number of an allowed call is
    // not mistaken for keyctl.
    assert_eq!(run(&p, Abi::I386.audit_arch(), 250, [0; 6]), ALLOW);
    assert_eq!(call(&p, Abi::X32, "read", [0; 6]), ALLOW);
    // i386's socketcall(SYS_SOCKET) is socket(2) there.
    assert_eq!(call(&p, Abi::I386, "socket", [0; 6]), errno(1));
    assert_eq!(call(&p, Abi::I386, "socketcall", [1, 0, 0, 0, 0, 0]), errno(1));
    assert_eq!(
        call(&p, Abi::I386, "socketcall", [3, 0, 0, 0, 0, 0]),
        ALLOW,
        "connect"
    );
    // An arch the program was not built for cannot run a deny list.
    assert_eq!(run(&p, Abi::Aarch64.audit_arch(), 219, [0; 6]), KILL_PROCESS);
}

#[test]
fn thirty_two_bit_abis_compare_only_what_the_kernel_reads() {
    let p = compile_for(
        &profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                          "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]
        })),
        &[Abi::X86_64, Abi::I386],
    )
    .unwrap();
    // i386 takes the low 32 bits only: high garbage must not get past.
    assert_eq!(
        call(&p, Abi::I386, "personality", [(7 << 32) | 8, 0, 0, 0, 0, 0]),
        errno(1)
    );
    assert_eq!(
        call(&p, Abi::X86_64, "personality", [(7 << 32) | 8, 0, 0, 0, 0, 0]),
        ALLOW
    );
    assert_eq!(call(&p, Abi::X86_64, "personality", [8, 0, 0, 0, 0, 0]), errno(1));
}

#[test]
fn arm64_nodes_filter_aarch64_and_arm() {
    let abis = [Abi::Aarch64, Abi::Arm];
    let p = compile_for(&deny_list(), &abis).unwrap();
    for abi in abis {
        assert_eq!(call(&p, abi, "keyctl", [0; 6]), errno(1), "{abi:?}");
        assert_eq!(call(&p, abi, "getpid", [0; 6]), ALLOW, "{abi:?}");
    }
    assert_eq!(run(&p, Abi::X86_64.audit_arch(), 250, [0; 6]), KILL_PROCESS);
}

#[test]
fn allow_lists_deny_by_default_on_every_abi() {
    let allow = profile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["ptrace"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["kill"], "action": "SCMP_ACT_KILL"}
        ]
    }));
    let p = compile_for(&allow, &[Abi::X86_64, Abi::X32, Abi::I386]).unwrap();
    for abi in [Abi::X86_64, Abi::X32, Abi::I386] {
        assert_eq!(call(&p, abi, "read", [0; 6]), ALLOW, "{abi:?}");
        assert_eq!(call(&p, abi, "openat", [0; 6]), errno(libc::EPERM), "{abi:?}");
        assert_eq!(call(&p, abi, "personality", [8, 0, 0, 0, 0, 0]), ALLOW, "{abi:?}");
        assert_eq!(
            call(&p, abi, "personality", [9, 0, 0, 0, 0, 0]),
            errno(libc::EPERM),
            "{abi:?}"
        );
        assert_eq!(call(&p, abi, "ptrace", [0; 6]), KILL_PROCESS, "{abi:?}");
        assert_eq!(call(&p, abi, "kill", [0; 6]), KILL_THREAD, "{abi:?}");
    }
    // An unknown arch gets the (refusing) default.
    assert_eq!(run(&p, 0x1234, 0, [0; 6]), errno(libc::EPERM));
}

#[test]
fn the_strongest_matching_rule_wins() {
    let p = compile_for(
        &profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["ioctl"], "action": "SCMP_ACT_LOG"},
                {"names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5,
                 "args": [{"index": 1, "value": 0x5401, "op": "SCMP_CMP_EQ"}]}
            ]
        })),
        &[Abi::X86_64],
    )
    .unwrap();
    assert_eq!(call(&p, Abi::X86_64, "ioctl", [0, 0x5401, 0, 0, 0, 0]), errno(5));
    assert_eq!(call(&p, Abi::X86_64, "ioctl", [0, 0x5402, 0, 0, 0, 0]), LOG);
}

/// Every operator against a reference, on 64- and 32-bit ABIs, with values
/// around the 32-bit boundary (where a wrong high-word check shows).
#[test]
fn argument_operators_match_their_definition() {
    let ops = [
        ("SCMP_CMP_EQ", LinuxSeccompOperator::ScmpCmpEq),
        ("SCMP_CMP_NE", LinuxSeccompOperator::ScmpCmpNe),
        ("SCMP_CMP_LT", LinuxSeccompOperator::ScmpCmpLt),
        ("SCMP_CMP_LE", LinuxSeccompOperator::ScmpCmpLe),
        ("SCMP_CMP_GT", LinuxSeccompOperator::ScmpCmpGt),
        ("SCMP_CMP_GE", LinuxSeccompOperator::ScmpCmpGe),
        ("SCMP_CMP_MASKED_EQ", LinuxSeccompOperator::ScmpCmpMaskedEq),
    ];
    let values: [u64; 8] = [
        0,
        1,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_0001,
        0xdead_beef_0000_0001,
        u64::MAX,
        7,
    ];
    let holds = |op: LinuxSeccompOperator, arg: u64, v: u64, v2: u64| match op {
        LinuxSeccompOperator::ScmpCmpEq => arg == v,
        LinuxSeccompOperator::ScmpCmpNe => arg != v,
        LinuxSeccompOperator::ScmpCmpLt => arg < v,
        LinuxSeccompOperator::ScmpCmpLe => arg <= v,
        LinuxSeccompOperator::ScmpCmpGt => arg > v,
        LinuxSeccompOperator::ScmpCmpGe => arg >= v,
        LinuxSeccompOperator::ScmpCmpMaskedEq => arg & v == v2,
    };
    for (name, op) in ops {
        for v in values {
            let v2 = v & 0xffff_0000_ffff;
            let p = compile_for(
                &profile(json!({
                    "defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                                  "args": [{"index": 2, "value": v, "valueTwo": v2, "op": name}]}]
                })),
                &[Abi::X86_64, Abi::I386],
            )
            .unwrap();
            for arg in values {
                let want = |abi_32: bool| {
                    let (a, v, v2) = if abi_32 {
                        (arg & 0xffff_ffff, v & 0xffff_ffff, v2 & 0xffff_ffff)
                    } else {
                        (arg, v, v2)
                    };
                    if holds(op, a, v, v2) {
                        errno(1)
                    } else {
                        ALLOW
                    }
                };
                let args = [0, 0, arg, 0, 0, 0];
                assert_eq!(
                    call(&p, Abi::X86_64, "ioctl", args),
                    want(false),
                    "{name} {arg:#x} vs {v:#x}"
                );
                assert_eq!(
                    call(&p, Abi::I386, "ioctl", args),
                    want(true),
                    "i386 {name} {arg:#x} vs {v:#x}"
                );
            }
        }
    }
}

/// Docker's default profile allows about 370 names: the whole x86_64 table
/// on three ABIs still fits the kernel's 4096 instructions, every jump
/// resolved.
#[test]
fn a_full_allow_list_fits_in_one_program() {
    let names: Vec<&str> = super::tables::X86_64.iter().map(|(n, _)| *n).collect();
    let p = compile_for(
        &profile(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}]
        })),
        &[Abi::X86_64, Abi::X32, Abi::I386],
    )
    .unwrap();
    assert!(p.0.len() < bpf::MAX_INSNS, "{} instructions", p.0.len());
    for (name, _) in super::tables::X86_64 {
        assert_eq!(call(&p, Abi::X86_64, name, [0; 6]), ALLOW, "{name}");
    }
    assert_eq!(
        call(&p, Abi::I386, "socketcall", [0; 6]),
        errno(libc::EPERM),
        "not on x86_64"
    );
}

#[test]
fn unsupported_profiles_are_refused() {
    assert!(compile_for(&profile(json!({"defaultAction": "SCMP_ACT_NOTIFY"})), Abi::node()).is_err());
    let bad_index = profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                      "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]
    }));
    assert!(compile_for(&bad_index, Abi::node()).is_err());
    assert!(
        compile_for(&deny_list(), &[]).is_err(),
        "no tables: refuse, never run unfiltered"
    );
}

/// The kernel accepts the program (its checker refuses bad loads, jumps
/// past the end or a missing return) and applies it: keyctl(2) in a child
/// under the deny list answers EPERM, getpid(2) still works.
#[test]
fn the_kernel_accepts_and_applies_the_program() {
    let p = compile(&deny_list()).unwrap();
    // SAFETY: the child only makes raw system calls and exits.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: prctl/syscall with integer arguments; _exit never returns.
            unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || apply(&p).is_err() {
                    libc::_exit(2);
                }
                let r = libc::syscall(libc::SYS_keyctl, 0, -3i64, 0);
                let errno = *libc::__errno_location();
                let ok = r == -1 && errno == 1 && libc::syscall(libc::SYS_getpid) > 0;
                libc::_exit(if ok { 0 } else { 1 });
            }
        }
        pid => {
            let mut status = 0;
            // SAFETY: waitpid on our own child with a valid pointer.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(libc::WIFEXITED(status), "child died: {status:#x}");
            assert_eq!(
                libc::WEXITSTATUS(status),
                0,
                "2: not installed, 1: keyctl not refused"
            );
        }
    }
}

/// The cache compiles a profile once, compiles again for another one, and
/// keeps a failure as the failure.
#[test]
fn the_cache_compiles_each_profile_once() {
    let mut cache = super::Cache::default();
    let allow = profile(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["ptrace"], "action": "SCMP_ACT_ERRNO"}]}),
    );
    let first = cache.get(&allow).unwrap();
    let again = cache.get(&allow.clone()).unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&first, &again),
        "the same profile is not compiled twice"
    );
    let other = cache.get(&deny_list()).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&first, &other));
    let bad = profile(json!({"defaultAction": "SCMP_ACT_NOTIFY"}));
    let err = cache.get(&bad).unwrap_err();
    assert!(err.contains("not supported"), "{err}");
    assert_eq!(cache.get(&bad).unwrap_err(), err);
    // Back to the first profile: compiled anew, to the same program.
    assert_eq!(cache.get(&allow).unwrap().len(), first.len());
}
