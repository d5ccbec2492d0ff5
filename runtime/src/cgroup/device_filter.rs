//! The cgroup v2 device controller: an allow-list of device rules compiled to
//! a BPF_PROG_TYPE_CGROUP_DEVICE program and attached to a container's cgroup.
//!
//! cgroup v2 has no `devices.allow` file; the kernel instead runs the
//! cgroup's device programs on every mknod and every open of a device node
//! and refuses (EPERM) unless each returns 1. Without one, a container with
//! CAP_MKNOD (in Docker's default set) could mknod the node's disks and read
//! them. The defaults are runc's and containerd's: mknod of any node (so an
//! image can carry device files), and read/write/mknod of the standard
//! pseudo-devices only.

use std::fmt;
use std::path::Path;

use super::bpf::{self, Asm, Insn, R0, R1, R2, R3, R4, R5};
use super::device_programs::ProgramCache;
use crate::error::{Error, Result};

/// Device node type, with the kernel's `BPF_DEVCG_DEV_*` numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeviceKind {
    /// `b`.
    Block = 1,
    /// `c`.
    Char = 2,
}

impl DeviceKind {
    /// The OCI / cgroup v1 letter.
    pub fn letter(self) -> char {
        match self {
            DeviceKind::Block => 'b',
            DeviceKind::Char => 'c',
        }
    }
}

/// A set of accesses, with the kernel's `BPF_DEVCG_ACC_*` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access(u8);

impl Access {
    /// mknod(2) of a node.
    pub const MKNOD: Access = Access(1);
    /// Open for reading.
    pub const READ: Access = Access(2);
    /// Open for writing.
    pub const WRITE: Access = Access(4);
    /// All three.
    pub const ALL: Access = Access(7);

    /// Parses a CRI / OCI permission string of `r`, `w` and `m`.
    pub fn parse(s: &str) -> Result<Access> {
        let mut a = 0;
        for ch in s.chars() {
            a |= match ch {
                'r' => Access::READ.0,
                'w' => Access::WRITE.0,
                'm' => Access::MKNOD.0,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "device permissions {s:?}: only r, w and m are allowed"
                    )))
                }
            };
        }
        if a == 0 {
            return Err(Error::InvalidArgument("device permissions are empty".into()));
        }
        Ok(Access(a))
    }

    /// Every access in `other` is in `self`.
    pub fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw bits.
    pub fn bits(self) -> u8 {
        self.0
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, ch) in [(Access::READ, 'r'), (Access::WRITE, 'w'), (Access::MKNOD, 'm')] {
            if self.contains(bit) {
                write!(f, "{ch}")?;
            }
        }
        Ok(())
    }
}

/// One allow rule; `None` fields match anything (`*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// Node type, or any.
    pub kind: Option<DeviceKind>,
    /// Major number, or any.
    pub major: Option<u32>,
    /// Minor number, or any.
    pub minor: Option<u32>,
    /// What is allowed.
    pub access: Access,
}

impl DeviceRule {
    /// `c major:minor rwm`.
    pub const fn char(major: u32, minor: Option<u32>) -> DeviceRule {
        DeviceRule {
            kind: Some(DeviceKind::Char),
            major: Some(major),
            minor,
            access: Access::ALL,
        }
    }

    /// Whether this rule allows `access` to the node `kind major:minor`.
    #[cfg(test)]
    pub fn allows(&self, kind: DeviceKind, major: u32, minor: u32, access: Access) -> bool {
        self.kind.is_none_or(|k| k == kind)
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
            && self.access.contains(access)
    }
}

impl fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |v: Option<u32>| v.map_or("*".to_string(), |v| v.to_string());
        let kind = self.kind.map_or('a', DeviceKind::letter);
        write!(f, "{kind} {}:{} {}", n(self.major), n(self.minor), self.access)
    }
}

/// The rules every unprivileged container gets, as runc and containerd give
/// them: mknod of any node, and rwm on /dev/null, zero, full, random,
/// urandom, tty, console, ptmx and the pts slaves (136:*).
pub fn default_rules() -> Vec<DeviceRule> {
    let mknod = |kind| DeviceRule {
        kind: Some(kind),
        major: None,
        minor: None,
        access: Access::MKNOD,
    };
    vec![
        mknod(DeviceKind::Char),
        mknod(DeviceKind::Block),
        DeviceRule::char(1, Some(3)), // null
        DeviceRule::char(1, Some(5)), // zero
        DeviceRule::char(1, Some(7)), // full
        DeviceRule::char(1, Some(8)), // random
        DeviceRule::char(1, Some(9)), // urandom
        DeviceRule::char(5, Some(0)), // tty
        DeviceRule::char(5, Some(1)), // console
        DeviceRule::char(5, Some(2)), // ptmx
        DeviceRule::char(136, None),  // pts/*
    ]
}

/// Whether an allow-list lets `access` to `kind major:minor` through: the
/// reference model the tests hold the generated program to (default deny).
#[cfg(test)]
pub fn allowed(rules: &[DeviceRule], kind: DeviceKind, major: u32, minor: u32, access: Access) -> bool {
    rules.iter().any(|r| r.allows(kind, major, minor, access))
}

/// Compiles `rules` into a device program: one block per rule that falls
/// through to the next on a mismatch and returns 1 on a match; 0 at the end.
///
/// `ctx` is `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32
/// minor; }` with `access_type = (access << 16) | type`. The kernel asks
/// for one or more access bits at once (open O_RDWR asks READ|WRITE), so a
/// rule matches only when it allows every bit asked for. Major and minor
/// numbers above `i32::MAX` are refused: the compare is against a
/// sign-extended immediate (and Linux's are 12 and 20 bits anyway).
pub fn program(rules: &[DeviceRule]) -> Result<Vec<Insn>> {
    let mut a = Asm::new();
    a.push(Insn::load_u32(R2, R1, 0)); // r2 = type
    a.push(Insn::and32_imm(R2, 0xffff));
    a.push(Insn::load_u32(R3, R1, 0)); // r3 = access
    a.push(Insn::rsh32_imm(R3, 16));
    a.push(Insn::load_u32(R4, R1, 4)); // r4 = major
    a.push(Insn::load_u32(R5, R1, 8)); // r5 = minor
    let imm = |v: u32| {
        i32::try_from(v).map_err(|_| Error::InvalidArgument(format!("device number {v} is out of range")))
    };
    for rule in rules {
        let next = a.label();
        let mut conditional = false;
        if let Some(k) = rule.kind {
            a.jne_imm(R2, k as i32, next);
            conditional = true;
        }
        if rule.access != Access::ALL {
            // r1 = access & allowed; a bit outside the rule leaves r1 != r3.
            a.push(Insn::mov32_reg(R1, R3));
            a.push(Insn::and32_imm(R1, i32::from(rule.access.bits())));
            a.jne_reg(R1, R3, next);
            conditional = true;
        }
        if let Some(m) = rule.major {
            a.jne_imm(R4, imm(m)?, next);
            conditional = true;
        }
        if let Some(m) = rule.minor {
            a.jne_imm(R5, imm(m)?, next);
            conditional = true;
        }
        a.push(Insn::mov32_imm(R0, 1));
        a.push(Insn::exit());
        if !conditional {
            // An allow-everything rule: the verifier refuses unreachable
            // instructions, so nothing may follow it.
            return Ok(a.finish());
        }
        a.bind(next);
    }
    a.push(Insn::mov32_imm(R0, 0));
    a.push(Insn::exit());
    Ok(a.finish())
}

/// The kernel side: load a device program and attach it to a cgroup. A
/// trait so container setup can be tested without root.
pub trait DeviceFilterHost: Send + Sync + fmt::Debug {
    /// Loads `program` and attaches it to the cgroup directory `cgroup`.
    /// The attachment lives as long as the cgroup; removing it detaches.
    fn attach(&self, cgroup: &Path, program: &[Insn]) -> Result<()>;
}

/// The real thing: `bpf(BPF_PROG_LOAD)` (once per distinct program, see
/// [`ProgramCache`]) + `bpf(BPF_PROG_ATTACH)`.
#[derive(Debug, Default)]
pub struct KernelBpf {
    programs: ProgramCache,
}

impl DeviceFilterHost for KernelBpf {
    fn attach(&self, cgroup: &Path, program: &[Insn]) -> Result<()> {
        let prog = self
            .programs
            .get_or_load(&bpf::encode(program), || bpf::load_cgroup_device_program(program))?;
        // The cgroup holds its own reference to the program.
        bpf::attach_cgroup_device_program(cgroup, &prog)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a generated program on one context, executing exactly the
    /// subset of eBPF `program` emits (and failing on anything else), so the
    /// rule table and the instructions can be compared case by case.
    fn run(prog: &[Insn], ctx: [u32; 3]) -> u64 {
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        for _ in 0..10_000 {
            let i = prog[pc];
            let (d, s) = (i.dst as usize, i.src as usize);
            pc += 1;
            match i.code {
                0x61 => {
                    assert_eq!(s, 1, "loads only from ctx");
                    r[d] = u64::from(ctx[i.off as usize / 4]);
                }
                0x54 => r[d] = (r[d] as u32 & i.imm as u32) as u64,
                0x74 => r[d] = ((r[d] as u32) >> i.imm) as u64,
                0xbc => r[d] = r[s] as u32 as u64,
                0xb4 => r[d] = i.imm as u32 as u64,
                0x55 => {
                    if r[d] != i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                0x5d => {
                    if r[d] != r[s] {
                        pc += i.off as usize;
                    }
                }
                0x95 => return r[0],
                op => panic!("opcode {op:#x} not expected in a device program"),
            }
        }
        panic!("program did not exit");
    }

    fn ctx(kind: DeviceKind, major: u32, minor: u32, access: Access) -> [u32; 3] {
        [(u32::from(access.bits()) << 16) | kind as u32, major, minor]
    }

    #[test]
    fn defaults_match_runc_and_containerd() {
        let shown: Vec<String> = default_rules().iter().map(|r| r.to_string()).collect();
        assert_eq!(
            shown,
            [
                "c *:* m",
                "b *:* m",
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm",
                "c 5:2 rwm",
                "c 136:* rwm"
            ]
        );
        let d = default_rules();
        use DeviceKind::*;
        // The audit's case: mknod of the node's disk works, opening it does not.
        assert!(allowed(&d, Block, 8, 0, Access::MKNOD));
        assert!(!allowed(&d, Block, 8, 0, Access::READ));
        assert!(!allowed(&d, Block, 8, 0, Access::WRITE));
        assert!(allowed(&d, Char, 1, 3, Access::READ));
        assert!(allowed(&d, Char, 136, 7, Access::WRITE));
        assert!(!allowed(&d, Char, 1, 1, Access::READ), "/dev/mem");
        assert!(!allowed(&d, Block, 1, 3, Access::READ), "type matters");
        let rw = Access::parse("rw").unwrap();
        assert!(allowed(&d, Char, 1, 5, rw));
    }

    #[test]
    fn program_agrees_with_the_rule_table() {
        let mut rules = default_rules();
        rules.push(DeviceRule {
            kind: Some(DeviceKind::Block),
            major: Some(7),
            minor: Some(3),
            access: Access::parse("r").unwrap(),
        });
        rules.push(DeviceRule {
            kind: Some(DeviceKind::Char),
            major: Some(10),
            minor: None,
            access: Access::parse("rw").unwrap(),
        });
        let prog = program(&rules).unwrap();
        let accesses: Vec<Access> = (1..=7).map(Access).collect();
        let mut checked = 0;
        for kind in [DeviceKind::Block, DeviceKind::Char] {
            for major in [0, 1, 5, 7, 8, 10, 136, 4095] {
                for minor in [0, 1, 2, 3, 5, 7, 8, 9, 200, 1 << 19] {
                    for &access in &accesses {
                        let want = allowed(&rules, kind, major, minor, access);
                        let got = run(&prog, ctx(kind, major, minor, access));
                        assert_eq!(got, u64::from(want), "{kind:?} {major}:{minor} {access}");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 2 * 8 * 10 * 7);
        // Read-only rule: a read-write open asks both bits and is refused.
        assert_eq!(
            run(&prog, ctx(DeviceKind::Block, 7, 3, Access::parse("rw").unwrap())),
            0
        );
        assert_eq!(run(&prog, ctx(DeviceKind::Block, 7, 3, Access::READ)), 1);
    }

    #[test]
    fn program_shape() {
        // Prologue (6) + per rule: type jump, optional access check (3),
        // major/minor jumps, return 1 (2); then return 0 (2).
        let one = program(&[DeviceRule::char(1, Some(3))]).unwrap();
        assert_eq!(one.len(), 6 + 3 + 2 + 2);
        assert_eq!(one.last(), Some(&Insn::exit()));
        assert_eq!(one[one.len() - 2], Insn::mov32_imm(R0, 0));
        let deny_all = program(&[]).unwrap();
        assert_eq!(deny_all.len(), 8);
        assert_eq!(run(&deny_all, ctx(DeviceKind::Char, 1, 3, Access::READ)), 0);
        // An allow-all rule ends the program: no unreachable tail.
        let any = DeviceRule {
            kind: None,
            major: None,
            minor: None,
            access: Access::ALL,
        };
        let all = program(&[any, DeviceRule::char(1, Some(3))]).unwrap();
        assert_eq!(all.len(), 8);
        assert_eq!(run(&all, ctx(DeviceKind::Block, 8, 0, Access::ALL)), 1);
        let too_big = DeviceRule::char(u32::MAX, None);
        assert!(matches!(program(&[too_big]), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn permissions_parse_and_print() {
        assert_eq!(Access::parse("mrw").unwrap(), Access::ALL);
        assert_eq!(Access::parse("wr").unwrap().to_string(), "rw");
        assert!(Access::parse("").is_err());
        assert!(Access::parse("rx").is_err());
    }
}
