//! CDI (Container Device Interface): devices that device plugins hand to
//! containers by name (`ContainerConfig.CDI_devices`, `vendor.com/class=name`),
//! described by spec files in `/etc/cdi` and `/var/run/cdi` (configurable).
//!
//! [`Cdi::resolve`] turns the requested names into the edits of their spec
//! files, all of them or an error; [`apply`] makes those edits on the
//! container's OCI spec and device list before CreateContainer has done
//! anything, so a bad device leaves nothing behind. A device's hooks go
//! into the spec; the shim runs them at their OCI moments.

pub mod annotations;
pub mod apply;
mod cache;
mod error;
pub mod hooks;
pub mod name;
pub mod spec;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::PathBuf;

pub use error::CdiError;
use name::QualifiedName;
use spec::ContainerEdits;

/// One set of edits to make, and whose they are (for errors).
#[derive(Debug, Clone)]
pub struct EditSet {
    /// The requested device.
    pub device: QualifiedName,
    /// Its spec file.
    pub file: PathBuf,
    /// The edits.
    pub edits: ContainerEdits,
}

/// What Status reports about CDI.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The spec directories, lowest priority first.
    pub spec_dirs: Vec<PathBuf>,
    /// Spec files read.
    pub spec_files: usize,
    /// Devices that can be requested.
    pub devices: usize,
    /// Files that cannot be used (while one is there, every CDI request
    /// fails) and devices two files of one directory define.
    pub errors: Vec<String>,
}

/// The node's CDI specs.
#[derive(Debug)]
pub struct Cdi {
    cache: cache::SpecCache,
}

impl Cdi {
    /// CDI over `dirs`; a later directory's device replaces an earlier's.
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Cdi {
            cache: cache::SpecCache::new(dirs),
        }
    }

    /// The edits of every requested device, in request order: each
    /// device's spec-wide edits (once per spec file), then its own.
    /// Nothing is read when no device is requested.
    pub fn resolve(&self, requested: &[String]) -> Result<Vec<EditSet>, CdiError> {
        if requested.is_empty() {
            return Ok(Vec::new());
        }
        let mut names = Vec::new();
        for r in requested {
            let n = QualifiedName::parse(r).map_err(|reason| CdiError::BadName {
                name: r.clone(),
                reason,
            })?;
            if !names.contains(&n) {
                names.push(n);
            }
        }
        let index = self.cache.index();
        // A broken file may define, or override, a requested device:
        // resolving around it could hand out the wrong device.
        if let Some((file, reason)) = index.broken.first() {
            return Err(cache::broken_error(file, reason));
        }
        let mut out = Vec::new();
        let mut files_done = HashSet::new();
        for name in names {
            if let Some((first, second)) = index.conflicts.get(&name) {
                return Err(CdiError::Conflict {
                    name: name.to_string(),
                    first: first.clone(),
                    second: second.clone(),
                });
            }
            let entry = index.devices.get(&name).ok_or_else(|| CdiError::UnknownDevice {
                name: name.to_string(),
                dirs: self.dirs_text(),
            })?;
            let spec = &entry.spec.spec;
            let device = &spec.devices[entry.device];
            for edits in [&spec.container_edits, &device.container_edits] {
                check_supported(&name, &entry.file, edits)?;
            }
            if files_done.insert(entry.file.clone()) && !spec.container_edits.is_empty() {
                out.push(EditSet {
                    device: name.clone(),
                    file: entry.file.clone(),
                    edits: spec.container_edits.clone(),
                });
            }
            out.push(EditSet {
                device: name,
                file: entry.file.clone(),
                edits: device.container_edits.clone(),
            });
        }
        Ok(out)
    }

    /// The directories and what they hold, re-read if changed.
    pub fn summary(&self) -> Summary {
        let index = self.cache.index();
        let mut errors: Vec<String> = index
            .broken
            .iter()
            .map(|(f, r)| cache::broken_error(f, r).to_string())
            .collect();
        errors.extend(index.conflicts.iter().map(|(n, (a, b))| {
            CdiError::Conflict {
                name: n.to_string(),
                first: a.clone(),
                second: b.clone(),
            }
            .to_string()
        }));
        errors.sort();
        Summary {
            spec_dirs: self.cache.dirs().to_vec(),
            spec_files: index.files,
            devices: index.devices.len(),
            errors,
        }
    }

    fn dirs_text(&self) -> String {
        let dirs: Vec<String> = self
            .cache
            .dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        dirs.join(", ")
    }
}

/// Edits berth cannot make are refused by name, never skipped.
fn check_supported(
    name: &QualifiedName,
    file: &std::path::Path,
    edits: &ContainerEdits,
) -> Result<(), CdiError> {
    let unsupported = if edits.intel_rdt.is_some() {
        "intelRdt"
    } else if !edits.net_devices.is_empty() {
        "netDevices"
    } else {
        return Ok(());
    };
    Err(CdiError::BadEdit {
        name: name.to_string(),
        file: file.to_path_buf(),
        reason: format!("{unsupported} edits are not supported by berth"),
    })
}
