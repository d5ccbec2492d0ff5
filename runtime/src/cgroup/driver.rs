//! Cgroup paths by driver. kubelet names pod cgroups the way its own cgroup
//! driver does, and the runtime must agree (RuntimeConfig tells kubelet which
//! one Berth uses):
//!
//! * `cgroupfs`: `cgroup_parent` is a path (`/kubepods/besteffort/pod<uid>`);
//!   containers go to `<parent>/<container-id>`.
//! * `systemd`: `cgroup_parent` is a slice name (`kubepods-besteffort-pod<uid>.slice`)
//!   that systemd places at `/kubepods.slice/kubepods-besteffort.slice/...`;
//!   containers are `berth-<id>.scope` units inside it, made through
//!   systemd's D-Bus API ([`super::systemd`]); the paths here are where
//!   systemd puts them.

pub use crate::config::cgroup_driver::CgroupDriver;
use crate::error::{Error, Result};

/// Expands a systemd slice name to its path: `a-b-c.slice` is
/// `/a.slice/a-b.slice/a-b-c.slice`; `-.slice` is the root.
pub fn expand_slice(slice: &str) -> Result<String> {
    let bad = || {
        Error::InvalidArgument(format!(
            "cgroup_parent {slice:?} is not a systemd slice name (like kubepods-besteffort-pod<uid>.slice)"
        ))
    };
    let name = slice.strip_suffix(".slice").ok_or_else(bad)?;
    if name == "-" {
        return Ok("/".into());
    }
    if name.is_empty()
        || name.contains('/')
        || name.starts_with('-')
        || name.ends_with('-')
        || name.contains("--")
    {
        return Err(bad());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
    }
    Ok(path)
}

/// The pod's cgroup path below the cgroup2 root.
pub fn pod_path(
    driver: CgroupDriver,
    cgroup_parent: &str,
    sandbox_id: &str,
    default_parent: &str,
) -> Result<String> {
    match driver {
        CgroupDriver::Cgroupfs | CgroupDriver::Auto if cgroup_parent.is_empty() => {
            Ok(format!("{}/{sandbox_id}", default_parent.trim_end_matches('/')))
        }
        CgroupDriver::Cgroupfs | CgroupDriver::Auto => {
            if !cgroup_parent.starts_with('/') || cgroup_parent.ends_with(".slice") {
                return Err(Error::InvalidArgument(format!(
                    "cgroup_parent {cgroup_parent:?}: the cgroupfs driver takes an absolute path \
                     (is kubelet's cgroupDriver systemd? then set cgroup_driver = \"systemd\")"
                )));
            }
            Ok(cgroup_parent.to_string())
        }
        CgroupDriver::Systemd if cgroup_parent.is_empty() => expand_slice(&format!(
            "berth-pod{}.slice",
            &sandbox_id[..sandbox_id.len().min(16)]
        )),
        CgroupDriver::Systemd => expand_slice(cgroup_parent),
    }
}

/// Whether `s` has the shape of a Berth id (64 lowercase hex digits).
pub fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The container id a child cgroup of a pod's cgroup is named after, if it
/// is named the way [`container_path`] names container cgroups.
pub fn container_id_of(driver: CgroupDriver, name: &str) -> Option<&str> {
    let id = match driver {
        CgroupDriver::Cgroupfs | CgroupDriver::Auto => name,
        CgroupDriver::Systemd => name.strip_prefix("berth-")?.strip_suffix(".scope")?,
    };
    is_id(id).then_some(id)
}

/// A container's cgroup path inside its pod's.
pub fn container_path(driver: CgroupDriver, pod_path: &str, container_id: &str) -> String {
    let pod = pod_path.trim_end_matches('/');
    match driver {
        CgroupDriver::Cgroupfs | CgroupDriver::Auto => format!("{pod}/{container_id}"),
        CgroupDriver::Systemd => format!("{pod}/berth-{container_id}.scope"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_expand_like_systemd() {
        assert_eq!(
            expand_slice("kubepods-besteffort-pod1234.slice").unwrap(),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice"
        );
        assert_eq!(expand_slice("kubepods.slice").unwrap(), "/kubepods.slice");
        assert_eq!(expand_slice("-.slice").unwrap(), "/");
        for bad in [
            "kubepods",
            "/kubepods.slice",
            "a--b.slice",
            "-a.slice",
            "a-.slice",
            ".slice",
        ] {
            assert!(expand_slice(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pod_and_container_paths_per_driver() {
        use CgroupDriver::*;
        assert_eq!(pod_path(Cgroupfs, "", "abc", "/berth").unwrap(), "/berth/abc");
        assert_eq!(
            pod_path(Cgroupfs, "/kubepods/pod1", "abc", "/berth").unwrap(),
            "/kubepods/pod1"
        );
        let e = pod_path(Cgroupfs, "kubepods-pod1.slice", "abc", "/berth")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cgroup_driver = \"systemd\""), "{e}");
        assert_eq!(
            pod_path(Systemd, "kubepods-burstable-pod9.slice", "abc", "/berth").unwrap(),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod9.slice"
        );
        assert_eq!(
            pod_path(Systemd, "", "0123456789abcdef0123", "/berth").unwrap(),
            "/berth.slice/berth-pod0123456789abcdef.slice"
        );
        assert!(pod_path(Systemd, "/kubepods/pod1", "abc", "/berth").is_err());
        assert_eq!(container_path(Cgroupfs, "/k/p", "c1"), "/k/p/c1");
        assert_eq!(
            container_path(Systemd, "/k.slice/p.slice", "c1"),
            "/k.slice/p.slice/berth-c1.scope"
        );
    }
}
