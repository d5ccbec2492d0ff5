//! CheckpointContainer with CRIU (issue 23): a running counter container
//! is dumped into one tar archive (CRIU's images, its writable layer, spec,
//! record and log) and keeps counting; an unknown or stopped container, a
//! bad location and a node without CRIU each get their error, and leave
//! no archive behind. The archive restores (CreateContainer with the
//! archive as image, StartContainer) in a new pod, the counter continuing
//! from its memory.
//!
//! Needs root, cgroup v2, the loopback registry and Debian's criu (the VM
//! carries it): runs inside the VM (`hack/vm`). Run with `--test-threads=1`.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::node::assert_nothing_left;
use berth_tests::*;
use tonic::Code;

const COUNTER: &str = "i=0; while :; do i=$((i+1)); echo $i > /tmp/c; sleep 0.2; done";

/// The counter after replacing the image's (empty) /home with a directory
/// of its own: overlayfs marks that one opaque (`trusted.overlay.opaque`),
/// which the archive must keep.
const OPAQUE_COUNTER: &str =
    "rmdir /home && mkdir /home && i=0; while :; do i=$((i+1)); echo $i > /tmp/c; sleep 0.2; done";

/// The PAX xattrs `member` of `archive` carries.
fn tar_xattrs(archive: &Path, member: &str) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy().trim_end_matches('/') != member {
            continue;
        }
        let Some(exts) = e.pax_extensions().unwrap() else {
            return Vec::new();
        };
        return exts
            .map(|x| x.unwrap())
            .filter_map(|x| {
                let k = x.key().unwrap().strip_prefix("SCHILY.xattr.")?.to_string();
                Some((k, x.value_bytes().to_vec()))
            })
            .collect();
    }
    panic!("{member} not in {}", archive.display());
}

async fn checkpoint(c: &mut CriClient, id: &str, location: &str) -> Result<(), tonic::Status> {
    c.runtime
        .checkpoint_container(cri::CheckpointContainerRequest {
            container_id: id.into(),
            location: location.into(),
            timeout: 0,
        })
        .await
        .map(|_| ())
}

/// The counter's value, read inside the container.
async fn count(c: &mut CriClient, id: &str) -> u64 {
    let (code, out) = c.exec(id, &["cat", "/tmp/c"]).await.expect("exec cat /tmp/c");
    assert_eq!(code, 0, "{out}");
    out.trim().parse().unwrap_or(0)
}

/// Waits (bounded) until the counter passes `above`; returns its value.
async fn count_above(c: &mut CriClient, id: &str, above: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = count(c, id).await;
        if n > above {
            return n;
        }
        assert!(Instant::now() < deadline, "the counter stayed at {n}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `tar -tf` (the VM's busybox tar), one name per entry.
fn tar_list(archive: &Path) -> Vec<String> {
    tar(&["-tf".as_ref(), archive.as_os_str()])
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .collect()
}

/// One member of the archive, read with `tar -xOf`.
fn tar_cat(archive: &Path, member: &str) -> String {
    tar(&["-xOf".as_ref(), archive.as_os_str(), member.as_ref()])
}

/// `tar` with `args`, its stdout; a failure names the arguments.
fn tar(args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new("tar")
        .args(args)
        .output()
        .expect("tar");
    assert!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// CRIU's `mnt_entry` (images/mnt.proto), its required fields.
#[derive(Clone, PartialEq, prost::Message)]
struct MntEntry {
    #[prost(uint32, tag = "1")]
    fstype: u32,
    #[prost(uint32, tag = "2")]
    mnt_id: u32,
    #[prost(uint32, tag = "4")]
    parent_mnt_id: u32,
    #[prost(string, tag = "6")]
    root: String,
    #[prost(string, tag = "7")]
    mountpoint: String,
    #[prost(string, tag = "8")]
    source: String,
}

/// Copies the tar `src` to `dst`, letting `edit` change each regular
/// file's body (by its name without "./").
fn rewrite_archive(src: &Path, dst: &Path, edit: impl Fn(&str, &mut Vec<u8>)) {
    use std::io::Read;
    let mut input = ::tar::Archive::new(std::fs::File::open(src).unwrap());
    let mut output = ::tar::Builder::new(std::fs::File::create(dst).unwrap());
    for entry in input.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut header = entry.header().clone();
        let mut body = Vec::new();
        entry.read_to_end(&mut body).unwrap();
        if header.entry_type() == ::tar::EntryType::Regular {
            edit(&name, &mut body);
            header.set_size(body.len() as u64);
            header.set_cksum();
        }
        output.append(&header, body.as_slice()).unwrap();
    }
    output.finish().unwrap();
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn checkpoint_info(s: &cri::StatusResponse) -> serde_json::Value {
    serde_json::from_str(s.info.get("checkpoint").expect("verbose Status has checkpoint")).unwrap()
}

#[tokio::test]
async fn ckpt_a_running_counter_is_archived_and_keeps_counting() {
    let (b, mut c, _sb, id) =
        start_pod_with_container("ckpt-counter", "", &["sh", "-c", OPAQUE_COUNTER], |_| {}).await;
    let before = count_above(&mut c, &id, 2).await;
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("counter.tar");
    checkpoint(&mut c, &id, archive.to_str().unwrap())
        .await
        .unwrap_or_else(|e| panic!("checkpoint: {e:?}\n{}", b.log()));

    assert_eq!(entries(out.path()), ["counter.tar"], "nothing but the archive");
    let names = tar_list(&archive);
    for want in [
        "checkpoint/inventory.img",
        "checkpoint/pstree.img",
        "checkpoint/dump.log",
        "config.json",
        "container.json",
        "container.log",
        "descriptors.json",
        "rootfs-diff/tmp/c",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("checkpoint/core-") && n.ends_with(".img")),
        "a core image: {names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("checkpoint/pages-")),
        "memory pages: {names:?}"
    );
    let record: serde_json::Value = serde_json::from_str(&tar_cat(&archive, "container.json")).unwrap();
    assert_eq!(record["version"], 1);
    assert_eq!(record["container"]["id"], id.as_str());
    assert_eq!(record["container"]["state"], "Running");
    let spec: serde_json::Value = serde_json::from_str(&tar_cat(&archive, "config.json")).unwrap();
    assert_eq!(
        spec["process"]["args"][2], OPAQUE_COUNTER,
        "the container's own spec"
    );
    // Its stdio as CRIU names it: the shim's log pipes, and as stdin the
    // shim's /dev/null, outside the container's mounts: the external key.
    let stdio: Vec<String> = serde_json::from_str(&tar_cat(&archive, "descriptors.json")).unwrap();
    assert_eq!(stdio.len(), 3, "{stdio:?}");
    assert!(
        stdio[0].starts_with("file[") && stdio[0].ends_with(']'),
        "{stdio:?}"
    );
    assert!(
        stdio[1].starts_with("pipe:[") && stdio[2].starts_with("pipe:["),
        "{stdio:?}"
    );
    assert_eq!(
        tar_xattrs(&archive, "rootfs-diff/home"),
        [("trusted.overlay.opaque".to_string(), b"y".to_vec())],
        "the replaced /home stays opaque"
    );
    let dumped: u64 = tar_cat(&archive, "rootfs-diff/tmp/c")
        .trim()
        .parse()
        .expect("a number in /tmp/c");
    assert!(
        dumped >= before,
        "the writable layer as of the dump: {dumped} < {before}"
    );

    // It runs on, still counting.
    let s = c.status(&id).await.unwrap().status.unwrap();
    assert_eq!(s.state, cri::ContainerState::ContainerRunning as i32);
    count_above(&mut c, &id, dumped + 2).await;

    let status = c
        .runtime
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(checkpoint_info(&status)["supported"], true, "{status:?}");

    // Figures for the docs (printed, not asserted): the same container
    // checkpointed again, each into an archive of its own.
    let (mut times, mut sizes) = (Vec::new(), Vec::new());
    for i in 0..5 {
        let at = out.path().join(format!("again-{i}.tar"));
        let started = Instant::now();
        checkpoint(&mut c, &id, at.to_str().unwrap())
            .await
            .expect("checkpoint again");
        times.push(started.elapsed());
        sizes.push(std::fs::metadata(&at).unwrap().len());
    }
    sizes.sort();
    println!(
        "checkpoint figures: busybox counter, {} runs: median {:?}, median archive {} bytes",
        times.len(),
        median(times),
        sizes[sizes.len() / 2]
    );
}

#[tokio::test]
async fn ckpt_unknown_stopped_and_bad_locations_fail_and_leave_nothing() {
    let (_b, mut c, _sb, id) = start_pod_with_container(
        "ckpt-errors",
        "",
        &["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"],
        |_| {},
    )
    .await;
    let out = tempfile::tempdir().unwrap();
    let good = out.path().join("x.tar");
    let e = checkpoint(&mut c, "no-such-container", good.to_str().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    let existing_dir = out.path().join("a-dir");
    std::fs::create_dir(&existing_dir).unwrap();
    let missing_parent = out.path().join("missing/x.tar");
    for bad in [
        "x.tar",
        "",
        existing_dir.to_str().unwrap(),
        missing_parent.to_str().unwrap(),
    ] {
        let e = checkpoint(&mut c, &id, bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
    }

    c.stop(&id, 10).await.expect("stop");
    let e = checkpoint(&mut c, &id, good.to_str().unwrap()).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("not running"), "{e:?}");
    assert_eq!(entries(out.path()), ["a-dir"], "no archive and no temporary file");
}

#[tokio::test]
async fn ckpt_a_node_without_criu_says_so() {
    let (_b, mut c, _sb, id) = start_pod_with_container(
        "ckpt-nocriu",
        "criu_path = \"/nonexistent/criu\"\n",
        &["sh", "-c", COUNTER],
        |_| {},
    )
    .await;
    let out = tempfile::tempdir().unwrap();
    let e = checkpoint(&mut c, &id, out.path().join("x.tar").to_str().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("CRIU") && e.message().contains("/nonexistent/criu"),
        "{e:?}"
    );
    assert!(entries(out.path()).is_empty());
    let status = c
        .runtime
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(checkpoint_info(&status)["supported"], false, "{status:?}");
}

/// A berthd killed while it writes the archive (the `checkpoint.archive`
/// crash point: the temporary archive complete and synced, not renamed)
/// leaves a partial archive beside the location and CRIU's images under its
/// root; the next berthd removes both at start-up, keeps the container
/// running, and checkpoints it again.
#[tokio::test]
async fn ckpt_a_berthd_killed_while_writing_leaves_nothing_after_restart() {
    let (mut b, c, _sb, id) =
        start_pod_with_container("ckpt-crash", "", &["sh", "-c", COUNTER], |_| {}).await;
    drop(c);
    b.kill_hard();
    let mut c = b
        .spawn_env(&[("BERTH_CRASH_AT", "checkpoint.archive")])
        .await
        .expect("berthd with the crash point");
    let before = count_above(&mut c, &id, 2).await;
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("crash.tar");
    let e = checkpoint(&mut c, &id, archive.to_str().unwrap()).await;
    assert!(e.is_err(), "the call answered: the crash point was never reached");
    let st = b.wait_exit(Duration::from_secs(60));
    assert!(
        st.is_some_and(|s| std::os::unix::process::ExitStatusExt::signal(&s) == Some(libc::SIGABRT)),
        "berthd aborted at the point: {st:?}\n{}",
        b.log()
    );
    let work_root = b.dir.path().join("root/checkpoints");
    let left = entries(out.path());
    assert!(
        left.len() == 1 && left[0].starts_with(".berth-checkpoint-"),
        "the crash left a partial archive: {left:?}"
    );
    assert_eq!(entries(&work_root).len(), 1, "and a work dir");

    b.kill_hard();
    drop(c);
    let mut c = b.spawn().await.expect("berthd restarts");
    assert!(
        entries(out.path()).is_empty(),
        "partial archive removed: {:?}",
        entries(out.path())
    );
    assert!(
        entries(&work_root).is_empty(),
        "work dir removed: {:?}",
        entries(&work_root)
    );
    let s = c.status(&id).await.unwrap().status.unwrap();
    assert_eq!(s.state, cri::ContainerState::ContainerRunning as i32);
    count_above(&mut c, &id, before).await;
    checkpoint(&mut c, &id, archive.to_str().unwrap())
        .await
        .unwrap_or_else(|e| panic!("checkpoint after the restart: {e:?}\n{}", b.log()));
    assert_eq!(entries(out.path()), ["crash.tar"]);
    assert!(entries(&work_root).is_empty(), "{:?}", entries(&work_root));
}

/// A new pod `pod_name`, and a container labelled `restored=yes` created
/// in it from `archive`: Created, with the label. Returns the pod's config
/// and id, the container's id and status, and `root/containers` before
/// the create.
async fn create_restored(
    b: &Berthd,
    c: &mut CriClient,
    pod_name: &str,
    archive: &Path,
) -> (
    cri::PodSandboxConfig,
    String,
    String,
    cri::ContainerStatus,
    Vec<String>,
) {
    let pod = pod_config(pod_name, &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("a new pod");
    let before = container_entries(b);
    let mut cfg = container_config("restored", archive.to_str().unwrap(), &[]);
    cfg.labels.insert("restored".into(), "yes".into());
    let rid = c
        .create(&sb, &cfg, &pod)
        .await
        .unwrap_or_else(|e| panic!("create from the archive: {e:?}\n{}", b.log()));
    let s = c.status(&rid).await.unwrap().status.unwrap();
    assert_eq!(s.state, cri::ContainerState::ContainerCreated as i32);
    assert_eq!(s.labels.get("restored").map(String::as_str), Some("yes"));
    (pod, sb, rid, s, before)
}

/// What `root/containers` holds (records and container dirs).
fn container_entries(b: &Berthd) -> Vec<String> {
    entries(&b.dir.path().join("root/containers"))
}

/// The CreateContainer half of a restore on its own: an archive creates a
/// Created container reporting the original image and the request's
/// labels; a file that is no checkpoint archive is InvalidArgument, and an
/// archive whose image is gone is NotFound naming it (no pull); neither
/// leaves anything in berthd's root.
#[tokio::test]
async fn ckpt_restore_create_checks_the_archive_and_its_image() {
    let (b, mut c, sb, id) =
        start_pod_with_container("ckpt-restore-create", "", &["sh", "-c", COUNTER], |_| {}).await;
    let image = format!("{}/library/busybox:latest", registry());
    count_above(&mut c, &id, 2).await;
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("counter.tar");
    checkpoint(&mut c, &id, archive.to_str().unwrap())
        .await
        .unwrap_or_else(|e| panic!("checkpoint: {e:?}\n{}", b.log()));
    c.stop_and_remove_pod(&sb).await.expect("remove the first pod");
    let (pod, sb2, rid, s, before) = create_restored(&b, &mut c, "ckpt-restore-create2", &archive).await;
    assert_eq!(s.image.as_ref().map(|i| i.image.as_str()), Some(image.as_str()));
    let upper_c = b
        .dir
        .path()
        .join("root/containers")
        .join(&rid)
        .join("upper/tmp/c");
    assert_eq!(
        std::fs::read_to_string(&upper_c).unwrap(),
        tar_cat(&archive, "rootfs-diff/tmp/c"),
        "the archive's writable layer is the container's"
    );
    c.remove(&rid).await.expect("remove the created container");
    assert_eq!(container_entries(&b), before, "remove leaves nothing");

    // Not a checkpoint archive.
    let junk = out.path().join("junk.tar");
    std::fs::write(&junk, "not a tar at all\n".repeat(100)).unwrap();
    let cfg = container_config("junk", junk.to_str().unwrap(), &[]);
    let e = c.create(&sb2, &cfg, &pod).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("checkpoint archive"), "{e:?}");

    // A hostile archive: its mount table also mounts the node's devtmpfs
    // (CRIU would do it as root). Refused before the shim, nothing left.
    let hostile = out.path().join("hostile.tar");
    rewrite_archive(&archive, &hostile, |name, body| {
        if name.starts_with("checkpoint/mountpoints-") {
            let m = MntEntry {
                fstype: 3,
                mnt_id: 4242,
                parent_mnt_id: 1,
                root: "/".into(),
                mountpoint: "./mnt".into(),
                source: "devtmpfs".into(),
            };
            let b = prost::Message::encode_to_vec(&m);
            body.extend((b.len() as u32).to_le_bytes());
            body.extend(b);
        }
    });
    let cfg = container_config("hostile", hostile.to_str().unwrap(), &[]);
    let e = c.create(&sb2, &cfg, &pod).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("mountpoints-") && e.message().contains("\"./mnt\""),
        "names the image and the mount: {e:?}"
    );
    assert_eq!(container_entries(&b), before, "a refused restore leaves nothing");

    // The image the archive was made from is gone: NotFound, no pull.
    c.images
        .remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("remove the image");
    let cfg = container_config("noimage", archive.to_str().unwrap(), &[]);
    let e = c.create(&sb2, &cfg, &pod).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains(&image), "names the image: {e:?}");
    assert!(
        !c.list_images()
            .await
            .unwrap()
            .iter()
            .any(|i| i.repo_tags.contains(&image)),
        "not pulled"
    );
    assert_eq!(container_entries(&b), before, "failed creates leave nothing");
    c.stop_and_remove_pod(&sb2).await.expect("remove the new pod");
}

/// The counter checkpointed, its pod removed, and the archive given as the
/// image of a CreateContainer in a new pod: StartContainer restores the
/// process, which counts on from its memory (a fresh start would count from
/// 1 again); stop and remove leave nothing.
#[tokio::test]
async fn ckpt_restored_counter_continues_in_a_new_pod() {
    let (b, mut c, sb, id) =
        start_pod_with_container("ckpt-restore", "", &["sh", "-c", COUNTER], |_| {}).await;
    count_above(&mut c, &id, 2).await;
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("counter.tar");
    checkpoint(&mut c, &id, archive.to_str().unwrap())
        .await
        .unwrap_or_else(|e| panic!("checkpoint: {e:?}\n{}", b.log()));
    let dumped: u64 = tar_cat(&archive, "rootfs-diff/tmp/c")
        .trim()
        .parse()
        .expect("a number in /tmp/c");
    c.stop_and_remove_pod(&sb).await.expect("remove the first pod");

    let (_pod, sb2, rid, _, _) = create_restored(&b, &mut c, "ckpt-restored", &archive).await;
    c.start(&rid)
        .await
        .unwrap_or_else(|e| panic!("start (restore): {e:?}\n{}", b.log()));
    let s = c.status(&rid).await.unwrap().status.unwrap();
    assert_eq!(s.state, cri::ContainerState::ContainerRunning as i32, "{s:?}");

    let first = count(&mut c, &rid).await;
    assert!(
        first >= dumped,
        "the counter went on from its memory: {first} < {dumped} (a fresh start counts from 1)"
    );
    count_above(&mut c, &rid, first + 2).await;

    c.stop(&rid, 10).await.expect("stop the restored container");
    let s = c.status(&rid).await.unwrap().status.unwrap();
    assert_eq!(s.state, cri::ContainerState::ContainerExited as i32, "{s:?}");
    c.remove(&rid).await.expect("remove the restored container");
    let info = c.pod_status(&sb2).await.unwrap().1;
    let pod_cgroup = info["cgroupPath"].as_str().unwrap().to_string();
    c.stop_and_remove_pod(&sb2).await.expect("remove the new pod");
    assert_nothing_left(&b, &pod_cgroup);
    assert_eq!(entries(out.path()), ["counter.tar"], "the archive is kept");
}
