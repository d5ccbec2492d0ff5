//! The `cri_validate` target: a CRI request decoded from the fuzzer's bytes
//! (protobuf, as tonic decodes it) and run through every check berthd makes
//! of it before acting: pod limits with overhead, sysctls, DNS, mounts and
//! image VOLUMEs, devices, the whole OCI spec (user, groups, env,
//! capabilities, seccomp, working dir), resources for an update, the image
//! reference and registry credentials. The node is an in-memory fake: the
//! checks get no chance to create host dirs or walk the real `/dev`.
//!
//! Invariants: no panic (so no unchecked overflow in a debug build); an
//! error is one a client may see (InvalidArgument, NotFound,
//! FailedPrecondition), never Internal; and what a check accepts is in range
//! (a weight in 1..=10000, a quota the kernel takes, cgroup file names with
//! no `/`, mount destinations outside `/proc`, `/sys` and `/dev`'s system
//! mounts, an absolute working dir).

use std::collections::BTreeMap;
use std::io;
use std::path::{Component, Path, PathBuf};

use berth_proto::cri;
use prost::Message;

use crate::cgroup::device_filter::DeviceKind;
use crate::cgroup::resources::Limits;
use crate::container::devices::{self, HostDevices, HostEntry};
use crate::container::groups_policy::{self, Enforcement};
use crate::container::mounts::{self, HostPaths, MountOrigin};
use crate::container::spec::{self, ImageUsers, SandboxContext};
use crate::error::{Error, Result};
use crate::image::auth::Credentials;
use crate::image::reference::Reference;
use crate::image::ImageConfig;
use crate::sandbox::{sysctl, PidMode};

/// Request kinds, by the first input byte (modulo their number).
const KINDS: u8 = 5;

/// A node with a few mounts and no symlinks; nothing is created.
struct FakeHost;

impl HostPaths for FakeHost {
    fn mountinfo(&self) -> io::Result<String> {
        Ok("22 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw\n\
            30 22 0:5 / /var/lib/kubelet rw master:3 - ext4 /dev/sda2 rw\n\
            31 22 0:6 / /mnt/private rw - tmpfs tmpfs rw\n"
            .into())
    }
    fn canonicalize(&self, p: &Path) -> io::Result<PathBuf> {
        Ok(mounts::normalize(&p.to_string_lossy()))
    }
    fn exists(&self, p: &Path) -> bool {
        !p.starts_with("/missing")
    }
    fn create_dir_all(&self, p: &Path) -> io::Result<()> {
        if p.starts_with("/missing/readonly") {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        Ok(())
    }
}

/// A `/dev` with a few nodes and one subdirectory.
struct FakeDevices;

impl FakeDevices {
    const NODES: &'static [(&'static str, DeviceKind, u32, u32)] = &[
        ("/dev/null", DeviceKind::Char, 1, 3),
        ("/dev/fuse", DeviceKind::Char, 10, 229),
        ("/dev/sda", DeviceKind::Block, 8, 0),
        ("/dev/dri/card0", DeviceKind::Char, 226, 0),
    ];
}

impl HostDevices for FakeDevices {
    fn entry(&self, path: &Path, _follow: bool) -> io::Result<HostEntry> {
        if path == Path::new("/dev") || path == Path::new("/dev/dri") {
            return Ok(HostEntry::Dir);
        }
        match Self::NODES.iter().find(|n| Path::new(n.0) == path) {
            Some(&(_, kind, major, minor)) => Ok(HostEntry::Device {
                kind,
                major,
                minor,
                mode: 0o666,
                uid: 0,
                gid: 0,
            }),
            None if path.starts_with("/dev") => Err(io::ErrorKind::NotFound.into()),
            None => Ok(HostEntry::Other),
        }
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        Ok(Self::NODES
            .iter()
            .filter_map(|n| Path::new(n.0).strip_prefix(dir).ok())
            .filter_map(|rel| rel.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect())
    }
}

/// The image every container is made from: a USER, an ENV and VOLUMEs.
fn image() -> (ImageConfig, ImageUsers) {
    let config = ImageConfig {
        entrypoint: vec!["/entry".into()],
        cmd: vec!["serve".into()],
        env: vec!["PATH=/bin".into(), "LANG=C".into()],
        working_dir: "/srv".into(),
        user: "app".into(),
        stop_signal: "SIGQUIT".into(),
        volumes: vec!["/data".into(), "/var/log".into()],
    };
    let users = ImageUsers {
        passwd: "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n".into(),
        group: "root:x:0:\napp:x:1000:\nvideo:x:44:app\n".into(),
    };
    (config, users)
}

/// Panics on an error a client should not see for its own bad request.
fn assert_client_error<T>(what: &str, r: &Result<T>) {
    if let Err(e) = r {
        assert!(
            matches!(
                e,
                Error::InvalidArgument(_) | Error::NotFound(_) | Error::FailedPrecondition(_)
            ),
            "{what}: a bad request became {e:?}"
        );
    }
}

/// Panics unless a mount destination is allowed for its origin.
fn assert_destination_allowed(path: &str, origin: MountOrigin) {
    assert!(
        mounts::check_destination(path, origin).is_ok(),
        "{origin:?} destination {path:?} was accepted"
    );
}

/// Decodes the request `data` names and runs its checks; false when the
/// bytes are no such request.
pub fn run(data: &[u8]) -> bool {
    let Some((&kind, body)) = data.split_first() else {
        return false;
    };
    match kind % KINDS {
        0 => cri::RunPodSandboxRequest::decode(body)
            .map(|req| check_sandbox(req.config.as_ref()))
            .is_ok(),
        1 => cri::CreateContainerRequest::decode(body)
            .map(|req| {
                check_sandbox(req.sandbox_config.as_ref());
                if let Some(cfg) = &req.config {
                    check_container(cfg);
                }
            })
            .is_ok(),
        2 => cri::UpdateContainerResourcesRequest::decode(body)
            .map(|req| {
                if let Some(r) = &req.linux {
                    check_resources(r);
                }
            })
            .is_ok(),
        3 => cri::UpdatePodSandboxResourcesRequest::decode(body)
            .map(|req| check_pod_limits(req.overhead.as_ref(), req.resources.as_ref()))
            .is_ok(),
        _ => cri::PullImageRequest::decode(body)
            .map(|req| {
                let image = req.image.as_ref().map(|i| i.image.as_str()).unwrap_or_default();
                assert_client_error("image reference", &Reference::parse(image));
                assert_client_error("auth", &Credentials::from_cri(req.auth.as_ref()));
                check_sandbox(req.sandbox_config.as_ref());
            })
            .is_ok(),
    }
}

/// Pod limits (resources plus overhead): checked sums, kernel ranges. A
/// limit the pod sets is exactly resources plus overhead (computed here
/// without overflow), never a wrapped one that reads as "no limit".
fn check_pod_limits(
    overhead: Option<&cri::LinuxContainerResources>,
    resources: Option<&cri::LinuxContainerResources>,
) {
    let l = Limits::pod(resources, overhead);
    assert_client_error("pod limits", &l);
    let Ok(l) = l else { return };
    let zero = cri::LinuxContainerResources::default();
    let (r, o) = (resources.unwrap_or(&zero), overhead.unwrap_or(&zero));
    let sum = |a: i64, b: i64| (a > 0).then(|| i128::from(a) + i128::from(b.max(0)));
    let memory = sum(r.memory_limit_in_bytes, o.memory_limit_in_bytes);
    assert_eq!(
        l.memory_max.map(i128::from),
        memory,
        "pod memory.max of {r:?} + {o:?}"
    );
    let quota = sum(r.cpu_quota, o.cpu_quota);
    assert_eq!(
        l.cpu_max.and_then(|(q, _)| q).map(i128::from),
        quota,
        "pod cpu.max quota of {r:?} + {o:?}"
    );
    assert_eq!(
        l.cpu_weight.is_some(),
        r.cpu_shares > 0,
        "pod cpu.weight of {r:?} + {o:?}"
    );
    if let Some(w) = l.cpu_weight {
        assert!((1..=10_000).contains(&w), "cpu.weight {w}");
    }
    if let Some((quota, period)) = l.cpu_max {
        assert!((1000..=1_000_000).contains(&period), "cpu.max period {period}");
        if let Some(q) = quota {
            assert!(
                (1..=crate::cgroup::desired::MAX_CPU_QUOTA_US).contains(&q),
                "cpu.max quota {q}"
            );
        }
    }
}

fn check_sandbox(cfg: Option<&cri::PodSandboxConfig>) {
    let Some(cfg) = cfg else { return };
    let linux = cfg.linux.clone().unwrap_or_default();
    check_pod_limits(linux.overhead.as_ref(), linux.resources.as_ref());
    let sysctls: BTreeMap<String, String> = linux.sysctls.into_iter().collect();
    let all: BTreeMap<String, PathBuf> = ["net", "ipc", "uts"]
        .into_iter()
        .map(|k| (k.to_string(), PathBuf::from("/run/ns").join(k)))
        .collect();
    for owned in [&all, &BTreeMap::new()] {
        assert_client_error("sysctls", &sysctl::validate(&sysctls, owned));
    }
    if let Some(d) = &cfg.dns_config {
        let dns = crate::net::files::Dns {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        };
        assert_client_error(
            "dns",
            &crate::net::files::resolv_conf(Some(&dns), Path::new("/nonexistent/resolv.conf")),
        );
    }
}

/// Resources for a container update: ranges, then cgroup file names.
fn check_resources(r: &cri::LinuxContainerResources) {
    let d = crate::cgroup::resize::desired(r);
    assert_client_error("resources", &d);
    let Ok(d) = d else { return };
    for (name, _) in &d.files {
        let mut parts = Path::new(name).components();
        assert!(
            matches!(parts.next(), Some(Component::Normal(_)))
                && parts.next().is_none()
                && !name.contains(".."),
            "cgroup file {name:?} is not one file of the container's cgroup"
        );
    }
    if let Some(m) = d.memory_max {
        assert!(i64::try_from(m).is_ok(), "memory.max {m}");
    }
}

fn check_container(cfg: &cri::ContainerConfig) {
    for mode in [Enforcement::Off, Enforcement::Upgrade, Enforcement::Reject] {
        assert_client_error("groups policy", &groups_policy::enforce(cfg, mode));
    }
    let resolved = mounts::resolve(&cfg.mounts, &FakeHost);
    assert_client_error("mounts", &resolved);
    for m in resolved.iter().flatten() {
        assert_destination_allowed(&m.container_path, MountOrigin::Cri);
    }
    let (image, users) = image();
    let volumes = mounts::image_volumes(&image.volumes, &cfg.mounts, Path::new("/var/lib/berth/vol"));
    assert_client_error("image volumes", &volumes);
    for v in volumes.iter().flatten() {
        assert_destination_allowed(&v.container_path, MountOrigin::ImageVolume);
    }
    let sc = cfg.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let privileged = sc.is_some_and(|s| s.privileged);
    let devices = devices::resolve(&cfg.devices, privileged, &FakeDevices);
    assert_client_error("devices", &devices);
    if let Ok(d) = devices {
        assert_eq!(
            d.rules.is_none(),
            privileged,
            "device filter of a privileged={privileged} container"
        );
        for n in &d.nodes {
            assert!(
                n.path.is_absolute() && !n.path.components().any(|c| c == Component::ParentDir),
                "device node at {:?}",
                n.path
            );
        }
    }
    let _ = crate::container::signal::from_cri(cfg.stop_signal);
    if let Some(r) = cfg.linux.as_ref().and_then(|l| l.resources.as_ref()) {
        check_resources(r);
    }
    for pid_mode in [PidMode::Container, PidMode::Pod, PidMode::Node] {
        let sandbox = SandboxContext {
            ns_paths: [("net", "/run/ns/net"), ("ipc", "/run/ns/ipc")]
                .into_iter()
                .map(|(k, p)| (k.to_string(), PathBuf::from(p)))
                .collect(),
            cgroup_path: "/kubepods/pod1/c1".into(),
            hostname: "pod".into(),
            pod_files: None,
            pid_mode,
            shm: None,
            userns: None,
        };
        let built = spec::build_spec(cfg, &image, &users, &sandbox);
        assert_client_error("spec", &built);
        let Ok((oci, _)) = built else { continue };
        let cwd = oci
            .process()
            .as_ref()
            .map(|p| p.cwd().clone())
            .unwrap_or_default();
        assert!(cwd.starts_with("/"), "working dir {cwd:?}");
        for m in oci.mounts().iter().flatten() {
            if m.typ().as_deref() == Some("bind") && m.destination().as_os_str() != "/dev/shm" {
                assert_destination_allowed(&m.destination().to_string_lossy(), MountOrigin::Cri);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::Mutator;

    fn kv(k: &str, v: &str) -> cri::KeyValue {
        cri::KeyValue {
            key: k.into(),
            value: v.as_bytes().to_vec(),
        }
    }

    /// Requests as kubelet sends them (a pod with DNS, sysctls, limits and
    /// overhead; a container with mounts, devices, a security context and
    /// resources; an update; a pull with credentials).
    fn seeds() -> Vec<Vec<u8>> {
        let resources = cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 256 << 20,
            memory_swap_limit_in_bytes: 512 << 20,
            oom_score_adj: 999,
            cpuset_cpus: "0-1".into(),
            hugepage_limits: vec![cri::HugepageLimit {
                page_size: "2MB".into(),
                limit: 0,
            }],
            unified: [("memory.oom.group".to_string(), "1".to_string())].into(),
            ..Default::default()
        };
        let pod = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                uid: "0f3a".into(),
                namespace: "default".into(),
                attempt: 1,
            }),
            hostname: "web".into(),
            log_directory: "/var/log/pods/default_web_0f3a".into(),
            dns_config: Some(cri::DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec!["default.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: "/kubepods/burstable/pod0f3a".into(),
                sysctls: [("net.ipv4.ip_unprivileged_port_start".to_string(), "0".to_string())].into(),
                overhead: Some(cri::LinuxContainerResources {
                    cpu_shares: 10,
                    memory_limit_in_bytes: 32 << 20,
                    ..Default::default()
                }),
                resources: Some(resources.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mount = |c: &str, h: &str, ro: bool, prop: cri::MountPropagation| cri::Mount {
            container_path: c.into(),
            host_path: h.into(),
            readonly: ro,
            propagation: prop as i32,
            recursive_read_only: ro && prop == cri::MountPropagation::PropagationPrivate,
            ..Default::default()
        };
        let container = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: "registry.example/app:1".into(),
                ..Default::default()
            }),
            command: vec!["/bin/app".into()],
            args: vec!["--port=80".into()],
            working_dir: "/srv/app".into(),
            envs: vec![kv("MODE", "prod"), kv("PATH", "/usr/bin")],
            mounts: vec![
                mount(
                    "/dev/termination-log",
                    "/var/lib/kubelet/pods/0f3a/term",
                    false,
                    cri::MountPropagation::PropagationPrivate,
                ),
                mount(
                    "/data",
                    "/var/lib/kubelet/pods/0f3a/volumes/data",
                    false,
                    cri::MountPropagation::PropagationHostToContainer,
                ),
                mount(
                    "/etc/config",
                    "/mnt/private/config",
                    true,
                    cri::MountPropagation::PropagationPrivate,
                ),
                mount(
                    "/proc/meminfo",
                    "/var/lib/lxcfs/proc/meminfo",
                    true,
                    cri::MountPropagation::PropagationPrivate,
                ),
            ],
            devices: vec![cri::Device {
                container_path: "/dev/fuse".into(),
                host_path: "/dev/fuse".into(),
                permissions: "rwm".into(),
            }],
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(resources.clone()),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    capabilities: Some(cri::Capability {
                        add_capabilities: vec!["NET_ADMIN".into()],
                        drop_capabilities: vec!["MKNOD".into()],
                        add_ambient_capabilities: vec!["NET_ADMIN".into()],
                    }),
                    run_as_user: Some(cri::Int64Value { value: 1000 }),
                    run_as_group: Some(cri::Int64Value { value: 1000 }),
                    supplemental_groups: vec![44],
                    seccomp: Some(cri::SecurityProfile {
                        profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                        localhost_ref: String::new(),
                    }),
                    namespace_options: Some(cri::NamespaceOption {
                        pid: cri::NamespaceMode::Container as i32,
                        ..Default::default()
                    }),
                    no_new_privs: true,
                    ..Default::default()
                }),
            }),
            stop_signal: cri::Signal::Sigquit as i32,
            ..Default::default()
        };
        let with_kind = |k: u8, msg: Vec<u8>| [vec![k], msg].concat();
        vec![
            with_kind(
                0,
                cri::RunPodSandboxRequest {
                    config: Some(pod.clone()),
                    runtime_handler: String::new(),
                }
                .encode_to_vec(),
            ),
            with_kind(
                1,
                cri::CreateContainerRequest {
                    pod_sandbox_id: "p1".into(),
                    config: Some(container),
                    sandbox_config: Some(pod.clone()),
                }
                .encode_to_vec(),
            ),
            with_kind(
                2,
                cri::UpdateContainerResourcesRequest {
                    container_id: "c1".into(),
                    linux: Some(resources.clone()),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            with_kind(
                3,
                cri::UpdatePodSandboxResourcesRequest {
                    pod_sandbox_id: "p1".into(),
                    overhead: pod.linux.as_ref().and_then(|l| l.overhead.clone()),
                    resources: Some(resources),
                }
                .encode_to_vec(),
            ),
            with_kind(
                4,
                cri::PullImageRequest {
                    image: Some(cri::ImageSpec {
                        image: "registry.example:5000/team/app:1.0".into(),
                        ..Default::default()
                    }),
                    auth: Some(cri::AuthConfig {
                        auth: "dXNlcjpwYXNz".into(),
                        ..Default::default()
                    }),
                    sandbox_config: Some(pod),
                }
                .encode_to_vec(),
            ),
        ]
    }

    /// An integer near an edge: of i64, of a kernel range, or of zero.
    fn extreme(m: &mut Mutator) -> i64 {
        const EDGES: &[i64] = &[
            0,
            1,
            -1,
            2,
            999,
            1000,
            1001,
            100_000,
            262_144,
            262_145,
            1_000_000,
            1_000_001,
            (1 << 44) - 1,
            1 << 44,
            i64::MAX,
            i64::MAX - 1,
            i64::MIN,
            i64::MIN + 1,
        ];
        EDGES[m.below(EDGES.len())]
    }

    /// Valid resources with one or two integers set to an edge (all six at
    /// once would nearly always fail the first range check).
    fn extreme_resources(m: &mut Mutator) -> cri::LinuxContainerResources {
        let mut r = cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 1024,
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 128 << 20,
            oom_score_adj: 100,
            ..Default::default()
        };
        for _ in 0..m.below(2) + 1 {
            let v = extreme(m);
            *match m.below(6) {
                0 => &mut r.cpu_period,
                1 => &mut r.cpu_quota,
                2 => &mut r.cpu_shares,
                3 => &mut r.memory_limit_in_bytes,
                4 => &mut r.memory_swap_limit_in_bytes,
                _ => &mut r.oom_score_adj,
            } = v;
        }
        r
    }

    /// The seeds pass every check, as kubelet's requests do.
    #[test]
    fn seed_requests_are_valid() {
        let s = seeds();
        for seed in &s {
            run(seed);
        }
        let create = cri::CreateContainerRequest::decode(&s[1][1..]).unwrap();
        let (image, users) = image();
        let built = spec::build_spec(
            create.config.as_ref().unwrap(),
            &image,
            &users,
            &SandboxContext::default(),
        );
        assert!(built.is_ok(), "{built:?}");
        assert!(mounts::resolve(&create.config.unwrap().mounts, &FakeHost).is_ok());
        crate::fuzzing::write_corpus("cri_validate", &s);
    }

    /// A fixed-seed mutation run (the libFuzzer target `cri_validate` runs
    /// the same [`run`] without a bound): mutated requests never panic or
    /// overflow, fail only with client errors, and what passes is in range.
    /// Protobuf varints are where the integers are: mutations that keep
    /// the message decodable change them.
    #[test]
    fn mutated_requests_fail_cleanly_or_pass_in_range() {
        let seeds = seeds();
        let mut m = Mutator::new(0x5eed_c121_2026_0017);
        let mut uniform = |m: &mut Mutator, n: usize| m.below(n).max(1);
        let mut decoded = 0;
        for _ in 0..20_000 {
            let seed = &seeds[m.below(seeds.len())];
            let other = &seeds[m.below(seeds.len())];
            let input = m.mutate(seed, other, &mut uniform);
            decoded += usize::from(run(&input));
        }
        assert!(decoded > 500, "only {decoded} mutated requests decoded");
        // Byte mutations rarely make a varint extreme: set the integers to
        // the values that overflow or leave the kernel's ranges.
        for _ in 0..5_000 {
            let (r, o) = (extreme_resources(&mut m), extreme_resources(&mut m));
            let req = cri::UpdatePodSandboxResourcesRequest {
                pod_sandbox_id: String::new(),
                overhead: Some(o.clone()),
                resources: Some(r.clone()),
            };
            assert!(run(&[&[3u8][..], &req.encode_to_vec()].concat()));
            let req = cri::UpdateContainerResourcesRequest {
                linux: Some(r),
                ..Default::default()
            };
            assert!(run(&[&[2u8][..], &req.encode_to_vec()].concat()));
        }
    }
}
