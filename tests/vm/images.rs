//! ImageService against real registries: credentials (an htpasswd-protected
//! docker-registry), and ListImages / ImageStatus / RemoveImage /
//! ImageFsInfo after a real pull.
//!
//! Runs inside the VM (`hack/vm`), with `--test-threads=1`: the VM serves
//! the test images on 127.0.0.1:5000 from /var/lib/registry.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::*;

/// `berth` / `berth-pass`, bcrypt (cost 5) as docker-registry's htpasswd
/// auth reads it.
const HTPASSWD: &str = "berth:$2b$05$AUzg/UMsNVnn1.8Mk8tyf.zWLaX0UJtqZ35QzqSAJg.h6cD08Rsma\n";

/// Test CA and a server certificate for localhost / 127.0.0.1 signed by it.
const TEST_CA: &str = include_str!("testdata/ca.crt");
const TEST_CERT: &str = include_str!("testdata/srv.crt");
const TEST_KEY: &str = include_str!("testdata/srv.key");

/// A second registry over the same storage (read-only), with basic auth or
/// TLS; killed on drop.
struct AuthRegistry {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
}

impl AuthRegistry {
    /// With htpasswd basic auth, plain HTTP.
    fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, HTPASSWD).unwrap();
        let extra = format!(
            "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
            htpasswd.display()
        );
        Self::serve(dir, port, "", &extra)
    }

    /// Over TLS with the test CA's certificate, no auth.
    fn start_tls(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("srv.crt"), TEST_CERT).unwrap();
        std::fs::write(dir.path().join("srv.key"), TEST_KEY).unwrap();
        let tls = format!(
            "  tls:\n    certificate: {0}/srv.crt\n    key: {0}/srv.key\n",
            dir.path().display()
        );
        Self::serve(dir, port, &tls, "")
    }

    fn serve(dir: tempfile::TempDir, port: u16, http_extra: &str, extra: &str) -> Self {
        let addr = format!("127.0.0.1:{port}");
        let conf = dir.path().join("registry.yml");
        std::fs::write(
            &conf,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\n  maintenance:\n    readonly:\n      enabled: true\nhttp:\n  addr: {addr}\n{http_extra}{extra}"
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "auth registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        AuthRegistry { child, dir, addr }
    }
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let reg = AuthRegistry::start(5001);
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
    let listed = c
        .images
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
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

    let all = c
        .images
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
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
    let all = c
        .images
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
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
    let id = c.create(&sb, &cfg, &pod).await.unwrap();
    c.start(&id).await.unwrap();
    assert_eq!(
        c.wait_exited(&id, Duration::from_secs(20))
            .await
            .unwrap()
            .exit_code,
        0
    );
    let log = std::fs::read_to_string(b.log_dir().join("layers.log")).unwrap();
    let out: Vec<String> = log.lines().filter_map(parse_cri_log_line).map(|l| l.3).collect();
    assert_eq!(
        out,
        ["b big c c-link dir ", "y", "hardlinked", "4194304"],
        "a whited out, dir opaque (x hidden), c-link a hard link"
    );
    c.remove(&id).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// Mirrors are tried in order before the registry: a dead one is skipped,
/// the next serves (the registry itself here does not exist at all).
#[tokio::test]
async fn mirrors_are_tried_in_order() {
    let cfg = format!(
        "[registry.\"127.0.0.1:5999\"]\nmirrors = [\"127.0.0.1:5998\", \"{}\"]\n",
        registry()
    );
    let (b, mut c) = Berthd::start_with(&cfg).await.expect("berthd");
    let id = c
        .pull("127.0.0.1:5999/library/busybox:latest")
        .await
        .expect("pull through the mirror");
    assert!(id.starts_with("sha256:"));
    let log = b.log();
    assert!(log.contains("mirror failed; trying the next"), "{log}");
    assert!(log.contains("pulling from a mirror"), "{log}");
    let st = c
        .images
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: "127.0.0.1:5999/library/busybox:latest".into(),
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
    let reg = AuthRegistry::start_tls(5443);
    let ca = reg.dir.path().join("ca.crt");
    std::fs::write(&ca, TEST_CA).unwrap();
    // The server's own (leaf) certificate is no CA for it.
    let wrong = reg.dir.path().join("srv.crt");
    let image = "localhost:5443/library/busybox:latest";
    let host = |line: String| format!("[registry.\"localhost:5443\"]\n{line}\n");
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
