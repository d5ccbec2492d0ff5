//! supplementalGroupsPolicy (Kubernetes v1.35): Merge adds the groups the
//! image's /etc/group gives the user; Strict uses only the primary gid and
//! the groups from the CRI config. Operators can enforce Strict node-wide,
//! and every container where Merge actually added groups is logged and
//! counted, so they can find the pods Strict would change before enforcing.

use std::sync::atomic::Ordering;

use berth_proto::cri;

pub use crate::config::supplemental_groups::Enforcement;
use crate::error::{Error, Result};
use crate::metrics::counters::MERGED_IMAGE_GROUPS;

fn is_strict(cfg: &cri::ContainerConfig) -> bool {
    cfg.linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.supplemental_groups_policy == cri::SupplementalGroupsPolicy::Strict as i32)
}

/// Applies the node's enforcement to a container config. Returns the config
/// to use (upgraded to Strict if so configured) or the refusal.
pub fn enforce(cfg: &cri::ContainerConfig, mode: Enforcement) -> Result<Option<cri::ContainerConfig>> {
    if is_strict(cfg) || mode == Enforcement::Off {
        return Ok(None);
    }
    let name = cfg.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("");
    match mode {
        Enforcement::Off => Ok(None),
        Enforcement::Reject => Err(Error::InvalidArgument(format!(
            "container {name:?} asks for supplementalGroupsPolicy Merge, but this node enforces Strict \
             (berthd config supplemental_groups_enforcement = \"reject\")"
        ))),
        Enforcement::Upgrade => {
            tracing::info!(container = %name, "supplementalGroupsPolicy Merge upgraded to Strict by node policy");
            let mut c = cfg.clone();
            let linux = c.linux.get_or_insert_with(Default::default);
            linux
                .security_context
                .get_or_insert_with(Default::default)
                .supplemental_groups_policy = cri::SupplementalGroupsPolicy::Strict as i32;
            Ok(Some(c))
        }
    }
}

/// Logs and counts a container whose groups came partly from the image.
pub fn note_implicit_groups(container: &str, image: &str, implicit: &[u32]) {
    if implicit.is_empty() {
        return;
    }
    let n = MERGED_IMAGE_GROUPS.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::warn!(
        container = %container,
        image = %image,
        gids = ?implicit,
        total = n,
        "supplementalGroupsPolicy Merge added groups from the image's /etc/group; Strict would drop them"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(policy: cri::SupplementalGroupsPolicy) -> cri::ContainerConfig {
        cri::ContainerConfig {
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    supplemental_groups_policy: policy as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn enforcement_modes() {
        let merge = cfg(cri::SupplementalGroupsPolicy::Merge);
        let strict = cfg(cri::SupplementalGroupsPolicy::Strict);
        assert!(enforce(&merge, Enforcement::Off).unwrap().is_none());
        assert!(
            enforce(&strict, Enforcement::Reject).unwrap().is_none(),
            "Strict always passes"
        );
        let up = enforce(&merge, Enforcement::Upgrade).unwrap().unwrap();
        assert!(is_strict(&up));
        assert!(is_strict(
            &enforce(&cri::ContainerConfig::default(), Enforcement::Upgrade)
                .unwrap()
                .unwrap()
        ));
        let e = enforce(&merge, Enforcement::Reject).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)) && e.to_string().contains("enforces Strict"));
    }

    #[test]
    fn implicit_groups_are_counted() {
        let before = MERGED_IMAGE_GROUPS.load(Ordering::Relaxed);
        note_implicit_groups("c", "img", &[]);
        note_implicit_groups("c", "img", &[50000]);
        assert_eq!(MERGED_IMAGE_GROUPS.load(Ordering::Relaxed), before + 1);
    }
}
