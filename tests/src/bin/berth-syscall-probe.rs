//! berth-syscall-probe: issues one system call through a chosen ABI and
//! prints what the kernel answered, so a VM test can check that a seccomp
//! filter covers every ABI a 64-bit process can reach on its own: on x86_64
//! the native one, i386 (`int 0x80`, numbers of the 32-bit table) and x32
//! (the native `syscall` instruction with `__X32_SYSCALL_BIT` in the number).
//!
//! `berth-syscall-probe PROBE`, PROBE one of `x86_64-keyctl`,
//! `i386-keyctl`, `x32-keyctl`, `i386-getpid`; prints `PROBE EPERM`,
//! `PROBE ENOSYS`, `PROBE errno N` or `PROBE ok`. A probe the filter kills
//! prints nothing (the shell reports the signal). One probe a process, for
//! that reason.

/// keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0): harmless, and
/// refused by the RuntimeDefault profile on every ABI.
const KEYCTL_ARGS: [u64; 3] = [0, -3i64 as u64, 0];

#[cfg(target_arch = "x86_64")]
mod abi {
    use std::arch::asm;

    /// Numbers from the kernel's syscall_64.tbl and syscall_32.tbl.
    pub const X86_64_KEYCTL: u64 = 250;
    pub const I386_KEYCTL: u64 = 288;
    pub const I386_GETPID: u64 = 20;
    pub const X32_SYSCALL_BIT: u64 = 0x4000_0000;

    /// The native `syscall` instruction (x86_64, or x32 with the bit set).
    pub fn syscall(nr: u64, a: [u64; 3]) -> i64 {
        let ret: i64;
        // SAFETY: a raw system call whose arguments are plain integers (no
        // pointers); rcx and r11 are clobbered by the instruction.
        unsafe {
            asm!("syscall", inlateout("rax") nr as i64 => ret, in("rdi") a[0], in("rsi") a[1],
                 in("rdx") a[2], lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        ret
    }

    /// The i386 entry `int 0x80`, legal from a 64-bit process: the kernel
    /// takes the 32-bit table and reports AUDIT_ARCH_I386 to seccomp.
    pub fn int80(nr: u64, a: [u64; 3]) -> i64 {
        let ret: u64;
        // SAFETY: as above; rbx is LLVM's, so the first argument is swapped
        // into it around the instruction and back. r8-r11 are declared
        // clobbered for kernels that zeroed them on this path.
        unsafe {
            asm!("xchg {b}, rbx", "int 0x80", "xchg {b}, rbx", b = inout(reg) a[0] => _,
                 inlateout("rax") nr => ret, in("rcx") a[1], in("rdx") a[2],
                 lateout("r8") _, lateout("r9") _, lateout("r10") _, lateout("r11") _);
        }
        // The 32-bit entry returns a 32-bit value in eax.
        ret as u32 as i32 as i64
    }
}

fn main() {
    let Some(probe) = std::env::args().nth(1) else {
        eprintln!("usage: berth-syscall-probe x86_64-keyctl|i386-keyctl|x32-keyctl|i386-getpid");
        std::process::exit(2);
    };
    #[cfg(target_arch = "x86_64")]
    let ret = match probe.as_str() {
        "x86_64-keyctl" => abi::syscall(abi::X86_64_KEYCTL, KEYCTL_ARGS),
        "x32-keyctl" => abi::syscall(abi::X86_64_KEYCTL | abi::X32_SYSCALL_BIT, KEYCTL_ARGS),
        "i386-keyctl" => abi::int80(abi::I386_KEYCTL, KEYCTL_ARGS),
        "i386-getpid" => abi::int80(abi::I386_GETPID, [0; 3]),
        other => {
            eprintln!("unknown probe {other}");
            std::process::exit(2);
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let ret: i64 = {
        let _ = KEYCTL_ARGS;
        eprintln!("berth-syscall-probe: only x86_64 has probes");
        std::process::exit(2)
    };
    let answer = match ret {
        r if r >= 0 => "ok".to_string(),
        r if -r == libc::EPERM as i64 => "EPERM".into(),
        r if -r == libc::ENOSYS as i64 => "ENOSYS".into(),
        r => format!("errno {}", -r),
    };
    println!("{probe} {answer}");
}
