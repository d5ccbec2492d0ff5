//! Image volumes (KEP-4639): a CRI mount whose `image` names an image
//! kubelet already pulled. The container sees the image's content,
//! read-only, nosuid, nodev and noexec, at `container_path`, or the
//! directory `image_sub_path` names inside it.
//!
//! berthd mounts the image itself, under the container's dir:
//! `image-volumes/<n>/image` is an overlay of the image's snapshots with no
//! upper dir (overlayfs wants two lowers without one, so a one-layer image
//! is a read-only bind of its snapshot), and `image-volumes/<n>/sub` a bind
//! of the subPath, resolved with openat2(RESOLVE_BENEATH) on the mounted
//! image and bound through the fd: a symlink or `..` that leaves the image
//! is refused (EXDEV), not followed. The spec bind-mounts one of the two.
//!
//! The image is never pulled here (kubelet pulls first: absent is
//! NotFound). The container record names the image, so RemoveImage refuses
//! it while the container exists, also after a berthd restart. The mounts
//! go with the container's dir: [`unmount_all`] runs before every removal
//! of it (RemoveContainer, the create rollback, intent undo, recovery), so
//! the removal never reaches into a snapshot.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use berth_proto::cri;
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use super::mounts::{check_destination, MountOrigin};
use super::ContainerManager;
use crate::error::{Error, Result};
use crate::image::ImageStore;
use crate::rollback::Rollback;

/// The directory below a container's dir that holds its image volumes.
const DIR: &str = "image-volumes";

/// Flags of every image volume mount: the image is data, never code or
/// devices, and never written.
const FLAGS: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// The longest option string mount(2) copies: one page, NUL included.
const MOUNT_DATA_MAX: usize = 4095;

/// An image volume as the container record keeps it (what RemoveImage and
/// ContainerStatus need after a restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageVolumeRecord {
    /// Where the container sees it.
    pub container_path: String,
    /// The image as the request named it.
    pub image: String,
    /// The image's id (what RemoveImage compares).
    pub image_id: String,
    /// The subPath ("" = the image root).
    pub sub_path: String,
}

/// One image volume of a CreateContainer, checked, not yet mounted.
pub(crate) struct Planned {
    record: ImageVolumeRecord,
    /// Snapshot dirs, topmost first.
    lower: Vec<PathBuf>,
    /// Where the image's root is mounted.
    image_dir: PathBuf,
    /// Where the subPath is bound (unused without one).
    sub_dir: PathBuf,
}

impl Planned {
    /// The host path the container's bind mount takes.
    fn source(&self) -> &Path {
        if self.record.sub_path.is_empty() {
            &self.image_dir
        } else {
            &self.sub_dir
        }
    }
}

/// The mounted image volumes as the host-path binds the container gets
/// (container path and source), for the user-namespace idmap check.
pub(crate) fn host_binds(planned: &[Planned]) -> Vec<cri::Mount> {
    planned
        .iter()
        .map(|p| cri::Mount {
            container_path: p.record.container_path.clone(),
            host_path: p.source().to_string_lossy().into_owned(),
            ..Default::default()
        })
        .collect()
}

/// Whether `m` is an image volume rather than a bind of a host path.
pub fn is_image(m: &cri::Mount) -> bool {
    m.image.as_ref().is_some_and(|i| !i.image.is_empty())
}

/// Checks the image volumes among `mounts` and places each at
/// `<container_dir>/image-volumes/<n>`. The image must be in the store.
/// Nothing is made on the node.
pub(crate) fn plan(mounts: &[cri::Mount], images: &ImageStore, container_dir: &Path) -> Result<Vec<Planned>> {
    let mut out = Vec::new();
    for m in mounts.iter().filter(|m| is_image(m)) {
        let name = m.image.as_ref().map(|i| i.image.as_str()).unwrap_or_default();
        let what = format!("image volume {:?}", m.container_path);
        if !m.container_path.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "{what}: container_path must be absolute"
            )));
        }
        check_destination(&m.container_path, MountOrigin::Cri)?;
        if !m.host_path.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{what}: has both an image and host_path {:?}",
                m.host_path
            )));
        }
        if m.image_sub_path.contains('\0') {
            return Err(Error::InvalidArgument(format!(
                "{what}: subPath holds a NUL byte"
            )));
        }
        let image = images
            .resolve(name)
            .ok_or_else(|| Error::NotFound(format!("{what}: image {name:?} (kubelet pulls it first)")))?;
        let lower = images.lower_dirs(&image);
        if lower.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "{what}: image {} has no layers",
                image.id
            )));
        }
        let base = container_dir.join(DIR).join(out.len().to_string());
        out.push(Planned {
            record: ImageVolumeRecord {
                container_path: m.container_path.clone(),
                image: name.to_string(),
                image_id: image.id,
                sub_path: m.image_sub_path.clone(),
            },
            lower,
            image_dir: base.join("image"),
            sub_dir: base.join("sub"),
        });
    }
    Ok(out)
}

/// The mounts the spec gets, in the request's order: host binds as
/// `resolved` has them (the same order, image volumes left out), image
/// volumes as read-only private binds of their planned source, idmapped
/// like the rootfs for a pod with a user namespace of its own (`userns`).
pub(crate) fn spec_mounts(
    all: &[cri::Mount],
    resolved: Vec<cri::Mount>,
    planned: &[Planned],
    userns: Option<&crate::sandbox::userns::PodUserns>,
) -> Vec<cri::Mount> {
    let mut host = resolved.into_iter();
    let mut image = planned.iter();
    all.iter()
        .filter_map(|m| {
            if !is_image(m) {
                return host.next();
            }
            image.next().map(|p| {
                let bind = cri::Mount {
                    container_path: m.container_path.clone(),
                    host_path: p.source().to_string_lossy().into_owned(),
                    readonly: true,
                    ..Default::default()
                };
                super::volume_owner::set(bind, userns)
            })
        })
        .collect()
}

/// Adds nosuid, nodev and noexec to the spec's binds of image volumes (the
/// shim applies them by remount; the source mount has them too).
pub(crate) fn harden(oci: &mut oci_spec::runtime::Spec, planned: &[Planned]) {
    let Some(mounts) = oci.mounts().clone() else {
        return;
    };
    let mounts = mounts
        .into_iter()
        .map(|mut m| {
            let ours = planned.iter().any(|p| {
                m.destination().as_os_str() == p.record.container_path.as_str()
                    && m.source().as_deref() == Some(p.source())
            });
            if ours {
                let mut opts = m.options().clone().unwrap_or_default();
                for o in ["ro", "nosuid", "nodev", "noexec"] {
                    if !opts.iter().any(|x| x == o) {
                        opts.push(o.to_string());
                    }
                }
                opts.retain(|x| x != "rw");
                m.set_options(Some(opts));
            }
            m
        })
        .collect();
    oci.set_mounts(Some(mounts));
}

/// What the container record keeps of the planned volumes.
pub(crate) fn records(planned: &[Planned]) -> Vec<ImageVolumeRecord> {
    planned.iter().map(|p| p.record.clone()).collect()
}

impl ContainerManager {
    /// Mounts the planned image volumes. Runs after the create intent and
    /// the container's dir exist; the undo (and recovery, through the
    /// intent) unmounts whatever was mounted before the dir goes.
    pub(super) fn mount_image_volumes(
        &self,
        undo: &mut Rollback,
        dir: &Path,
        planned: &[Planned],
    ) -> Result<()> {
        if planned.is_empty() {
            return Ok(());
        }
        {
            let dir = dir.to_path_buf();
            undo.push(move || {
                if let Err(e) = unmount_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "unmounting image volumes failed");
                }
            });
        }
        for p in planned {
            mount_one(p)?;
        }
        Ok(())
    }
}

fn mount_one(p: &Planned) -> Result<()> {
    let what = format!("image volume {:?}", p.record.container_path);
    for d in [&p.image_dir, &p.sub_dir] {
        crate::store::modes::create_dir(d, 0o755)
            .map_err(|e| Error::io(format!("create {}", d.display()), e))?;
    }
    mount_image(&p.lower, &p.image_dir)
        .map_err(|e| Error::io(format!("{what}: mount image {}", p.record.image_id), e))?;
    if p.record.sub_path.is_empty() {
        return Ok(());
    }
    let fd = resolve_sub_path(&p.image_dir, &p.record.sub_path)
        .map_err(|e| sub_path_error(&what, &p.record, e))?;
    let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
    nix::mount::mount(
        Some(source.as_str()),
        &p.sub_dir,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| Error::io(format!("{what}: bind subPath"), e.into()))?;
    nix::mount::mount(
        None::<&str>,
        &p.sub_dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | FLAGS,
        None::<&str>,
    )
    .map_err(|e| Error::io(format!("{what}: remount subPath read-only"), e.into()))
}

/// The image's layers at `target`: an overlay with no upper dir, or a
/// read-only bind of a lone snapshot.
fn mount_image(lower: &[PathBuf], target: &Path) -> io::Result<()> {
    if let [only] = lower {
        nix::mount::mount(
            Some(only.as_path()),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        // Bind mounts ignore flags on creation. Until this remount the
        // bind is writable: every removal of the container's dir unmounts
        // first, so nothing removes through it.
        nix::mount::mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | FLAGS,
            None::<&str>,
        )?;
        return Ok(());
    }
    let joined = lower
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join(":");
    // Many layers overflow mount(2)'s page of options: name each snapshot
    // by a short /proc/self/fd path of an fd held until the mount is made.
    let mut fds = Vec::new();
    let data = if joined.len() + "lowerdir=".len() <= MOUNT_DATA_MAX {
        format!("lowerdir={joined}")
    } else {
        let mut short = Vec::new();
        for l in lower {
            let fd = nix::fcntl::open(
                l.as_path(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )?;
            short.push(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            fds.push(fd);
        }
        format!("lowerdir={}", short.join(":"))
    };
    if data.len() > MOUNT_DATA_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} layers do not fit one overlay mount", lower.len()),
        ));
    }
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        FLAGS,
        Some(data.as_str()),
    )?;
    drop(fds);
    Ok(())
}

/// Opens the directory `sub` names below `root` without leaving it: `..`
/// above `root`, absolute paths and symlinks pointing out are EXDEV, magic
/// links and mount crossings refused. Returns an O_PATH fd of it.
fn resolve_sub_path(root: &Path, sub: &str) -> io::Result<OwnedFd> {
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // openat2 does not take "" for the dir itself.
    let sub = if sub.is_empty() { "." } else { sub };
    let sub = CString::new(Path::new(sub).as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS | ResolveFlag::RESOLVE_NO_XDEV,
        );
    Ok(nix::fcntl::openat2(&root_fd, sub.as_c_str(), how)?)
}

/// The CRI error for a subPath openat2 refused.
fn sub_path_error(what: &str, r: &ImageVolumeRecord, e: io::Error) -> Error {
    let sub = &r.sub_path;
    match e.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EXDEV) => Error::InvalidArgument(format!("{what}: subPath {sub} leaves the image")),
        Some(Errno::ENOENT) => Error::NotFound(format!(
            "{what}: subPath {sub} does not exist in image {}",
            r.image
        )),
        Some(Errno::ENOTDIR) => Error::InvalidArgument(format!("{what}: subPath {sub} is not a directory")),
        Some(Errno::ELOOP) => Error::InvalidArgument(format!("{what}: subPath {sub} has too many symlinks")),
        Some(Errno::ENOSYS) => Error::FailedPrecondition(format!(
            "{what}: subPath {sub} needs openat2(2) (Linux 5.6 or later)"
        )),
        _ => Error::io(format!("{what}: open subPath {sub}"), e),
    }
}

/// Detaches every image volume mount below `container_dir` (the subPath
/// binds before the images they come from). Not mounted, or no such dir,
/// is fine, so every removal path may call it, twice included.
pub(crate) fn unmount_all(container_dir: &Path) -> Result<()> {
    let base = container_dir.join(DIR);
    let entries = match std::fs::read_dir(&base) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("read {}", base.display()), e)),
    };
    for e in entries {
        let e = e.map_err(|err| Error::io(format!("read {}", base.display()), err))?;
        for p in [e.path().join("sub"), e.path().join("image")] {
            detach(&p)?;
        }
    }
    Ok(())
}

/// Detaches whatever is mounted at `p` (lazily: a container's mount
/// namespace may still hold a copy); stacked mounts included.
fn detach(p: &Path) -> Result<()> {
    for _ in 0..16 {
        match nix::mount::umount2(p, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => continue,
            Err(Errno::EINVAL | Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(Error::io(format!("unmount {}", p.display()), e.into())),
        }
    }
    Err(Error::Internal(format!("{} stays mounted", p.display())))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn image_tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("data/sub")).unwrap();
        std::fs::write(r.join("data/hello.txt"), "hi").unwrap();
        symlink("/", r.join("to-root")).unwrap();
        symlink("../..", r.join("up")).unwrap();
        symlink("data/sub", r.join("to-sub")).unwrap();
        symlink("/data/sub", r.join("abs-sub")).unwrap();
        d
    }

    fn errno(root: &Path, sub: &str) -> Option<Errno> {
        resolve_sub_path(root, sub)
            .err()
            .and_then(|e| e.raw_os_error())
            .map(Errno::from_raw)
    }

    #[test]
    fn sub_paths_stay_inside_the_image() {
        let d = image_tree();
        let r = d.path();
        for ok in [
            "",
            "data",
            "data/sub",
            "data/sub/..",
            "./data//sub/",
            "to-sub",
            "data/../to-sub",
        ] {
            let fd = resolve_sub_path(r, ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
            assert!(real.starts_with(r), "{ok}: {}", real.display());
        }
        for out in [
            "..",
            "../..",
            "../../etc",
            "data/../../etc",
            "/etc",
            "/",
            "to-root",
            "to-root/etc",
            "up",
            "up/etc",
            "abs-sub",
        ] {
            assert_eq!(errno(r, out), Some(Errno::EXDEV), "{out}");
        }
        assert_eq!(errno(r, "missing"), Some(Errno::ENOENT));
        assert_eq!(errno(r, "data/hello.txt"), Some(Errno::ENOTDIR));
        assert_eq!(errno(r, "data/hello.txt/x"), Some(Errno::ENOTDIR));
    }

    #[test]
    fn refusals_map_to_cri_codes_naming_the_sub_path() {
        let d = image_tree();
        let rec = |sub: &str| ImageVolumeRecord {
            container_path: "/vol".into(),
            image: "data:1".into(),
            image_id: "sha256:00".into(),
            sub_path: sub.into(),
        };
        for (sub, want) in [
            ("../../etc", "InvalidArgument"),
            ("to-root", "InvalidArgument"),
            ("missing", "NotFound"),
            ("data/hello.txt", "InvalidArgument"),
        ] {
            let e = sub_path_error(
                "image volume \"/vol\"",
                &rec(sub),
                resolve_sub_path(d.path(), sub).unwrap_err(),
            );
            let code = match &e {
                Error::InvalidArgument(_) => "InvalidArgument",
                Error::NotFound(_) => "NotFound",
                _ => "other",
            };
            assert_eq!(code, want, "{sub}: {e}");
            assert!(e.to_string().contains(sub), "{sub}: {e}");
        }
    }

    fn mount(path: &str, image: &str, sub: &str) -> cri::Mount {
        cri::Mount {
            container_path: path.into(),
            image: (!image.is_empty()).then(|| cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            image_sub_path: sub.into(),
            host_path: if image.is_empty() {
                "/h".into()
            } else {
                String::new()
            },
            ..Default::default()
        }
    }

    #[test]
    fn absent_images_and_bad_requests_are_refused_before_anything_is_made() {
        let d = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&d.path().join("images")).unwrap();
        let dir = d.path().join("c");
        let e = plan(&[mount("/vol", "absent:1", "")], &store, &dir)
            .err()
            .unwrap();
        assert!(matches!(&e, Error::NotFound(m) if m.contains("absent:1")), "{e}");
        let mut both = mount("/vol", "absent:1", "");
        both.host_path = "/h".into();
        assert!(matches!(
            plan(&[both], &store, &dir),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            plan(&[mount("vol", "absent:1", "")], &store, &dir),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            plan(&[mount("/proc/x", "absent:1", "")], &store, &dir),
            Err(Error::InvalidArgument(_))
        ));
        // Host binds are not image volumes.
        assert!(plan(&[mount("/h", "", "")], &store, &dir).unwrap().is_empty());
        assert!(!dir.exists(), "planning makes nothing");
        unmount_all(&dir).expect("nothing to unmount is fine");
    }

    #[test]
    fn spec_mounts_keep_the_request_order() {
        let planned = vec![Planned {
            record: ImageVolumeRecord {
                container_path: "/img".into(),
                image: "i".into(),
                image_id: "sha256:00".into(),
                sub_path: "data".into(),
            },
            lower: vec!["/l".into()],
            image_dir: "/c/image-volumes/0/image".into(),
            sub_dir: "/c/image-volumes/0/sub".into(),
        }];
        let all = vec![
            mount("/a", "", ""),
            mount("/img", "i", "data"),
            mount("/b", "", ""),
        ];
        let resolved = vec![mount("/a", "", ""), mount("/b", "", "")];
        let got = spec_mounts(&all, resolved, &planned, None);
        let paths: Vec<_> = got.iter().map(|m| m.container_path.as_str()).collect();
        assert_eq!(paths, ["/a", "/img", "/b"]);
        assert_eq!(got[1].host_path, "/c/image-volumes/0/sub");
        assert!(got[1].readonly && got[1].image.is_none());
    }
}
