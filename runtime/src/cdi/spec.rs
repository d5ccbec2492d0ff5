//! One CDI spec file: its serde types (field names as the CDI SPEC.md
//! writes them) and the checks a file must pass to be used at all.
//!
//! Unknown fields are refused, as the CDI library does: a field we do not
//! know is an edit we would silently skip, and a half-applied device is
//! worse than a refused one.

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use super::name::{check_device_name, Kind};

/// The oldest `cdiVersion` read (the first tagged release).
const OLDEST: (u64, u64) = (0, 3);
/// The newest `cdiVersion` read (1.1 added `netDevices`, refused when used).
const NEWEST: (u64, u64) = (1, 1);

/// A spec file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SpecFile {
    /// Semantic version of the CDI spec the file follows.
    pub cdi_version: String,
    /// `vendor.com/class`.
    pub kind: String,
    /// Metadata for consumers; no effect on containers.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The devices the file defines (at least one).
    pub devices: Vec<Device>,
    /// Edits made once when any of the file's devices is requested.
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// One device of a spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Device {
    /// The name within the spec's kind.
    pub name: String,
    /// Metadata for consumers; no effect on containers.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Edits made when this device is requested.
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// What a device does to the container's OCI spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerEdits {
    /// `NAME=value` lines.
    #[serde(default)]
    pub env: Vec<String>,
    /// Device nodes to create (and allow in the device filter).
    #[serde(default)]
    pub device_nodes: Vec<DeviceNode>,
    /// Mounts to add.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// OCI hooks, run by the shim at their moments.
    #[serde(default)]
    pub hooks: Vec<Hook>,
    /// Groups the process gets (0 is ignored, as the spec says).
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    /// resctrl settings: not supported, refused when applied.
    #[serde(default)]
    pub intel_rdt: Option<IntelRdt>,
    /// Host interfaces moved into the container: not supported, refused
    /// when applied.
    #[serde(default)]
    pub net_devices: Vec<NetDevice>,
}

/// A device node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceNode {
    /// Where, inside the container.
    pub path: String,
    /// The node on the host; `path` when absent.
    #[serde(default)]
    pub host_path: Option<String>,
    /// `c`, `u`, `b` or `p`; the host node's when absent.
    #[serde(default)]
    pub r#type: Option<String>,
    /// Major number; the host node's when absent.
    #[serde(default)]
    pub major: Option<i64>,
    /// Minor number; the host node's when absent.
    #[serde(default)]
    pub minor: Option<i64>,
    /// Mode bits; the host node's when absent.
    #[serde(default)]
    pub file_mode: Option<u32>,
    /// Device-filter access (`r`, `w`, `m`); `rwm` when empty, none for
    /// `none`.
    #[serde(default)]
    pub permissions: Option<String>,
    /// Owner inside the container.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Group inside the container.
    #[serde(default)]
    pub gid: Option<u32>,
}

/// A mount.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mount {
    /// Source on the host.
    pub host_path: String,
    /// Destination inside the container.
    pub container_path: String,
    /// OCI mount options.
    #[serde(default)]
    pub options: Vec<String>,
    /// Filesystem type (`bind` or a dummy such as `none` for bind mounts).
    #[serde(default)]
    pub r#type: Option<String>,
}

/// An OCI hook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Hook {
    /// `createRuntime`, `createContainer`, `startContainer`, `poststart`, `poststop`.
    pub hook_name: String,
    /// Absolute path of the program.
    pub path: String,
    /// argv.
    #[serde(default)]
    pub args: Vec<String>,
    /// environ.
    #[serde(default)]
    pub env: Vec<String>,
    /// Seconds.
    #[serde(default)]
    pub timeout: Option<i64>,
}

/// Intel RDT settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IntelRdt {
    /// Class of service.
    #[serde(default, rename = "closID")]
    pub clos_id: Option<String>,
    /// L3 schema.
    #[serde(default)]
    pub l3_cache_schema: Option<String>,
    /// Memory bandwidth schema.
    #[serde(default)]
    pub mem_bw_schema: Option<String>,
    /// Schemata lines.
    #[serde(default)]
    pub schemata: Vec<String>,
    /// Monitoring.
    #[serde(default)]
    pub enable_monitoring: bool,
}

/// A network interface to move.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetDevice {
    /// Name on the host.
    pub host_interface_name: String,
    /// Name inside the container.
    pub name: String,
}

impl ContainerEdits {
    /// Whether the edits do nothing.
    pub fn is_empty(&self) -> bool {
        self.env.is_empty()
            && self.device_nodes.is_empty()
            && self.mounts.is_empty()
            && self.hooks.is_empty()
            && self.additional_gids.is_empty()
            && self.intel_rdt.is_none()
            && self.net_devices.is_empty()
    }
}

/// A checked spec file: its kind parsed, its devices named correctly and
/// once each.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The kind.
    pub kind: Kind,
    /// The file as written.
    pub spec: SpecFile,
}

/// Parses a file's bytes: `.json` with serde_json (its errors give line
/// and column of plain JSON), `.yaml`/`.yml` with the YAML parser. The
/// error is the reason; the caller names the file.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Parsed, String> {
    let spec: SpecFile = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())?
    } else {
        serde_yaml_ng::from_slice(bytes).map_err(|e| e.to_string())?
    };
    check_version(&spec.cdi_version)?;
    let kind = Kind::parse(&spec.kind)?;
    if spec.devices.is_empty() {
        return Err("defines no devices".into());
    }
    let mut seen = HashSet::new();
    for d in &spec.devices {
        check_device_name(&d.name)?;
        if !seen.insert(d.name.as_str()) {
            return Err(format!("device {:?} is defined twice", d.name));
        }
    }
    Ok(Parsed { kind, spec })
}

/// `MAJOR.MINOR.PATCH` (a pre-release or build suffix allowed) within the
/// versions this runtime reads.
fn check_version(v: &str) -> Result<(), String> {
    let core = v.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<u64> = core
        .split('.')
        .map(|p| p.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("cdiVersion {v:?} is not a semantic version"))?;
    let [major, minor, _patch] = parts[..] else {
        return Err(format!("cdiVersion {v:?} is not a semantic version"));
    };
    if (major, minor) < OLDEST || (major, minor) > NEWEST {
        return Err(format!(
            "cdiVersion {v:?} is not supported (berth reads {}.{}.0 to {}.{}.x)",
            OLDEST.0, OLDEST.1, NEWEST.0, NEWEST.1
        ));
    }
    Ok(())
}
