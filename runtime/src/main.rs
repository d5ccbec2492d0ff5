//! berthd: Berth's CRI v1 daemon.
//!
//! Start-up: read config (file, then flags), check the host (root, Linux
//! 5.14 or later, overlayfs, cgroup v2 with cpu/memory/pids and cgroup.kill), open
//! the stores, serve the CRI socket until SIGINT or SIGTERM. Containers live
//! in per-pod shims, so stopping berthd stops no container.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;

use berthd::{
    cgroup, config, container, cri, error, events, host_check, image, metrics, net, observe, sandbox, stats,
    store, stream,
};

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
    /// ip:port of the /metrics, /healthz, /readyz, /statusz, /flagz
    /// listener ("" turns it off).
    #[arg(long)]
    http_address: Option<String>,
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
    if let Some(v) = &flags.http_address {
        cfg.http_address = v.clone();
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

async fn run(cfg: Config, config_file: Option<PathBuf>) -> error::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(error::Error::FailedPrecondition(
            "berthd must run as root (it creates namespaces, mounts and cgroups)".into(),
        ));
    }
    let cgroups =
        cgroup::CgroupManager::new(&cfg.cgroup_root).with_registry(cfg.root.join("cgroup-parents.json"))?;
    host_check::check(&host_check::RealHost, &cgroups)?;
    for d in [&cfg.root, &cfg.state] {
        store::modes::create_dir(d, store::modes::PRIVATE_DIR)
            .map_err(|e| error::Error::io(format!("create {}", d.display()), e))?;
    }
    tracing::info!(
        supported = *container::mounts::RECURSIVE_READ_ONLY_SUPPORTED,
        "recursive read-only mounts (mount_setattr)"
    );
    // Bound before anything else happens: a taken address stops berthd here.
    let http = match cfg.http_address.as_str() {
        "" => None,
        addr => Some(observe::bind(addr).await?),
    };
    let events = Arc::new(events::Events::default());
    let images = Arc::new(
        image::ImageStore::open(&cfg.root)?
            .with_hosts(cfg.registry.clone())
            .with_limits(cfg.image_limits.clone())
            .with_timeouts(cfg.registry_timeouts.clone()),
    );
    let cni = net::cni::Cni::new(cfg.cni_bin_dirs.clone(), Box::new(net::cni::RealExec));
    let sandboxes = Arc::new(
        sandbox::SandboxManager::new(cfg.clone(), cgroups, cni, Arc::new(sandbox::shm::RealShmHost))
            .with_events(events.clone()),
    );
    let containers = Arc::new(
        container::ContainerManager::new(cfg.clone(), images.clone(), sandboxes.clone())
            .with_events(events.clone()),
    );
    events.set_view(Arc::new(cri::ManagerPodView::new(&sandboxes, &containers)));
    let metrics = Arc::new(metrics::Metrics::new(metrics::NodeView::live(
        &sandboxes,
        &containers,
        events.clone(),
    )));
    let health = Arc::new(observe::Health::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(listener) = http {
        let state = observe::Observe {
            metrics: metrics.clone(),
            health: health.clone(),
            zpages: Arc::new(observe::ZPages {
                started: *metrics::STARTED_AT,
                version: env!("CARGO_PKG_VERSION"),
                paths: observe::PATHS.to_vec(),
                flags: observe::zpages::effective_flags(config_file.as_deref(), &cfg),
            }),
        };
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = observe::serve(listener, state, stopped).await {
                tracing::error!(error = %e, "observability listener failed");
            }
        });
    }
    // Recover before serving, so kubelet never sees a half-known node.
    let t = std::time::Instant::now();
    let pods = sandboxes.recover().await?;
    let ctrs = containers.recover().await?;
    metrics.set_recovered(pods, ctrs, t.elapsed());
    health.set_recovered();
    tracing::info!(
        sandboxes = pods,
        containers = ctrs,
        elapsed_ms = t.elapsed().as_millis() as u64,
        "state recovered"
    );
    let stats = Arc::new(stats::StatsManager::new("/proc"));
    stats::sampler::spawn(stats.clone(), containers.clone(), sandboxes.clone());
    let streams = stream::StreamServer::start(
        cfg.stream_address,
        std::time::Duration::from_millis(cfg.stream_token_ttl_ms),
        std::time::Duration::from_millis(cfg.stream_idle_timeout_ms),
        stream::StreamContext {
            containers: containers.clone(),
            sandboxes: sandboxes.clone(),
        },
    )
    .await?;
    let socket = cfg.socket.clone();
    let event_streams = events.clone();
    let cri = cri::Cri {
        cfg: Arc::new(cfg),
        images,
        sandboxes,
        containers,
        stats,
        events,
        metrics,
        streams,
    };
    let shutdown = async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutting down (containers keep running in their shims)");
        // Event streams never end on their own; kubelet resubscribes to the
        // next berthd.
        event_streams.close_all();
        let _ = stop_tx.send(true);
    };
    let serving = health.clone();
    let result = cri::serve(cri, &socket, shutdown, move || serving.set_serving(true)).await;
    health.set_serving(false);
    result
}

fn main() {
    // Fixes the start time (statusz, berth_start_time_seconds) first thing.
    let _ = *metrics::STARTED_AT;
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
    let config_file = flags
        .config
        .clone()
        .or_else(|| Some(PathBuf::from(config::DEFAULT_CONFIG_PATH)).filter(|p| p.exists()));
    if let Err(e) = rt.block_on(run(cfg, config_file)) {
        tracing::error!(error = %e, "berthd failed");
        eprintln!("berthd: {e}");
        std::process::exit(1);
    }
}
