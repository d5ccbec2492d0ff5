//! The system-call ABIs a seccomp filter must cover, and their numbers.
//!
//! A 64-bit process can enter the kernel through more than its native ABI:
//! on x86_64 `int 0x80` takes the i386 table (seccomp sees
//! AUDIT_ARCH_I386) and a number with `__X32_SYSCALL_BIT` takes the x32
//! table (seccomp sees AUDIT_ARCH_X86_64); an arm64 kernel with CONFIG_COMPAT
//! runs 32-bit ARM programs. Each has its own numbers, so one rule becomes
//! one check per ABI. The node's ABIs come from the target berth-shim is
//! built for, never from the profile.

use super::tables;

/// `__X32_SYSCALL_BIT`: set in every x32 system call number.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// One system-call ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    /// x86_64's own.
    X86_64,
    /// i386, including `int 0x80` from a 64-bit process.
    I386,
    /// x32: the x86_64 entry with `__X32_SYSCALL_BIT` in the number.
    X32,
    /// arm64's own.
    Aarch64,
    /// 32-bit ARM (EABI), natively or as arm64's compat mode.
    Arm,
}

impl Abi {
    /// The ABIs the node's kernel may accept from a container, by the
    /// architecture berth-shim is built for. Empty where Berth has no tables:
    /// the compiler then refuses every profile instead of guessing.
    pub fn node() -> &'static [Abi] {
        if cfg!(target_arch = "x86_64") {
            &[Abi::X86_64, Abi::X32, Abi::I386]
        } else if cfg!(target_arch = "aarch64") {
            &[Abi::Aarch64, Abi::Arm]
        } else if cfg!(target_arch = "x86") {
            &[Abi::I386]
        } else if cfg!(target_arch = "arm") {
            &[Abi::Arm]
        } else {
            &[]
        }
    }

    /// `seccomp_data.arch` for this ABI (AUDIT_ARCH_* of <linux/audit.h>).
    pub fn audit_arch(self) -> u32 {
        match self {
            Abi::X86_64 | Abi::X32 => 0xc000_003e,
            Abi::I386 => 0x4000_0003,
            Abi::Aarch64 => 0xc000_00b7,
            Abi::Arm => 0x4000_0028,
        }
    }

    /// Whether its system-call arguments are 32 bits wide: the kernel uses
    /// only the low half of each, so a filter must compare only that half
    /// (else setting high bits would get a call past an argument rule).
    pub fn is_32bit(self) -> bool {
        matches!(self, Abi::I386 | Abi::Arm)
    }

    /// The number of `name` on this ABI, or None if it has no such call.
    pub fn number(self, name: &str) -> Option<u32> {
        let table = match self {
            Abi::X86_64 => tables::X86_64,
            Abi::I386 => tables::I386,
            Abi::X32 => tables::X32,
            Abi::Aarch64 => tables::AARCH64,
            Abi::Arm => tables::ARM,
        };
        table
            .binary_search_by(|(n, _)| (*n).cmp(name))
            .ok()
            .map(|i| table[i].1)
    }

    /// i386's multiplexers: the socket calls are reachable through
    /// socketcall(2) and the SysV IPC calls through ipc(2), with the call
    /// chosen by the first argument (SYS_* of <linux/net.h>, and
    /// <linux/ipc.h>'s call numbers). A rule on `socket` must hold for
    /// `socketcall(SYS_SOCKET, ...)` too. Returns (multiplexer, selector).
    pub fn multiplexed(self, name: &str) -> Option<(&'static str, u64)> {
        if self != Abi::I386 {
            return None;
        }
        const SOCKETCALL: &[(&str, u64)] = &[
            ("socket", 1),
            ("bind", 2),
            ("connect", 3),
            ("listen", 4),
            ("accept", 5),
            ("getsockname", 6),
            ("getpeername", 7),
            ("socketpair", 8),
            ("send", 9),
            ("recv", 10),
            ("sendto", 11),
            ("recvfrom", 12),
            ("shutdown", 13),
            ("setsockopt", 14),
            ("getsockopt", 15),
            ("sendmsg", 16),
            ("recvmsg", 17),
            ("accept4", 18),
            ("recvmmsg", 19),
            ("sendmmsg", 20),
        ];
        const IPC: &[(&str, u64)] = &[
            ("semop", 1),
            ("semget", 2),
            ("semctl", 3),
            ("semtimedop", 4),
            ("msgsnd", 11),
            ("msgrcv", 12),
            ("msgget", 13),
            ("msgctl", 14),
            ("shmat", 21),
            ("shmdt", 22),
            ("shmget", 23),
            ("shmctl", 24),
        ];
        let find = |list: &[(&str, u64)]| list.iter().find(|(n, _)| *n == name).map(|(_, s)| *s);
        find(SOCKETCALL)
            .map(|s| ("socketcall", s))
            .or_else(|| find(IPC).map(|s| ("ipc", s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_and_hold_upstream_numbers() {
        for t in [
            tables::X86_64,
            tables::I386,
            tables::X32,
            tables::AARCH64,
            tables::ARM,
        ] {
            assert!(
                t.windows(2).all(|w| w[0].0 < w[1].0),
                "binary search needs sorted names"
            );
        }
        // Spot checks against the kernel's syscall tables.
        assert_eq!(Abi::X86_64.number("keyctl"), Some(250));
        assert_eq!(Abi::I386.number("keyctl"), Some(288));
        assert_eq!(Abi::X32.number("keyctl"), Some(250 | X32_SYSCALL_BIT));
        assert_eq!(
            Abi::X32.number("ioctl"),
            Some(514 | X32_SYSCALL_BIT),
            "x32's own range"
        );
        assert_eq!(Abi::I386.number("unshare"), Some(310));
        assert_eq!(Abi::Aarch64.number("unshare"), Some(97));
        assert_eq!(Abi::Arm.number("unshare"), Some(337));
        assert_eq!(Abi::Arm.number("set_tls"), Some(0xf0005));
        assert_eq!(Abi::Aarch64.number("open"), None, "arm64 has only openat");
        assert_eq!(Abi::X86_64.number("socketcall"), None);
        assert_eq!(Abi::I386.multiplexed("socket"), Some(("socketcall", 1)));
        assert_eq!(Abi::I386.multiplexed("shmget"), Some(("ipc", 23)));
        assert_eq!(Abi::X86_64.multiplexed("socket"), None);
    }

    #[test]
    fn the_node_abis_follow_the_build_target() {
        #[cfg(target_arch = "x86_64")]
        assert_eq!(Abi::node(), &[Abi::X86_64, Abi::X32, Abi::I386]);
        #[cfg(target_arch = "aarch64")]
        assert_eq!(Abi::node(), &[Abi::Aarch64, Abi::Arm]);
    }
}
