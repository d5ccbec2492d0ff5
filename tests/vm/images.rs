//! ImageService against real registries: credentials (an htpasswd-protected
//! docker-registry), and ListImages / ImageStatus / RemoveImage /
//! ImageFsInfo after a real pull.
//!
//! Runs inside the VM (`hack/vm`), with `--test-threads=1`: the VM serves
//! the test images on 127.0.0.1:5000 from /var/lib/registry. A pull
//! cancelled mid-download is `tests/host/pull_gate.rs` (a registry that
//! holds the layer, so the cancel never races the pull).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_proto::cri;
use berth_tests::registry::RegistryProcess;
use berth_tests::*;

/// `berth` / `berth-pass`, bcrypt (cost 5) as docker-registry's htpasswd
/// auth reads it.
const HTPASSWD: &str = "berth:$2b$05$AUzg/UMsNVnn1.8Mk8tyf.zWLaX0UJtqZ35QzqSAJg.h6cD08Rsma\n";

/// Test CA and a server certificate for localhost / 127.0.0.1 signed by it.
const TEST_CA: &str = include_str!("testdata/ca.crt");
const TEST_CERT: &str = include_str!("testdata/srv.crt");
const TEST_KEY: &str = include_str!("testdata/srv.key");

/// The VM's registry storage, served by the registries the tests start.
const STORAGE: &str = "/var/lib/registry";

/// A second registry over the same storage (read-only), with htpasswd
/// basic auth, plain HTTP, on a port it bound itself.
fn auth_registry() -> RegistryProcess {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, HTPASSWD).unwrap();
    let extra = format!(
        "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
        htpasswd.display()
    );
    RegistryProcess::serve(Path::new(STORAGE), dir, "", &extra)
}

/// Over TLS with the test CA's certificate, no auth.
fn tls_registry() -> RegistryProcess {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("srv.crt"), TEST_CERT).unwrap();
    std::fs::write(dir.path().join("srv.key"), TEST_KEY).unwrap();
    let tls = format!(
        "  tls:\n    certificate: {0}/srv.crt\n    key: {0}/srv.key\n",
        dir.path().display()
    );
    RegistryProcess::serve(Path::new(STORAGE), dir, &tls, "")
}

async fn pull_with(
    c: &mut CriClient,
    image: &str,
    auth: Option<cri::AuthConfig>,
) -> Result<String, tonic::Status> {
    c.images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            auth,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

#[tokio::test]
async fn pulls_with_basic_auth_credentials() {
    let reg = auth_registry();
    let (_b, mut c) = Berthd::start().await.expect("berthd");
    let image = format!("{}/library/busybox:latest", reg.addr);

    let err = pull_with(&mut c, &image, None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "anonymous: {err:?}");
    let wrong = cri::AuthConfig {
        username: "berth".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let err = pull_with(&mut c, &image, Some(wrong)).await.unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::Unauthenticated,
        "wrong password: {err:?}"
    );
    assert!(
        !err.message().contains("wrong"),
        "no secret in the error: {err:?}"
    );
    let listed = c.list_images().await.unwrap();
    assert!(listed.is_empty(), "nothing stored by refused pulls: {listed:?}");

    let good = cri::AuthConfig {
        username: "berth".into(),
        password: "berth-pass".into(),
        ..Default::default()
    };
    let id = pull_with(&mut c, &image, Some(good))
        .await
        .expect("pull with username/password");
    assert!(id.starts_with("sha256:"), "{id}");
    // kubelet's docker-config form: auth = base64("user:password").
    let b64 = cri::AuthConfig {
        auth: "YmVydGg6YmVydGgtcGFzcw==".into(),
        ..Default::default()
    };
    let other = format!("{}/library/busybox-groups:latest", reg.addr);
    pull_with(&mut c, &other, Some(b64))
        .await
        .expect("pull with auth");
}

/// What kubelet's image manager reads after a pull, and removal by tag,
/// by digest reference and by id; unknown images remove fine.
#[tokio::test]
async fn image_status_list_remove_and_fs_info_after_a_pull() {
    let (_b, mut c) = Berthd::start().await.expect("berthd");
    let busybox = format!("{}/library/busybox:latest", registry());
    let groups = format!("{}/library/busybox-groups:latest", registry());
    let id = c.pull(&busybox).await.expect("pull");
    c.pull(&groups).await.expect("pull");
    let status = |image: &str| cri::ImageStatusRequest {
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        verbose: true,
    };
    let st = c
        .images
        .image_status(status(&busybox))
        .await
        .unwrap()
        .into_inner();
    let img = st.image.expect("image status");
    assert_eq!(img.id, id);
    assert_eq!(img.repo_tags, std::slice::from_ref(&busybox));
    assert_eq!(img.repo_digests.len(), 1, "{img:?}");
    assert!(img.size > 0);
    let by_digest = img.repo_digests[0].clone();
    let g = c
        .images
        .image_status(status(&groups))
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap();
    assert_eq!(g.username, "user-defined-in-image", "image USER by name: {g:?}");

    let all = c.list_images().await.unwrap();
    assert_eq!(all.len(), 2);
    let filtered = c
        .images
        .list_images(cri::ListImagesRequest {
            filter: Some(cri::ImageFilter {
                image: Some(cri::ImageSpec {
                    image: groups.clone(),
                    ..Default::default()
                }),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].id, g.id);

    let fs = c
        .images
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let used = fs.image_filesystems[0].used_bytes.as_ref().unwrap().value;
    assert!(used > 0, "{fs:?}");

    let remove = |image: &str| cri::RemoveImageRequest {
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
    };
    // By digest reference, then the tag is gone too (same image).
    c.images
        .remove_image(remove(&by_digest))
        .await
        .expect("remove by digest");
    let gone = c
        .images
        .image_status(status(&busybox))
        .await
        .unwrap()
        .into_inner();
    assert!(gone.image.is_none(), "{gone:?}");
    c.images.remove_image(remove(&g.id)).await.expect("remove by id");
    c.images
        .remove_image(remove(&busybox))
        .await
        .expect("unknown image: OK");
    let all = c.list_images().await.unwrap();
    assert!(all.is_empty(), "{all:?}");
    let fs = c
        .images
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let after = fs.image_filesystems[0].used_bytes.as_ref().unwrap().value;
    assert!(after < used, "layers freed: {used} -> {after}");
}

/// A five-layer image unpacks with its whiteout, opaque directory and hard
/// link applied; concurrent pulls of it, and of busybox (which shares its
/// bottom layer), all succeed with one snapshot per layer.
#[tokio::test]
async fn layered_images_and_concurrent_pulls() {
    let (b, c) = Berthd::start().await.expect("berthd");
    let layered = format!("{}/library/busybox-layers:latest", registry());
    let busybox = format!("{}/library/busybox:latest", registry());
    let mut pulls = Vec::new();
    for i in 0..6 {
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
    let snapshots = std::fs::read_dir(b.dir.path().join("root/images/snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert_eq!(snapshots.len(), 5, "5 layers, the first shared: {snapshots:?}");
    let partials: Vec<_> = std::fs::read_dir(b.dir.path().join("root/images/blobs/sha256"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(partials.is_empty(), "{partials:?}");

    let mut c = c.clone();
    let pod = pod_config("layers", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let cfg = container_config(
        "layers",
        &layered,
        &[
            "sh",
            "-c",
            "ls /data | tr '\\n' ' '; echo; ls /data/dir; \
             [ $(stat -c %i /data/c) = $(stat -c %i /data/c-link) ] && echo hardlinked; \
             wc -c < /data/big",
        ],
    );
    let (id, st) = c.run_to_exit(&sb, &cfg, &pod).await.expect("run");
    assert_eq!(st.exit_code, 0);
    let out = log_lines(&b.log_dir().join("layers.log"));
    assert_eq!(
        out,
        ["b big c c-link dir ", "y", "hardlinked", "4194304"],
        "a whited out, dir opaque (x hidden), c-link a hard link"
    );
    c.remove(&id).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// A loopback TCP port that refuses connections: a socket bound and never
/// listening, so no other process takes the port while the test holds it.
fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

/// Mirrors are tried in order before the registry: a dead one is skipped,
/// the next serves (the registry itself here does not exist at all).
#[tokio::test]
async fn mirrors_are_tried_in_order() {
    let ((_r, registry_port), (_m, mirror_port)) = (refusing_port(), refusing_port());
    let name = format!("127.0.0.1:{registry_port}");
    let cfg = format!(
        "[registry.\"{name}\"]\nmirrors = [\"127.0.0.1:{mirror_port}\", \"{}\"]\n",
        registry()
    );
    let (b, mut c) = Berthd::start_with(&cfg).await.expect("berthd");
    let image = format!("{name}/library/busybox:latest");
    let id = c.pull(&image).await.expect("pull through the mirror");
    assert!(id.starts_with("sha256:"));
    let log = b.log();
    assert!(log.contains("mirror failed; trying the next"), "{log}");
    assert!(log.contains("pulling from a mirror"), "{log}");
    let st = c
        .images
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image,
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.image.unwrap().id, id, "recorded under the name asked for");
}

/// A TLS registry with its own CA: trusted through `ca_file`, or with
/// `skip_verify`; refused when the CA given is not the one that signed it.
#[tokio::test]
async fn tls_registries_with_a_private_ca() {
    let reg = tls_registry();
    let ca = reg.dir.path().join("ca.crt");
    std::fs::write(&ca, TEST_CA).unwrap();
    // The server's own (leaf) certificate is no CA for it.
    let wrong = reg.dir.path().join("srv.crt");
    // By name: the certificate is for localhost (and 127.0.0.1).
    let port = reg.addr.rsplit_once(':').unwrap().1;
    let image = format!("localhost:{port}/library/busybox:latest");
    let image = image.as_str();
    let host = |line: String| format!("[registry.\"localhost:{port}\"]\n{line}\n");
    for (name, cfg, ok) in [
        ("ca_file", host(format!("ca_file = \"{}\"", ca.display())), true),
        ("skip_verify", host("skip_verify = true".into()), true),
        (
            "wrong ca_file",
            host(format!("ca_file = \"{}\"", wrong.display())),
            false,
        ),
    ] {
        let (_b, mut c) = Berthd::start_with(&cfg).await.expect("berthd");
        let got = c.pull(image).await;
        assert_eq!(got.is_ok(), ok, "{name}: {got:?}");
        if let Err(e) = got {
            let msg = e.message().to_lowercase();
            assert!(
                msg.contains("certificate") || msg.contains("issuer"),
                "{name}: {msg}"
            );
        }
    }
}

/// A second test CA and a certificate it signed for `registry.berth.test`
/// (a name, not a loopback address: berthd speaks plain HTTP to loopback
/// registries that have no TLS settings, so only a non-loopback name makes
/// it rely on the node's trust).
const NODE_CA: &str = include_str!("testdata/node-ca.crt");
const NODE_SRV_CERT: &str = include_str!("testdata/node-srv.crt");
const NODE_SRV_KEY: &str = include_str!("testdata/node-srv.key");

/// README: "the node's CA bundle". A TLS registry known as
/// registry.berth.test (an /etc/hosts entry for 127.0.0.1), with no
/// registry config at all: refused while no CA on the node signed its
/// certificate, pulled once the test CA is in the node's bundle
/// (`/etc/ssl/certs/ca-certificates.crt`; the VM has none of its own).
#[tokio::test]
async fn tls_registry_trusted_through_the_node_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("srv.crt"), NODE_SRV_CERT).unwrap();
    std::fs::write(dir.path().join("srv.key"), NODE_SRV_KEY).unwrap();
    let tls = format!(
        "  tls:\n    certificate: {0}/srv.crt\n    key: {0}/srv.key\n",
        dir.path().display()
    );
    let reg = RegistryProcess::serve(Path::new(STORAGE), dir, &tls, "");
    let port = reg.addr.rsplit_once(':').unwrap().1.to_string();
    let image = format!("registry.berth.test:{port}/library/busybox:latest");
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    let _hosts = {
        let hosts = hosts.clone();
        Cleanup::new(move || {
            let _ = std::fs::write("/etc/hosts", hosts);
        })
    };
    std::fs::write("/etc/hosts", format!("{hosts}127.0.0.1 registry.berth.test\n")).unwrap();
    let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    assert!(!bundle.exists(), "the VM ships no CA bundle");
    {
        // berthd reads the bundle once, at its first TLS pull: a fresh one.
        let (_b, mut c) = Berthd::start().await.expect("berthd");
        let e = c.pull(&image).await.expect_err("no CA trusts the test CA yet");
        let msg = e.message().to_lowercase();
        assert!(msg.contains("certificate") || msg.contains("issuer"), "{msg}");
    }
    std::fs::create_dir_all(bundle.parent().unwrap()).unwrap();
    std::fs::write(bundle, NODE_CA).unwrap();
    let _gone = Cleanup::new(move || {
        let _ = std::fs::remove_file(bundle);
    });
    let (b, mut c) = Berthd::start().await.expect("berthd");
    let id = c
        .pull(&image)
        .await
        .expect("pull trusted through the node bundle");
    assert!(id.starts_with("sha256:"), "{id}");
    assert!(
        b.log().contains("registry TLS trusts the system CA bundle"),
        "{}",
        b.log()
    );
}

/// The digest a tag points at in the VM's registry storage (what the
/// registry serves for it: a manifest's, or an index's).
fn registry_digest(repo: &str, tag: &str) -> String {
    let link = format!(
        "/var/lib/registry/docker/registry/v2/repositories/library/{repo}/_manifests/tags/{tag}/current/link"
    );
    std::fs::read_to_string(&link)
        .unwrap_or_else(|e| panic!("{link}: {e}"))
        .trim()
        .to_string()
}

async fn image_status(c: &mut CriClient, image: &str) -> Option<cri::Image> {
    c.images
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
        .image
}

/// What a failed or cancelled pull must not leave in the store: snapshots
/// (committed or `.tmp-*`), `.partial` blobs, image records.
fn store_leftovers(b: &Berthd) -> Vec<String> {
    let root = b.dir.path().join("root/images");
    let names = |dir: &str| -> Vec<String> {
        std::fs::read_dir(root.join(dir))
            .map(|d| {
                d.flatten()
                    .map(|e| format!("{dir}/{}", e.file_name().to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut left = names("snapshots");
    left.extend(names("meta"));
    left.extend(
        names("blobs/sha256")
            .into_iter()
            .filter(|n| n.ends_with(".partial")),
    );
    left
}

/// Three tags of one image and its digest all pull to the same image id;
/// the tags accumulate on the one record, the digest stays one.
#[tokio::test]
async fn image_pull_tags_and_digest_are_one_image() {
    let (_b, mut c) = Berthd::start().await.expect("berthd");
    let repo = format!("{}/library/busybox", registry());
    let digest = registry_digest("busybox", "latest");
    assert_eq!(registry_digest("busybox", "stable"), digest);
    let id = c.pull(&format!("{repo}:latest")).await.expect("pull :latest");
    for tag in ["1.0", "stable"] {
        let got = c.pull(&format!("{repo}:{tag}")).await.expect("pull by tag");
        assert_eq!(got, id, ":{tag}");
    }
    let by_digest = format!("{repo}@{digest}");
    assert_eq!(c.pull(&by_digest).await.expect("pull by digest"), id);
    let img = image_status(&mut c, &by_digest).await.expect("status by digest");
    assert_eq!(img.id, id);
    let mut tags = img.repo_tags.clone();
    tags.sort();
    assert_eq!(
        tags,
        [
            format!("{repo}:1.0"),
            format!("{repo}:latest"),
            format!("{repo}:stable")
        ],
        "{img:?}"
    );
    assert_eq!(img.repo_digests, [by_digest], "{img:?}");
    assert_eq!(c.list_images().await.expect("ListImages").len(), 1);
}

/// A multi-arch index: linux/amd64 is picked (busybox's own manifest, so
/// busybox's image id), and `name@<index digest>` finds it, as kubelet asks.
#[tokio::test]
async fn image_pull_multi_arch_index_picks_linux_amd64() {
    assert_eq!(std::env::consts::ARCH, "x86_64", "the VM is amd64");
    let (_b, mut c) = Berthd::start().await.expect("berthd");
    let multi = format!("{}/library/busybox-multi", registry());
    let busybox_id = c
        .pull(&format!("{}/library/busybox:latest", registry()))
        .await
        .expect("pull busybox");
    let id = c.pull(&format!("{multi}:latest")).await.expect("pull index");
    assert_eq!(id, busybox_id, "linux/amd64 is busybox's manifest");
    let index_digest = registry_digest("busybox-multi", "latest");
    let by_index = format!("{multi}@{index_digest}");
    let img = image_status(&mut c, &by_index)
        .await
        .expect("status by index digest");
    assert_eq!(img.id, id);
    assert!(img.repo_digests.contains(&by_index), "{img:?}");
    assert!(img.repo_tags.contains(&format!("{multi}:latest")), "{img:?}");
}

/// USER 1234:5678 is reported as uid 1234 and no username.
#[tokio::test]
async fn image_pull_numeric_user_is_a_uid() {
    let (_b, mut c) = Berthd::start().await.expect("berthd");
    let image = format!("{}/library/busybox-uid:latest", registry());
    c.pull(&image).await.expect("pull");
    let img = image_status(&mut c, &image).await.expect("status");
    assert_eq!(img.uid.map(|u| u.value), Some(1234), "{img:?}");
    assert_eq!(img.username, "", "{img:?}");
}

/// A layer blob whose bytes do not match its digest (garbled in the
/// registry's storage by registry-seed.sh) fails the pull; nothing stays,
/// also when the image's other layers were unpacked before the last failed
/// (corrupt-late): those snapshots go at once, not at the next start.
#[tokio::test]
async fn image_pull_wrong_layer_digest_stores_nothing() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    for name in ["corrupt", "corrupt-late"] {
        let image = format!("{}/library/{name}:latest", registry());
        let err = c.pull(&image).await.expect_err("corrupt layer");
        assert!(err.message().contains("digest"), "{name}: {err:?}");
        assert!(c.list_images().await.expect("ListImages").is_empty());
        assert!(image_status(&mut c, &image).await.is_none());
        let left = store_leftovers(&b);
        assert!(left.is_empty(), "{name}: {left:?}");
    }
}

/// Layers that try to write outside their snapshot through the registry:
/// each pull is refused with a clear error, nothing is written outside
/// and no image is recorded.
#[tokio::test]
async fn image_pull_malicious_layers_are_rejected() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    let shadow_links = std::fs::metadata("/etc/shadow").map(|m| m.nlink()).ok();
    for (name, why, outside) in [
        ("evil-dotdot", "escapes the snapshot", "/tmp/berth-dotdot"),
        ("evil-symlink", "through a symlink", "/tmp/berth-pwned"),
        ("evil-hardlink", "escapes the snapshot", "/tmp/berth-shadow"),
    ] {
        let image = format!("{}/library/{name}:latest", registry());
        let err = c.pull(&image).await.expect_err(name);
        assert!(err.message().contains(why), "{name}: {err:?}");
        assert!(
            !std::path::Path::new(outside).exists(),
            "{name}: {outside} written"
        );
        assert!(c.list_images().await.expect("ListImages").is_empty(), "{name}");
        let left = store_leftovers(&b);
        assert!(left.is_empty(), "{name}: {left:?}");
    }
    assert_eq!(
        std::fs::metadata("/etc/shadow").map(|m| m.nlink()).ok(),
        shadow_links,
        "no new hard link to /etc/shadow"
    );
    let root = b.dir.path().join("root");
    for stray in ["images/berth-dotdot", "images/snapshots/evil", "shadow"] {
        assert!(!root.join(stray).exists(), "{stray}");
    }
}

/// RemoveImage refuses an image a container was created from
/// (FailedPrecondition, naming the image), by tag and by id, and removes it
/// once the container is gone.
#[tokio::test]
async fn image_remove_refuses_an_image_a_container_uses() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    let busybox = format!("{}/library/busybox:latest", registry());
    let id = c.pull(&busybox).await.expect("pull");
    let pod = pod_config("image-in-use", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let ctr = c
        .create(&sb, &container_config("user", &busybox, &["sleep", "3600"]), &pod)
        .await
        .expect("create");
    let remove = |image: &str| cri::RemoveImageRequest {
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
    };
    for name in [busybox.as_str(), id.as_str()] {
        let err = c.images.remove_image(remove(name)).await.expect_err("in use");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains(&id), "{err:?}");
    }
    assert!(image_status(&mut c, &busybox).await.is_some(), "still there");
    c.remove(&ctr).await.expect("remove container");
    c.images.remove_image(remove(&busybox)).await.expect("unused now");
    assert!(image_status(&mut c, &busybox).await.is_none());
    c.stop_and_remove_pod(&sb).await.expect("remove pod");
}
