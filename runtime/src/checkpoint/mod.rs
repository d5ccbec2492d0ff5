//! CheckpointContainer: a running container's processes dumped with CRIU
//! (it keeps running), packed with its writable layer, spec, record and
//! log into one tar archive at the caller's location. See `archive.rs` for
//! the layout and `external.rs` for what CRIU leaves to the pod.

pub mod archive;
pub mod criu;
pub mod external;
pub mod images;
pub mod leftovers;
pub mod location;
pub mod restore;
pub mod unpack;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::container::{ContainerManager, ContainerState};
use crate::error::{Error, IoContext, Result};

/// How long CRIU may take when the request gives no timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// What one checkpoint produced.
#[derive(Debug, Clone)]
pub struct Checkpointed {
    /// The archive.
    pub path: PathBuf,
    /// Its size.
    pub size_bytes: u64,
    /// How long CRIU's dump took.
    pub dump_time: Duration,
}

/// Whether this node can checkpoint (Status reports it): the CRIU found.
pub fn support(cfg: &Config) -> Option<PathBuf> {
    criu::find(&cfg.criu_path, std::env::var_os("PATH").as_deref())
}

/// Checkpoints container `id` into `location` within `timeout` (zero: the
/// default). On any error the container runs on and no archive is left.
pub async fn checkpoint(
    cfg: &Config,
    containers: &ContainerManager,
    id: &str,
    location: &str,
    timeout: Duration,
) -> Result<Checkpointed> {
    let criu = criu::require(&cfg.criu_path)?;
    let c = containers.get(id)?;
    let loc = location::check(location)?;
    let r = c.record();
    if r.state != ContainerState::Running || r.pid == 0 {
        return Err(Error::FailedPrecondition(format!(
            "container {} is not running ({:?}): only a running container can be checkpointed",
            r.id, r.state
        )));
    }
    let timeout = if timeout.is_zero() {
        DEFAULT_TIMEOUT
    } else {
        timeout
    };
    let work_root = leftovers::work_root(&cfg.root);
    std::fs::create_dir_all(&work_root).ctx(|| format!("create {}", work_root.display()))?;
    let work = tempfile::Builder::new()
        .prefix(&format!("{}-", r.id))
        .tempdir_in(&work_root)
        .ctx(|| format!("create a work dir in {}", work_root.display()))?;
    let images = work.path().join("checkpoint");
    std::fs::create_dir(&images).ctx(|| format!("create {}", images.display()))?;

    let pid = r.pid;
    let (externals, stdio) = crate::blocking::run("checkpoint: read /proc", move || {
        external::args(pid).map(|e| (e, external::stdio_names(pid)))
    })
    .await??;
    let descriptors = serde_json::to_vec(&stdio)
        .map_err(|e| Error::Internal(format!("encode the stdio descriptors: {e}")))?;
    let mut args: Vec<String> = [
        "dump",
        "--tree",
        &pid.to_string(),
        "--images-dir",
        &images.to_string_lossy(),
        "--log-file",
        "dump.log",
        "-v4",
        // The container runs on: a checkpoint is forensic, not a migration.
        "--leave-running",
        // Its mounts are slaves of (or share with) the node's mounts,
        // which are outside the dumped mount namespace.
        "--enable-external-masters",
        "--enable-external-sharing",
        "--tcp-established",
        "--file-locks",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for e in externals {
        args.push("--external".into());
        args.push(e);
    }
    let started = Instant::now();
    criu::run(&criu, &args, timeout, &images.join("dump.log")).await?;
    let dump_time = started.elapsed();

    // The record as it is now: the CRI config and status of the container.
    let record = serde_json::to_vec_pretty(&serde_json::json!({"version": 1, "container": c.record()}))
        .map_err(|e| Error::Internal(format!("encode the container record: {e}")))?;
    let (dest, dir) = (loc.path.clone(), loc.dir.clone());
    let upper = r.dir.join("upper");
    let spec = r.bundle.join("config.json");
    let log = PathBuf::from(&r.log_path);
    let size_bytes = crate::blocking::run("checkpoint: write the archive", move || {
        let mut parts = vec![
            archive::Part::Tree {
                name: "checkpoint",
                dir: &images,
            },
            archive::Part::Tree {
                name: "rootfs-diff",
                dir: &upper,
            },
            archive::Part::File {
                name: "config.json",
                path: &spec,
                optional: false,
            },
            archive::Part::Bytes {
                name: "container.json",
                data: &record,
            },
            archive::Part::Bytes {
                name: "descriptors.json",
                data: &descriptors,
            },
        ];
        if !r.log_path.is_empty() {
            parts.push(archive::Part::File {
                name: "container.log",
                path: &log,
                optional: true,
            });
        }
        let work_dir = work.path().to_path_buf();
        let size = archive::write(&dest, &dir, &parts, &|tmp| leftovers::note(&work_dir, tmp));
        drop(work);
        size
    })
    .await??;
    tracing::info!(container = %id, archive = %loc.path.display(), size_bytes,
        dump_ms = dump_time.as_millis() as u64, "container checkpointed");
    Ok(Checkpointed {
        path: loc.path,
        size_bytes,
        dump_time,
    })
}
