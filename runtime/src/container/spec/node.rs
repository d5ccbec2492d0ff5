//! What the node adds to a built spec: its AppArmor profile and the
//! configured rlimits (CRI carries neither).

use std::str::FromStr;

use oci_spec::runtime::{PosixRlimit, PosixRlimitBuilder, PosixRlimitType, Spec};

use crate::config::Rlimit;
use crate::error::{Error, Result};

/// `process.apparmorProfile`; None leaves the process unconfined.
pub fn set_apparmor_profile(spec: &mut Spec, profile: Option<String>) {
    if let Some(p) = spec.process_mut() {
        p.set_apparmor_profile(profile);
    }
}

/// `process.rlimits`: the node's limits, the same for every container;
/// none configured leaves berthd's own.
pub fn set_rlimits(spec: &mut Spec, rlimits: &[Rlimit]) -> Result<()> {
    if rlimits.is_empty() {
        return Ok(());
    }
    let typed = rlimits.iter().map(rlimit).collect::<Result<Vec<_>>>()?;
    if let Some(p) = spec.process_mut() {
        p.set_rlimits(Some(typed));
    }
    Ok(())
}

/// One configured limit (its name was checked when the config was read).
fn rlimit(r: &Rlimit) -> Result<PosixRlimit> {
    let typ = PosixRlimitType::from_str(&r.kind)
        .map_err(|_| Error::Internal(format!("config container_rlimits: unknown type {:?}", r.kind)))?;
    PosixRlimitBuilder::default()
        .typ(typ)
        .soft(r.soft)
        .hard(r.hard)
        .build()
        .map_err(|e| Error::Internal(format!("rlimit {}: {e}", r.kind)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_rlimits_get_their_type() {
        for name in [
            "RLIMIT_NOFILE",
            "RLIMIT_RTTIME",
            "RLIMIT_SIGPENDING",
            "RLIMIT_MSGQUEUE",
        ] {
            let r = Rlimit {
                kind: name.to_string(),
                soft: 1,
                hard: 2,
            };
            assert_eq!(rlimit(&r).unwrap().typ().to_string(), name);
        }
        let bad = Rlimit {
            kind: "RLIMIT_FILES".into(),
            soft: 1,
            hard: 1,
        };
        assert!(rlimit(&bad).is_err());
    }
}
