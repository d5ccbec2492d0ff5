//! The CRIU images of a checkpoint archive, checked before a restore.
//!
//! `criu restore` runs as root and recreates what its images describe: the
//! mounts of the container's mount namespace and each task's credentials,
//! seccomp mode and no_new_privs. An archive is hostile input, so an image
//! could describe the node's disk mounted inside the container, or a task
//! with every capability, uid 0 in a pod that runs as 1000, or no seccomp
//! filter in a container whose spec has one. This module reads the two
//! kinds of image that carry those facts (`mountpoints-*.img`, `core-*.img`)
//! and refuses the archive unless the restored container gets nothing the
//! new container's own spec would not have given it.
//!
//! What is not compared: the seccomp filter's program (only that there is
//! one), an AppArmor/SELinux label, and the rest of the images (memory,
//! files inside the container's own mounts), which CRIU restores inside the
//! container's namespaces.
//!
//! Image format (CRIU's `criu/image.c`): a u32 head magic, a u32 magic of
//! the image type, then entries, each a little-endian u32 length and a
//! protobuf message (field numbers from CRIU's `images/*.proto`).

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use oci_spec::runtime::Spec;
use prost::Message;

use crate::container::spec::ALL_CAPS;
use crate::error::{Error, Result};

/// IMG_COMMON_MAGIC, the head of every image but the inventory.
const COMMON_MAGIC: u32 = 0x5456_4319;
/// MNTS_MAGIC (`mountpoints-<ns>.img`).
const MNTS_MAGIC: u32 = 0x5556_3928;
/// CORE_MAGIC (`core-<tid>.img`).
const CORE_MAGIC: u32 = 0x5505_3847;
/// Largest image read here (a core is a few KiB, a mount table less).
const MAX_IMAGE: u64 = 16 << 20;
/// SECCOMP_MODE_FILTER.
const SECCOMP_FILTER: i32 = 2;

/// `mnt_entry` (images/mnt.proto), the fields checked.
#[derive(Clone, PartialEq, Message)]
pub struct MntEntry {
    #[prost(uint32, optional, tag = "1")]
    pub fstype: Option<u32>,
    #[prost(string, optional, tag = "6")]
    pub root: Option<String>,
    #[prost(string, optional, tag = "7")]
    pub mountpoint: Option<String>,
    #[prost(string, optional, tag = "8")]
    pub source: Option<String>,
    #[prost(bool, optional, tag = "13")]
    pub ext_mount: Option<bool>,
    #[prost(string, optional, tag = "18")]
    pub ext_key: Option<String>,
}

/// `creds_entry` (images/creds.proto).
#[derive(Clone, PartialEq, Message)]
pub struct CredsEntry {
    #[prost(uint32, optional, tag = "1")]
    pub uid: Option<u32>,
    #[prost(uint32, optional, tag = "2")]
    pub gid: Option<u32>,
    #[prost(uint32, optional, tag = "3")]
    pub euid: Option<u32>,
    #[prost(uint32, optional, tag = "4")]
    pub egid: Option<u32>,
    #[prost(uint32, optional, tag = "5")]
    pub suid: Option<u32>,
    #[prost(uint32, optional, tag = "6")]
    pub sgid: Option<u32>,
    #[prost(uint32, optional, tag = "7")]
    pub fsuid: Option<u32>,
    #[prost(uint32, optional, tag = "8")]
    pub fsgid: Option<u32>,
    #[prost(uint32, repeated, packed = "false", tag = "9")]
    pub cap_inh: Vec<u32>,
    #[prost(uint32, repeated, packed = "false", tag = "10")]
    pub cap_prm: Vec<u32>,
    #[prost(uint32, repeated, packed = "false", tag = "11")]
    pub cap_eff: Vec<u32>,
    #[prost(uint32, repeated, packed = "false", tag = "12")]
    pub cap_bnd: Vec<u32>,
    #[prost(uint32, repeated, packed = "false", tag = "14")]
    pub groups: Vec<u32>,
    #[prost(uint32, optional, tag = "18")]
    pub no_new_privs: Option<u32>,
    #[prost(uint32, repeated, packed = "false", tag = "19")]
    pub cap_amb: Vec<u32>,
}

/// `thread_core_entry` (images/core.proto), the fields checked.
#[derive(Clone, PartialEq, Message)]
pub struct ThreadCoreEntry {
    #[prost(message, optional, tag = "10")]
    pub creds: Option<CredsEntry>,
    #[prost(int32, optional, tag = "11")]
    pub seccomp_mode: Option<i32>,
}

/// `task_core_entry`: the task's state, and the old place of the seccomp
/// mode, which CRIU prefers to the thread's when present.
#[derive(Clone, PartialEq, Message)]
pub struct TaskCoreEntry {
    #[prost(uint32, optional, tag = "1")]
    pub task_state: Option<u32>,
    #[prost(int32, optional, tag = "11")]
    pub old_seccomp_mode: Option<i32>,
}

/// CRIU's task states (compel's `COMPEL_TASK_ALIVE`, `COMPEL_TASK_DEAD`).
pub const TASK_ALIVE: u32 = 1;
/// A zombie: CRIU records only its state and exit code, and restores it as
/// a task that exits at once with that code.
pub const TASK_DEAD: u32 = 2;

/// `core_entry`, the fields checked.
#[derive(Clone, PartialEq, Message)]
pub struct CoreEntry {
    #[prost(message, optional, tag = "3")]
    pub tc: Option<TaskCoreEntry>,
    #[prost(message, optional, tag = "5")]
    pub thread_core: Option<ThreadCoreEntry>,
}

/// CRIU's fstype numbers of the filesystems a container mounts itself
/// (PROC, SYSFS, TMPFS, DEVPTS, CGROUP, MQUEUE, CGROUP2): CRIU makes new
/// instances of them in the container's namespaces. Everything else
/// (DEVTMPFS, a disk, FUSE, debugfs, binfmt_misc, "auto" by name) would be
/// the node's, unless it is an external mount mapped by berthd.
const OWN_FS: &[u32] = &[1, 2, 5, 6, 12, 14, 23];
/// OVERLAYFS, allowed only as the root (CRIU mounts `--root` there).
const OVERLAYFS: u32 = 17;

/// Refuses the images in `dir` unless their mounts and every task's
/// credentials fit `spec`, the new container's spec. InvalidArgument
/// naming the image and what is wrong.
pub fn check(dir: &Path, spec: &Spec) -> Result<()> {
    let mut cores = 0;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("read {}", dir.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    let allowed = Allowed::of(spec);
    for name in names {
        if !name.ends_with(".img") {
            continue;
        }
        let bad =
            |what: String| Error::InvalidArgument(format!("checkpoint archive: checkpoint/{name}: {what}"));
        if name.starts_with("mountpoints-") {
            for m in read_entries::<MntEntry>(&dir.join(&name), MNTS_MAGIC).map_err(&bad)? {
                check_mount(&m).map_err(&bad)?;
            }
        } else if name.starts_with("core-") {
            let core = read_entries::<CoreEntry>(&dir.join(&name), CORE_MAGIC).map_err(&bad)?;
            let [core] = core.as_slice() else {
                return Err(bad(format!("{} entries, not one", core.len())));
            };
            allowed.check_core(core).map_err(&bad)?;
            cores += 1;
        }
    }
    if cores == 0 {
        return Err(Error::InvalidArgument(
            "checkpoint archive: no core-*.img in checkpoint/: not a CRIU dump of a process".into(),
        ));
    }
    Ok(())
}

/// The entries of the image at `path`, whose type magic must be `magic`.
fn read_entries<M: Message + Default>(path: &Path, magic: u32) -> std::result::Result<Vec<M>, String> {
    let f = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("open: {e}"))?;
    let mut body = Vec::new();
    f.take(MAX_IMAGE + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("read: {e}"))?;
    if body.len() as u64 > MAX_IMAGE {
        return Err(format!("larger than {MAX_IMAGE} bytes"));
    }
    let word =
        |at: usize| -> Option<u32> { Some(u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?)) };
    if word(0) != Some(COMMON_MAGIC) || word(4) != Some(magic) {
        return Err("not a CRIU image of its kind (magic)".into());
    }
    let mut at = 8;
    let mut out = Vec::new();
    while at < body.len() {
        let len = word(at).ok_or("a truncated entry length")? as usize;
        let entry = body
            .get(at + 4..at + 4 + len)
            .ok_or("an entry longer than the image")?;
        out.push(M::decode(entry).map_err(|e| format!("entry {}: {e}", out.len()))?);
        at += 4 + len;
    }
    Ok(out)
}

/// A mount CRIU may recreate: the root (the container's overlay, which
/// `--root` replaces), an external mount whose key berthd maps to a source
/// of the new container (a key is the mount point, "/..."; CRIU's own
/// automatic and device keys take a source from the image and are
/// refused), or a filesystem the container mounts itself. No mount point
/// climbs out with "..".
fn check_mount(m: &MntEntry) -> std::result::Result<(), String> {
    let at = m.mountpoint.as_deref().unwrap_or_default();
    if at.split('/').any(|c| c == "..") {
        return Err(format!("mount point {at:?} has a \"..\""));
    }
    if let Some(key) = m.ext_key.as_deref().filter(|k| !k.is_empty()) {
        return if key.starts_with('/') {
            Ok(())
        } else {
            Err(format!(
                "mount {at:?} is external with key {key:?}, which berthd does not map"
            ))
        };
    }
    if m.ext_mount == Some(true) {
        return Err(format!("mount {at:?} is external without a key"));
    }
    let fstype = m.fstype.unwrap_or_default();
    let root = matches!(at, "/" | "./" | ".");
    if OWN_FS.contains(&fstype) || (root && fstype == OVERLAYFS) {
        return Ok(());
    }
    Err(format!(
        "mount {at:?} (CRIU fstype {fstype}, source {:?}) is not one a container makes itself: \
         a restore would mount it from the node",
        m.source.as_deref().unwrap_or_default()
    ))
}

/// What the new container's spec allows a task.
struct Allowed {
    /// The bounding set, as a bit mask by capability number.
    caps: u64,
    /// The spec's uid and gid; None when it runs as root (which may become
    /// anyone).
    uid: Option<u32>,
    gids: Option<BTreeSet<u32>>,
    no_new_privs: bool,
    seccomp: bool,
}

impl Allowed {
    fn of(spec: &Spec) -> Self {
        let process = spec.process().as_ref();
        let caps = process
            .and_then(|p| p.capabilities().as_ref())
            .and_then(|c| c.bounding().as_ref())
            .map(|set| {
                set.iter()
                    .filter_map(|c| serde_json::to_value(c).ok())
                    .filter_map(|v| ALL_CAPS.iter().position(|n| Some(*n) == v.as_str()))
                    .fold(0u64, |m, i| m | (1 << i))
            })
            .unwrap_or(0);
        let (uid, gid, extra) = process
            .map(|p| {
                let u = p.user();
                (u.uid(), u.gid(), u.additional_gids().clone().unwrap_or_default())
            })
            .unwrap_or((0, 0, Vec::new()));
        let root = uid == 0;
        Allowed {
            caps,
            uid: (!root).then_some(uid),
            gids: (!root).then(|| std::iter::once(gid).chain(extra).collect()),
            no_new_privs: process.and_then(|p| p.no_new_privileges()).unwrap_or(false),
            seccomp: spec.linux().as_ref().is_some_and(|l| l.seccomp().is_some()),
        }
    }

    fn check_core(&self, core: &CoreEntry) -> std::result::Result<(), String> {
        // A zombie runs nothing of its own after a restore: there is no
        // thread, and no credentials, to check. (Seen when a dump caught a
        // shell's child that had exited and was not yet reaped.)
        let dead = core.tc.as_ref().and_then(|t| t.task_state) == Some(TASK_DEAD);
        if dead && core.thread_core.is_none() {
            return Ok(());
        }
        let tc = core
            .thread_core
            .as_ref()
            .ok_or("no thread_core (an old image format this berthd does not restore)")?;
        let creds = tc.creds.as_ref().ok_or(
            "no credentials in the thread's core (an old image format this berthd does not restore)",
        )?;
        for (name, set) in [
            ("inheritable", &creds.cap_inh),
            ("permitted", &creds.cap_prm),
            ("effective", &creds.cap_eff),
            ("bounding", &creds.cap_bnd),
            ("ambient", &creds.cap_amb),
        ] {
            let mask = set
                .iter()
                .take(2)
                .enumerate()
                .fold(0u64, |m, (i, w)| m | (u64::from(*w) << (32 * i)));
            let extra = mask & !self.caps;
            if extra != 0 || set.len() > 2 && set[2..].iter().any(|w| *w != 0) {
                let names: Vec<&str> = (0..64)
                    .filter(|i| extra & (1 << i) != 0)
                    .map(|i| ALL_CAPS.get(i).copied().unwrap_or("an unknown capability"))
                    .collect();
                return Err(format!(
                    "a task's {name} capabilities hold {names:?}, outside the new container's bounding set"
                ));
            }
        }
        if let Some(uid) = self.uid {
            for (what, id) in [
                ("uid", creds.uid),
                ("euid", creds.euid),
                ("suid", creds.suid),
                ("fsuid", creds.fsuid),
            ] {
                if id != Some(uid) {
                    return Err(format!(
                        "a task's {what} is {id:?}, the new container runs as {uid}"
                    ));
                }
            }
        }
        if let Some(gids) = &self.gids {
            let ids = [creds.gid, creds.egid, creds.sgid, creds.fsgid];
            if let Some(g) = ids
                .iter()
                .map(|g| g.unwrap_or(u32::MAX))
                .chain(creds.groups.iter().copied())
                .find(|g| !gids.contains(g))
            {
                return Err(format!("a task has group {g}, which the new container does not"));
            }
        }
        if self.no_new_privs && creds.no_new_privs.unwrap_or(0) == 0 {
            return Err("a task lacks no_new_privs, which the new container's spec sets".into());
        }
        let seccomp = core
            .tc
            .as_ref()
            .and_then(|t| t.old_seccomp_mode)
            .or(tc.seccomp_mode)
            .unwrap_or(0);
        if self.seccomp && seccomp != SECCOMP_FILTER {
            return Err(format!(
                "a task's seccomp mode is {seccomp}, the new container's spec has a filter"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "images_tests.rs"]
mod tests;
