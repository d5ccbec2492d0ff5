//! Parse, resolve and apply on the host: spec dirs are temp dirs, the
//! node's devices and paths are fakes.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use super::apply::apply;
use super::*;
use crate::cgroup::device_filter::{default_rules, DeviceKind};
use crate::container::devices::{ContainerDevices, HostDevices, HostEntry};
use crate::container::mounts::HostPaths;
use crate::error::Error;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn gpu_json(env: &str) -> String {
    format!(
        r#"{{"cdiVersion": "0.6.0", "kind": "vendor.com/gpu",
            "devices": [{{"name": "g0", "containerEdits": {{"env": ["{env}"]}}}},
                        {{"name": "g1", "containerEdits": {{"env": ["G1=1"]}}}}],
            "containerEdits": {{"env": ["GPU_DRIVER=1"]}}}}"#
    )
}

const NIC_YAML: &str = "cdiVersion: 1.0.0
kind: example.org/nic
devices:
  - name: \"n0:1\"
    containerEdits:
      env: [NIC=0]
";

fn envs(sets: &[EditSet]) -> Vec<String> {
    sets.iter().flat_map(|s| s.edits.env.clone()).collect()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn json_and_yaml_specs_resolve_with_spec_wide_edits_once() {
    let t = tempfile::tempdir().unwrap();
    let gpu = write(t.path(), "gpu.json", &gpu_json("G0=1"));
    let nic = write(t.path(), "nic.yml", NIC_YAML);
    let cdi = Cdi::new(vec![t.path().into()]);
    let sets = cdi
        .resolve(&names(&[
            "vendor.com/gpu=g0",
            "example.org/nic=n0:1",
            "vendor.com/gpu=g1",
            "vendor.com/gpu=g0",
        ]))
        .unwrap();
    assert_eq!(envs(&sets), ["GPU_DRIVER=1", "G0=1", "NIC=0", "G1=1"]);
    assert_eq!(sets[0].file, gpu);
    assert_eq!(sets[2].file, nic);
    let s = cdi.summary();
    assert_eq!((s.spec_files, s.devices), (2, 3));
    assert!(s.errors.is_empty(), "{:?}", s.errors);
}

#[test]
fn a_later_directory_overrides_an_earlier_one() {
    let t = tempfile::tempdir().unwrap();
    let (etc, run) = (t.path().join("etc"), t.path().join("run"));
    write(&etc, "gpu.json", &gpu_json("FROM=etc"));
    let winner = write(&run, "gpu.yaml", &gpu_json("FROM=run"));
    let cdi = Cdi::new(vec![etc.clone(), run.clone()]);
    let sets = cdi.resolve(&names(&["vendor.com/gpu=g0"])).unwrap();
    assert_eq!(envs(&sets), ["GPU_DRIVER=1", "FROM=run"]);
    assert!(sets.iter().all(|s| s.file == winner));
    let reversed = Cdi::new(vec![run, etc]);
    let sets = reversed.resolve(&names(&["vendor.com/gpu=g0"])).unwrap();
    assert_eq!(envs(&sets), ["GPU_DRIVER=1", "FROM=etc"]);
}

#[test]
fn two_files_of_one_directory_defining_a_device_is_an_error_naming_both() {
    let t = tempfile::tempdir().unwrap();
    let a = write(t.path(), "a.json", &gpu_json("A=1"));
    let b = write(t.path(), "b.json", &gpu_json("B=1"));
    write(t.path(), "nic.yaml", NIC_YAML);
    let cdi = Cdi::new(vec![t.path().into()]);
    let e = cdi.resolve(&names(&["vendor.com/gpu=g0"])).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, CdiError::Conflict { .. }), "{msg}");
    assert!(
        msg.contains(a.to_str().unwrap()) && msg.contains(b.to_str().unwrap()),
        "{msg}"
    );
    assert_eq!(Error::from(e).code(), tonic::Code::FailedPrecondition);
    // Other devices are unaffected; Status lists the conflict.
    assert!(cdi.resolve(&names(&["example.org/nic=n0:1"])).is_ok());
    assert_eq!(cdi.summary().errors.len(), 2, "g0 and g1");
    // A later directory defining it once settles it.
    let run = t.path().join("run");
    write(&run, "gpu.json", &gpu_json("RUN=1"));
    let cdi = Cdi::new(vec![t.path().into(), run]);
    let sets = cdi.resolve(&names(&["vendor.com/gpu=g0"])).unwrap();
    assert_eq!(envs(&sets), ["GPU_DRIVER=1", "RUN=1"]);
}

#[test]
fn an_unknown_device_is_not_found_naming_the_dirs() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "gpu.json", &gpu_json("G0=1"));
    let cdi = Cdi::new(vec![t.path().into(), "/nonexistent/cdi".into()]);
    let e = cdi
        .resolve(&names(&["vendor.com/gpu=g0", "vendor.com/gpu=g9"]))
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("vendor.com/gpu=g9") && msg.contains(t.path().to_str().unwrap()),
        "{msg}"
    );
    assert!(msg.contains("/nonexistent/cdi"), "{msg}");
    assert_eq!(Error::from(e).code(), tonic::Code::NotFound);
}

#[test]
fn a_malformed_file_fails_every_request_naming_the_file() {
    let good = gpu_json("G0=1");
    for (name, text, says) in [
        ("bad.json", "{\"cdiVersion\": ", "EOF"),
        ("bad.yaml", "cdiVersion: \"0.6.0\"\nkind: [unclosed\n", ""),
        (
            "field.json",
            &good.replace(
                "\"containerEdits\": {\"env\": [\"G1=1\"]}",
                "\"containerEdits\": {\"envs\": []}",
            ),
            "unknown field",
        ),
        ("old.json", &good.replace("0.6.0", "0.2.0"), "not supported"),
        ("new.json", &good.replace("0.6.0", "2.0.0"), "not supported"),
        ("vers.json", &good.replace("0.6.0", "1.x"), "semantic version"),
        (
            "kind.json",
            &good.replace("vendor.com/gpu", "vendor.com/gpu/x"),
            "class",
        ),
        (
            "empty.json",
            r#"{"cdiVersion": "0.5.0", "kind": "a.b/c", "devices": []}"#,
            "no devices",
        ),
        ("twice.json", &good.replace("\"g1\"", "\"g0\""), "defined twice"),
        ("devname.json", &good.replace("\"g1\"", "\"-g1\""), "device name"),
    ] {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "nic.yaml", NIC_YAML);
        let bad = write(t.path(), name, text);
        let cdi = Cdi::new(vec![t.path().into()]);
        assert!(cdi.resolve(&[]).unwrap().is_empty(), "no request reads nothing");
        let e = cdi.resolve(&names(&["example.org/nic=n0:1"])).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(bad.to_str().unwrap()) && msg.contains(says),
            "{name}: {msg}"
        );
        assert_eq!(Error::from(e).code(), tonic::Code::FailedPrecondition, "{name}");
        assert_eq!(cdi.summary().errors.len(), 1, "{name}");
    }
}

#[test]
fn bad_names_are_invalid_arguments_and_never_paths() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "gpu.json", &gpu_json("G0=1"));
    let cdi = Cdi::new(vec![t.path().into()]);
    let long = format!("vendor.com/gpu={}", "a".repeat(300));
    for bad in [
        "",
        "g0",
        "vendor.com/gpu",
        "vendor.com/gpu=",
        "/dev/null",
        "../../etc/passwd",
        "vendor.com/gpu=../../x",
        "vendor.com/gpu=g0/..",
        "vendor.com/a/b=g0",
        "1vendor.com/gpu=g0",
        "vendor.com-/gpu=g0",
        "vendor.com/gpu=g 0",
        "vendor.com/gpu=g0\0",
        "vendör.com/gpu=g0",
        &long,
    ] {
        let e = cdi.resolve(&names(&["vendor.com/gpu=g0", bad])).unwrap_err();
        assert!(matches!(e, CdiError::BadName { .. }), "{bad:?}: {e}");
        assert_eq!(Error::from(e).code(), tonic::Code::InvalidArgument, "{bad:?}");
    }
    assert!(name::QualifiedName::parse("a.b-c_d/x.y_z-1=0:1.a-b_c").is_ok());
}

#[test]
fn unsupported_edits_are_refused_naming_file_and_device_hooks_resolve() {
    let t = tempfile::tempdir().unwrap();
    let hooked = r#"{"cdiVersion": "0.6.0", "kind": "vendor.com/h",
        "devices": [{"name": "plain", "containerEdits": {}},
                    {"name": "hooked", "containerEdits": {"hooks": [{"hookName": "createContainer", "path": "/bin/true"}]}},
                    {"name": "rdt", "containerEdits": {"intelRdt": {"closID": "x"}}},
                    {"name": "net", "containerEdits": {"netDevices": [{"hostInterfaceName": "eth1", "name": "eth1"}]}}]}"#;
    let file = write(t.path(), "h.json", hooked);
    let spec_wide = gpu_json("G0=1").replace(
        "\"containerEdits\": {\"env\": [\"GPU_DRIVER=1\"]}",
        "\"containerEdits\": {\"hooks\": [{\"hookName\": \"poststop\", \"path\": \"/bin/true\"}]}",
    );
    write(t.path(), "wide.json", &spec_wide);
    let cdi = Cdi::new(vec![t.path().into()]);
    assert!(cdi.resolve(&names(&["vendor.com/h=plain"])).is_ok());
    let sets = cdi
        .resolve(&names(&["vendor.com/h=hooked", "vendor.com/gpu=g0"]))
        .expect("hooks are supported");
    let hooks: Vec<_> = sets
        .iter()
        .flat_map(|s| s.edits.hooks.iter().map(|h| h.hook_name.clone()))
        .collect();
    assert_eq!(
        hooks,
        ["createContainer", "poststop"],
        "device's and spec-wide hooks"
    );
    for (dev, f, says) in [
        ("vendor.com/h=rdt", &file, "intelRdt edits are not supported"),
        ("vendor.com/h=net", &file, "netDevices edits are not supported"),
    ] {
        let e = cdi.resolve(&names(&["vendor.com/h=plain", dev])).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(says) && msg.contains(dev) && msg.contains(f.to_str().unwrap()),
            "{msg}"
        );
        assert_eq!(Error::from(e).code(), tonic::Code::FailedPrecondition);
    }
}

#[test]
fn changed_files_are_read_again() {
    let t = tempfile::tempdir().unwrap();
    let cdi = Cdi::new(vec![t.path().into()]);
    assert!(matches!(
        cdi.resolve(&names(&["vendor.com/gpu=g0"])),
        Err(CdiError::UnknownDevice { .. })
    ));
    let f = write(t.path(), "gpu.json", &gpu_json("V=1"));
    assert_eq!(
        envs(&cdi.resolve(&names(&["vendor.com/gpu=g0"])).unwrap())[1],
        "V=1"
    );
    write(t.path(), "gpu.json", &gpu_json("V=22"));
    assert_eq!(
        envs(&cdi.resolve(&names(&["vendor.com/gpu=g0"])).unwrap())[1],
        "V=22"
    );
    std::fs::remove_file(f).unwrap();
    assert!(cdi.resolve(&names(&["vendor.com/gpu=g0"])).is_err());
}

/// The node's devices and paths for apply.
struct FakeNode(BTreeMap<PathBuf, HostEntry>);

impl FakeNode {
    fn new() -> Self {
        let dev = |kind, major, minor| HostEntry::Device {
            kind,
            major,
            minor,
            mode: 0o660,
            uid: 0,
            gid: 44,
        };
        FakeNode(BTreeMap::from([
            (PathBuf::from("/dev/nvidia0"), dev(DeviceKind::Char, 195, 0)),
            ("/dev/loop3".into(), dev(DeviceKind::Block, 7, 3)),
            ("/usr/lib/libgpu".into(), HostEntry::Dir),
            ("/etc/hostname".into(), HostEntry::Other),
        ]))
    }
}

impl HostDevices for FakeNode {
    fn entry(&self, path: &Path, _follow: bool) -> io::Result<HostEntry> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }
    fn list(&self, _dir: &Path) -> io::Result<Vec<String>> {
        Ok(Vec::new())
    }
}

impl HostPaths for FakeNode {
    fn mountinfo(&self) -> io::Result<String> {
        Ok(String::new())
    }
    fn canonicalize(&self, p: &Path) -> io::Result<PathBuf> {
        self.0
            .contains_key(p)
            .then(|| p.to_path_buf())
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }
    fn exists(&self, p: &Path) -> bool {
        self.0.contains_key(p)
    }
    fn create_dir_all(&self, _p: &Path) -> io::Result<()> {
        Err(io::ErrorKind::PermissionDenied.into())
    }
}

fn edit_set(edits: serde_json::Value) -> EditSet {
    EditSet {
        device: name::QualifiedName::parse("vendor.com/gpu=g0").unwrap(),
        file: "/etc/cdi/gpu.json".into(),
        edits: serde_json::from_value(edits).unwrap(),
    }
}

fn base_spec() -> Spec {
    let cfg = berth_proto::cri::ContainerConfig {
        command: vec!["sh".into()],
        envs: vec![berth_proto::cri::KeyValue {
            key: "KEEP".into(),
            value: b"1".to_vec(),
        }],
        ..Default::default()
    };
    crate::container::spec::build_spec(
        &cfg,
        &Default::default(),
        &Default::default(),
        &Default::default(),
    )
    .unwrap()
    .0
}

fn filtered() -> ContainerDevices {
    ContainerDevices {
        nodes: Vec::new(),
        rules: Some(default_rules()),
    }
}

#[test]
fn apply_adds_env_nodes_rules_mounts_and_groups() {
    let sets = [edit_set(serde_json::json!({
        "env": ["KEEP=2", "NEW=x=y"],
        "deviceNodes": [
            {"path": "/dev/nvidia0"},
            {"path": "/dev/disk3", "hostPath": "/dev/loop3", "permissions": "r", "fileMode": 0o640},
            {"path": "/dev/fake", "type": "c", "major": 240, "minor": 7, "permissions": "none"}
        ],
        "mounts": [{"hostPath": "/usr/lib/libgpu", "containerPath": "/usr/lib/gpu", "options": ["ro", "nosuid", "bind"], "type": "none"}],
        "additionalGids": [0, 44, 44]
    }))];
    let mut spec = base_spec();
    let mut devices = filtered();
    apply(&sets, &mut spec, &mut devices, &FakeNode::new(), &FakeNode::new()).unwrap();
    let env = spec.process().as_ref().unwrap().env().clone().unwrap();
    assert!(
        env.contains(&"KEEP=2".to_string()) && env.contains(&"NEW=x=y".to_string()),
        "{env:?}"
    );
    assert!(!env.contains(&"KEEP=1".to_string()));
    let nodes: Vec<_> = devices
        .nodes
        .iter()
        .map(|n| {
            (
                n.path.display().to_string(),
                n.kind,
                n.major,
                n.minor,
                n.file_mode,
                n.gid,
            )
        })
        .collect();
    assert_eq!(
        nodes,
        [
            ("/dev/nvidia0".into(), DeviceKind::Char, 195, 0, 0o660, 44),
            ("/dev/disk3".into(), DeviceKind::Block, 7, 3, 0o640, 44),
            ("/dev/fake".into(), DeviceKind::Char, 240, 7, 0o666, 0),
        ]
    );
    let added: Vec<String> = devices.rules.unwrap()[default_rules().len()..]
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(
        added,
        ["c 195:0 rwm", "b 7:3 r"],
        "exactly the granted nodes; none for `none`"
    );
    let m = spec.mounts().as_ref().unwrap().last().unwrap().clone();
    assert_eq!(m.destination(), Path::new("/usr/lib/gpu"));
    assert_eq!(m.typ().as_deref(), Some("bind"));
    assert_eq!(m.source().as_deref(), Some(Path::new("/usr/lib/libgpu")));
    assert_eq!(m.options().clone().unwrap(), ["ro", "nosuid", "bind", "rprivate"]);
    let gids = spec
        .process()
        .as_ref()
        .unwrap()
        .user()
        .additional_gids()
        .clone()
        .unwrap();
    let before = base_spec()
        .process()
        .as_ref()
        .unwrap()
        .user()
        .additional_gids()
        .clone()
        .unwrap();
    assert_eq!(gids, [before, vec![44]].concat(), "0 ignored, 44 once");

    // Privileged: nodes, and still no filter.
    let mut devices = ContainerDevices {
        nodes: Vec::new(),
        rules: None,
    };
    apply(
        &sets,
        &mut base_spec(),
        &mut devices,
        &FakeNode::new(),
        &FakeNode::new(),
    )
    .unwrap();
    assert_eq!((devices.nodes.len(), devices.rules), (3, None));
}

#[test]
fn a_bad_edit_fails_and_changes_nothing() {
    let good_node = serde_json::json!({"path": "/dev/nvidia0"});
    for (edits, says) in [
        (
            serde_json::json!({"deviceNodes": [{"path": "/dev/gone"}]}),
            "does not exist",
        ),
        (
            serde_json::json!({"deviceNodes": [{"path": "/dev/x", "hostPath": "/etc/hostname"}]}),
            "not a device",
        ),
        (
            serde_json::json!({"deviceNodes": [{"path": "dev/x"}]}),
            "absolute",
        ),
        (
            serde_json::json!({"deviceNodes": [{"path": "/dev/../etc/x", "hostPath": "/dev/nvidia0"}]}),
            "absolute",
        ),
        (
            serde_json::json!({"deviceNodes": [{"path": "/dev/nvidia0", "type": "b"}]}),
            "type differs",
        ),
        (
            serde_json::json!({"deviceNodes": [{"path": "/dev/p", "type": "p"}]}),
            "fifo",
        ),
        (
            serde_json::json!({"deviceNodes": [{"path": "/dev/nvidia0", "permissions": "rx"}]}),
            "permissions",
        ),
        (
            serde_json::json!({"deviceNodes": [{"path": "/dev/x", "type": "c", "major": -1}]}),
            "bad major",
        ),
        (serde_json::json!({"env": ["NOVALUE"]}), "NAME=value"),
        (serde_json::json!({"env": ["=x"]}), "empty name"),
        (
            serde_json::json!({"mounts": [{"hostPath": "/nope", "containerPath": "/x"}]}),
            "does not exist",
        ),
        (
            serde_json::json!({"mounts": [{"hostPath": "/usr/lib/libgpu", "containerPath": "/proc/x"}]}),
            "kernel interface",
        ),
        (
            serde_json::json!({"mounts": [{"hostPath": "/usr/lib/libgpu", "containerPath": "x"}]}),
            "absolute",
        ),
        (
            serde_json::json!({"mounts": [{"hostPath": "tmpfs", "containerPath": "/x", "type": "tmpfs"}]}),
            "absolute",
        ),
        (
            serde_json::json!({"mounts": [{"hostPath": "/usr/lib/libgpu", "containerPath": "/x", "type": "tmpfs"}]}),
            "only bind mounts",
        ),
        (
            serde_json::json!({"mounts": [{"hostPath": "/usr/lib/libgpu", "containerPath": "/x", "options": ["bind", "size=1"]}]}),
            "size=1",
        ),
        (
            serde_json::json!({"hooks": [{"hookName": "createContainer", "path": "bin/hook"}]}),
            "hook path \"bin/hook\" must be an absolute path",
        ),
        (
            serde_json::json!({"hooks": [{"hookName": "onBoot", "path": "/bin/hook"}]}),
            "hook name \"onBoot\"",
        ),
        (
            serde_json::json!({"hooks": [{"hookName": "poststop", "path": "/bin/hook", "args": ["a\u{0}b"]}]}),
            "NUL",
        ),
        (
            serde_json::json!({"hooks": [{"hookName": "poststop", "path": "/bin/hook", "env": ["NOVALUE"]}]}),
            "not NAME=value",
        ),
        (
            serde_json::json!({"hooks": [{"hookName": "poststop", "path": "/bin/hook", "timeout": 0}]}),
            "greater than zero",
        ),
    ] {
        let sets = [
            edit_set(serde_json::json!({"env": ["OK=1"], "deviceNodes": [good_node.clone()]})),
            edit_set(edits.clone()),
        ];
        let mut spec = base_spec();
        let before = serde_json::to_value(&spec).unwrap();
        let mut devices = filtered();
        let e = apply(&sets, &mut spec, &mut devices, &FakeNode::new(), &FakeNode::new()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(says) && msg.contains("/etc/cdi/gpu.json") && msg.contains("vendor.com/gpu=g0"),
            "{edits}: {msg}"
        );
        assert_eq!(Error::from(e).code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            before,
            "{edits}: spec unchanged"
        );
        assert_eq!(devices, filtered(), "{edits}: devices unchanged");
    }
}

/// Hooks land in the spec at their moments, in request order, after any
/// the spec had; args, env and timeout as written.
#[test]
fn apply_adds_hooks_at_their_moments_in_order() {
    let sets = [
        edit_set(serde_json::json!({"hooks": [
            {"hookName": "createRuntime", "path": "/usr/bin/a", "args": ["a", "--x"], "env": ["K=v"], "timeout": 5},
            {"hookName": "poststop", "path": "/usr/bin/b"},
            {"hookName": "prestart", "path": "/usr/bin/p"}
        ]})),
        edit_set(serde_json::json!({"hooks": [
            {"hookName": "createRuntime", "path": "/usr/bin/c"},
            {"hookName": "createContainer", "path": "/usr/bin/d"},
            {"hookName": "startContainer", "path": "/usr/bin/e"},
            {"hookName": "poststart", "path": "/usr/bin/f"}
        ]})),
    ];
    let mut spec = base_spec();
    apply(
        &sets,
        &mut spec,
        &mut filtered(),
        &FakeNode::new(),
        &FakeNode::new(),
    )
    .unwrap();
    let hooks = spec.hooks().clone().expect("hooks in the spec");
    let paths = |l: &Option<Vec<oci_spec::runtime::Hook>>| -> Vec<String> {
        l.iter()
            .flatten()
            .map(|h| h.path().display().to_string())
            .collect()
    };
    assert_eq!(paths(hooks.create_runtime()), ["/usr/bin/a", "/usr/bin/c"]);
    assert_eq!(paths(hooks.create_container()), ["/usr/bin/d"]);
    assert_eq!(paths(hooks.start_container()), ["/usr/bin/e"]);
    assert_eq!(paths(hooks.poststart()), ["/usr/bin/f"]);
    assert_eq!(paths(hooks.poststop()), ["/usr/bin/b"]);
    #[allow(deprecated)]
    let prestart = paths(hooks.prestart());
    assert_eq!(prestart, ["/usr/bin/p"]);
    let a = &hooks.create_runtime().as_ref().unwrap()[0];
    assert_eq!(a.args().clone().unwrap(), ["a", "--x"]);
    assert_eq!(a.env().clone().unwrap(), ["K=v"]);
    assert_eq!(a.timeout(), Some(5));
    // No hooks requested: the spec gets no hooks object at all.
    let mut plain = base_spec();
    apply(
        &[edit_set(serde_json::json!({"env": ["A=1"]}))],
        &mut plain,
        &mut filtered(),
        &FakeNode::new(),
        &FakeNode::new(),
    )
    .unwrap();
    assert!(plain.hooks().is_none());
}

/// `cdi.k8s.io/` annotations request devices after `CDI_devices`, keys in
/// order; other annotations are ignored; a bad name names its key.
#[test]
fn annotations_request_devices_and_bad_names_name_the_key() {
    use std::collections::HashMap;
    let ann: HashMap<String, String> = [
        ("cdi.k8s.io/b", "vendor.com/gpu=g1"),
        ("cdi.k8s.io/a", "vendor.com/gpu=g0, example.org/nic=n0:1"),
        ("io.kubernetes.other", "not=a/device"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let got = annotations::requested(&names(&["vendor.com/gpu=g1"]), &ann).unwrap();
    assert_eq!(
        got,
        [
            "vendor.com/gpu=g1",
            "vendor.com/gpu=g0",
            "example.org/nic=n0:1",
            "vendor.com/gpu=g1"
        ]
    );
    // Resolved, duplicates once.
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "gpu.json", &gpu_json("G0=1"));
    write(t.path(), "nic.yml", NIC_YAML);
    let sets = Cdi::new(vec![t.path().into()]).resolve(&got).unwrap();
    assert_eq!(envs(&sets), ["GPU_DRIVER=1", "G1=1", "G0=1", "NIC=0"]);

    let bad: HashMap<String, String> = [(
        "cdi.k8s.io/x".to_string(),
        "vendor.com/gpu=g0,../../etc".to_string(),
    )]
    .into();
    let e = annotations::requested(&[], &bad).unwrap_err();
    assert!(
        e.to_string().contains("cdi.k8s.io/x") && e.to_string().contains("../../etc"),
        "{e}"
    );
    assert_eq!(Error::from(e).code(), tonic::Code::InvalidArgument);
}
