//! CDI devices: a spec file in berthd's CDI directory hands a container a
//! device node under another name, a mount and an env var; the device filter
//! allows exactly the granted nodes; bad names and bad spec files fail
//! CreateContainer with the file named and nothing left behind.
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
                {"hookName": "createContainer", "path": "/bin/true"}
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
            vec!["CDI hooks are not supported yet".into(), spec_file.into()],
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
