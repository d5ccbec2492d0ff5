//! Pulls through a registry that holds layer downloads until the test lets
//! them go (`berth_tests::gated_registry`): a pull cancelled while a layer
//! is mid-download, and layers fetched three at a time, are arranged facts
//! here, not races against the pull's speed. berthd runs on the host on a
//! fake cgroup tree (a pull needs no cgroups); as root, as CI runs.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use berth_tests::gated_registry::{layer_digests, GatedRegistry};
use berth_tests::registry::seeded_storage;
use berth_tests::*;

/// Generous: a deadline only turns "never" into a failure.
const WAIT: Duration = Duration::from_secs(60);

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

async fn wait_for_log(b: &Berthd, needle: &str) {
    let deadline = Instant::now() + WAIT;
    while !b.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "berthd never logged {needle:?}: {}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The caller goes away while a layer is mid-download (held there by the
/// registry, so the pull cannot have finished): berthd stops the pull,
/// closes the download, and keeps no `.partial` blob, no snapshot and no
/// image; the same pull afterwards works.
#[tokio::test]
async fn a_pull_cancelled_mid_download_leaves_nothing() {
    let reg = GatedRegistry::start(seeded_storage());
    reg.hold(layer_digests(seeded_storage(), "noise", "latest"));
    let (b, c, _d) = berthd_on_host("").await.expect("berthd");
    let image = format!("{}/library/noise:latest", reg.addr);
    let pull = {
        let (mut c, image) = (c.clone(), image.clone());
        tokio::spawn(async move { c.pull(&image).await })
    };
    reg.wait_for("the layer download began", WAIT, |s| s.in_flight == 1)
        .await;
    // Dropping the call resets its HTTP/2 stream: the caller went away.
    pull.abort();
    assert!(pull.await.unwrap_err().is_cancelled());
    wait_for_log(&b, "pull stopped: the caller went away").await;
    let s = reg
        .wait_for("berthd closed the download", WAIT, |s| s.abandoned == 1)
        .await;
    assert_eq!((s.started, s.completed), (1, 0), "{s:?}");
    assert!(!b.log().contains("image pulled"), "{}", b.log());
    let left = store_entries(&b);
    assert!(
        left.iter()
            .all(|e| e.starts_with("blobs/") && !e.ends_with(".partial")),
        "no snapshot, record or partial blob: {left:?}"
    );
    let mut c = c.clone();
    assert!(c.list_images().await.unwrap().is_empty());

    reg.release(1);
    c.pull(&image).await.expect("the pull after the cancelled one");
    let entries = store_entries(&b);
    assert_eq!(
        entries.iter().filter(|e| e.starts_with("snapshots/")).count(),
        1,
        "{entries:?}"
    );
    assert_eq!(reg.stats().completed, 1);
}

/// README: "layers three at a time". Every layer download of a five-layer
/// image is held; berthd has exactly three under way (never a fourth) until
/// one is let go, and then starts the next, down to the last.
#[tokio::test]
async fn layers_are_pulled_three_at_a_time() {
    let reg = GatedRegistry::start(seeded_storage());
    let layers = layer_digests(seeded_storage(), "busybox-layers", "latest");
    assert_eq!(layers.len(), 5, "{layers:?}");
    reg.hold(layers.clone());
    let (b, c, _d) = berthd_on_host("").await.expect("berthd");
    let pull = {
        let mut c = c.clone();
        let image = format!("{}/library/busybox-layers:latest", reg.addr);
        tokio::spawn(async move { c.pull(&image).await })
    };
    for done in 0..layers.len() {
        let want = (layers.len() - done).min(3);
        let s = reg
            .wait_for(&format!("{want} downloads under way"), WAIT, |s| {
                s.in_flight >= want || s.max_in_flight > 3
            })
            .await;
        assert!(s.max_in_flight <= 3, "more than three at once: {s:?}");
        assert_eq!(s.started, done + want, "{s:?}");
        reg.release(1);
        reg.wait_for("one download finished", WAIT, |s| s.completed == done + 1)
            .await;
    }
    let id = tokio::time::timeout(WAIT, pull)
        .await
        .expect("the pull finished")
        .unwrap()
        .expect("pull");
    assert!(id.starts_with("sha256:"), "{id}");
    let s = reg.stats();
    assert_eq!((s.max_in_flight, s.started, s.completed), (3, 5, 5), "{s:?}");
    let snapshots = store_entries(&b)
        .into_iter()
        .filter(|e| e.starts_with("snapshots/"))
        .count();
    assert_eq!(snapshots, 5);
}
