//! Image volumes (KEP-4639): a CRI mount whose `image` names an image
//! kubelet pulled is the image's content, read-only, nosuid, nodev and
//! noexec, at `container_path` (or its `image_sub_path`, which cannot leave
//! the image). The image is in use while a container mounts it, across a
//! berthd restart and a crash in CreateContainer.
//!
//! Images (hack/images/mkimage.py): `volume-data` (two layers: data/, a
//! subdirectory, an executable script, symlinks to `/` and `../..`) and
//! `volume-single` (its first layer alone).
//!
//! Needs root, cgroup v2, overlayfs and the loopback registry: runs inside
//! the VM (`hack/vm`). Run with `--test-threads=1`.

use std::time::Duration;

use berth_proto::cri;
use berth_tests::node::assert_nothing_left;
use berth_tests::*;

fn busybox() -> String {
    format!("{}/library/busybox:latest", registry())
}

fn volume_data() -> String {
    format!("{}/library/volume-data:latest", registry())
}

fn volume_single() -> String {
    format!("{}/library/volume-single:latest", registry())
}

/// An image volume as kubelet sends it (always read-only).
fn image_mount(container_path: &str, image: &str, sub_path: &str) -> cri::Mount {
    cri::Mount {
        container_path: container_path.into(),
        readonly: true,
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        image_sub_path: sub_path.into(),
        ..Default::default()
    }
}

async fn remove_image(c: &mut CriClient, image: &str) -> Result<(), tonic::Status> {
    c.images
        .remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
        })
        .await
        .map(|_| ())
}

/// Whether ListImages shows `image` (by tag).
async fn listed(c: &mut CriClient, image: &str) -> bool {
    c.list_images()
        .await
        .unwrap()
        .iter()
        .any(|i| i.repo_tags.iter().any(|t| t == image))
}

/// Mounts of this berthd's image volumes still on the node.
fn volume_mounts(b: &Berthd) -> Vec<String> {
    mounts_containing(&b.dir.path().to_string_lossy())
        .into_iter()
        .filter(|l| l.contains("image-volumes"))
        .collect()
}

/// The files, a subPath, a one-layer image and a link inside the image are
/// readable; nothing can be written or executed; the mount says so.
#[tokio::test]
async fn image_volume_reads_files_read_only_noexec() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    for i in [busybox(), volume_data(), volume_single()] {
        c.pull(&i).await.expect("pull");
    }
    let pod = pod_config("imgvol", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let (_, info) = c.pod_status(&sb).await.unwrap();
    let pod_cgroup = info["cgroupPath"].as_str().unwrap().to_string();
    let mut cfg = container_config("reader", &busybox(), &["sleep", "3600"]);
    cfg.mounts = vec![
        image_mount("/vol", &volume_data(), ""),
        image_mount("/sub", &volume_data(), "data/sub"),
        image_mount("/linked", &volume_data(), "to-sub"),
        image_mount("/single", &volume_single(), ""),
    ];
    let id = c.create(&sb, &cfg, &pod).await.expect("create");
    c.start(&id).await.expect("start");

    let (rc, out) = sh_joined(
        &mut c,
        &id,
        "set -e; cat /vol/data/hello.txt /vol/data/top.txt /sub/inner.txt /linked/inner.txt \
         /single/data/hello.txt; test ! -e /single/data/top.txt; echo read-ok",
    )
    .await;
    assert_eq!(rc, 0, "{out}");
    assert_eq!(
        out,
        "hello from an image\ntop layer\ninner\ninner\nhello from an image\nread-ok\n"
    );

    for dir in ["/vol", "/sub", "/single"] {
        let (rc, out) = sh_joined(&mut c, &id, &format!("touch {dir}/new")).await;
        assert_ne!(rc, 0, "{dir}: {out}");
        assert!(out.contains("Read-only file system"), "{dir}: {out}");
    }
    // The script is a valid one (sh runs it), yet it cannot be executed.
    let (rc, out) = sh_joined(&mut c, &id, "sh /vol/run.sh").await;
    assert_eq!((rc, out.as_str()), (0, "ran\n"));
    for script in ["/vol/run.sh", "/single/run.sh"] {
        let (rc, out) = sh_joined(&mut c, &id, script).await;
        assert_eq!(rc, 126, "{script}: {out}");
        assert!(out.contains("Permission denied"), "{script}: {out}");
    }
    let (_, mountinfo) = sh_joined(&mut c, &id, "cat /proc/self/mountinfo").await;
    for dir in ["/vol", "/sub", "/linked", "/single"] {
        let line = mountinfo
            .lines()
            .rfind(|l| l.split(' ').nth(4) == Some(dir))
            .unwrap_or_else(|| panic!("no mount at {dir}: {mountinfo}"));
        let opts: Vec<&str> = line.split(' ').nth(5).unwrap().split(',').collect();
        for want in ["ro", "nosuid", "nodev", "noexec"] {
            assert!(opts.contains(&want), "{dir} lacks {want}: {line}");
        }
    }
    let st = c.status(&id).await.unwrap().status.unwrap();
    assert!(
        st.mounts.iter().any(|m| m.container_path == "/sub"),
        "{:?}",
        st.mounts
    );

    c.stop(&id, 0).await.unwrap();
    c.remove(&id).await.unwrap();
    assert!(volume_mounts(&b).is_empty(), "{:?}", volume_mounts(&b));
    c.stop_and_remove_pod(&sb).await.unwrap();
    assert_nothing_left(&b, &pod_cgroup);
}

/// RemoveImage refuses an image a container mounts, naming the container,
/// until RemoveContainer; the refusal holds across a berthd restart.
#[tokio::test]
async fn image_volume_keeps_its_image_until_the_container_goes() {
    let (mut b, mut c) = Berthd::start().await.expect("berthd");
    for i in [busybox(), volume_data()] {
        c.pull(&i).await.expect("pull");
    }
    let pod = pod_config("imgvol-use", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let mut cfg = container_config("user", &busybox(), &["sleep", "3600"]);
    cfg.mounts = vec![image_mount("/vol", &volume_data(), "data")];
    let id = c.create(&sb, &cfg, &pod).await.expect("create");
    c.start(&id).await.expect("start");

    let e = remove_image(&mut c, &volume_data()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains(&id), "names the container: {e:?}");
    assert!(listed(&mut c, &volume_data()).await, "still listed");

    // berthd restarts: the record names the image volume, the mount stays.
    b.kill_hard();
    let mut c = b.spawn().await.expect("berthd restarts");
    let e = remove_image(&mut c, &volume_data()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    let (rc, out) = sh_joined(&mut c, &id, "cat /vol/hello.txt").await;
    assert_eq!((rc, out.as_str()), (0, "hello from an image\n"));
    assert!(
        !volume_mounts(&b).is_empty(),
        "mounted while the container exists"
    );

    c.stop(&id, 0).await.unwrap();
    let e = remove_image(&mut c, &volume_data()).await.unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::FailedPrecondition,
        "an exited container still holds it"
    );
    c.remove(&id).await.unwrap();
    assert!(volume_mounts(&b).is_empty(), "{:?}", volume_mounts(&b));
    remove_image(&mut c, &volume_data()).await.expect("removable now");
    assert!(!listed(&mut c, &volume_data()).await);
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// SubPaths that leave the image, miss, or name a file are refused with
/// their own code, and a refused create leaves no mount and no container.
#[tokio::test]
async fn image_volume_hostile_sub_paths_are_refused() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    for i in [busybox(), volume_data()] {
        c.pull(&i).await.expect("pull");
    }
    let pod = pod_config("imgvol-evil", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    use tonic::Code::{InvalidArgument, NotFound};
    for (sub, code) in [
        ("../../etc", InvalidArgument),
        ("data/../../..", InvalidArgument),
        ("/etc", InvalidArgument),
        ("to-root", InvalidArgument),
        ("to-root/etc", InvalidArgument),
        ("up", InvalidArgument),
        ("up/etc", InvalidArgument),
        ("data/hello.txt", InvalidArgument),
        ("missing", NotFound),
    ] {
        let mut cfg = container_config("evil", &busybox(), &["sleep", "3600"]);
        cfg.mounts = vec![image_mount("/vol", &volume_data(), sub)];
        let e = c.create(&sb, &cfg, &pod).await.unwrap_err();
        assert_eq!(e.code(), code, "{sub}: {e:?}");
        assert!(e.message().contains(sub), "{sub}: names the subPath: {e:?}");
        assert!(volume_mounts(&b).is_empty(), "{sub}: {:?}", volume_mounts(&b));
        let left: Vec<_> = std::fs::read_dir(b.dir.path().join("root/containers"))
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{sub}: leftover container dirs {left:?}");
    }
    // The same request with a good subPath works: the refusals above were
    // the subPaths' own.
    let mut cfg = container_config("evil", &busybox(), &["sleep", "3600"]);
    cfg.mounts = vec![image_mount("/vol", &volume_data(), "data/sub")];
    let id = c.create(&sb, &cfg, &pod).await.expect("a good subPath");
    c.remove(&id).await.unwrap();
    assert!(volume_mounts(&b).is_empty(), "{:?}", volume_mounts(&b));
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// An image kubelet did not pull is NotFound, and is not pulled.
#[tokio::test]
async fn image_volume_absent_image_is_not_found() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("imgvol-absent", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let mut cfg = container_config("absent", &busybox(), &["sleep", "3600"]);
    cfg.mounts = vec![image_mount("/vol", &volume_single(), "")];
    let e = c.create(&sb, &cfg, &pod).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("volume-single"), "{e:?}");
    assert!(!listed(&mut c, &volume_single()).await, "never pulled implicitly");
    assert!(volume_mounts(&b).is_empty());
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// berthd killed after the image volume is mounted but before the record
/// exists: recovery unmounts it and removes the container's dirs, and the
/// image can go.
#[tokio::test]
async fn image_volume_crash_in_create_leaves_no_mount() {
    let (mut b, mut c) = Berthd::start().await.expect("berthd");
    for i in [busybox(), volume_data()] {
        c.pull(&i).await.expect("pull");
    }
    let pod = pod_config("imgvol-crash", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    b.kill_hard();
    let mut c = b
        .spawn_env(&[("BERTH_CRASH_AT", "create_container.cgroup")])
        .await
        .expect("berthd with a crash point");
    let mut cfg = container_config("crash", &busybox(), &["sleep", "3600"]);
    cfg.mounts = vec![image_mount("/vol", &volume_data(), "data")];
    assert!(c.create(&sb, &cfg, &pod).await.is_err(), "berthd aborts");
    assert!(
        b.wait_exit(Duration::from_secs(20)).is_some(),
        "berthd aborted at the crash point"
    );
    assert!(!volume_mounts(&b).is_empty(), "the crash came after the mount");
    let mut c = b.spawn().await.expect("berthd restarts");
    assert!(volume_mounts(&b).is_empty(), "{:?}", volume_mounts(&b));
    let left: Vec<_> = std::fs::read_dir(b.dir.path().join("root/containers"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "leftover container dirs {left:?}");
    remove_image(&mut c, &volume_data())
        .await
        .expect("no container holds it");
    c.stop_and_remove_pod(&sb).await.unwrap();
}
