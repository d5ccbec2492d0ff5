//! berthd: Berth's CRI v1 daemon.
//!
//! Start-up: read config (file, then flags), check the host (root, cgroup v2
//! with cpu/memory/pids), open the stores, serve the CRI socket until SIGINT
//! or SIGTERM. Containers live in per-pod shims, so stopping berthd stops no
//! container.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;

mod cgroup;
mod config;
mod container;
mod cri;
mod error;
mod image;
mod net;
mod sandbox;
mod shim_client;
mod store;
mod stream;

use config::Config;

/// Command-line flags; each overrides the config file.
#[derive(Debug, Parser)]
#[command(name = "berthd", version, about = "Berth: a Kubernetes CRI container runtime")]
struct Flags {
    /// Config file (TOML). Default /etc/berth/config.toml, if it exists.
    #[arg(long)]
    config: Option<PathBuf>,
    /// CRI socket path.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Persistent state directory.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Runtime state directory.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Log filter (e.g. info, debug, berth_runtime=debug).
    #[arg(long)]
    log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
    /// Path of the berth-shim binary.
    #[arg(long)]
    shim: Option<PathBuf>,
    /// Mount point of cgroup v2.
    #[arg(long)]
    cgroup_root: Option<PathBuf>,
    /// Address of the streaming server (exec/attach/port-forward), e.g.
    /// 127.0.0.1:10010; port 0 picks a free port.
    #[arg(long)]
    stream_address: Option<std::net::SocketAddr>,
}

fn effective_config(flags: &Flags) -> error::Result<Config> {
    let mut cfg = Config::load(flags.config.as_deref())?;
    if let Some(v) = &flags.socket {
        cfg.socket = v.clone();
    }
    if let Some(v) = &flags.root {
        cfg.root = v.clone();
    }
    if let Some(v) = &flags.state {
        cfg.state = v.clone();
    }
    if let Some(v) = &flags.log_level {
        cfg.log_level = v.clone();
    }
    if let Some(v) = &flags.log_format {
        cfg.log_format = v.clone();
    }
    if let Some(v) = &flags.shim {
        cfg.shim_path = v.clone();
    }
    if let Some(v) = &flags.cgroup_root {
        cfg.cgroup_root = v.clone();
    }
    if let Some(v) = flags.stream_address {
        cfg.stream_address = v;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log_format == "json" {
        builder.json().init();
    } else {
        builder.with_ansi(false).init();
    }
}

async fn run(cfg: Config) -> error::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(error::Error::FailedPrecondition(
            "berthd must run as root (it creates namespaces, mounts and cgroups)".into(),
        ));
    }
    let cgroups =
        cgroup::CgroupManager::new(&cfg.cgroup_root).with_registry(cfg.root.join("cgroup-parents.json"))?;
    cgroups.check_host()?;
    for d in [&cfg.root, &cfg.state] {
        std::fs::create_dir_all(d).map_err(|e| error::Error::io(format!("create {}", d.display()), e))?;
    }
    tracing::info!(
        supported = *container::mounts::RECURSIVE_READ_ONLY_SUPPORTED,
        "recursive read-only mounts (mount_setattr)"
    );
    let images = Arc::new(image::ImageStore::open(&cfg.root)?.with_hosts(cfg.registry.clone()));
    let cni = net::cni::Cni::new(cfg.cni_bin_dirs.clone(), Box::new(net::cni::RealExec));
    let sandboxes = Arc::new(sandbox::SandboxManager::new(
        cfg.clone(),
        cgroups,
        cni,
        Arc::new(sandbox::shm::RealShmHost),
    ));
    let containers = Arc::new(container::ContainerManager::new(
        cfg.clone(),
        images.clone(),
        sandboxes.clone(),
    ));
    // Recover before serving, so kubelet never sees a half-known node.
    let t = std::time::Instant::now();
    let pods = sandboxes.recover().await?;
    let ctrs = containers.recover().await?;
    tracing::info!(
        sandboxes = pods,
        containers = ctrs,
        elapsed_ms = t.elapsed().as_millis() as u64,
        "state recovered"
    );
    let streams = stream::StreamServer::start(
        cfg.stream_address,
        std::time::Duration::from_millis(cfg.stream_token_ttl_ms),
        stream::StreamContext {
            containers: containers.clone(),
            sandboxes: sandboxes.clone(),
        },
    )
    .await?;
    let socket = cfg.socket.clone();
    let cri = cri::Cri {
        cfg: Arc::new(cfg),
        images,
        sandboxes,
        containers,
        streams,
    };
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutting down (containers keep running in their shims)");
    };
    cri::serve(cri, &socket, shutdown).await
}

fn main() {
    let flags = Flags::parse();
    let cfg = match effective_config(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berthd: {e}");
            std::process::exit(2);
        }
    };
    init_logging(&cfg);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), root = %cfg.root.display(), socket = %cfg.socket.display(), "berthd starting");
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berthd: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cfg)) {
        tracing::error!(error = %e, "berthd failed");
        eprintln!("berthd: {e}");
        std::process::exit(1);
    }
}
