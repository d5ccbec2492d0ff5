//! Reboot detection. Records under `root` (`/var/lib/berth`) survive a
//! reboot while everything they describe (shims, containers, namespace
//! pins under `/run`, cgroups) is gone. The kernel's boot id, stored with
//! the records, tells the two apart: a different id at start means every
//! pod record is stale. The new id is stored only after the stale records
//! are cleaned, so a crash mid-cleanup cleans again on the next start.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store;

/// Where Linux tells the id of the running boot.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// The record's file name under `root`.
const RECORD: &str = "boot.json";

#[derive(Debug, Serialize, Deserialize)]
struct BootRecord {
    boot_id: String,
}

/// What the stored boot id says about the records next to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// No boot id stored (first start, or state from a berthd that did
    /// not store one): nothing can be said, the records are kept.
    Unknown,
    /// Same boot: the records describe live pods (or their remains).
    Same,
    /// The node rebooted since the records were written.
    Rebooted {
        /// The boot the records were written in.
        previous: String,
    },
}

/// The running boot's id, read from `source` ([`BOOT_ID_PATH`] on a node).
pub fn current(source: &Path) -> Result<String> {
    let id =
        std::fs::read_to_string(source).map_err(|e| Error::io(format!("read {}", source.display()), e))?;
    let id = id.trim();
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(Error::Internal(format!(
            "{}: not a boot id: {id:?}",
            source.display()
        )));
    }
    Ok(id.to_string())
}

fn record_path(root: &Path) -> PathBuf {
    root.join(RECORD)
}

/// Compares the boot id stored under `root` with `current`.
pub fn check(root: &Path, current: &str) -> Result<Boot> {
    let path = record_path(root);
    if !path.exists() {
        return Ok(Boot::Unknown);
    }
    let rec: BootRecord = store::read_record(&path)?;
    Ok(if rec.boot_id == current {
        Boot::Same
    } else {
        Boot::Rebooted {
            previous: rec.boot_id,
        }
    })
}

/// Stores `current` as the boot the records under `root` belong to.
pub fn record(root: &Path, current: &str) -> Result<()> {
    store::write_record(
        &record_path(root),
        &BootRecord {
            boot_id: current.to_string(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_boot_id_means_a_reboot_until_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let proc_id = dir.path().join("boot_id");
        let root = dir.path().join("root");
        std::fs::write(&proc_id, "1b0c5f0e-7d0a-4a53-9c35-0c4d8e7f0a11\n").unwrap();
        let first = current(&proc_id).unwrap();
        assert_eq!(first, "1b0c5f0e-7d0a-4a53-9c35-0c4d8e7f0a11");
        assert_eq!(check(&root, &first).unwrap(), Boot::Unknown);
        record(&root, &first).unwrap();
        assert_eq!(check(&root, &first).unwrap(), Boot::Same);

        std::fs::write(&proc_id, "9f1e2d3c-0000-4a53-9c35-0c4d8e7f0a22\n").unwrap();
        let second = current(&proc_id).unwrap();
        let rebooted = Boot::Rebooted {
            previous: first.clone(),
        };
        assert_eq!(check(&root, &second).unwrap(), rebooted);
        // Until the cleanup records the new boot, every start sees the reboot.
        assert_eq!(check(&root, &second).unwrap(), rebooted);
        record(&root, &second).unwrap();
        assert_eq!(check(&root, &second).unwrap(), Boot::Same);
    }

    #[test]
    fn a_garbled_boot_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("boot_id");
        std::fs::write(&p, "../../etc\n").unwrap();
        assert!(current(&p).is_err());
        std::fs::write(&p, "").unwrap();
        assert!(current(&p).is_err());
        assert!(current(&dir.path().join("missing")).is_err());
    }
}
