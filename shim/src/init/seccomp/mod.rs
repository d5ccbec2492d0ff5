//! The OCI `linux.seccomp` profile as one seccomp BPF program.
//!
//! The program first checks `seccomp_data.arch`, then the number, and
//! covers every ABI the node's kernel accepts ([`abi::Abi::node`]) with the
//! same rules, each translated to that ABI's own numbers: on x86_64 a
//! container could otherwise reach a denied call through `int 0x80` (i386
//! numbers) or the x32 bit, as Docker's architecture map prevents. An arch
//! the program does not know gets the profile's default action when that
//! refuses the call, and KILL_PROCESS when the default would let it run: a
//! deny list cannot be trusted on numbers it was not translated to. On the
//! node's own ABIs such an arch cannot occur.
//!
//! Rules: a profile's rules for one syscall are checked most restrictive
//! action first (the kernel's precedence: kill process, kill thread, trap,
//! errno, trace, log, allow); the first whose argument conditions all hold
//! decides, and a call no rule matches gets the default action, as
//! libseccomp behaves. Names an ABI does not have are skipped on that ABI
//! (profiles are written for several); on i386 a rule for a socket or SysV
//! IPC call also holds for its socketcall(2)/ipc(2) form.

mod abi;
mod bpf;
mod tables;

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

use abi::{Abi, X32_SYSCALL_BIT};
use bpf::{Asm, To, JEQ, JGE, JGT, JSET};

/// What a rule (or the default) does with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    KillProcess,
    KillThread,
    Trap,
    Errno(u16),
    Trace(u16),
    Log,
    Allow,
}

impl Action {
    fn from_oci(a: LinuxSeccompAction, errno: Option<u32>) -> Result<Self> {
        // SECCOMP_RET_DATA is 16 bits; the kernel caps errno at 4095.
        let data = |d: u32| d.min(4095) as u16;
        Ok(match a {
            LinuxSeccompAction::ScmpActAllow => Action::Allow,
            LinuxSeccompAction::ScmpActErrno => Action::Errno(data(errno.unwrap_or(libc::EPERM as u32))),
            LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => Action::KillThread,
            LinuxSeccompAction::ScmpActKillProcess => Action::KillProcess,
            LinuxSeccompAction::ScmpActTrap => Action::Trap,
            LinuxSeccompAction::ScmpActLog => Action::Log,
            LinuxSeccompAction::ScmpActTrace => Action::Trace(data(errno.unwrap_or(0))),
            other => bail!("seccomp action {other:?} is not supported"),
        })
    }

    /// SECCOMP_RET_* of <linux/seccomp.h>.
    fn ret(self) -> u32 {
        match self {
            Action::KillProcess => 0x8000_0000,
            Action::KillThread => 0,
            Action::Trap => 0x0003_0000,
            Action::Errno(e) => 0x0005_0000 | u32::from(e),
            Action::Trace(d) => 0x7ff0_0000 | u32::from(d),
            Action::Log => 0x7ffc_0000,
            Action::Allow => 0x7fff_0000,
        }
    }

    /// The kernel's precedence between actions: lower is stronger.
    fn rank(self) -> u8 {
        match self {
            Action::KillProcess => 0,
            Action::KillThread => 1,
            Action::Trap => 2,
            Action::Errno(_) => 3,
            Action::Trace(_) => 4,
            Action::Log => 5,
            Action::Allow => 6,
        }
    }

    /// Whether the call does not run (a trace without a tracer fails too).
    fn refuses(self) -> bool {
        self.rank() <= Action::Trace(0).rank()
    }
}

/// One argument condition.
#[derive(Debug, Clone, Copy)]
struct Cond {
    index: u32,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: u64,
}

#[derive(Debug, Clone)]
struct Rule {
    action: Action,
    conds: Vec<Cond>,
}

/// A compiled filter, ready for [`apply`].
#[derive(Debug)]
pub struct Program(Vec<libc::sock_filter>);

#[cfg(test)]
impl Program {
    /// Its length in instructions.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// A profile compiled before init needed it (by the pod's fork server,
/// once per distinct profile), or why it did not compile: init fails
/// with that message at the point where it would have compiled.
pub type Compiled = std::result::Result<std::sync::Arc<Program>, String>;

/// The last profile compiled and its outcome: a pod's containers almost
/// always share one (the runtime's default), so one entry serves them.
#[derive(Debug, Default)]
pub struct Cache(Option<(LinuxSeccomp, Compiled)>);

impl Cache {
    /// `profile` compiled, from the cache when it is the last one asked for.
    pub fn get(&mut self, profile: &LinuxSeccomp) -> Compiled {
        if let Some((last, compiled)) = &self.0 {
            if last == profile {
                return compiled.clone();
            }
        }
        let compiled = compile(profile)
            .map(std::sync::Arc::new)
            .map_err(|e| format!("{e:#}"));
        self.0 = Some((profile.clone(), compiled.clone()));
        compiled
    }
}

/// Compiles the profile for the node's ABIs.
pub fn compile(profile: &LinuxSeccomp) -> Result<Program> {
    compile_for(profile, Abi::node())
}

fn compile_for(profile: &LinuxSeccomp, abis: &[Abi]) -> Result<Program> {
    if abis.is_empty() {
        bail!("seccomp: Berth has no system call tables for this architecture");
    }
    let default = Action::from_oci(profile.default_action(), profile.default_errno_ret())?;
    let mut named: Vec<(String, Rule)> = Vec::new();
    for s in profile.syscalls().clone().unwrap_or_default() {
        let action = Action::from_oci(s.action(), s.errno_ret())?;
        let conds = s
            .args()
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|a| {
                if a.index() > 5 {
                    bail!("seccomp: argument index {} (a call has six)", a.index());
                }
                Ok(Cond {
                    index: a.index() as u32,
                    op: a.op(),
                    value: a.value(),
                    value_two: a.value_two().unwrap_or(0),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        for name in s.names() {
            named.push((
                name.clone(),
                Rule {
                    action,
                    conds: conds.clone(),
                },
            ));
        }
    }

    let mut asm = Asm::default();
    let unknown_arch = if default.refuses() {
        default
    } else {
        Action::KillProcess
    };
    // Arch dispatch: one section per distinct AUDIT_ARCH.
    // The native arch first: most calls take one comparison to dispatch.
    let mut arches: Vec<u32> = Vec::new();
    for a in abis {
        if !arches.contains(&a.audit_arch()) {
            arches.push(a.audit_arch());
        }
    }
    let sections: Vec<_> = arches.iter().map(|_| asm.label()).collect();
    asm.load(bpf::ARCH);
    for (arch, section) in arches.iter().zip(&sections) {
        let next = asm.label();
        asm.jump(JEQ, *arch, To::Next, To::Label(next));
        asm.ja(*section);
        asm.place(next);
    }
    asm.ret(unknown_arch.ret());
    for (arch, section) in arches.iter().zip(sections) {
        asm.place(section);
        let of_arch: Vec<Abi> = abis.iter().copied().filter(|a| a.audit_arch() == *arch).collect();
        let x32 = of_arch.contains(&Abi::X32);
        let x32_section = asm.label();
        if x32 {
            // x32 shares x86_64's arch: its numbers carry the x32 bit.
            let native = asm.label();
            asm.load(bpf::NR);
            asm.jump(JSET, X32_SYSCALL_BIT, To::Next, To::Label(native));
            asm.ja(x32_section);
            asm.place(native);
        }
        for a in of_arch.iter().filter(|a| **a != Abi::X32) {
            emit_abi(&mut asm, *a, &named, default)?;
        }
        if x32 {
            asm.place(x32_section);
            emit_abi(&mut asm, Abi::X32, &named, default)?;
        }
    }
    Ok(Program(asm.finish()?))
}

/// The rules of one ABI: its numbers, the checks and the returns. Ends in
/// returns only (nothing falls through to the next ABI).
fn emit_abi(asm: &mut Asm, abi: Abi, named: &[(String, Rule)], default: Action) -> Result<()> {
    // Number -> rules, strongest action first.
    let mut by_nr: BTreeMap<u32, Vec<Rule>> = BTreeMap::new();
    for (name, rule) in named {
        if let Some(nr) = abi.number(name) {
            by_nr.entry(nr).or_default().push(rule.clone());
        }
        // The socketcall/ipc form: only an unconditional rule translates
        // (the real arguments are in memory, out of seccomp's sight).
        if let Some((mux, selector)) = abi.multiplexed(name) {
            if rule.conds.is_empty() {
                let nr = abi.number(mux).context("multiplexer missing from its table")?;
                let sel = Cond {
                    index: 0,
                    op: LinuxSeccompOperator::ScmpCmpEq,
                    value: selector,
                    value_two: 0,
                };
                by_nr.entry(nr).or_default().push(Rule {
                    action: rule.action,
                    conds: vec![sel],
                });
            }
        }
    }
    let mut simple: BTreeMap<u32, Vec<u32>> = BTreeMap::new(); // action ret -> numbers
    let mut complex: Vec<(u32, Vec<Rule>)> = Vec::new();
    for (nr, mut rules) in by_nr {
        rules.sort_by_key(|r| r.action.rank()); // stable: profile order within a rank
        match rules.iter().position(|r| r.conds.is_empty()) {
            // The strongest rule is unconditional: it alone decides.
            Some(0) if rules[0].action == default => {}
            Some(0) => simple.entry(rules[0].action.ret()).or_default().push(nr),
            Some(i) => complex.push((nr, rules[..=i].to_vec())),
            None => complex.push((nr, rules)),
        }
    }
    asm.load(bpf::NR);
    // Unconditional numbers: a run of JEQs ending in the action's RET, in
    // runs short enough for 8-bit jump offsets.
    for (ret, nrs) in simple {
        for chunk in nrs.chunks(200) {
            let hit = asm.label();
            let miss = asm.label();
            for (i, nr) in chunk.iter().enumerate() {
                let jf = if i + 1 == chunk.len() {
                    To::Label(miss)
                } else {
                    To::Next
                };
                asm.jump(JEQ, *nr, To::Label(hit), jf);
            }
            asm.place(hit);
            asm.ret(ret);
            asm.place(miss);
        }
    }
    let bodies: Vec<_> = complex.iter().map(|_| asm.label()).collect();
    for ((nr, _), body) in complex.iter().zip(&bodies) {
        let next = asm.label();
        asm.jump(JEQ, *nr, To::Next, To::Label(next));
        asm.ja(*body);
        asm.place(next);
    }
    asm.ret(default.ret());
    for ((_, rules), body) in complex.iter().zip(bodies) {
        asm.place(body);
        for rule in rules {
            let fail = asm.label();
            for c in &rule.conds {
                emit_cond(asm, abi, c, fail);
            }
            asm.ret(rule.action.ret());
            asm.place(fail);
        }
        if rules.last().is_some_and(|r| !r.conds.is_empty()) {
            asm.ret(default.ret());
        }
    }
    Ok(())
}

/// Falls through when `c` holds, jumps to `fail` when not. A 64-bit
/// argument is compared high word first; a 32-bit ABI's only by its low
/// word (all the kernel reads).
fn emit_cond(asm: &mut Asm, abi: Abi, c: &Cond, fail: bpf::Label) {
    let ok = asm.label();
    let (value, mask) = match c.op {
        LinuxSeccompOperator::ScmpCmpMaskedEq => (c.value_two & c.value, c.value),
        _ => (c.value, u64::MAX),
    };
    let (hi, lo) = ((value >> 32) as u32, value as u32);
    let (mask_hi, mask_lo) = ((mask >> 32) as u32, mask as u32);
    let (pass, stop) = (To::Label(ok), To::Label(fail));
    let word = |asm: &mut Asm, high: bool, m: u32| {
        asm.load(bpf::arg(c.index, high));
        if m != u32::MAX {
            asm.and(m);
        }
    };
    if !abi.is_32bit() {
        word(asm, true, mask_hi);
        match c.op {
            LinuxSeccompOperator::ScmpCmpEq | LinuxSeccompOperator::ScmpCmpMaskedEq => {
                asm.jump(JEQ, hi, To::Next, stop)
            }
            LinuxSeccompOperator::ScmpCmpNe => asm.jump(JEQ, hi, To::Next, pass),
            LinuxSeccompOperator::ScmpCmpGt | LinuxSeccompOperator::ScmpCmpGe => {
                asm.jump(JGT, hi, pass, To::Next);
                asm.jump(JEQ, hi, To::Next, stop);
            }
            LinuxSeccompOperator::ScmpCmpLt | LinuxSeccompOperator::ScmpCmpLe => {
                asm.jump(JGT, hi, stop, To::Next);
                asm.jump(JEQ, hi, To::Next, pass);
            }
        }
    }
    word(asm, false, mask_lo);
    match c.op {
        LinuxSeccompOperator::ScmpCmpEq | LinuxSeccompOperator::ScmpCmpMaskedEq => {
            asm.jump(JEQ, lo, pass, stop)
        }
        LinuxSeccompOperator::ScmpCmpNe => asm.jump(JEQ, lo, stop, pass),
        LinuxSeccompOperator::ScmpCmpGt => asm.jump(JGT, lo, pass, stop),
        LinuxSeccompOperator::ScmpCmpGe => asm.jump(JGE, lo, pass, stop),
        LinuxSeccompOperator::ScmpCmpLt => asm.jump(JGE, lo, stop, pass),
        LinuxSeccompOperator::ScmpCmpLe => asm.jump(JGT, lo, stop, pass),
    }
    asm.place(ok);
}

/// Installs the filter on the calling thread (inherited across exec).
/// Needs CAP_SYS_ADMIN or no_new_privs, as the kernel requires.
pub fn apply(program: &Program) -> Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(program.0.len()).context("seccomp program too long")?,
        filter: program.0.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl reads `prog` and the instructions it points to, both
    // alive for the call; the kernel copies them.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        bail!("install seccomp filter: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
