//! Mounts seen from inside the container: propagation, read-only and
//! recursive read-only, invalid combinations, symlinked host paths, the
//! termination-message file and image VOLUMEs.
//!
//! Needs root, cgroup v2 and the loopback registry: runs inside the VM
//! (`hack/vm`). Run with `--test-threads=1`.

use std::path::Path;
use std::time::Duration;

use berth_proto::cri;
use berth_tests::node::assert_nothing_left;
use berth_tests::*;

fn busybox() -> String {
    format!("{}/library/busybox:latest", registry())
}

/// Runs a host command, panicking with its output if it fails.
fn host_cmd(argv: &[&str]) {
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sh -c script` in a running container: (exit code, stdout, stderr).
async fn exec_sh(c: &mut CriClient, id: &str, script: &str) -> (i32, String, String) {
    let r = c
        .runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 20,
        })
        .await
        .expect("exec")
        .into_inner();
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

/// The mountinfo line whose mount point (field 5) is `mount_point`.
fn mountinfo_line<'a>(mountinfo: &'a str, mount_point: &str) -> Option<&'a str> {
    mountinfo
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some(mount_point))
}

/// The optional fields of a mountinfo line (`shared:N`, `master:N`, ...).
fn optional_fields(line: &str) -> Vec<String> {
    line.split(' ')
        .skip(6)
        .take_while(|f| *f != "-")
        .map(str::to_string)
        .collect()
}

fn bind(container_path: &str, host_path: &Path, propagation: cri::MountPropagation) -> cri::Mount {
    cri::Mount {
        container_path: container_path.into(),
        host_path: host_path.to_string_lossy().into_owned(),
        propagation: propagation as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn mounts_propagation_private_rslave_rshared() {
    use cri::MountPropagation::*;
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let host = tempfile::Builder::new()
        .prefix("berth-prop-")
        .tempdir_in("/tmp")
        .unwrap();
    let vol = host.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    let vol_s = vol.to_string_lossy().into_owned();
    host_cmd(&["mount", "-t", "tmpfs", "-o", "size=1m", "berth-prop", &vol_s]);
    // Detaches the volume and the submounts below it if the test fails.
    let _unmount = Unmount(vol.clone());
    host_cmd(&["mount", "--make-shared", &vol_s]);
    std::fs::create_dir(vol.join("late")).unwrap();
    std::fs::create_dir(vol.join("fromctr")).unwrap();

    let pod = pod_config("prop", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let mut ids = Vec::new();
    for (name, prop) in [
        ("private", PropagationPrivate),
        ("rslave", PropagationHostToContainer),
        ("rshared", PropagationBidirectional),
    ] {
        let mut cfg = container_config(name, &busybox(), &["sleep", "3600"]);
        cfg.mounts = vec![bind("/vol", &vol, prop)];
        if prop == PropagationBidirectional {
            // Mounting inside needs CAP_SYS_ADMIN.
            cfg.linux.as_mut().unwrap().security_context = Some(cri::LinuxContainerSecurityContext {
                privileged: true,
                ..Default::default()
            });
        }
        let id = c.create(&sb, &cfg, &pod).await.expect("create");
        c.start(&id).await.expect("start");
        ids.push((name, id));
    }

    // The host mounts something under the volume after the containers started.
    let late = vol.join("late").to_string_lossy().into_owned();
    host_cmd(&["mount", "-t", "tmpfs", "-o", "size=1m", "berth-late", &late]);
    for (name, id) in &ids {
        let (rc, info, err) = exec_sh(&mut c, id, "cat /proc/self/mountinfo").await;
        assert_eq!(rc, 0, "{name}: {err}");
        let line = mountinfo_line(&info, "/vol").unwrap_or_else(|| panic!("{name}: no /vol in\n{info}"));
        let opt = optional_fields(line);
        let shared = opt.iter().any(|f| f.starts_with("shared:"));
        let slave = opt.iter().any(|f| f.starts_with("master:"));
        let sees_late = mountinfo_line(&info, "/vol/late").is_some();
        match *name {
            "private" => assert!(!shared && !slave && !sees_late, "{name}: {line}\n{info}"),
            "rslave" => assert!(slave && !shared && sees_late, "{name}: {line}\n{info}"),
            _ => assert!(shared && sees_late, "{name}: {line}\n{info}"),
        }
    }

    // The privileged rshared container mounts inside: the host sees it, and
    // sees it go when the container unmounts it.
    let rshared = &ids[2].1;
    let fromctr = vol.join("fromctr").to_string_lossy().into_owned();
    let (rc, _, err) = exec_sh(&mut c, rshared, "mount -t tmpfs berth-fromctr /vol/fromctr").await;
    assert_eq!(rc, 0, "mount inside: {err}");
    let on_host = mounts_containing(&fromctr);
    assert_eq!(on_host.len(), 1, "container mount reaches the host: {on_host:?}");
    assert!(on_host[0].contains("berth-fromctr"), "{on_host:?}");
    // The rshared container's own rootfs, /proc, /dev never reach the host.
    let leaked = mounts_containing(&format!("{}/state/containers/", b.dir.path().display()));
    assert!(
        leaked.is_empty(),
        "container mounts leaked to the host: {leaked:#?}"
    );
    let (rc, _, err) = exec_sh(&mut c, rshared, "umount /vol/fromctr").await;
    assert_eq!(rc, 0, "umount inside: {err}");
    assert!(
        mounts_containing(&fromctr).is_empty(),
        "unmount reaches the host too"
    );

    for (_, id) in &ids {
        c.stop(id, 0).await.unwrap();
        c.remove(id).await.unwrap();
    }
    c.stop_and_remove_pod(&sb).await.unwrap();
    // The host's mounts are untouched by the containers going away.
    assert_eq!(mounts_containing(&late).len(), 1, "the host's own submount stays");
    host_cmd(&["umount", &late]);
    host_cmd(&["umount", &vol_s]);
    assert!(mounts_containing(&vol_s).is_empty());
}

#[tokio::test]
async fn mounts_readonly_recursive_readonly_and_invalid_combinations() {
    use cri::MountPropagation::*;
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let st = c
        .runtime
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(
        st.runtime_handlers[0]
            .features
            .as_ref()
            .unwrap()
            .recursive_read_only_mounts,
        "kernel >= 5.12: rro advertised"
    );

    let host = tempfile::Builder::new()
        .prefix("berth-ro-")
        .tempdir_in("/tmp")
        .unwrap();
    let src = host.path().join("src");
    let sub = src.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let sub_s = sub.to_string_lossy().into_owned();
    host_cmd(&["mount", "-t", "tmpfs", "-o", "size=1m", "berth-sub", &sub_s]);
    let _unmount_sub = Unmount(sub.clone());

    let pod = pod_config("ro", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    for (name, rro) in [("ro", false), ("rro", true)] {
        let mut cfg = container_config(name, &busybox(), &["sleep", "3600"]);
        let mut m = bind("/vol", &src, PropagationPrivate);
        m.readonly = true;
        m.recursive_read_only = rro;
        cfg.mounts = vec![m];
        let id = c.create(&sb, &cfg, &pod).await.expect("create");
        c.start(&id).await.expect("start");
        let (rc, _, err) = exec_sh(&mut c, &id, "touch /vol/top").await;
        assert_ne!(rc, 0, "{name}: the volume is read-only");
        assert!(err.contains("Read-only file system"), "{name}: EROFS, got {err}");
        let (rc, _, err) = exec_sh(&mut c, &id, &format!("touch /vol/sub/{name}")).await;
        let (_, info, _) = exec_sh(&mut c, &id, "cat /proc/self/mountinfo").await;
        let sub_line = mountinfo_line(&info, "/vol/sub").expect("submount inside");
        let sub_opts = sub_line.split(' ').nth(5).unwrap();
        if rro {
            assert_ne!(rc, 0, "rro: the submount is read-only too");
            assert!(err.contains("Read-only file system"), "rro: EROFS, got {err}");
            assert!(sub_opts.split(',').any(|o| o == "ro"), "{sub_line}");
        } else {
            assert_eq!(rc, 0, "plain ro leaves the submount writable: {err}");
            assert!(sub.join(name).exists(), "the write landed on the host");
            assert!(sub_opts.split(',').any(|o| o == "rw"), "{sub_line}");
        }
        let top_opts = mountinfo_line(&info, "/vol")
            .unwrap()
            .split(' ')
            .nth(5)
            .unwrap()
            .to_string();
        assert!(top_opts.split(',').any(|o| o == "ro"), "{top_opts}");
        c.stop(&id, 0).await.unwrap();
        c.remove(&id).await.unwrap();
    }

    // Combinations CRI rules out, and host mounts that cannot propagate.
    let private = host.path().join("private");
    let slave = host.path().join("slave");
    std::fs::create_dir_all(&private).unwrap();
    std::fs::create_dir_all(&slave).unwrap();
    let (private_s, slave_s) = (
        private.to_string_lossy().into_owned(),
        slave.to_string_lossy().into_owned(),
    );
    host_cmd(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=1m",
        "berth-private",
        &private_s,
    ]);
    host_cmd(&["mount", "--make-private", &private_s]);
    let _unmount_private = Unmount(private.clone());
    host_cmd(&["mount", "--bind", &sub_s, &slave_s]);
    let _unmount_slave = Unmount(slave.clone());
    host_cmd(&["mount", "--make-slave", &slave_s]);
    let rro = |readonly: bool, p: cri::MountPropagation| {
        let mut m = bind("/vol", &src, p);
        m.readonly = readonly;
        m.recursive_read_only = true;
        m
    };
    for (what, m) in [
        ("rro without readonly", rro(false, PropagationPrivate)),
        ("rro with HostToContainer", rro(true, PropagationHostToContainer)),
        ("rro with Bidirectional", rro(true, PropagationBidirectional)),
        (
            "HostToContainer on a private mount",
            bind("/vol", &private, PropagationHostToContainer),
        ),
        (
            "Bidirectional on a private mount",
            bind("/vol", &private, PropagationBidirectional),
        ),
        (
            "Bidirectional on a slave mount",
            bind("/vol", &slave, PropagationBidirectional),
        ),
    ] {
        let mut cfg = container_config("bad", &busybox(), &["true"]);
        cfg.mounts = vec![m];
        let e = c.create(&sb, &cfg, &pod).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{what}: {e:?}");
    }
    // A slave mount is fine for HostToContainer.
    let mut cfg = container_config("slave-ok", &busybox(), &["true"]);
    cfg.mounts = vec![bind("/vol", &slave, PropagationHostToContainer)];
    let id = c
        .create(&sb, &cfg, &pod)
        .await
        .expect("HostToContainer on a slave mount");
    c.remove(&id).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn mounts_symlinked_host_path_termination_log_and_image_volumes() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    let image = format!("{}/library/busybox-volumes:latest", registry());
    c.pull(&image).await.expect("pull");
    let host = tempfile::Builder::new()
        .prefix("berth-vols-")
        .tempdir_in("/tmp")
        .unwrap();
    let target = host.path().join("target");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("hello"), "from-target\n").unwrap();
    let link = host.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    // kubelet creates the termination-message file and mounts it.
    let termlog = host.path().join("termination-log");
    std::fs::write(&termlog, "").unwrap();
    let cache = host.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::write(cache.join("from-host"), "").unwrap();

    let pod = pod_config("vols", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let (_, info) = c.pod_status(&sb).await.unwrap();
    let pod_cgroup = info["cgroupPath"].as_str().unwrap().to_string();
    let mut cfg = container_config(
        "vols",
        &image,
        &[
            "sh",
            "-c",
            "set -e; cat /lnk/hello; grep ' /lnk ' /proc/self/mountinfo; \
             echo written-by-container >/dev/termination-log; \
             test -d /data; test -z \"$(ls -A /data)\"; touch /data/new; \
             test -d /var/cache/app; test -z \"$(ls -A /var/cache/app)\"; echo volumes-ok",
        ],
    );
    cfg.mounts = vec![
        bind("/lnk", &link, cri::MountPropagation::PropagationPrivate),
        bind(
            "/dev/termination-log",
            &termlog,
            cri::MountPropagation::PropagationPrivate,
        ),
    ];
    let id = c.create(&sb, &cfg, &pod).await.expect("create");
    c.start(&id).await.expect("start");
    let s = c.wait_exited(&id, Duration::from_secs(20)).await.unwrap();
    let log = std::fs::read_to_string(b.log_dir().join("vols.log")).unwrap();
    assert_eq!(s.exit_code, 0, "log: {log}");
    assert!(log.contains("from-target"), "the link's target is mounted: {log}");
    // mountinfo's root field names the directory really bound: the target.
    let lnk_line = log
        .lines()
        .find(|l| l.contains(" /lnk "))
        .expect("mountinfo line");
    assert!(lnk_line.contains("/target /lnk "), "{lnk_line}");
    assert!(log.contains("volumes-ok"), "{log}");
    assert_eq!(
        std::fs::read_to_string(&termlog).unwrap(),
        "written-by-container\n"
    );
    // ContainerStatus keeps the mounts as kubelet asked.
    let st = c.status(&id).await.unwrap().status.unwrap();
    assert!(
        st.mounts.iter().any(|m| m.host_path == link.to_string_lossy()),
        "{:?}",
        st.mounts
    );
    c.remove(&id).await.unwrap();

    // A CRI mount over an image VOLUME wins; the other VOLUME stays a
    // writable empty dir even on a read-only rootfs.
    let mut cfg = container_config(
        "covered",
        &image,
        &[
            "sh",
            "-c",
            "set -e; test -e /var/cache/app/from-host; touch /data/ok; \
             if touch /rootfs-write 2>/dev/null; then exit 9; fi; echo covered-ok",
        ],
    );
    cfg.mounts = vec![bind(
        "/var/cache/app",
        &cache,
        cri::MountPropagation::PropagationPrivate,
    )];
    cfg.linux.as_mut().unwrap().security_context = Some(cri::LinuxContainerSecurityContext {
        readonly_rootfs: true,
        ..Default::default()
    });
    let id = c.create(&sb, &cfg, &pod).await.expect("create covered");
    c.start(&id).await.expect("start covered");
    let s = c.wait_exited(&id, Duration::from_secs(20)).await.unwrap();
    let log = std::fs::read_to_string(b.log_dir().join("covered.log")).unwrap();
    assert_eq!(s.exit_code, 0, "log: {log}");
    assert!(log.contains("covered-ok"), "{log}");
    c.remove(&id).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
    assert_nothing_left(&b, &pod_cgroup);
}
