//! Pulls from a hostile registry (`berth_tests::hostile_registry`): every
//! manifest, blob and header it serves is something a real registry would
//! refuse to serve. Each pull must fail with a clear error and a stated
//! gRPC code, write nothing outside Berth's image root, leave no blob or
//! snapshot (partial or not) behind, hold no lock (a good pull right after
//! succeeds) and end within the configured registry timeouts. Runs as
//! root, like every host test that starts berthd.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::cri;
use berth_tests::hostile_registry::*;
use berth_tests::*;

/// Only turns "the pull never ends" into a failure; not a timing assertion.
const HANG: Duration = Duration::from_secs(120);

/// Small timeouts, so a stalled registry fails the pull soon.
const FAST_TIMEOUTS: &str =
    "[registry_timeouts]\nconnect_ms = 500\nresponse_header_ms = 500\nidle_ms = 500\n";

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

/// Every path below berthd's directory except its image root: what a pull
/// must never add to.
fn outside_image_root(b: &Berthd) -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, skip: &Path, out: &mut BTreeSet<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p == skip {
                continue;
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&p, skip, out);
            }
            out.insert(p);
        }
    }
    let mut out = BTreeSet::new();
    walk(b.dir.path(), &b.dir.path().join("root/images"), &mut out);
    out
}

async fn pull_with(
    c: &mut CriClient,
    image: &str,
    auth: Option<cri::AuthConfig>,
) -> Result<String, tonic::Status> {
    let req = cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        auth,
        sandbox_config: None,
    };
    tokio::time::timeout(HANG, c.images.pull_image(req))
        .await
        .unwrap_or_else(|_| panic!("the pull of {image} never ended"))
        .map(|r| r.into_inner().image_ref)
}

async fn remove(c: &mut CriClient, image: &str) {
    c.images
        .remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
        })
        .await
        .expect("RemoveImage");
}

/// One hostile image and what its pull must end with.
struct Case {
    image: String,
    code: tonic::Code,
    /// A part of the error message.
    says: String,
}

/// Pulls each case: a clear error with its code, nothing outside the image
/// root, an empty store, then a good pull (no lock held) and its removal.
async fn assert_refused(b: &Berthd, c: &mut CriClient, cases: &[Case], good: &str, escapes: &[PathBuf]) {
    for case in cases {
        let outside = outside_image_root(b);
        let e = pull_with(c, &case.image, None).await.expect_err(&case.image);
        assert_eq!(e.code(), case.code, "{}: {e:?}", case.image);
        assert!(
            e.message().contains(&case.says),
            "{}: want {:?} in {e:?}",
            case.image,
            case.says
        );
        let left = store_entries(b);
        assert!(left.is_empty(), "{}: left {left:?}", case.image);
        assert_eq!(outside_image_root(b), outside, "{}: wrote outside", case.image);
        for p in escapes {
            assert!(!p.exists(), "{}: made {}", case.image, p.display());
        }
        assert!(c.list_images().await.unwrap().is_empty(), "{}", case.image);
        pull_with(c, good, None)
            .await
            .unwrap_or_else(|e| panic!("good pull after {}: {e:?}", case.image));
        remove(c, good).await;
        assert!(store_entries(b).is_empty(), "after {}", case.image);
    }
}

/// Manifests a registry would refuse: layer and config digests that are
/// paths (relative escapes, absolute), unknown media types, an index that
/// points at an index or serves itself for its entry, a layer larger than
/// any limit. All refused before a blob is fetched to a path.
#[tokio::test]
async fn hostile_manifests_are_refused_and_leave_nothing() {
    let reg = HostileRegistry::start();
    let (b, mut c, _d) = berthd_on_host("").await.expect("berthd");
    let good = reg.serve_busybox("good/busybox");
    let (config, layer) = busybox();
    let cfg = descriptor(OCI_CONFIG, &config.digest, config.size());
    let lay = descriptor(OCI_LAYER_GZIP, &layer.digest, layer.size());
    let image = |repo: &str| format!("{}/{repo}:latest", reg.addr);
    let mut cases = Vec::new();
    let mut case = |repo: &str, doc: serde_json::Value, code, says: &str| {
        reg.blob_ok(repo, &config);
        reg.blob_ok(repo, &layer);
        reg.manifest_tagged(repo, "latest", &doc);
        cases.push(Case {
            image: image(repo),
            code,
            says: says.to_string(),
        });
    };
    // Where a joined digest path would land: above the image root (in
    // berthd's own dir, and above it), and an absolute node path.
    let abs = PathBuf::from(format!("/tmp/berth-hostile-abs-{}", std::process::id()));
    let escapes = vec![
        b.dir.path().join("berth-hostile-escape"),
        b.dir.path().join("root/berth-hostile-escape"),
        b.dir.path().parent().unwrap().join("berth-hostile-escape"),
        abs.clone(),
    ];
    let unknown = tonic::Code::Unknown;
    for (what, d) in [
        ("layer-dotdot", "sha256:../../../berth-hostile-escape"),
        ("layer-deep", "sha256:../../../../berth-hostile-escape"),
        ("layer-abs", abs.to_str().unwrap()),
    ] {
        let doc = manifest(cfg.clone(), vec![descriptor(OCI_LAYER_GZIP, d, 10)]);
        // oci-spec refuses it while parsing: a path after `sha256:` by
        // its value, an absolute path as "missing ':' in digest".
        let named = if d.starts_with('/') {
            "digest"
        } else {
            d.trim_start_matches("sha256:")
        };
        case(&format!("hostile/{what}"), doc, unknown, named);
    }
    for (what, d) in [
        ("config-dotdot", "sha256:../../berth-hostile-escape"),
        ("config-abs", abs.to_str().unwrap()),
    ] {
        let doc = manifest(descriptor(OCI_CONFIG, d, 10), vec![lay.clone()]);
        let named = if d.starts_with('/') {
            "digest"
        } else {
            d.trim_start_matches("sha256:")
        };
        case(&format!("hostile/{what}"), doc, unknown, named);
    }
    let mut doc = manifest(cfg.clone(), vec![lay.clone()]);
    doc["mediaType"] = "application/vnd.example.evil.manifest+json".into();
    case(
        "hostile/manifest-type",
        doc,
        unknown,
        "unsupported manifest media type",
    );
    let doc = manifest(
        cfg.clone(),
        vec![descriptor(
            "application/vnd.example.evil.layer",
            &layer.digest,
            layer.size(),
        )],
    );
    case("hostile/layer-type", doc, unknown, "unsupported media type");
    let doc = manifest(
        descriptor(
            "application/vnd.cncf.helm.config.v1+json",
            &config.digest,
            config.size(),
        ),
        vec![lay.clone()],
    );
    case("hostile/config-type", doc, unknown, "unsupported media type");
    let doc = manifest(
        cfg.clone(),
        vec![descriptor(OCI_LAYER_GZIP, &layer.digest, 1 << 50)],
    );
    case("hostile/huge-layer", doc, unknown, "max_layer_bytes");

    // An index whose entry names an index (by its media type, or by what
    // the entry's digest really is), and one whose entry digest the server
    // answers with the index itself.
    let good_manifest = manifest(cfg.clone(), vec![lay.clone()]);
    let inner = index_of(
        OCI_MANIFEST,
        &sha256(&serde_json::to_vec(&good_manifest).unwrap()),
        1,
    );
    let inner_digest = reg.manifest("hostile/index-nested", "inner", &inner);
    reg.manifest("hostile/index-nested", &inner_digest, &inner);
    case(
        "hostile/index-nested",
        index_of(OCI_MANIFEST, &inner_digest, 1),
        unknown,
        "not an image manifest",
    );
    case(
        "hostile/index-of-index",
        index_of(OCI_INDEX, &inner_digest, 1),
        unknown,
        "unsupported media type",
    );
    let entry = format!("sha256:{}", "e".repeat(64));
    let looping = index_of(OCI_MANIFEST, &entry, 1);
    reg.manifest("hostile/index-self", &entry, &looping);
    case("hostile/index-self", looping, unknown, "manifest digest mismatch");

    assert_refused(&b, &mut c, &cases, &good, &escapes).await;
    let fetched: Vec<_> = reg
        .seen()
        .into_iter()
        .filter(|s| {
            s.path.contains("/blobs/") && !s.path.contains(&config.digest) && !s.path.contains(&layer.digest)
        })
        .collect();
    assert!(fetched.is_empty(), "blobs fetched by a hostile name: {fetched:?}");
}

/// Blobs a registry would never serve: bytes that do not match the digest
/// (a config, a layer), a body longer than the descriptor's size under a
/// truthful Content-Length, a Content-Length shorter or longer than what
/// is sent, and bodies that never end (a layer, a config, a manifest).
#[tokio::test]
async fn hostile_blobs_are_refused_and_leave_nothing() {
    let reg = HostileRegistry::start();
    let (b, mut c, _d) = berthd_on_host(FAST_TIMEOUTS).await.expect("berthd");
    let good = reg.serve_busybox("good/busybox");
    let (config, layer) = busybox();
    let doc = manifest(
        descriptor(OCI_CONFIG, &config.digest, config.size()),
        vec![descriptor(OCI_LAYER_GZIP, &layer.digest, layer.size())],
    );
    let unknown = tonic::Code::Unknown;
    let mut cases = Vec::new();
    // Every repository serves the good config and layer unless told otherwise.
    let mut case = |repo: &str, which: &Blob, reply: Reply, says: &str| {
        let repo = format!("hostile/{repo}");
        reg.blob_ok(&repo, &config);
        reg.blob_ok(&repo, &layer);
        reg.blob(&repo, &which.digest, reply);
        reg.manifest_tagged(&repo, "latest", &doc);
        cases.push(Case {
            image: format!("{}/{repo}:latest", reg.addr),
            code: unknown,
            says: says.to_string(),
        });
    };
    let mut garbled = layer.bytes.to_vec();
    garbled[layer.bytes.len() / 2] ^= 0xff;
    let body = |b: Vec<u8>| Reply::Body {
        content_type: "application/octet-stream".into(),
        body: Arc::new(b),
    };
    case("layer-garbled", &layer, body(garbled), "with that digest");
    let mut cfg_garbled = config.bytes.to_vec();
    cfg_garbled.push(b' ');
    case("config-garbled", &config, body(cfg_garbled), "digest mismatch");
    let mut longer = layer.bytes.to_vec();
    longer.extend(std::iter::repeat_n(0u8, 1 << 20));
    case("layer-longer", &layer, body(longer), "download");
    let half = layer.bytes[..layer.bytes.len() / 2].to_vec();
    case(
        "length-short",
        &layer,
        Reply::LyingLength {
            declared: half.len() as u64,
            body: Arc::new(half),
        },
        "with that digest",
    );
    case(
        "length-long",
        &layer,
        Reply::LyingLength {
            declared: 2 * layer.size(),
            body: layer.bytes.clone(),
        },
        "download",
    );
    case("layer-endless", &layer, Reply::Endless, "download");
    case("config-endless", &config, Reply::Endless, "read blob");
    let repo = "hostile/manifest-endless";
    reg.route(&format!("/v2/{repo}/manifests/latest"), Reply::Endless);
    cases.push(Case {
        image: format!("{}/{repo}:latest", reg.addr),
        code: unknown,
        says: "read manifest".into(),
    });
    assert_refused(&b, &mut c, &cases, &good, &[]).await;
}

/// A registry that stalls: never answers a layer or a manifest request, or
/// sends a manifest one byte at a time forever (each read makes progress,
/// so no idle timeout fires). Each pull ends at the configured timeouts
/// with an error saying so, and a good pull right after succeeds.
#[tokio::test]
async fn stalling_registries_end_the_pull_at_the_timeouts() {
    let reg = HostileRegistry::start();
    let (b, mut c, _d) = berthd_on_host(FAST_TIMEOUTS).await.expect("berthd");
    let good = reg.serve_busybox("good/busybox");
    let (config, layer) = busybox();
    let doc = manifest(
        descriptor(OCI_CONFIG, &config.digest, config.size()),
        vec![descriptor(OCI_LAYER_GZIP, &layer.digest, layer.size())],
    );
    let mut cases = Vec::new();
    for (repo, path, reply) in [
        ("layer-silent", Some(&layer.digest), Reply::Silent),
        ("config-dribble", Some(&config.digest), Reply::Dribble),
        ("manifest-silent", None, Reply::Silent),
        ("manifest-dribble", None, Reply::Dribble),
    ] {
        let repo = format!("hostile/{repo}");
        reg.blob_ok(&repo, &config);
        reg.blob_ok(&repo, &layer);
        match path {
            Some(d) => {
                reg.manifest_tagged(&repo, "latest", &doc);
                reg.blob(&repo, d, reply);
            }
            None => reg.route(&format!("/v2/{repo}/manifests/latest"), reply),
        }
        cases.push(Case {
            image: format!("{}/{repo}:latest", reg.addr),
            code: tonic::Code::Unknown,
            says: "timeout".into(),
        });
    }
    assert_refused(&b, &mut c, &cases, &good, &[]).await;
}

/// The registry wants basic credentials and redirects its blobs to
/// another host (as registries do to storage): the pull succeeds, and no
/// request to the other host carries the credentials.
#[tokio::test]
async fn a_redirect_to_another_host_carries_no_credentials() {
    let reg = HostileRegistry::start();
    let (_b, mut c, _d) = berthd_on_host("").await.expect("berthd");
    let image = reg.serve_busybox("private/busybox");
    let (config, layer) = busybox();
    for blob in [&config, &layer] {
        let elsewhere = format!("/elsewhere/{}", blob.digest);
        reg.blob(
            "private/busybox",
            &blob.digest,
            Reply::Redirect(format!("http://{}{elsewhere}", reg.other_host)),
        );
        reg.route(
            &elsewhere,
            Reply::Body {
                content_type: "application/octet-stream".into(),
                body: blob.bytes.clone(),
            },
        );
    }
    reg.require_auth(Some("Basic realm=\"hostile\""));
    let auth = cri::AuthConfig {
        username: "berth".into(),
        password: "berth-pass".into(),
        ..Default::default()
    };
    pull_with(&mut c, &image, Some(auth)).await.expect("pull");
    let seen = reg.seen();
    let (registry, other): (Vec<_>, Vec<_>) = seen.iter().partition(|s| s.host == reg.addr);
    assert_eq!(other.len(), 2, "config and layer from the other host: {seen:?}");
    assert!(other.iter().all(|s| s.authorization.is_none()), "{seen:?}");
    assert!(
        registry.iter().any(|s| s
            .authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic "))),
        "the registry itself got them: {seen:?}"
    );
}

/// A token realm over plain http on another host: basic credentials and
/// identity tokens are never sent there (Unauthenticated, naming why); an
/// anonymous pull still gets its token there.
#[tokio::test]
async fn credentials_never_go_to_a_plain_http_token_realm_elsewhere() {
    let reg = HostileRegistry::start();
    let (b, mut c, _d) = berthd_on_host("").await.expect("berthd");
    let image = reg.serve_busybox("tokened/busybox");
    reg.require_auth(Some(&format!(
        "Bearer realm=\"http://{}/token\",service=\"hostile\"",
        reg.other_host
    )));
    reg.route(
        "/token",
        Reply::Body {
            content_type: "application/json".into(),
            body: Arc::new(br#"{"token":"anonymous-token"}"#.to_vec()),
        },
    );
    let basic = cri::AuthConfig {
        username: "berth".into(),
        password: "berth-pass".into(),
        ..Default::default()
    };
    let identity = cri::AuthConfig {
        identity_token: "refresh-secret".into(),
        ..Default::default()
    };
    for auth in [basic, identity] {
        let e = pull_with(&mut c, &image, Some(auth)).await.expect_err("refused");
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        assert!(e.message().contains("plain http on another host"), "{e:?}");
        assert!(store_entries(&b).is_empty());
    }
    let to_realm: Vec<_> = reg
        .seen()
        .into_iter()
        .filter(|s| s.path.starts_with("/token"))
        .collect();
    assert!(
        to_realm.is_empty(),
        "credentials offered to the realm: {to_realm:?}"
    );
    pull_with(&mut c, &image, None).await.expect("anonymous pull");
    let to_realm: Vec<_> = reg
        .seen()
        .into_iter()
        .filter(|s| s.path.starts_with("/token"))
        .collect();
    assert!(
        !to_realm.is_empty() && to_realm.iter().all(|s| s.authorization.is_none()),
        "{to_realm:?}"
    );
}

fn basic_for(server_address: &str) -> Option<cri::AuthConfig> {
    Some(cri::AuthConfig {
        username: "berth".into(),
        password: "berth-pass".into(),
        server_address: server_address.into(),
        ..Default::default()
    })
}

fn sent_basic(seen: &[Seen]) -> bool {
    seen.iter().any(|s| {
        s.authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic "))
    })
}

/// CRI `auth.server_address` names the registry the credentials are for:
/// for any other host (another name, another port, the same server as
/// `localhost`) they are not sent and the pull is Unauthenticated; for
/// this registry, however written (`host:port`, a URL), they are.
#[tokio::test]
async fn credentials_go_only_to_the_server_address_they_were_given_for() {
    let reg = HostileRegistry::start();
    let (b, mut c, _d) = berthd_on_host("").await.expect("berthd");
    let image = reg.serve_busybox("private/busybox");
    reg.require_auth(Some("Basic realm=\"hostile\""));
    for other in ["other.example:5000", "127.0.0.1", reg.other_host.as_str()] {
        let e = pull_with(&mut c, &image, basic_for(other))
            .await
            .expect_err(other);
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{other}: {e:?}");
        assert!(store_entries(&b).is_empty(), "{other}");
        assert!(!sent_basic(&reg.seen()), "{other}: {:?}", reg.seen());
    }
    for given in [reg.addr.clone(), format!("http://{}/v2/", reg.addr)] {
        pull_with(&mut c, &image, basic_for(&given))
            .await
            .unwrap_or_else(|e| panic!("{given}: {e:?}"));
        assert!(sent_basic(&reg.seen()), "{given}");
        remove(&mut c, &image).await;
        reg.clear_seen();
    }
}

const TLS_CERT: &str = include_str!("testdata/token.crt");
const TLS_KEY: &[u8] = include_bytes!("testdata/token.pk8");

/// An https mirror of the registry does not get the credentials a pull
/// brings for the registry (they were given for it, not for a cache run by
/// someone else): the mirror refuses the anonymous pull and the registry
/// serves it. With `forward_pull_credentials` on the mirror's entry, the
/// mirror gets them and serves the pull itself.
#[tokio::test]
async fn an_https_mirror_gets_the_pulls_credentials_only_when_configured() {
    let upstream = HostileRegistry::start();
    let mirror = HostileRegistry::start_tls(TLS_CERT, TLS_KEY);
    let image = upstream.serve_busybox("private/busybox");
    mirror.serve_busybox("private/busybox");
    for r in [&upstream, &mirror] {
        r.require_auth(Some("Basic realm=\"hostile\""));
    }
    let config = format!(
        "[registry.\"{}\"]\nmirrors = [\"https://{m}\"]\n[registry.\"{m}\"]\nskip_verify = true\n",
        upstream.addr,
        m = mirror.addr
    );
    let (b, mut c, _d) = berthd_on_host(&config).await.expect("berthd");
    pull_with(&mut c, &image, basic_for(""))
        .await
        .expect("pulled from the registry after the mirror");
    let to_mirror = mirror.seen();
    assert!(!to_mirror.is_empty(), "the mirror was tried first");
    assert!(!sent_basic(&to_mirror), "{to_mirror:?}");
    assert!(sent_basic(&upstream.seen()), "{:?}", upstream.seen());
    drop((b, c));

    let (_b, mut c, _d2) = berthd_on_host(&format!("{config}forward_pull_credentials = true\n"))
        .await
        .expect("berthd");
    upstream.clear_seen();
    mirror.clear_seen();
    pull_with(&mut c, &image, basic_for(""))
        .await
        .expect("pulled from the mirror");
    assert!(sent_basic(&mirror.seen()), "{:?}", mirror.seen());
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
}

/// Blob downloads redirect to storage on another host. When that host
/// answers 401 with a challenge of its own, the registry's credentials
/// are not spent on it (its token realm is whatever it names): the pull
/// fails Unauthenticated and the realm it named hears nothing.
#[tokio::test]
async fn a_challenge_from_a_redirect_target_gets_no_credentials() {
    let reg = HostileRegistry::start();
    // On the registry's own host name (so the plain-http realm rule lets
    // it through), but named only by the redirect target.
    let realm = HostileRegistry::start();
    realm.route(
        "/token",
        Reply::Body {
            content_type: "application/json".into(),
            body: Arc::new(br#"{"token":"t"}"#.to_vec()),
        },
    );
    let (b, mut c, _d) = berthd_on_host("").await.expect("berthd");
    let image = reg.serve_busybox("private/busybox");
    let (_, layer) = busybox();
    let elsewhere = format!("/elsewhere/{}", layer.digest);
    reg.blob(
        "private/busybox",
        &layer.digest,
        Reply::Redirect(format!("http://{}{elsewhere}", reg.other_host)),
    );
    reg.route(
        &elsewhere,
        Reply::Challenge(format!("Bearer realm=\"http://{}/token\"", realm.addr)),
    );
    reg.require_auth(Some("Basic realm=\"hostile\""));
    let e = pull_with(&mut c, &image, basic_for(""))
        .await
        .expect_err("the storage host wants credentials");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert!(realm.seen().is_empty(), "{:?}", realm.seen());
    let left = store_entries(&b);
    assert!(left.is_empty(), "{left:?}");
}

/// A pull held up by a slow registry (a layer trickled a byte at a time:
/// progress, so no timeout fires for hours) holds nothing RemoveImage or
/// other pulls need: an image is removed and pulled again meanwhile.
#[tokio::test]
async fn a_slow_pull_holds_no_lock_removals_or_other_pulls_need() {
    let reg = HostileRegistry::start();
    let (b, mut c, _d) = berthd_on_host("").await.expect("berthd");
    let good = reg.serve_busybox("good/busybox");
    pull_with(&mut c, &good, None).await.expect("good pull");
    // A layer of its own (busybox's is unpacked already), trickled forever.
    let slow_layer = format!("sha256:{}", "5".repeat(64));
    let config = Blob::new(
        serde_json::json!({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", "6".repeat(64))]}})
        .to_string()
        .into_bytes(),
    );
    let repo = "hostile/slow";
    reg.blob_ok(repo, &config);
    reg.blob(repo, &slow_layer, Reply::Dribble);
    reg.manifest_tagged(
        repo,
        "latest",
        &manifest(
            descriptor(OCI_CONFIG, &config.digest, config.size()),
            vec![descriptor(OCI_LAYER_GZIP, &slow_layer, 1 << 20)],
        ),
    );
    let slow = {
        let (mut c, image) = (c.clone(), format!("{}/{repo}:latest", reg.addr));
        tokio::spawn(async move { pull_with(&mut c, &image, None).await })
    };
    // The slow pull is under way once its layer is asked for.
    let asked = std::time::Instant::now();
    while !reg.seen().iter().any(|s| s.path.ends_with(&slow_layer)) {
        assert!(asked.elapsed() < HANG, "the slow layer was never asked for");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::timeout(HANG, remove(&mut c, &good))
        .await
        .expect("RemoveImage waited for the slow pull");
    assert!(c.list_images().await.unwrap().is_empty());
    pull_with(&mut c, &good, None)
        .await
        .expect("a pull while the slow one runs");
    assert!(!slow.is_finished(), "the slow pull is still under way");
    slow.abort();
    drop(b);
}
