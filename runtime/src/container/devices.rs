//! CRI `devices` and privileged containers' host devices: which device nodes
//! a container gets, and which rules its cgroup device filter holds.
//!
//! As containerd does: a CRI device names a node (or a directory of nodes,
//! expanded recursively) on the host; the container gets a node of the same
//! type, numbers, mode and owner at `container_path`, and the filter allows
//! exactly the CRI permissions on it. A privileged container gets every
//! device node of the host's /dev and no filter at all.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_proto::cri;
use oci_spec::runtime::{
    LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxResources, Spec,
};

use crate::cgroup::device_filter::{default_rules, Access, DeviceKind, DeviceRule};
use crate::error::{Error, Result};

/// A device node the container gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    /// Where, inside the container.
    pub path: PathBuf,
    /// Block or char.
    pub kind: DeviceKind,
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// Permission bits (`st_mode & 0o7777`) of the host node.
    pub file_mode: u32,
    /// Owner of the host node.
    pub uid: u32,
    /// Group of the host node.
    pub gid: u32,
}

/// What a container gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDevices {
    /// Nodes to create beyond the standard /dev ones.
    pub nodes: Vec<DeviceNode>,
    /// The device filter's allow-list; `None`: no filter (privileged).
    pub rules: Option<Vec<DeviceRule>>,
}

/// What a path on the node is, as far as devices go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEntry {
    /// A block or char device node.
    Device {
        /// Type.
        kind: DeviceKind,
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// A directory.
    Dir,
    /// Anything else (regular file, symlink not followed, fifo, socket).
    Other,
}

/// Read-only look at the node's device files, so resolution is unit-tested
/// without real device nodes.
pub trait HostDevices: Send + Sync {
    /// What `path` is; `follow` resolves a final symlink.
    fn entry(&self, path: &Path, follow: bool) -> io::Result<HostEntry>;
    /// The names in directory `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
}

/// The node's real filesystem.
#[derive(Debug, Default)]
pub struct RealHostDevices;

impl HostDevices for RealHostDevices {
    fn entry(&self, path: &Path, follow: bool) -> io::Result<HostEntry> {
        let m = if follow {
            std::fs::metadata(path)?
        } else {
            std::fs::symlink_metadata(path)?
        };
        let ft = m.file_type();
        let kind = if ft.is_block_device() {
            DeviceKind::Block
        } else if ft.is_char_device() {
            DeviceKind::Char
        } else if ft.is_dir() {
            return Ok(HostEntry::Dir);
        } else {
            return Ok(HostEntry::Other);
        };
        let rdev = m.rdev();
        Ok(HostEntry::Device {
            kind,
            major: nix::sys::stat::major(rdev) as u32,
            minor: nix::sys::stat::minor(rdev) as u32,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
        })
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir)? {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
}

/// Directories never descended into, as containerd: their own filesystems
/// in every container (pts, shm, mqueue), links (fd), and runtime state.
const SKIP_DIRS: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];
/// Nodes a privileged container never takes from the host: its console and
/// ptmx belong to its own terminal and devpts instance.
const SKIP_NODES: &[&str] = &["console", "ptmx"];

/// Decides a container's devices. Every CRI device is checked before
/// anything is created, so a bad one fails CreateContainer up front.
pub fn resolve(
    requested: &[cri::Device],
    privileged: bool,
    host: &dyn HostDevices,
) -> Result<ContainerDevices> {
    let mut nodes = Vec::new();
    let mut rules = default_rules();
    if privileged {
        let mut found = Vec::new();
        walk(host, Path::new("/dev"), Path::new("/dev"), &mut found)?;
        nodes = found;
    }
    for d in requested {
        for (node, access) in cri_device(d, host)? {
            rules.push(DeviceRule {
                kind: Some(node.kind),
                major: Some(node.major),
                minor: Some(node.minor),
                access,
            });
            // The CRI device wins over a host node at the same path.
            nodes.retain(|n: &DeviceNode| n.path != node.path);
            nodes.push(node);
        }
    }
    Ok(ContainerDevices {
        nodes,
        rules: (!privileged).then_some(rules),
    })
}

/// One CRI device: its nodes and the access the filter grants them.
fn cri_device(d: &cri::Device, host: &dyn HostDevices) -> Result<Vec<(DeviceNode, Access)>> {
    let (hp, cp) = (Path::new(&d.host_path), Path::new(&d.container_path));
    if !hp.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "device host_path {:?} must be absolute",
            d.host_path
        )));
    }
    // containerd uses the host path when container_path is empty.
    let cp = if d.container_path.is_empty() { hp } else { cp };
    if !cp.is_absolute() || cp.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(Error::InvalidArgument(format!(
            "device container_path {:?} must be absolute, without ..",
            d.container_path
        )));
    }
    // Docker's default for `--device` without permissions.
    let access = if d.permissions.is_empty() {
        Access::ALL
    } else {
        Access::parse(&d.permissions).map_err(|e| match e {
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("device {:?}: {m}", d.host_path)),
            e => e,
        })?
    };
    let entry = host.entry(hp, true).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::InvalidArgument(format!(
            "device host_path {:?} does not exist on the node",
            d.host_path
        )),
        _ => Error::io(format!("stat device {}", hp.display()), e),
    })?;
    let found = match entry {
        HostEntry::Device { .. } => node_at(cp, &entry).into_iter().collect(),
        HostEntry::Dir => {
            let mut found = Vec::new();
            walk(host, hp, cp, &mut found)?;
            if found.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "device host_path {:?} is a directory without device nodes",
                    d.host_path
                )));
            }
            found
        }
        HostEntry::Other => {
            return Err(Error::InvalidArgument(format!(
                "device host_path {:?} is not a device node",
                d.host_path
            )))
        }
    };
    Ok(found.into_iter().map(|n| (n, access)).collect())
}

fn node_at(path: &Path, e: &HostEntry) -> Option<DeviceNode> {
    match *e {
        HostEntry::Device {
            kind,
            major,
            minor,
            mode,
            uid,
            gid,
        } => Some(DeviceNode {
            path: path.to_path_buf(),
            kind,
            major,
            minor,
            file_mode: mode,
            uid,
            gid,
        }),
        _ => None,
    }
}

/// Every device node below host dir `dir`, placed below `inside`. Symlinks
/// are not followed (udev's by-id links would duplicate nodes); entries that
/// vanish while we look are skipped.
fn walk(host: &dyn HostDevices, dir: &Path, inside: &Path, out: &mut Vec<DeviceNode>) -> Result<()> {
    let names = host
        .list(dir)
        .map_err(|e| Error::io(format!("list devices in {}", dir.display()), e))?;
    for name in names {
        let p = dir.join(&name);
        match host.entry(&p, false) {
            Ok(HostEntry::Dir) if !SKIP_DIRS.contains(&name.as_str()) => {
                walk(host, &p, &inside.join(&name), out)?;
            }
            Ok(e @ HostEntry::Device { .. }) if !SKIP_NODES.contains(&name.as_str()) => {
                out.extend(node_at(&inside.join(&name), &e));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("stat {}", p.display()), e)),
        }
    }
    Ok(())
}

/// Records the devices in the OCI spec: `linux.devices` (the nodes the
/// shim creates) and `linux.resources.devices` (the filter, for the record:
/// berthd installs it on the cgroup itself).
pub fn add_to_spec(spec: &mut Spec, devices: &ContainerDevices) -> Result<()> {
    let built = |e: oci_spec::OciSpecError| Error::Internal(format!("device in spec: {e}"));
    let nodes = devices
        .nodes
        .iter()
        .map(|n| {
            LinuxDeviceBuilder::default()
                .path(n.path.clone())
                .typ(device_type(n.kind))
                .major(i64::from(n.major))
                .minor(i64::from(n.minor))
                .file_mode(n.file_mode)
                .uid(n.uid)
                .gid(n.gid)
                .build()
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(built)?;
    let rule = |allow: bool, access: String| LinuxDeviceCgroupBuilder::default().allow(allow).access(access);
    let cgroup = match &devices.rules {
        None => vec![rule(true, "rwm".into()).build()],
        Some(rules) => std::iter::once(rule(false, "rwm".into()).build())
            .chain(rules.iter().map(|r| {
                let mut b = rule(true, r.access.to_string());
                if let Some(k) = r.kind {
                    b = b.typ(device_type(k));
                }
                if let Some(m) = r.major {
                    b = b.major(i64::from(m));
                }
                if let Some(m) = r.minor {
                    b = b.minor(i64::from(m));
                }
                b.build()
            }))
            .collect(),
    }
    .into_iter()
    .collect::<std::result::Result<Vec<_>, _>>()
    .map_err(built)?;
    let linux = spec.linux_mut().get_or_insert_with(super::spec::empty_linux);
    linux.set_devices(Some(nodes));
    linux
        .resources_mut()
        .get_or_insert_with(LinuxResources::default)
        .set_devices(Some(cgroup));
    Ok(())
}

fn device_type(kind: DeviceKind) -> LinuxDeviceType {
    match kind {
        DeviceKind::Block => LinuxDeviceType::B,
        DeviceKind::Char => LinuxDeviceType::C,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    /// A node's /dev as a map; directories are implied by their children.
    #[derive(Default)]
    pub(crate) struct FakeDev(BTreeMap<PathBuf, HostEntry>);

    impl FakeDev {
        fn dev(mut self, path: &str, kind: DeviceKind, major: u32, minor: u32) -> Self {
            let e = HostEntry::Device {
                kind,
                major,
                minor,
                mode: 0o660,
                uid: 0,
                gid: 6,
            };
            self.0.insert(path.into(), e);
            self
        }
        fn other(mut self, path: &str) -> Self {
            self.0.insert(path.into(), HostEntry::Other);
            self
        }
    }

    impl HostDevices for FakeDev {
        fn entry(&self, path: &Path, _follow: bool) -> io::Result<HostEntry> {
            if let Some(e) = self.0.get(path) {
                return Ok(e.clone());
            }
            if self.0.keys().any(|k| k.starts_with(path)) {
                return Ok(HostEntry::Dir);
            }
            Err(io::ErrorKind::NotFound.into())
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            let mut names: Vec<String> = self
                .0
                .keys()
                .filter_map(|k| k.strip_prefix(dir).ok())
                .filter_map(|r| r.components().next())
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            names.dedup();
            Ok(names)
        }
    }

    /// A node's /dev with the usual kinds of entries (spec golden tests use it too).
    pub(crate) fn node() -> FakeDev {
        use DeviceKind::*;
        FakeDev::default()
            .dev("/dev/null", Char, 1, 3)
            .dev("/dev/console", Char, 5, 1)
            .dev("/dev/ptmx", Char, 5, 2)
            .dev("/dev/pts/0", Char, 136, 0)
            .dev("/dev/sda", Block, 8, 0)
            .dev("/dev/loop0", Block, 7, 0)
            .dev("/dev/dri/card0", Char, 226, 0)
            .dev("/dev/dri/renderD128", Char, 226, 128)
            .other("/dev/fd")
            .other("/dev/disk/by-id/ata-x")
            .other("/etc/hostname")
    }

    pub(crate) fn cri_dev(host: &str, inside: &str, perms: &str) -> cri::Device {
        cri::Device {
            host_path: host.into(),
            container_path: inside.into(),
            permissions: perms.into(),
        }
    }

    #[test]
    fn a_cri_device_gets_a_node_and_exactly_its_permissions() {
        let d = resolve(&[cri_dev("/dev/loop0", "/dev/disk0", "r")], false, &node()).unwrap();
        assert_eq!(
            d.nodes,
            vec![DeviceNode {
                path: "/dev/disk0".into(),
                kind: DeviceKind::Block,
                major: 7,
                minor: 0,
                file_mode: 0o660,
                uid: 0,
                gid: 6,
            }]
        );
        let rules = d.rules.unwrap();
        assert_eq!(rules.len(), default_rules().len() + 1);
        assert_eq!(rules.last().unwrap().to_string(), "b 7:0 r");
        use crate::cgroup::device_filter::allowed;
        assert!(allowed(&rules, DeviceKind::Block, 7, 0, Access::READ));
        assert!(!allowed(&rules, DeviceKind::Block, 7, 0, Access::WRITE));
        assert!(!allowed(&rules, DeviceKind::Block, 8, 0, Access::READ));
    }

    #[test]
    fn directories_expand_and_bad_devices_are_invalid_arguments() {
        let d = resolve(&[cri_dev("/dev/dri", "/dev/dri", "rw")], false, &node()).unwrap();
        let paths: Vec<_> = d.nodes.iter().map(|n| n.path.clone()).collect();
        assert_eq!(
            paths,
            vec![PathBuf::from("/dev/dri/card0"), "/dev/dri/renderD128".into()]
        );
        let empty_inside = resolve(&[cri_dev("/dev/loop0", "", "")], false, &node()).unwrap();
        assert_eq!(empty_inside.nodes[0].path, PathBuf::from("/dev/loop0"));
        assert_eq!(
            empty_inside.rules.unwrap().last().unwrap().to_string(),
            "b 7:0 rwm"
        );
        for (bad, says) in [
            (cri_dev("/dev/nope", "/dev/x", "rw"), "does not exist"),
            (cri_dev("/etc/hostname", "/dev/x", "rw"), "not a device"),
            (cri_dev("/dev/disk", "/dev/x", "rw"), "without device nodes"),
            (cri_dev("dev/loop0", "/dev/x", "rw"), "absolute"),
            (cri_dev("/dev/loop0", "x", "rw"), "absolute"),
            (cri_dev("/dev/loop0", "/dev/../x", "rw"), "absolute"),
            (cri_dev("/dev/loop0", "/dev/x", "rx"), "only r, w and m"),
        ] {
            match resolve(std::slice::from_ref(&bad), false, &node()) {
                Err(Error::InvalidArgument(m)) => assert!(m.contains(says), "{bad:?}: {m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn privileged_gets_the_hosts_devices_and_no_filter() {
        let d = resolve(&[cri_dev("/dev/loop0", "/dev/xd", "r")], true, &node()).unwrap();
        assert_eq!(d.rules, None);
        let paths: Vec<String> = d.nodes.iter().map(|n| n.path.display().to_string()).collect();
        assert_eq!(
            paths,
            [
                "/dev/dri/card0",
                "/dev/dri/renderD128",
                "/dev/loop0",
                "/dev/null",
                "/dev/sda",
                "/dev/xd"
            ],
            "no console, ptmx, pts or links"
        );
        let mut spec = Spec::default();
        spec.set_linux(None);
        add_to_spec(&mut spec, &d).unwrap();
        let spec = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            spec["linux"]["resources"]["devices"],
            json!([{"allow": true, "access": "rwm"}])
        );
    }

    #[test]
    fn spec_records_nodes_and_the_allow_list() {
        let d = resolve(&[cri_dev("/dev/loop0", "/dev/xd", "rw")], false, &node()).unwrap();
        let mut parsed = Spec::default();
        parsed.set_linux(None);
        add_to_spec(&mut parsed, &d).unwrap();
        let spec = serde_json::to_value(&parsed).unwrap();
        let linux = parsed.linux().as_ref().unwrap();
        let devs = linux.devices().as_ref().unwrap();
        assert_eq!(devs.len(), 1);
        assert_eq!(devs[0].path(), Path::new("/dev/xd"));
        assert_eq!((devs[0].major(), devs[0].minor()), (7, 0));
        assert_eq!(devs[0].file_mode(), Some(0o660));
        let cg = linux.resources().as_ref().unwrap().devices().as_ref().unwrap();
        assert_eq!(cg.len(), 1 + default_rules().len() + 1);
        assert!(!cg[0].allow());
        assert_eq!(
            spec["linux"]["resources"]["devices"][1],
            json!({"allow": true, "type": "c", "access": "m"})
        );
        assert_eq!(
            spec["linux"]["resources"]["devices"][12],
            json!({"allow": true, "type": "b", "major": 7, "minor": 0, "access": "rw"})
        );
    }
}
