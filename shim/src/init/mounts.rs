//! OCI mount options -> mount(2) flags, and overlay options that fit mount(2).

use nix::mount::MsFlags;

/// Flags and leftover data from an OCI `options` list.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedOptions {
    /// Flags for the initial mount.
    pub flags: MsFlags,
    /// Propagation flags applied with a separate mount call.
    pub propagation: MsFlags,
    /// Filesystem-specific options, comma-joined.
    pub data: String,
    /// A bind mount (`bind` or `rbind`).
    pub bind: bool,
    /// `rro`: read-only recursively, submounts included (mount_setattr).
    pub recursive_readonly: bool,
}

/// Parses OCI mount options the way runc does (unknown words are data).
pub fn parse_options(options: &[String]) -> ParsedOptions {
    let mut p = ParsedOptions {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: String::new(),
        bind: false,
        recursive_readonly: false,
    };
    let mut data = Vec::new();
    for o in options {
        let (set, clear) = match o.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "bind" => {
                p.bind = true;
                (MsFlags::MS_BIND, MsFlags::empty())
            }
            "rbind" => {
                p.bind = true;
                (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty())
            }
            "rro" => {
                p.recursive_readonly = true;
                continue;
            }
            "private" => {
                p.propagation |= MsFlags::MS_PRIVATE;
                continue;
            }
            "rprivate" => {
                p.propagation |= MsFlags::MS_PRIVATE | MsFlags::MS_REC;
                continue;
            }
            "slave" => {
                p.propagation |= MsFlags::MS_SLAVE;
                continue;
            }
            "rslave" => {
                p.propagation |= MsFlags::MS_SLAVE | MsFlags::MS_REC;
                continue;
            }
            "shared" => {
                p.propagation |= MsFlags::MS_SHARED;
                continue;
            }
            "rshared" => {
                p.propagation |= MsFlags::MS_SHARED | MsFlags::MS_REC;
                continue;
            }
            other => {
                data.push(other.to_string());
                continue;
            }
        };
        p.flags |= set;
        p.flags &= !clear;
    }
    p.data = data.join(",");
    p
}

/// The longest option string mount(2) copies: one page, NUL included.
pub const MOUNT_DATA_MAX: usize = 4095;

/// Rewrites an overlay option string too long for mount(2) (an image of
/// many layers: Docker allows 127, and a page holds about 40 of our
/// snapshot paths) so every `lowerdir` entry is a short `/proc/self/fd/N`
/// of a directory `open_dir` opened. Kernel 6.1 has neither `lowerdir+`
/// nor fsconfig strings over 256 bytes, so this is the portable way. The
/// returned fds must stay open until the mount is done. Short strings are
/// returned as they are.
pub fn shorten_lowerdirs<F>(
    data: &str,
    mut open_dir: F,
) -> std::io::Result<(String, Vec<std::os::fd::OwnedFd>)>
where
    F: FnMut(&str) -> std::io::Result<std::os::fd::OwnedFd>,
{
    use std::os::fd::AsRawFd;
    if data.len() <= MOUNT_DATA_MAX {
        return Ok((data.to_string(), Vec::new()));
    }
    let mut fds = Vec::new();
    let mut out = Vec::new();
    for opt in data.split(',') {
        let Some(dirs) = opt.strip_prefix("lowerdir=") else {
            out.push(opt.to_string());
            continue;
        };
        let mut short = Vec::new();
        for d in dirs.split(':') {
            let fd = open_dir(d)?;
            short.push(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            fds.push(fd);
        }
        out.push(format!("lowerdir={}", short.join(":")));
    }
    let data = out.join(",");
    if data.len() > MOUNT_DATA_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "overlay options are {} bytes even with short lowerdirs",
                data.len()
            ),
        ));
    }
    Ok((data, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_option_sets() {
        let p = parse_options(&[
            "nosuid".into(),
            "strictatime".into(),
            "mode=755".into(),
            "size=65536k".into(),
        ]);
        assert_eq!(p.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(p.data, "mode=755,size=65536k");
        assert!(!p.bind);
        let p = parse_options(&["rbind".into(), "ro".into(), "rslave".into()]);
        assert!(p.bind);
        assert_eq!(p.flags, MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY);
        assert_eq!(p.propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
        let p = parse_options(&["ro".into(), "rw".into()]);
        assert_eq!(p.flags, MsFlags::empty());
    }

    #[test]
    fn rro_is_recursive_read_only() {
        let p = parse_options(&["rbind".into(), "rprivate".into(), "ro".into(), "rro".into()]);
        assert!(p.recursive_readonly);
        assert_eq!(p.flags, MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY);
        assert!(!parse_options(&["ro".into()]).recursive_readonly);
    }

    #[test]
    fn long_lowerdirs_become_fd_paths() {
        let dir = tempfile::tempdir().unwrap();
        let short = "lowerdir=/a:/b,upperdir=/u,workdir=/w";
        let (same, fds) = shorten_lowerdirs(short, |_| unreachable!()).unwrap();
        assert_eq!((same.as_str(), fds.len()), (short, 0));
        let layer = format!("{}/{}", dir.path().display(), "s".repeat(64));
        std::fs::create_dir_all(&layer).unwrap();
        let lower = vec![layer.as_str(); 127].join(":");
        let long = format!("lowerdir={lower},upperdir=/u,workdir=/w");
        assert!(long.len() > MOUNT_DATA_MAX);
        let (data, fds) = shorten_lowerdirs(&long, |d| std::fs::File::open(d).map(Into::into)).unwrap();
        assert_eq!(fds.len(), 127);
        assert!(data.len() <= MOUNT_DATA_MAX, "{}", data.len());
        assert!(data.ends_with(",upperdir=/u,workdir=/w"), "{data}");
        let first = data.strip_prefix("lowerdir=").unwrap().split(':').next().unwrap();
        assert_eq!(
            std::fs::read_link(first).unwrap(),
            std::path::PathBuf::from(&layer)
        );
    }
}
