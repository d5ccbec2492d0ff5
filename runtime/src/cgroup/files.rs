//! The files of one cgroup, behind a trait so the resize procedure and the
//! reclaim estimate are unit-tested against a fake or a temp dir. Apart
//! from both users, so neither imports the other for it.

use std::path::PathBuf;

/// The files of one cgroup.
pub trait Files: Send + Sync {
    /// Reads a control file (trimmed).
    fn read(&self, name: &str) -> std::io::Result<String>;
    /// Writes a control file.
    fn write(&self, name: &str, value: &str) -> std::io::Result<()>;
    /// Whether the file exists (the controller is enabled).
    fn exists(&self, name: &str) -> bool;
    /// Free swap on the host, in bytes: whether anonymous memory can be
    /// reclaimed at all.
    fn host_swap_free_bytes(&self) -> u64;
}

/// A real cgroup directory, read and written through its files.
pub struct CgroupDir(pub PathBuf);

impl Files for CgroupDir {
    fn read(&self, name: &str) -> std::io::Result<String> {
        std::fs::read_to_string(self.0.join(name)).map(|s| s.trim().to_string())
    }
    fn write(&self, name: &str, value: &str) -> std::io::Result<()> {
        std::fs::write(self.0.join(name), value)
    }
    fn exists(&self, name: &str) -> bool {
        self.0.join(name).exists()
    }
    fn host_swap_free_bytes(&self) -> u64 {
        host_swap_free_bytes()
    }
}

/// The host's free swap in bytes (`SwapFree` of `/proc/meminfo`; 0 when it
/// cannot be read, so anonymous memory is never counted on a guess).
pub fn host_swap_free_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                let kb = l.strip_prefix("SwapFree:")?.trim().strip_suffix("kB")?;
                kb.trim().parse::<u64>().ok()
            })
        })
        .map_or(0, |kb| kb.saturating_mul(1024))
}
