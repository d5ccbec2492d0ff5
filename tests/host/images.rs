//! ImageService on the host, no VM: berthd (with a fake cgroup tree; a pull
//! needs no cgroups, overlay or namespaces) pulls from a real
//! `docker-registry` on loopback serving the `hack/images` test images.
//! berthd refuses to start without root, and unpacking makes overlay
//! whiteouts (0:0 device nodes, `trusted.*` xattrs) that need it: these
//! tests run as root, as CI's host stage does.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use berth_proto::cri;
use berth_tests::registry::{tag_digest, RegistryProcess};
use berth_tests::*;

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

/// ImageStatus: the image (if known) and the verbose info's JSON.
async fn status(c: &mut CriClient, image: &str) -> Option<(cri::Image, serde_json::Value)> {
    let r = c
        .images
        .image_status(cri::ImageStatusRequest {
            image: spec(image),
            verbose: true,
        })
        .await
        .expect("ImageStatus")
        .into_inner();
    let info = r
        .info
        .get("info")
        .map(|i| serde_json::from_str(i).expect("verbose info is JSON"))
        .unwrap_or_default();
    r.image.map(|i| (i, info))
}

async fn remove(c: &mut CriClient, image: &str) -> Result<(), tonic::Status> {
    c.images
        .remove_image(cri::RemoveImageRequest { image: spec(image) })
        .await
        .map(|_| ())
}

async fn fs_used(c: &mut CriClient) -> (u64, u64) {
    let fs = c
        .images
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .expect("ImageFsInfo")
        .into_inner();
    let f = &fs.image_filesystems[0];
    (
        f.used_bytes.as_ref().expect("used_bytes").value,
        f.inodes_used.as_ref().expect("inodes_used").value,
    )
}

/// Every entry of the image store: snapshots (also `.tmp-*`), records,
/// blobs (also `.partial`).
fn store_entries(b: &Berthd) -> BTreeSet<String> {
    let root = b.dir.path().join("root/images");
    let mut out = BTreeSet::new();
    for dir in ["snapshots", "meta", "blobs/sha256"] {
        for e in std::fs::read_dir(root.join(dir)).into_iter().flatten().flatten() {
            out.insert(format!("{dir}/{}", e.file_name().to_string_lossy()));
        }
    }
    out
}

fn snapshot(b: &Berthd, chain_id: &str) -> std::path::PathBuf {
    b.dir
        .path()
        .join("root/images/snapshots")
        .join(chain_id.trim_start_matches("sha256:"))
}

fn chain_ids(info: &serde_json::Value) -> Vec<String> {
    info["chainIDs"]
        .as_array()
        .expect("chainIDs in verbose info")
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

/// Tags, the digest and a multi-arch index all name one image; the tags
/// gather on its record and `name@<digest>` finds it.
#[tokio::test]
async fn pulls_by_tag_digest_and_multi_arch_index() {
    let reg = RegistryProcess::start();
    let (_b, mut c, _d) = berthd_on_host("").await.expect("berthd");
    let repo = format!("{}/library/busybox", reg.addr);
    let digest = tag_digest("busybox", "latest");
    let id = c.pull(&format!("{repo}:latest")).await.expect("pull :latest");
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    for tag in ["1.0", "stable"] {
        assert_eq!(c.pull(&format!("{repo}:{tag}")).await.expect(tag), id, ":{tag}");
    }
    let by_digest = format!("{repo}@{digest}");
    assert_eq!(c.pull(&by_digest).await.expect("pull by digest"), id);
    // Tag and digest together: the digest decides.
    assert_eq!(
        c.pull(&format!("{repo}:1.0@{digest}"))
            .await
            .expect("name:tag@digest"),
        id
    );
    let (img, _) = status(&mut c, &by_digest).await.expect("status by digest");
    assert_eq!(img.id, id);
    let tags: BTreeSet<_> = img.repo_tags.iter().cloned().collect();
    let want: BTreeSet<_> = ["1.0", "latest", "stable"]
        .iter()
        .map(|t| format!("{repo}:{t}"))
        .collect();
    assert_eq!(tags, want, "{img:?}");
    assert_eq!(img.repo_digests, std::slice::from_ref(&by_digest), "{img:?}");
    // A digest the registry does not have: NotFound, nothing recorded.
    let missing = format!("{repo}@sha256:{}", "0".repeat(64));
    let e = c.pull(&missing).await.expect_err("unknown digest");
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

    // The index's linux/amd64 entry is busybox's own manifest.
    assert_eq!(std::env::consts::ARCH, "x86_64", "the test images' host platform");
    let multi = format!("{}/library/busybox-multi", reg.addr);
    assert_eq!(c.pull(&format!("{multi}:latest")).await.expect("index"), id);
    let by_index = format!("{multi}@{}", tag_digest("busybox-multi", "latest"));
    let (img, _) = status(&mut c, &by_index).await.expect("status by index digest");
    assert_eq!(img.id, id);
    assert!(img.repo_digests.contains(&by_index), "{img:?}");
    assert!(img.repo_digests.contains(&by_digest), "{img:?}");
    assert_eq!(c.list_images().await.unwrap().len(), 1, "one image, many names");
}

/// What kubelet's image manager reads: ImageStatus (uid or username from
/// USER, size, verbose config), ListImages with a filter, ImageFsInfo, and
/// RemoveImage by digest, tag and id, keeping layers another image uses.
#[tokio::test]
async fn status_list_remove_and_fs_info() {
    let reg = RegistryProcess::start();
    let (b, mut c, _d) = berthd_on_host("").await.expect("berthd");
    let image = |n: &str| format!("{}/library/{n}:latest", reg.addr);
    let (empty_bytes, _) = fs_used(&mut c).await;
    let busybox = c.pull(&image("busybox")).await.expect("busybox");
    let uid = c.pull(&image("busybox-uid")).await.expect("busybox-uid");
    let user = c.pull(&image("busybox-user")).await.expect("busybox-user");

    let (u, info) = status(&mut c, &image("busybox-uid")).await.expect("uid status");
    assert_eq!(
        (u.id.as_str(), u.uid.map(|v| v.value), u.username.as_str()),
        (uid.as_str(), Some(1234), "")
    );
    assert_eq!(info["config"]["user"], "1234:5678", "{info}");
    let (n, _) = status(&mut c, &image("busybox-user")).await.expect("user status");
    assert_eq!(
        (n.id.as_str(), n.uid, n.username.as_str()),
        (user.as_str(), None, "app")
    );
    let (bb, bb_info) = status(&mut c, &image("busybox")).await.expect("busybox status");
    assert!(bb.size > 500_000, "compressed config + layer: {}", bb.size);
    assert_eq!(bb_info["config"]["cmd"], serde_json::json!(["sh"]));
    // busybox and busybox-uid differ only in config: one shared snapshot.
    let (_, uid_info) = status(&mut c, &image("busybox-uid")).await.unwrap();
    assert_eq!(chain_ids(&bb_info), chain_ids(&uid_info));
    let shared = chain_ids(&bb_info)[0].clone();

    let ids: BTreeSet<_> = c.list_images().await.unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(
        ids,
        [busybox.clone(), uid.clone(), user.clone()].into_iter().collect()
    );
    let filtered = c
        .images
        .list_images(cri::ListImagesRequest {
            filter: Some(cri::ImageFilter {
                image: spec(&image("busybox-user")),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(
        filtered.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        [user.as_str()]
    );

    let (full_bytes, full_inodes) = fs_used(&mut c).await;
    assert!(
        full_bytes > empty_bytes + 1_000_000,
        "{empty_bytes} -> {full_bytes}"
    );
    assert!(full_inodes > 3 * 50, "applet symlinks etc.: {full_inodes}");

    // By digest: the tag goes with it (same record); the shared layer stays.
    let digest_ref = bb.repo_digests[0].clone();
    remove(&mut c, &digest_ref).await.expect("remove by digest");
    assert!(status(&mut c, &image("busybox")).await.is_none());
    assert!(
        snapshot(&b, &shared).join("bin/busybox").exists(),
        "busybox-uid uses it"
    );
    remove(&mut c, &image("busybox-uid"))
        .await
        .expect("remove by tag");
    remove(&mut c, &user).await.expect("remove by id");
    remove(&mut c, &image("busybox"))
        .await
        .expect("unknown image: OK");
    assert!(c.list_images().await.unwrap().is_empty());
    assert!(!snapshot(&b, &shared).exists());
    let left = store_entries(&b);
    assert!(left.is_empty(), "{left:?}");
    let (after, _) = fs_used(&mut c).await;
    assert!(after < full_bytes / 4, "layers freed: {full_bytes} -> {after}");
}

fn lgetxattr(path: &Path, name: &std::ffi::CStr) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: valid NUL-terminated strings and a buffer of the length given.
    let n = unsafe { libc::lgetxattr(p.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

/// The unpacked snapshots on disk: whiteouts as 0:0 character devices, an
/// opaque dir's xattr, a hard link, modes, ownership, symlinks.
#[tokio::test]
async fn layers_unpack_into_overlay_snapshots() {
    let reg = RegistryProcess::start();
    let (b, mut c, _d) = berthd_on_host("").await.expect("berthd");
    let layered = format!("{}/library/busybox-layers:latest", reg.addr);
    c.pull(&layered).await.expect("pull");
    let (_, info) = status(&mut c, &layered).await.unwrap();
    let chains = chain_ids(&info);
    assert_eq!(chains.len(), 5);
    let base = snapshot(&b, &chains[0]);
    let bb = std::fs::metadata(base.join("bin/busybox")).unwrap();
    assert_eq!((bb.mode() & 0o7777, bb.uid(), bb.gid()), (0o755, 0, 0));
    assert_eq!(
        std::fs::read_link(base.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let tmp = std::fs::metadata(base.join("tmp")).unwrap();
    assert_eq!(tmp.mode() & 0o7777, 0o1777, "sticky /tmp");
    let hide = snapshot(&b, &chains[2]);
    let wh = std::fs::symlink_metadata(hide.join("data/a")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout of data/a"
    );
    assert_eq!(
        lgetxattr(&hide.join("data/dir"), c"trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!hide.join("data/dir/.wh..wh..opq").exists());
    let link = snapshot(&b, &chains[3]);
    let (c1, c2) = (
        std::fs::metadata(link.join("data/c")).unwrap(),
        std::fs::metadata(link.join("data/c-link")).unwrap(),
    );
    assert_eq!((c1.ino(), c1.nlink()), (c2.ino(), 2), "hard link");
    let big = std::fs::metadata(snapshot(&b, &chains[4]).join("data/big")).unwrap();
    assert_eq!(big.len(), 4 * 1024 * 1024);
    // Ownership from the tar: busybox-user's home belongs to uid 1000.
    let user = format!("{}/library/busybox-user:latest", reg.addr);
    c.pull(&user).await.expect("pull user");
    let (_, info) = status(&mut c, &user).await.unwrap();
    let home = std::fs::metadata(snapshot(&b, &chain_ids(&info)[0]).join("home/app")).unwrap();
    assert_eq!((home.uid(), home.gid()), (1000, 1000));
}

/// A blob whose bytes do not match its digest fails the pull with a clear
/// error, and the store is left exactly as empty as before: for a one-layer
/// image, and for one whose other layers were already unpacked when its
/// last failed (those snapshots and the config blob go at once).
#[tokio::test]
async fn wrong_digest_blob_fails_and_keeps_nothing() {
    let reg = RegistryProcess::start();
    let (b, mut c, _d) = berthd_on_host("").await.expect("berthd");
    for name in ["corrupt", "corrupt-late"] {
        let image = format!("{}/library/{name}:latest", reg.addr);
        let e = c.pull(&image).await.expect_err(name);
        assert!(e.message().contains("digest"), "{name}: {e:?}");
        assert!(status(&mut c, &image).await.is_none(), "{name}");
        assert!(c.list_images().await.unwrap().is_empty(), "{name}");
        let left = store_entries(&b);
        assert!(left.is_empty(), "{name}: {left:?}");
    }
    // The late failure had finished snapshots of its own to remove.
    let log = b.log();
    assert!(
        log.contains("removed what an unfinished pull made"),
        "corrupt-late unpacked its first layers before the last failed: {log}"
    );
}

/// Concurrent pulls of one image and of an image sharing its bottom layer:
/// all succeed with the same ids, each snapshot is made once.
#[tokio::test]
async fn concurrent_pulls_of_the_same_image() {
    let reg = RegistryProcess::start();
    let (b, c, _d) = berthd_on_host("").await.expect("berthd");
    let layered = format!("{}/library/busybox-layers:latest", reg.addr);
    let busybox = format!("{}/library/busybox:latest", reg.addr);
    let mut pulls = Vec::new();
    for i in 0..8 {
        let mut c = c.clone();
        let image = if i % 2 == 0 {
            layered.clone()
        } else {
            busybox.clone()
        };
        pulls.push(tokio::spawn(
            async move { c.pull(&image).await.map(|id| (image, id)) },
        ));
    }
    let mut ids = std::collections::HashMap::new();
    for p in pulls {
        let (image, id) = p.await.unwrap().expect("concurrent pull");
        assert_eq!(ids.entry(image).or_insert_with(|| id.clone()), &id);
    }
    assert_eq!(ids.len(), 2);
    let entries = store_entries(&b);
    let snapshots = entries.iter().filter(|e| e.starts_with("snapshots/")).count();
    assert_eq!(snapshots, 5, "5 layers, the bottom one shared: {entries:?}");
    let blobs: Vec<_> = entries.iter().filter(|e| e.starts_with("blobs/")).collect();
    assert_eq!(
        blobs.len(),
        2,
        "two configs; no layer blob, no .partial: {blobs:?}"
    );
    assert_eq!(b.log().matches("image pulled").count(), 8);
}

/// A failed pull cleans up after itself without taking a layer from a
/// concurrent pull of another image that shares it: busybox and
/// corrupt-late (busybox's layer + two more, the last garbled) pulled side
/// by side, several times, in whatever order the layer gates let them.
#[tokio::test]
async fn a_failed_pull_keeps_layers_a_concurrent_pull_uses() {
    let reg = RegistryProcess::start();
    let (b, c, _d) = berthd_on_host("").await.expect("berthd");
    let busybox = format!("{}/library/busybox:latest", reg.addr);
    let corrupt = format!("{}/library/corrupt-late:latest", reg.addr);
    for round in 0..4 {
        let (mut c1, mut c2) = (c.clone(), c.clone());
        let (bb, cr) = (busybox.clone(), corrupt.clone());
        // Alternate which starts first.
        let (good, bad) = if round % 2 == 0 {
            let g = tokio::spawn(async move { c1.pull(&bb).await });
            let f = tokio::spawn(async move { c2.pull(&cr).await });
            (g, f)
        } else {
            let f = tokio::spawn(async move { c2.pull(&cr).await });
            let g = tokio::spawn(async move { c1.pull(&bb).await });
            (g, f)
        };
        let id = good.await.unwrap().expect("busybox pull");
        let e = bad.await.unwrap().expect_err("corrupt-late pull");
        assert!(e.message().contains("digest"), "{e:?}");
        let mut c = c.clone();
        let (img, info) = status(&mut c, &busybox).await.expect("busybox recorded");
        assert_eq!(img.id, id);
        let chains = chain_ids(&info);
        for ch in &chains {
            assert!(
                snapshot(&b, ch).join("bin/busybox").exists(),
                "round {round}: {ch} taken"
            );
        }
        let snaps: BTreeSet<_> = store_entries(&b)
            .into_iter()
            .filter_map(|e| e.strip_prefix("snapshots/").map(|s| format!("sha256:{s}")))
            .collect();
        assert_eq!(
            snaps,
            chains.iter().cloned().collect(),
            "round {round}: only busybox's"
        );
        remove(&mut c, &id).await.expect("remove busybox");
        let left = store_entries(&b);
        assert!(left.is_empty(), "round {round}: {left:?}");
    }
}

/// An image config whose `rootfs.diff_ids` holds a path instead of a digest
/// (absolute, or `sha256:` + `../`s) is refused with an error naming the
/// digest; the node directory it names is neither used as a layer nor
/// deleted by RemoveImage, and the store keeps nothing of the pull.
#[tokio::test]
async fn config_diff_ids_that_are_paths_are_refused() {
    let reg = RegistryProcess::start();
    let (b, mut c, _d) = berthd_on_host("").await.expect("berthd");
    for name in ["evil-diffid-abs", "evil-diffid-dotdot"] {
        // The directory the hostile diff_id names: made to exist, as a node
        // directory would (today's store then takes it as the layer).
        let marker = Path::new("/tmp").join(format!("berth-{name}"));
        let _ = std::fs::remove_dir_all(&marker);
        std::fs::create_dir_all(marker.join("keep")).unwrap();
        let image = format!("{}/library/{name}:latest", reg.addr);
        let e = c.pull(&image).await.expect_err(name);
        assert!(e.message().contains("digest"), "{name}: {e:?}");
        assert!(
            e.message().contains(&format!("berth-{name}")),
            "names the bad digest: {e:?}"
        );
        assert!(status(&mut c, &image).await.is_none(), "{name}");
        remove(&mut c, &image).await.expect("unknown image: OK");
        assert!(marker.join("keep").is_dir(), "{name}: node dir untouched");
        let left = store_entries(&b);
        assert!(left.is_empty(), "{name}: {left:?}");
        std::fs::remove_dir_all(&marker).unwrap();
    }
}

/// `[image_limits]` from the config file: an image with more layers than
/// `max_layers` is refused before any download, and a layer that unpacks
/// to more than `max_layer_bytes` (busybox-layers' 4 MiB file, which
/// compresses to a few KiB) stops while it streams; both with an error
/// naming the limit, and the store keeps nothing of either pull.
#[tokio::test]
async fn configured_image_limits_refuse_with_clear_errors() {
    let reg = RegistryProcess::start();
    let layered = format!("{}/library/busybox-layers:latest", reg.addr);
    let busybox = format!("{}/library/busybox:latest", reg.addr);
    let (b, mut c, _d) = berthd_on_host("[image_limits]\nmax_layers = 4\n")
        .await
        .expect("berthd");
    let e = c.pull(&layered).await.expect_err("5 layers > 4");
    assert!(
        e.message().contains("5 layers") && e.message().contains("max_layers (4)"),
        "{e:?}"
    );
    assert!(store_entries(&b).is_empty(), "{:?}", store_entries(&b));
    c.pull(&busybox).await.expect("one layer is within the limit");
    drop((b, c));

    let (b, mut c, _d) = berthd_on_host("[image_limits]\nmax_layer_bytes = 3145728\n")
        .await
        .expect("berthd");
    let e = c.pull(&layered).await.expect_err("4 MiB layer > 3 MiB");
    assert!(e.message().contains("max_layer_bytes (3145728 bytes)"), "{e:?}");
    assert!(status(&mut c, &layered).await.is_none());
    let left = store_entries(&b);
    assert!(left.is_empty(), "{left:?}");
    c.pull(&busybox)
        .await
        .expect("busybox's 2 MiB layer is within the limit");
}

/// A registry that accepts connections and never answers fails the pull
/// at the configured response-header timeout, with an error saying so;
/// a second pull of the same image (which waits on the first's gate)
/// ends the same way instead of queueing forever.
#[tokio::test]
async fn a_registry_that_never_answers_fails_the_pull_at_its_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            held.push(c);
        }
    });
    let cfg = "[registry_timeouts]\nconnect_ms = 500\nresponse_header_ms = 500\nidle_ms = 500\n";
    let (b, c, _d) = berthd_on_host(cfg).await.expect("berthd");
    let image = format!("{addr}/library/silent:latest");
    let pulls: Vec<_> = (0..2)
        .map(|_| {
            let (mut c, image) = (c.clone(), image.clone());
            tokio::spawn(async move { c.pull(&image).await })
        })
        .collect();
    for p in pulls {
        // The generous bound only turns "hangs forever" into a failure.
        let r = tokio::time::timeout(std::time::Duration::from_secs(120), p)
            .await
            .expect("the pull hung on a silent registry")
            .unwrap();
        let e = r.expect_err("no answer");
        assert!(e.message().contains("timeout"), "{e:?}");
    }
    assert!(store_entries(&b).is_empty());
}

/// A layer holding `.wh...` (the whiteout of `..`) is refused with an
/// error naming it, and every other image's snapshots stay: unpacked in
/// `snapshots/.tmp-*`, that whiteout once removed the snapshots dir.
#[tokio::test]
async fn a_whiteout_of_dotdot_is_refused_and_other_images_stay() {
    let reg = RegistryProcess::start();
    let (b, mut c, _d) = berthd_on_host("").await.expect("berthd");
    let busybox = format!("{}/library/busybox:latest", reg.addr);
    c.pull(&busybox).await.expect("busybox");
    let (_, info) = status(&mut c, &busybox).await.unwrap();
    let before = store_entries(&b);
    let evil = format!("{}/library/evil-whiteout-dotdot:latest", reg.addr);
    let e = c.pull(&evil).await.expect_err("whiteout of ..");
    assert!(
        e.message()
            .contains(r#"whiteout of ".." is not a single file name"#),
        "{e:?}"
    );
    assert!(snapshot(&b, &chain_ids(&info)[0]).join("bin/busybox").exists());
    assert_eq!(store_entries(&b), before, "nothing added, nothing removed");
}
