//! A tiny eBPF assembler (just the instructions the device filter needs) and
//! the two `bpf(2)` calls that load a program and attach it to a cgroup.
//!
//! Written here rather than pulled in (aya, libbpf-rs): the device filter is
//! ~40 instructions of seven opcodes, and those crates bring an ELF loader,
//! BTF and a build-time toolchain for a job that is two syscalls.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::error::{Error, Result};

/// A register (r0 = return value, r1 = context pointer on entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg(pub u8);

/// r0: the program's return value.
pub const R0: Reg = Reg(0);
/// r1: the context pointer on entry.
pub const R1: Reg = Reg(1);
/// r2.
pub const R2: Reg = Reg(2);
/// r3.
pub const R3: Reg = Reg(3);
/// r4.
pub const R4: Reg = Reg(4);
/// r5.
pub const R5: Reg = Reg(5);

// Opcode parts (include/uapi/linux/bpf_common.h, bpf.h).
const BPF_LDX: u8 = 0x01;
const BPF_ALU: u8 = 0x04;
const BPF_JMP: u8 = 0x05;
const BPF_W: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
const BPF_AND: u8 = 0x50;
const BPF_RSH: u8 = 0x70;
const BPF_MOV: u8 = 0xb0;
const BPF_JNE: u8 = 0x50;
const BPF_EXIT: u8 = 0x90;

/// One `struct bpf_insn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// Destination register.
    pub dst: u8,
    /// Source register.
    pub src: u8,
    /// Signed offset (jump distance in instructions, or memory offset).
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

impl Insn {
    /// The kernel's 8-byte encoding. `dst_reg:4, src_reg:4` is a bitfield,
    /// so on little-endian dst is the low nibble.
    pub fn encode(&self) -> [u8; 8] {
        let off = self.off.to_le_bytes();
        let imm = self.imm.to_le_bytes();
        [
            self.code,
            (self.src << 4) | (self.dst & 0x0f),
            off[0],
            off[1],
            imm[0],
            imm[1],
            imm[2],
            imm[3],
        ]
    }

    /// `dst = *(u32 *)(src + off)`.
    pub fn load_u32(dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::new(BPF_LDX | BPF_MEM | BPF_W, dst, src, off, 0)
    }
    /// `w(dst) &= imm` (32-bit ALU: the upper half is zeroed).
    pub fn and32_imm(dst: Reg, imm: i32) -> Insn {
        Insn::new(BPF_ALU | BPF_AND | BPF_K, dst, Reg(0), 0, imm)
    }
    /// `w(dst) >>= imm` (logical).
    pub fn rsh32_imm(dst: Reg, imm: i32) -> Insn {
        Insn::new(BPF_ALU | BPF_RSH | BPF_K, dst, Reg(0), 0, imm)
    }
    /// `w(dst) = w(src)`.
    pub fn mov32_reg(dst: Reg, src: Reg) -> Insn {
        Insn::new(BPF_ALU | BPF_MOV | BPF_X, dst, src, 0, 0)
    }
    /// `w(dst) = imm`.
    pub fn mov32_imm(dst: Reg, imm: i32) -> Insn {
        Insn::new(BPF_ALU | BPF_MOV | BPF_K, dst, Reg(0), 0, imm)
    }
    /// `return r0`.
    pub fn exit() -> Insn {
        Insn::new(BPF_JMP | BPF_EXIT, Reg(0), Reg(0), 0, 0)
    }

    fn new(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst: dst.0,
            src: src.0,
            off,
            imm,
        }
    }
}

/// A forward jump target, bound once with [`Asm::bind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// Collects instructions and resolves jump labels into offsets.
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    /// An empty program.
    pub fn new() -> Asm {
        Asm::default()
    }
    /// Appends one instruction.
    pub fn push(&mut self, insn: Insn) {
        self.insns.push(insn);
    }
    /// A new, unbound label.
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }
    /// Binds `l` to the next instruction pushed.
    pub fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.insns.len());
    }
    /// `if dst != imm goto l` (64-bit compare; imm is sign-extended).
    pub fn jne_imm(&mut self, dst: Reg, imm: i32, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.push(Insn::new(BPF_JMP | BPF_JNE | BPF_K, dst, Reg(0), 0, imm));
    }
    /// `if dst != src goto l`.
    pub fn jne_reg(&mut self, dst: Reg, src: Reg, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.push(Insn::new(BPF_JMP | BPF_JNE | BPF_X, dst, src, 0, 0));
    }
    /// The finished program. Panics on an unbound label or a backward jump:
    /// both are bugs in the generator, never in its input.
    pub fn finish(mut self) -> Vec<Insn> {
        for (at, l) in std::mem::take(&mut self.fixups) {
            let target = self.labels[l.0].expect("jump to an unbound label");
            assert!(target > at, "only forward jumps");
            self.insns[at].off = i16::try_from(target - at - 1).expect("jump too far");
        }
        self.insns
    }
}

/// The little-endian byte image of a program, as `BPF_PROG_LOAD` reads it.
pub fn encode(insns: &[Insn]) -> Vec<u8> {
    insns.iter().flat_map(Insn::encode).collect()
}

// bpf(2) commands, program and attach types, flags (include/uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 1 << 1;

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD; the kernel
/// zero-fills what a shorter attr leaves out.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// The leading fields of `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed repr(C) prefix of
    // union bpf_attr and we pass its exact size; pointers inside it (insns,
    // license, log buffer) are kept alive by the caller for the whole call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Loads a BPF_PROG_TYPE_CGROUP_DEVICE program. On a verifier rejection it
/// loads again with the verifier log on, so the error says why.
pub fn load_cgroup_device_program(insns: &[Insn]) -> Result<OwnedFd> {
    let image = encode(insns);
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"berth_devices");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: image.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: on success BPF_PROG_LOAD returns a new fd that nobody else owns.
        Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) if e.raw_os_error() != Some(libc::EACCES) && e.raw_os_error() != Some(libc::EINVAL) => {
            return Err(load_error(e, ""));
        }
        Err(_) => {}
    }
    let mut log = vec![0u8; 64 * 1024];
    attr.log_level = 1;
    attr.log_size = log.len() as u32;
    attr.log_buf = log.as_mut_ptr() as u64;
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: as above.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            Err(load_error(e, String::from_utf8_lossy(&log[..end]).trim()))
        }
    }
}

fn load_error(e: std::io::Error, verifier_log: &str) -> Error {
    let hint = match e.raw_os_error() {
        Some(libc::ENOSYS) | Some(libc::EINVAL) if verifier_log.is_empty() => {
            " (does the kernel have CONFIG_BPF_SYSCALL and CONFIG_CGROUP_BPF?)"
        }
        Some(libc::EPERM) => " (berthd needs CAP_SYS_ADMIN or CAP_BPF)",
        _ => "",
    };
    if verifier_log.is_empty() {
        Error::FailedPrecondition(format!("load the cgroup device filter: {e}{hint}"))
    } else {
        Error::Internal(format!(
            "the kernel rejected the cgroup device filter: {e}; verifier: {verifier_log}"
        ))
    }
}

/// Attaches `prog` to the cgroup directory `cgroup` as a device filter.
/// BPF_F_ALLOW_MULTI: programs attached above (a node agent's, systemd's)
/// keep running too; the kernel allows an access only if every one does.
pub fn attach_cgroup_device_program(cgroup: &Path, prog: &OwnedFd) -> Result<()> {
    let dir =
        std::fs::File::open(cgroup).map_err(|e| Error::io(format!("open cgroup {}", cgroup.display()), e))?;
    let mut attr = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|e| {
        Error::io(
            format!("attach the device filter to cgroup {}", cgroup.display()),
            e,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_kernel_headers() {
        // Byte images as `llvm-mc -triple bpfel -show-encoding` prints them
        // for the same instructions (`r2 = *(u32 *)(r1 + 0)`, `w2 &= 65535`, ...).
        assert_eq!(Insn::load_u32(R2, R1, 0).encode(), [0x61, 0x12, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Insn::load_u32(R5, R1, 8).encode(), [0x61, 0x15, 8, 0, 0, 0, 0, 0]);
        assert_eq!(
            Insn::and32_imm(R2, 0xffff).encode(),
            [0x54, 0x02, 0, 0, 0xff, 0xff, 0, 0]
        );
        assert_eq!(Insn::rsh32_imm(R3, 16).encode(), [0x74, 0x03, 0, 0, 16, 0, 0, 0]);
        assert_eq!(Insn::mov32_reg(R1, R3).encode(), [0xbc, 0x31, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Insn::mov32_imm(R0, 1).encode(), [0xb4, 0x00, 0, 0, 1, 0, 0, 0]);
        assert_eq!(Insn::exit().encode(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            Insn::mov32_imm(R0, -1).encode(),
            [0xb4, 0x00, 0, 0, 0xff, 0xff, 0xff, 0xff]
        );
    }

    #[test]
    fn labels_become_forward_offsets() {
        let mut a = Asm::new();
        let skip = a.label();
        a.jne_imm(R2, 2, skip); // 0
        a.jne_reg(R1, R3, skip); // 1
        a.push(Insn::mov32_imm(R0, 1)); // 2
        a.push(Insn::exit()); // 3
        a.bind(skip);
        a.push(Insn::mov32_imm(R0, 0)); // 4
        a.push(Insn::exit());
        let p = a.finish();
        assert_eq!(p[0].off, 3, "from 0 to 4: skip 3");
        assert_eq!(p[1].off, 2);
        assert_eq!(p[0].encode(), [0x55, 0x02, 3, 0, 2, 0, 0, 0]);
        assert_eq!(p[1].encode(), [0x5d, 0x31, 2, 0, 0, 0, 0, 0]);
        assert_eq!(encode(&p).len(), 6 * 8);
    }
}
