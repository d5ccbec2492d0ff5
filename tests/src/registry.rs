//! A real registry for host tests: Debian's `docker-registry` serving the
//! test images that `hack/images` builds, on a free loopback port.
//!
//! The images are built and pushed into `target/tmp/` by the very scripts
//! the VM run uses (`hack/images/build.sh`, `registry-seed.sh`), so host and
//! VM tests pull the same bytes. Each registry serves that storage
//! read-only, so tests can share it and start registries with different
//! auth settings side by side.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The repository root (the workspace).
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The seeded registry storage (`.../registry`, docker-registry's
/// filesystem root). Built on first use, into `target/tmp/berth-images-<key>`
/// where the key hashes the `hack/images` scripts and the busybox they copy:
/// later runs and the other host test binaries reuse it (seeding is ~3 s on
/// an idle machine, far more on a busy one); a changed script rebuilds it.
pub fn seeded_storage() -> &'static Path {
    static STORAGE: OnceLock<PathBuf> = OnceLock::new();
    STORAGE.get_or_init(|| {
        let tmp = repo_root().join("target/tmp");
        let base = tmp.join(format!("berth-images-{:016x}", images_key()));
        if base.join("registry/docker").is_dir() {
            return base.join("registry");
        }
        std::fs::create_dir_all(&tmp).expect("create target/tmp");
        // Built aside and renamed into place, so a half-built copy (a run
        // killed mid-way, or another test binary building at the same
        // time) is never used.
        let building = tmp.join(format!("berth-images-building-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&building);
        std::fs::create_dir_all(&building).expect("create image dir");
        for script in ["build.sh", "registry-seed.sh"] {
            let out = Command::new(repo_root().join("hack/images").join(script))
                .arg(&building)
                .output()
                .unwrap_or_else(|e| panic!("hack/images/{script}: {e}"));
            assert!(
                out.status.success(),
                "hack/images/{script} failed (docker-registry, skopeo and python3 come from hack/install-deps.sh): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if std::fs::rename(&building, &base).is_err() {
            // Another process got there first: use its copy.
            let _ = std::fs::remove_dir_all(&building);
        }
        // Copies for older scripts are of no further use.
        for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("berth-images-") && !name.contains("building") && e.path() != base {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        assert!(base.join("registry/docker").is_dir(), "{} not seeded", base.display());
        base.join("registry")
    })
}

/// What the seeded images depend on: the `hack/images` scripts and the
/// busybox binary they package (by size and mtime).
fn images_key() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in ["mkimage.py", "build.sh", "registry-seed.sh"] {
        std::fs::read(repo_root().join("hack/images").join(f))
            .unwrap_or_else(|e| panic!("hack/images/{f}: {e}"))
            .hash(&mut h);
    }
    let busybox = std::env::var("BERTH_BUSYBOX").unwrap_or_else(|_| "/bin/busybox".into());
    if let Ok(m) = std::fs::metadata(&busybox) {
        (m.len(), m.modified().ok()).hash(&mut h);
    }
    h.finish()
}

/// The digest a tag of `library/<repo>` points at in the seeded storage
/// (a manifest's, or an index's).
pub fn tag_digest(repo: &str, tag: &str) -> String {
    let link = seeded_storage().join(format!(
        "docker/registry/v2/repositories/library/{repo}/_manifests/tags/{tag}/current/link"
    ));
    std::fs::read_to_string(&link)
        .unwrap_or_else(|e| panic!("{}: {e}", link.display()))
        .trim()
        .to_string()
}

/// A running `docker-registry serve` over the seeded storage; killed on drop.
pub struct RegistryProcess {
    child: Child,
    /// Holds its config (and whatever files the caller put there).
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:<port>`: a port the registry bound itself (`addr:
    /// 127.0.0.1:0`) and keeps, read back from its log -- never one picked
    /// by binding and releasing, which another process could take between.
    pub addr: String,
}

impl RegistryProcess {
    /// Plain HTTP, anonymous.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// With extra top-level config YAML (e.g. an `auth:` section).
    pub fn start_with(extra_yaml: &str) -> Self {
        Self::serve(
            seeded_storage(),
            tempfile::tempdir().expect("tempdir"),
            "",
            extra_yaml,
        )
    }

    /// Serves `storage` (read-only) with its config in `dir` (where the
    /// caller may have put certificates or an htpasswd file), `http_extra`
    /// YAML inside the `http:` section (e.g. `  tls: ...`) and `extra_yaml`
    /// at the top level. The VM suites serve the VM's `/var/lib/registry`.
    pub fn serve(storage: &Path, dir: tempfile::TempDir, http_extra: &str, extra_yaml: &str) -> Self {
        let conf = dir.path().join("registry.yml");
        std::fs::write(
            &conf,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  maintenance:\n    readonly:\n      enabled: true\nhttp:\n  addr: 127.0.0.1:0\n{http_extra}{extra_yaml}",
                storage.display()
            ),
        )
        .expect("registry config");
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).expect("registry log");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry (hack/install-deps.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(addr) = listening_address(&text) {
                break addr;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("docker-registry exited with {st}: {text}");
            }
            assert!(Instant::now() < deadline, "docker-registry did not start: {text}");
            std::thread::sleep(Duration::from_millis(20));
        };
        RegistryProcess { child, dir, addr }
    }

    /// The registry's own log so far (token verification failures say why).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in docker-registry's `listening on 127.0.0.1:<port>` (`, tls`
/// for TLS) log line.
fn listening_address(log: &str) -> Option<String> {
    let rest = &log[log.find("msg=\"listening on ")? + "msg=\"listening on ".len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    addr.rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok_and(|p| p != 0))
        .then_some(addr)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_address_the_registry_bound() {
        let log = "time=\"x\" level=info msg=\"listening on 127.0.0.1:33981\" go.version=go1.19.8\n";
        assert_eq!(super::listening_address(log).as_deref(), Some("127.0.0.1:33981"));
        let tls = "level=info msg=\"listening on 127.0.0.1:4431, tls\" instance.id=x\n";
        assert_eq!(super::listening_address(tls).as_deref(), Some("127.0.0.1:4431"));
        assert_eq!(super::listening_address("level=info msg=\"starting\"\n"), None);
        assert_eq!(super::listening_address("msg=\"listening on 127.0.0.1:0\""), None);
    }
}
