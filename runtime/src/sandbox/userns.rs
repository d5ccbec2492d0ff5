//! `NamespaceOption.userns_options`: which user namespace a pod runs in.
//!
//! kubelet sends mode NODE for `hostUsers: true` (or nothing at all, from
//! older clients) and mode POD with one uid and one gid range for
//! `hostUsers: false`. Everything is checked here, before RunPodSandbox
//! creates anything, so a refused request leaves no intent, cgroup, shim or
//! network behind. CONTAINER and TARGET are refused, as the CRI says.

use berth_proto::cri::{IdMapping, NamespaceMode, UserNamespace};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The size of the range kubelet gives each pod (and the alignment of its
/// host id): one full 16-bit id space, so uid 0..65535 inside all map.
pub const RANGE: u32 = 65536;

/// One contiguous range: container ids `container_id..container_id+length`
/// are host ids `host_id..host_id+length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    /// First id inside the namespace.
    pub container_id: u32,
    /// First id on the node.
    pub host_id: u32,
    /// Number of ids.
    pub length: u32,
}

/// A pod's own user namespace: its uid and gid ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodUserns {
    /// The uid range.
    pub uid: IdMap,
    /// The gid range.
    pub gid: IdMap,
}

/// Validates a pod's `userns_options`: `None` for the node's user namespace
/// (mode NODE or no options), the pod's mappings for a valid mode POD.
pub fn validate(opts: Option<&UserNamespace>) -> Result<Option<PodUserns>> {
    let Some(opts) = opts else {
        return Ok(None);
    };
    match NamespaceMode::try_from(opts.mode) {
        Ok(NamespaceMode::Node) => {
            if !opts.uids.is_empty() || !opts.gids.is_empty() {
                return Err(Error::InvalidArgument(
                    "user namespace mode NODE takes no uid or gid mappings".into(),
                ));
            }
            Ok(None)
        }
        Ok(NamespaceMode::Pod) => Ok(Some(PodUserns {
            uid: one_range("uid", &opts.uids)?,
            gid: one_range("gid", &opts.gids)?,
        })),
        Ok(NamespaceMode::Container) | Ok(NamespaceMode::Target) => Err(Error::InvalidArgument(format!(
            "user namespace mode {} is not supported (only POD and NODE are)",
            mode_name(opts.mode)
        ))),
        Err(_) => Err(Error::InvalidArgument(format!(
            "unknown user namespace mode {}",
            opts.mode
        ))),
    }
}

/// Checks a container's copy of `userns_options` against its pod's: kubelet
/// sends the pod's own options again, so anything else is a confused caller.
pub fn check_container(opts: Option<&UserNamespace>, pod: Option<&PodUserns>) -> Result<()> {
    let mine = validate(opts)?;
    if mine.as_ref() == pod {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "container user namespace ({}) differs from its pod's ({})",
        describe(mine.as_ref()),
        describe(pod)
    )))
}

/// One range starting at container id 0, at a non-zero host id (host id 0
/// would be the node's root), within the 32-bit id space. kubelet sends
/// `RANGE` ids at a multiple of `RANGE`; other sizes and alignments are
/// accepted as the CRI allows them (critest's own POD spec maps
/// `0 1000 100000`).
fn one_range(kind: &str, maps: &[IdMapping]) -> Result<IdMap> {
    let [m] = maps else {
        return Err(Error::InvalidArgument(format!(
            "user namespace mode POD needs exactly one {kind} mapping, got {}",
            maps.len()
        )));
    };
    let bad = |what: String| Err(Error::InvalidArgument(format!("{kind} mapping: {what}")));
    if m.container_id != 0 {
        return bad(format!("container id must be 0, got {}", m.container_id));
    }
    if m.length == 0 {
        return bad("length must not be 0".into());
    }
    if m.host_id == 0 {
        return bad("host id must not be 0 (the node's root)".into());
    }
    if m.host_id.checked_add(m.length).is_none() {
        return bad(format!(
            "host ids {}+{} run past the 32-bit id space",
            m.host_id, m.length
        ));
    }
    Ok(IdMap {
        container_id: m.container_id,
        host_id: m.host_id,
        length: m.length,
    })
}

fn mode_name(mode: i32) -> &'static str {
    NamespaceMode::try_from(mode).map_or("unknown", |m| m.as_str_name())
}

fn describe(u: Option<&PodUserns>) -> String {
    match u {
        None => "the node's".into(),
        Some(u) => format!(
            "uid {}+{}, gid {}+{}",
            u.uid.host_id, u.uid.length, u.gid.host_id, u.gid.length
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(container_id: u32, host_id: u32, length: u32) -> IdMapping {
        IdMapping {
            host_id,
            container_id,
            length,
        }
    }

    fn pod(uids: Vec<IdMapping>, gids: Vec<IdMapping>) -> UserNamespace {
        UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids,
            gids,
        }
    }

    fn refused(opts: &UserNamespace) -> String {
        let e = validate(Some(opts)).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        e.to_string()
    }

    #[test]
    fn absent_and_node_mean_the_nodes_namespace() {
        assert_eq!(validate(None).unwrap(), None);
        let node = UserNamespace {
            mode: NamespaceMode::Node as i32,
            ..Default::default()
        };
        assert_eq!(validate(Some(&node)).unwrap(), None);
        let node_with_maps = UserNamespace {
            uids: vec![map(0, RANGE, RANGE)],
            ..node
        };
        assert!(refused(&node_with_maps).contains("NODE takes no"));
    }

    #[test]
    fn what_kubelet_sends_is_accepted() {
        let u = validate(Some(&pod(
            vec![map(0, 2 * RANGE, RANGE)],
            vec![map(0, 3 * RANGE, RANGE)],
        )))
        .unwrap()
        .unwrap();
        assert_eq!(
            u.uid,
            IdMap {
                container_id: 0,
                host_id: 2 * RANGE,
                length: RANGE
            }
        );
        assert_eq!(u.gid.host_id, 3 * RANGE);
        // critest's mapping: neither 65536 long nor aligned.
        let c = validate(Some(&pod(
            vec![map(0, 1000, 100_000)],
            vec![map(0, 1000, 100_000)],
        )))
        .unwrap()
        .unwrap();
        assert_eq!((c.uid.host_id, c.uid.length), (1000, 100_000));
    }

    #[test]
    fn container_and_target_modes_are_refused() {
        for mode in [NamespaceMode::Container, NamespaceMode::Target] {
            let o = UserNamespace {
                mode: mode as i32,
                ..Default::default()
            };
            assert!(refused(&o).contains(mode.as_str_name()), "{mode:?}");
        }
        let unknown = UserNamespace {
            mode: 42,
            ..Default::default()
        };
        assert!(refused(&unknown).contains("unknown user namespace mode 42"));
    }

    #[test]
    fn anything_kubelet_would_never_send_is_refused_naming_the_fault() {
        let ok = || vec![map(0, RANGE, RANGE)];
        let cases = [
            (pod(vec![], ok()), "exactly one uid mapping, got 0"),
            (pod(ok(), vec![]), "exactly one gid mapping, got 0"),
            (
                pod(vec![map(0, RANGE, RANGE), map(RANGE, 2 * RANGE, RANGE)], ok()),
                "got 2",
            ),
            (
                pod(vec![map(1, RANGE, RANGE)], ok()),
                "uid mapping: container id must be 0, got 1",
            ),
            (
                pod(ok(), vec![map(0, RANGE, 0)]),
                "gid mapping: length must not be 0",
            ),
            (
                pod(vec![map(0, 0, RANGE)], ok()),
                "uid mapping: host id must not be 0",
            ),
            (
                pod(ok(), vec![map(0, u32::MAX, RANGE)]),
                "host ids 4294967295+65536 run past",
            ),
        ];
        for (opts, want) in cases {
            let msg = refused(&opts);
            assert!(msg.contains(want), "{opts:?}: {msg}");
        }
    }

    #[test]
    fn a_container_must_repeat_its_pods_namespace() {
        let node = UserNamespace {
            mode: NamespaceMode::Node as i32,
            ..Default::default()
        };
        let p = pod(vec![map(0, RANGE, RANGE)], vec![map(0, RANGE, RANGE)]);
        let pu = validate(Some(&p)).unwrap().unwrap();
        check_container(None, None).unwrap();
        check_container(Some(&node), None).unwrap();
        check_container(Some(&p), Some(&pu)).unwrap();
        let e = check_container(Some(&p), None).unwrap_err();
        assert!(
            e.to_string().contains("differs from its pod's (the node's)"),
            "{e}"
        );
        assert!(check_container(Some(&node), Some(&pu)).is_err());
        let other = pod(vec![map(0, 2 * RANGE, RANGE)], vec![map(0, RANGE, RANGE)]);
        assert!(check_container(Some(&other), Some(&pu)).is_err());
    }
}
