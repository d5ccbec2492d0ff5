//! Descriptors seen from outside a process, through `/proc`: which pipes a
//! process tree holds, and which of them are write ends nobody reads. A
//! descriptor meant for one process that leaked into another (the shim's
//! readiness pipe, say) shows up as exactly that: berthd closes its read
//! end once the shim served, so a leaked copy is a write end without a
//! reader anywhere on the node.

use std::collections::{BTreeMap, BTreeSet};

/// The fd numbers `pid` holds.
pub fn fd_numbers(pid: u32) -> BTreeSet<u32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// `pid` and every process below it (by parent pid).
pub fn process_tree(pid: u32) -> BTreeSet<u32> {
    let mut parent = BTreeMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        // "pid (comm) state ppid ...": comm may hold spaces and parens.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(pp) = ppid {
            parent.insert(p, pp);
        }
    }
    let mut tree = BTreeSet::from([pid]);
    loop {
        let more: Vec<u32> = parent
            .iter()
            .filter(|(p, pp)| tree.contains(pp) && !tree.contains(p))
            .map(|(p, _)| *p)
            .collect();
        if more.is_empty() {
            return tree;
        }
        tree.extend(more);
    }
}

/// Pipe inode of `pid`'s fd `fd`, and whether that end is open for writing.
fn pipe_end(pid: u32, fd: u32) -> Option<(u64, bool)> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let inode = link
        .to_str()?
        .strip_prefix("pipe:[")?
        .strip_suffix(']')?
        .parse()
        .ok()?;
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())?;
    Some((inode, flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32))
}

/// "pid/fd pipe:[inode]" for every pipe write end held by one of `pids`
/// whose read end no process on the node holds.
pub fn unread_pipe_writers(pids: &BTreeSet<u32>) -> Vec<String> {
    let mut read_ends = BTreeSet::new();
    let mut writers = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        for fd in fd_numbers(p) {
            match pipe_end(p, fd) {
                Some((inode, false)) => {
                    read_ends.insert(inode);
                }
                Some((inode, true)) if pids.contains(&p) => writers.push((p, fd, inode)),
                _ => {}
            }
        }
    }
    writers
        .into_iter()
        .filter(|(_, _, inode)| !read_ends.contains(inode))
        .map(|(p, fd, inode)| format!("{p}/{fd} pipe:[{inode}]"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    /// A child that inherited a pipe's write end whose reader is gone is
    /// found (the shape of a leaked readiness pipe); while the read end is
    /// open, it is not. Only this test's pipe is looked at: the test
    /// process may itself have inherited unread pipes from whoever started
    /// it, and its child inherits those too.
    #[test]
    fn a_leaked_write_end_without_reader_is_found() {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let ours = std::fs::metadata(format!("/proc/self/fd/{}", write.as_raw_fd()))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap();
        let ours = format!("pipe:[{ours}]");
        let of_ours = |found: Vec<String>| {
            found
                .into_iter()
                .filter(|f| f.ends_with(&ours))
                .collect::<Vec<_>>()
        };
        // The write end as the child's stdout stands in for a leaked copy.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdout(std::process::Stdio::from(write))
            .spawn()
            .unwrap();
        let tree = process_tree(child.id());
        assert!(tree.contains(&child.id()));
        assert!(fd_numbers(child.id()).contains(&1));
        assert!(
            of_ours(unread_pipe_writers(&tree)).is_empty(),
            "the read end is still open here"
        );
        drop(read);
        let found = of_ours(unread_pipe_writers(&tree));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found, vec![format!("{}/1 {ours}", child.id())]);
    }
}
