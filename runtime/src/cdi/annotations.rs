//! The older way to request CDI devices: container annotations
//! `cdi.k8s.io/<key>: vendor.com/class=name[,vendor.com/class=name...]`
//! (used by device plugins before `CDI_devices`, and still by some), read
//! as containerd and CRI-O read them.

use std::collections::HashMap;

use super::name::QualifiedName;
use super::CdiError;

/// The annotation key prefix of CDI device requests.
pub const PREFIX: &str = "cdi.k8s.io/";

/// The devices a container requests: the `CDI_devices` names, then those
/// of its `cdi.k8s.io/` annotations in key order (duplicates are dropped
/// later, by [`super::Cdi::resolve`]). Every annotated name must be a
/// qualified device name: a typo is InvalidArgument naming the key, never
/// a device silently not granted.
pub fn requested(
    cdi_devices: &[String],
    annotations: &HashMap<String, String>,
) -> Result<Vec<String>, CdiError> {
    let mut out = cdi_devices.to_vec();
    let mut keys: Vec<&String> = annotations.keys().filter(|k| k.starts_with(PREFIX)).collect();
    keys.sort();
    for key in keys {
        for d in annotations[key].split(',') {
            let d = d.trim();
            QualifiedName::parse(d).map_err(|reason| CdiError::BadName {
                name: d.to_string(),
                reason: format!("in annotation {key:?}: {reason}"),
            })?;
            out.push(d.to_string());
        }
    }
    Ok(out)
}
