//! A small classic-BPF assembler for seccomp programs: instructions with
//! symbolic forward labels, resolved into `sock_filter`s. Conditional jumps
//! reach at most 255 instructions ahead (an 8-bit offset); the compiler only
//! uses them for short hops and takes `ja` (32-bit offset) for the rest.

use anyhow::{bail, Result};

/// `struct seccomp_data` offsets: nr, arch, then args[6] (u64 each).
pub const NR: u32 = 0;
/// Offset of `arch`.
pub const ARCH: u32 = 4;

/// Offset of the low (`high == false`) or high 32 bits of argument `index`.
pub fn arg(index: u32, high: bool) -> u32 {
    let lo_first = cfg!(target_endian = "little");
    16 + 8 * index + if high == lo_first { 4 } else { 0 }
}

// Opcodes of <linux/bpf_common.h> combined as seccomp uses them.
/// BPF_LD | BPF_W | BPF_ABS.
pub const LD_ABS: u16 = 0x20;
/// BPF_ALU | BPF_AND | BPF_K.
pub const AND: u16 = 0x54;
/// BPF_JMP | BPF_JA.
pub const JA: u16 = 0x05;
/// BPF_JMP | BPF_JEQ | BPF_K.
pub const JEQ: u16 = 0x15;
/// BPF_JMP | BPF_JGT | BPF_K.
pub const JGT: u16 = 0x25;
/// BPF_JMP | BPF_JGE | BPF_K.
pub const JGE: u16 = 0x35;
/// BPF_JMP | BPF_JSET | BPF_K.
pub const JSET: u16 = 0x45;
/// BPF_RET | BPF_K.
pub const RET: u16 = 0x06;

/// The kernel's limit on one filter (BPF_MAXINSNS).
pub const MAX_INSNS: usize = 4096;

/// A position in the program, placed later with [`Asm::place`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// Where a conditional jump goes.
#[derive(Debug, Clone, Copy)]
pub enum To {
    /// The next instruction.
    Next,
    /// A label placed further on.
    Label(Label),
}

#[derive(Debug)]
enum Insn {
    Op { code: u16, k: u32 },
    Jump { code: u16, k: u32, jt: To, jf: To },
    Ja(Label),
}

/// A program under construction.
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    /// Label -> index of the instruction it stands before.
    places: Vec<Option<usize>>,
}

impl Asm {
    /// A new label, to be placed once.
    pub fn label(&mut self) -> Label {
        self.places.push(None);
        Label(self.places.len() - 1)
    }

    /// Places `l` before the next instruction.
    pub fn place(&mut self, l: Label) {
        debug_assert!(self.places[l.0].is_none(), "label placed twice");
        self.places[l.0] = Some(self.insns.len());
    }

    /// Loads the 32-bit word at `offset` of `seccomp_data` into A.
    pub fn load(&mut self, offset: u32) {
        self.insns.push(Insn::Op {
            code: LD_ABS,
            k: offset,
        });
    }

    /// A &= k.
    pub fn and(&mut self, k: u32) {
        self.insns.push(Insn::Op { code: AND, k });
    }

    /// Returns `k` (a SECCOMP_RET_* value).
    pub fn ret(&mut self, k: u32) {
        self.insns.push(Insn::Op { code: RET, k });
    }

    /// A conditional jump (`code` one of JEQ, JGT, JGE, JSET against `k`).
    pub fn jump(&mut self, code: u16, k: u32, jt: To, jf: To) {
        self.insns.push(Insn::Jump { code, k, jt, jf });
    }

    /// An unconditional forward jump to `l`, however far.
    pub fn ja(&mut self, l: Label) {
        self.insns.push(Insn::Ja(l));
    }

    /// Resolves labels into the kernel's instructions.
    pub fn finish(self) -> Result<Vec<libc::sock_filter>> {
        if self.insns.len() > MAX_INSNS {
            bail!(
                "the seccomp profile needs {} BPF instructions, more than the kernel's {MAX_INSNS}",
                self.insns.len()
            );
        }
        let at = |l: Label, from: usize| -> Result<usize> {
            let target = self.places[l.0].ok_or_else(|| anyhow::anyhow!("seccomp: label never placed"))?;
            // Classic BPF jumps only forward.
            target
                .checked_sub(from + 1)
                .ok_or_else(|| anyhow::anyhow!("seccomp: backward jump"))
        };
        let short = |t: To, from: usize| -> Result<u8> {
            match t {
                To::Next => Ok(0),
                To::Label(l) => {
                    let off = at(l, from)?;
                    u8::try_from(off)
                        .map_err(|_| anyhow::anyhow!("seccomp: conditional jump of {off} too far"))
                }
            }
        };
        let mut out = Vec::with_capacity(self.insns.len());
        for (i, insn) in self.insns.iter().enumerate() {
            let (code, jt, jf, k) = match *insn {
                Insn::Op { code, k } => (code, 0, 0, k),
                Insn::Jump { code, k, jt, jf } => (code, short(jt, i)?, short(jf, i)?, k),
                Insn::Ja(l) => (JA, 0, 0, u32::try_from(at(l, i)?)?),
            };
            out.push(libc::sock_filter { code, jt, jf, k });
        }
        Ok(out)
    }
}
