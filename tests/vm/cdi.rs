//! CDI devices: a spec file in berthd's CDI directory hands a container a
//! device node under another name, a mount and an env var; the device filter
//! allows exactly the granted nodes; bad names and bad spec files fail
//! CreateContainer with the file named and nothing left behind. A device's
//! OCI hooks run at their moments, in their namespaces, with the state on
//! stdin; a failing or hung hook fails create/start (or is only logged,
//! after the start and the stop).
//!
//! Needs root, cgroup v2 and the loopback registry: runs inside the VM
//! (`hack/vm`). Run with `--test-threads=1`.

use std::path::Path;

use berth_proto::cri;
use berth_tests::node::assert_nothing_left;
use berth_tests::*;

fn busybox() -> String {
    format!("{}/library/busybox:latest", registry())
}

/// A spec dir holding `berth.test/dev`: device `null0` is the host's
/// /dev/null as /dev/berth-test0 plus the VM's RAM disk (b 1:0) readable
/// only; every device of the file gets a mount of `share/` and an env var.
fn write_spec_dir(dir: &Path) {
    let share = dir.join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("marker"), "from-cdi\n").unwrap();
    let spec = serde_json::json!({
        "cdiVersion": "0.6.0",
        "kind": "berth.test/dev",
        "devices": [
            {"name": "null0", "containerEdits": {"deviceNodes": [
                {"path": "/dev/berth-test0", "hostPath": "/dev/null", "permissions": "rw"},
                {"path": "/dev/berth-ram", "type": "b", "major": 1, "minor": 0, "permissions": "r"}
            ]}},
            {"name": "hooked", "containerEdits": {"hooks": [
                {"hookName": "createContainer", "path": "bin/true"}
            ]}}
        ],
        "containerEdits": {
            "env": ["BERTH_CDI=granted"],
            "mounts": [{"hostPath": share.to_str().unwrap(), "containerPath": "/cdi-share", "options": ["ro", "bind"]}]
        }
    });
    std::fs::write(dir.join("berth-test.json"), spec.to_string()).unwrap();
}

async fn berthd_with_cdi(dir: &Path) -> (Berthd, CriClient) {
    Berthd::start_with(&format!("cdi_spec_dirs = [\"{}\"]\n", dir.display()))
        .await
        .expect("berthd")
}

fn sleeper(name: &str, cdi: &[&str]) -> cri::ContainerConfig {
    let mut cfg = container_config(name, &busybox(), &["sleep", "300"]);
    cfg.cdi_devices = cdi
        .iter()
        .map(|n| cri::CdiDevice { name: n.to_string() })
        .collect();
    cfg
}

#[tokio::test]
async fn cdi_device_mount_and_env_reach_the_container() {
    let specs = tempfile::tempdir_in("/tmp").unwrap();
    write_spec_dir(specs.path());
    let (b, mut c) = berthd_with_cdi(specs.path()).await;
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("cdi", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    let id = c
        .create(&sb, &sleeper("gpu", &["berth.test/dev=null0"]), &pod)
        .await
        .expect("create with a CDI device");
    c.start(&id).await.unwrap();

    let (code, out) = sh_joined(
        &mut c,
        &id,
        "echo env=$BERTH_CDI; cat /cdi-share/marker; \
         echo x >/dev/berth-test0 && echo write-ok; \
         echo \"ram-read=$(head -c1 /dev/berth-ram | wc -c)\"; \
         (echo x >/dev/berth-ram) 2>&1; \
         touch /cdi-share/new 2>&1; \
         mknod /tmp/ram1 b 1 1 && (head -c1 /tmp/ram1 >/dev/null) 2>&1; true",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("env=granted"), "env: {out}");
    assert!(out.contains("from-cdi"), "mount: {out}");
    assert!(out.contains("write-ok"), "device node writable: {out}");
    assert!(out.contains("ram-read=1"), "granted r on b 1:0: {out}");
    assert!(
        out.contains("/dev/berth-ram: Operation not permitted"),
        "w on b 1:0 not granted: {out}"
    );
    assert!(out.contains("Read-only file system"), "ro mount: {out}");
    assert!(
        out.contains("/tmp/ram1: Operation not permitted"),
        "a node not granted is denied: {out}"
    );

    // Another container of the pod without the device: no node, no env,
    // and the RAM disk's numbers are refused.
    let other = c.create(&sb, &sleeper("plain", &[]), &pod).await.unwrap();
    c.start(&other).await.unwrap();
    let (_, out) = sh_joined(
        &mut c,
        &other,
        "echo env=$BERTH_CDI; test -e /dev/berth-test0 && echo node-present; \
         mknod /tmp/ram b 1 0 && (head -c1 /tmp/ram >/dev/null) 2>&1; true",
    )
    .await;
    assert!(out.contains("env=\n") || out.starts_with("env=\n"), "{out}");
    assert!(!out.contains("node-present"), "{out}");
    assert!(out.contains("/tmp/ram: Operation not permitted"), "{out}");

    // The annotation form of the request (`cdi.k8s.io/<key>`) grants the
    // same device.
    let mut annotated = sleeper("annotated", &[]);
    annotated
        .annotations
        .insert("cdi.k8s.io/test".into(), "berth.test/dev=null0".into());
    let annotated = c
        .create(&sb, &annotated, &pod)
        .await
        .expect("create by annotation");
    c.start(&annotated).await.unwrap();
    let (_, out) = sh_joined(
        &mut c,
        &annotated,
        "echo env=$BERTH_CDI; test -c /dev/berth-test0 && echo node-present",
    )
    .await;
    assert!(
        out.contains("env=granted") && out.contains("node-present"),
        "{out}"
    );
    c.stop(&annotated, 0).await.unwrap();

    let st = c
        .runtime
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let cdi: serde_json::Value = serde_json::from_str(st.info.get("cdi").expect("cdi info")).unwrap();
    assert_eq!(cdi["devices"], 2, "{cdi}");
    assert_eq!(cdi["specDirs"][0], specs.path().to_str().unwrap(), "{cdi}");

    c.stop(&id, 0).await.unwrap();
    c.stop(&other, 0).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
    assert_nothing_left(&b, &format!("{}/{sb}", b.cgroup_parent));
}

#[tokio::test]
async fn cdi_bad_names_and_specs_fail_create_with_nothing_left() {
    let specs = tempfile::tempdir_in("/tmp").unwrap();
    write_spec_dir(specs.path());
    let (b, mut c) = berthd_with_cdi(specs.path()).await;
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("cdibad", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    let spec_file = specs.path().join("berth-test.json");
    let spec_file = spec_file.to_str().unwrap();

    let cases: Vec<(&str, tonic::Code, Vec<String>)> = vec![
        (
            "berth.test/dev=nope",
            tonic::Code::NotFound,
            vec!["berth.test/dev=nope".into(), specs.path().display().to_string()],
        ),
        (
            "../../etc/passwd",
            tonic::Code::InvalidArgument,
            vec!["CDI device name".into()],
        ),
        (
            "berth.test/dev=hooked",
            tonic::Code::FailedPrecondition,
            vec![
                "hook path \"bin/true\" must be an absolute path".into(),
                spec_file.into(),
            ],
        ),
    ];
    for (name, code, says) in cases {
        let e = c
            .create(&sb, &sleeper("bad", &["berth.test/dev=null0", name]), &pod)
            .await
            .expect_err(name);
        assert_eq!(e.code(), code, "{name}: {e:?}");
        for s in says {
            assert!(e.message().contains(&s), "{name}: {:?} lacks {s:?}", e.message());
        }
    }
    // A malformed file fails every CDI request, naming the file.
    let broken = specs.path().join("broken.yaml");
    std::fs::write(&broken, "cdiVersion: \"0.6.0\"\nkind: [not, a, kind\n").unwrap();
    let e = c
        .create(&sb, &sleeper("bad", &["berth.test/dev=null0"]), &pod)
        .await
        .expect_err("malformed spec file");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains(broken.to_str().unwrap()), "{e:?}");
    // Fixed, it is read again (the directory changed).
    std::fs::remove_file(&broken).unwrap();
    let ok = c
        .create(&sb, &sleeper("good", &["berth.test/dev=null0"]), &pod)
        .await
        .expect("create after the bad file is gone");

    let listed = c
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    let ids: Vec<_> = listed.iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids, vec![ok.clone()], "the failed creates left no container");
    c.remove(&ok).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
    assert_nothing_left(&b, &format!("{}/{sb}", b.cgroup_parent));
}

/// The five hook moments, in the order the OCI runtime spec runs them.
const MOMENTS: [&str; 5] = [
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// A hook running busybox `sh -c script moment`: the moment is `$0`, so
/// an argument reaches the hook as written (no shell of berth's between).
fn sh_hook(moment: &str, script: &str, timeout: Option<i64>) -> serde_json::Value {
    let mut h = serde_json::json!({
        "hookName": moment,
        "path": "/bin/sh",
        "args": ["sh", "-c", script, moment],
        "env": ["BERTH_HOOK_ENV=from-spec"],
    });
    if let Some(t) = timeout {
        h["timeout"] = t.into();
    }
    h
}

/// `berth.test/hooks` in `dir`: device `all` has a hook at every moment,
/// each appending `<moment> <mount ns> <net ns> <env> <state JSON>` to
/// `dir/out/markers` (startContainer, which runs inside the container's
/// root, through the device's rw mount of `dir/out` at /cdi-hooks), and
/// the first two listing their open fds. The `fail-*` devices have one
/// hook that exits 3 at that moment; `hang` a createRuntime hook that
/// sleeps past its 1 s timeout after writing its pid.
fn write_hooks_spec(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let o = out.display().to_string();
    let mark = |target: &str| {
        format!(
            "echo \"$0 $(readlink /proc/self/ns/mnt) $(readlink /proc/self/ns/net) $BERTH_HOOK_ENV $(cat)\" >>{target}/markers"
        )
    };
    let fds = |moment: &str| format!("ls /proc/self/fd >{o}/fds.{moment}; ");
    let mut hooks = Vec::new();
    for m in MOMENTS {
        let (pre, target) = match m {
            "startContainer" => (String::new(), "/cdi-hooks"),
            "createRuntime" | "createContainer" => (fds(m), o.as_str()),
            _ => (String::new(), o.as_str()),
        };
        hooks.push(sh_hook(m, &format!("{pre}{}", mark(target)), Some(30)));
    }
    let mut devices = vec![serde_json::json!({"name": "all", "containerEdits": {
        "hooks": hooks,
        "mounts": [{"hostPath": o, "containerPath": "/cdi-hooks", "options": ["rw", "bind"]}]
    }})];
    for m in MOMENTS {
        devices.push(
            serde_json::json!({"name": format!("fail-{m}"), "containerEdits": {
                "hooks": [sh_hook(m, "echo hook-says-no >&2; exit 3", None)]
            }}),
        );
    }
    devices.push(serde_json::json!({"name": "hang", "containerEdits": {
        "hooks": [sh_hook("createRuntime", &format!("echo $$ >{o}/hang.pid; exec sleep 600"), Some(1))]
    }}));
    let spec = serde_json::json!({"cdiVersion": "0.6.0", "kind": "berth.test/hooks", "devices": devices});
    std::fs::write(dir.join("hooks.json"), spec.to_string()).unwrap();
    out
}

/// One marker line.
#[derive(Debug)]
struct Marker {
    moment: String,
    mnt_ns: String,
    net_ns: String,
    env: String,
    state: serde_json::Value,
}

fn markers(out: &Path) -> Vec<Marker> {
    let text = std::fs::read_to_string(out.join("markers")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(5, ' ').collect();
            assert_eq!(f.len(), 5, "marker {l:?}");
            Marker {
                moment: f[0].into(),
                mnt_ns: f[1].into(),
                net_ns: f[2].into(),
                env: f[3].into(),
                state: serde_json::from_str(f[4]).unwrap_or_else(|e| panic!("state of {l:?}: {e}")),
            }
        })
        .collect()
}

fn moments(out: &Path) -> Vec<String> {
    markers(out).into_iter().map(|m| m.moment).collect()
}

#[tokio::test]
async fn cdi_hooks_run_at_their_oci_moments_in_their_namespaces() {
    let specs = tempfile::tempdir_in("/tmp").unwrap();
    let out = write_hooks_spec(specs.path());
    let (b, mut c) = berthd_with_cdi(specs.path()).await;
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("cdihooks", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    let id = c
        .create(&sb, &sleeper("hooked", &["berth.test/hooks=all"]), &pod)
        .await
        .expect("create with hooks");
    assert_eq!(moments(&out), MOMENTS[..2], "during CreateContainer");
    c.start(&id).await.expect("start with hooks");
    assert_eq!(moments(&out), MOMENTS[..4], "during StartContainer");
    c.stop(&id, 0).await.unwrap();
    assert_eq!(moments(&out), MOMENTS, "after StopContainer");
    c.remove(&id).await.unwrap();
    assert_eq!(moments(&out), MOMENTS, "each hook ran once");

    let m = markers(&out);
    let node_ns = |t: &str| {
        let l = std::fs::read_link(format!("/proc/self/ns/{t}")).unwrap();
        l.to_str().unwrap().to_string()
    };
    let (node_mnt, node_net) = (node_ns("mnt"), node_ns("net"));
    let statuses: Vec<&str> = m.iter().map(|x| x.state["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        ["creating", "creating", "created", "running", "stopped"],
        "{m:?}"
    );
    let pid = &m[0].state["pid"];
    assert!(pid.as_u64().is_some_and(|p| p > 1), "{m:?}");
    for x in &m {
        let (moment, state) = (&x.moment, &x.state);
        assert_eq!(state["id"], id.as_str(), "{moment}: {state}");
        assert_eq!(x.env, "from-spec", "{moment}: the hook's env");
        assert!(
            state["bundle"].as_str().is_some_and(|p| p.starts_with('/')),
            "{state}"
        );
        if moment != "poststop" {
            assert_eq!(
                &state["pid"], pid,
                "{moment}: the container's pid, as the node sees it"
            );
        }
        // createRuntime, poststart and poststop run in the runtime's
        // namespaces (berthd's, not the pod's network namespace the shim
        // lives in); createContainer and startContainer in the container's.
        let in_container = matches!(moment.as_str(), "createContainer" | "startContainer");
        assert_eq!(
            x.mnt_ns != node_mnt,
            in_container,
            "{moment}: mount ns {} (node {node_mnt})",
            x.mnt_ns
        );
        assert_eq!(
            x.net_ns != node_net,
            in_container,
            "{moment}: net ns {} (node {node_net})",
            x.net_ns
        );
    }
    assert_eq!(
        m[1].mnt_ns, m[2].mnt_ns,
        "createContainer and startContainer share the container's mount ns"
    );
    // No descriptor of the shim or of the init stage reaches a hook: only
    // stdio and the directory ls has open.
    for moment in ["createRuntime", "createContainer"] {
        let fds = std::fs::read_to_string(out.join(format!("fds.{moment}"))).unwrap();
        let fds: Vec<&str> = fds.split_whitespace().collect();
        assert_eq!(fds, ["0", "1", "2", "3"], "{moment} inherited descriptors");
    }

    c.stop_and_remove_pod(&sb).await.unwrap();
    assert_nothing_left(&b, &format!("{}/{sb}", b.cgroup_parent));
}

#[tokio::test]
async fn cdi_failing_and_hung_hooks_fail_create_or_start_or_are_logged() {
    let specs = tempfile::tempdir_in("/tmp").unwrap();
    let out = write_hooks_spec(specs.path());
    let (b, mut c) = berthd_with_cdi(specs.path()).await;
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("cdihookfail", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();

    // createRuntime and createContainer: CreateContainer fails naming the
    // hook, and leaves no container.
    for m in ["createRuntime", "createContainer"] {
        let e = c
            .create(
                &sb,
                &sleeper("bad", &[&format!("berth.test/hooks=fail-{m}")]),
                &pod,
            )
            .await
            .expect_err(m);
        for s in [m, "/bin/sh", "exit status 3", "hook-says-no"] {
            assert!(e.message().contains(s), "{m}: {:?} lacks {s:?}", e.message());
        }
    }
    // A hung hook is killed at its timeout.
    let e = c
        .create(&sb, &sleeper("bad", &["berth.test/hooks=hang"]), &pod)
        .await
        .expect_err("hung createRuntime hook");
    assert!(
        e.message().contains("createRuntime") && e.message().contains("timed out"),
        "{e:?}"
    );
    let hung: i32 = std::fs::read_to_string(out.join("hang.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{hung}/comm")).unwrap_or_default();
    assert_ne!(comm.trim(), "sleep", "the timed-out hook was killed and reaped");
    let listed = c
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(listed.is_empty(), "failed creates left containers: {listed:?}");

    // startContainer: StartContainer fails naming the hook; the process
    // never runs.
    let id = c
        .create(
            &sb,
            &sleeper("badstart", &["berth.test/hooks=fail-startContainer"]),
            &pod,
        )
        .await
        .expect("create");
    let e = c.start(&id).await.expect_err("failing startContainer hook");
    assert!(
        e.message().contains("startContainer") && e.message().contains("exit status 3"),
        "{e:?}"
    );
    let st = c.status(&id).await.unwrap().status.unwrap();
    assert_ne!(st.state, cri::ContainerState::ContainerRunning as i32, "{st:?}");
    c.remove(&id).await.unwrap();

    // poststart and poststop failures are only logged.
    let id = c
        .create(
            &sb,
            &sleeper(
                "postfail",
                &[
                    "berth.test/hooks=fail-poststart",
                    "berth.test/hooks=fail-poststop",
                ],
            ),
            &pod,
        )
        .await
        .expect("create");
    c.start(&id)
        .await
        .expect("a failing poststart hook does not fail the start");
    let st = c.status(&id).await.unwrap().status.unwrap();
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32, "{st:?}");
    c.stop(&id, 0)
        .await
        .expect("a failing poststop hook does not fail the stop");
    c.remove(&id).await.unwrap();

    c.stop_and_remove_pod(&sb).await.unwrap();
    assert_nothing_left(&b, &format!("{}/{sb}", b.cgroup_parent));
}
