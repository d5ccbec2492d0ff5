//! berthd: Berth's CRI v1 daemon.
//!
//! Start-up: read config (file, drop-ins, then flags), check the host (root, Linux
//! 5.14 or later, overlayfs, cgroup v2 with cpu/memory/pids and cgroup.kill), open
//! the stores, clean pod records a reboot left stale, recover, tell systemd
//! it is ready, serve the CRI socket until SIGINT or SIGTERM (SIGHUP
//! reloads what it can). Containers live in per-pod shims, so stopping
//! berthd stops no container.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;

use berthd::{
    cgroup, config, container, cri, error, events, host_check, image, metrics, net, observe, sandbox,
    service, stats, store, stream, threads,
};

use config::Config;

/// Command-line flags; each overrides the config files.
#[derive(Debug, Parser)]
#[command(name = "berthd", version, about = "Berth: a Kubernetes CRI container runtime")]
struct Flags {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (TOML). Default /etc/berth/config.toml, if it exists.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Drop-in directory: every *.toml in it, in lexical order, overrides
    /// the config file. Default: config.d next to the config file.
    #[arg(long, global = true)]
    config_dir: Option<PathBuf>,
    /// CRI socket path.
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Persistent state directory.
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Runtime state directory.
    #[arg(long, global = true)]
    state: Option<PathBuf>,
    /// Log filter (e.g. info, debug, berth_runtime=debug).
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long, global = true)]
    log_format: Option<String>,
    /// Path of the berth-shim binary.
    #[arg(long, global = true)]
    shim: Option<PathBuf>,
    /// Mount point of cgroup v2.
    #[arg(long, global = true)]
    cgroup_root: Option<PathBuf>,
    /// kubelet's root dir (its --root-dir).
    #[arg(long, global = true)]
    kubelet_root: Option<PathBuf>,
    /// ip:port of the /metrics, /healthz, /readyz, /statusz, /flagz
    /// listener ("" turns it off).
    #[arg(long, global = true)]
    http_address: Option<String>,
    /// Address of the streaming server (exec/attach/port-forward), e.g.
    /// 127.0.0.1:10010; port 0 picks a free port.
    #[arg(long, global = true)]
    stream_address: Option<std::net::SocketAddr>,
}

/// Subcommands; without one berthd runs the daemon.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, clap::Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (files, drop-ins, flags) with the
    /// source of each value; secrets are redacted.
    Dump,
    /// Print the default configuration as a commented file.
    Default,
}

/// The config files and the flags, as one set of sources SIGHUP can load
/// again.
fn config_sources(flags: &Flags) -> error::Result<config::layers::Sources> {
    let mut s = config::layers::Sources::new(flags.config.as_deref(), flags.config_dir.as_deref());
    s.check = |c| image::hosts::validate(&c.registry);
    if let Some(v) = &flags.socket {
        s.flag("socket", v, "--socket")?;
    }
    if let Some(v) = &flags.root {
        s.flag("root", v, "--root")?;
    }
    if let Some(v) = &flags.state {
        s.flag("state", v, "--state")?;
    }
    if let Some(v) = &flags.log_level {
        s.flag("log_level", v, "--log-level")?;
    }
    if let Some(v) = &flags.log_format {
        s.flag("log_format", v, "--log-format")?;
    }
    if let Some(v) = &flags.shim {
        s.flag("shim_path", v, "--shim")?;
    }
    if let Some(v) = &flags.cgroup_root {
        s.flag("cgroup_root", v, "--cgroup-root")?;
    }
    if let Some(v) = &flags.kubelet_root {
        s.flag("kubelet_root", v, "--kubelet-root")?;
    }
    if let Some(v) = &flags.http_address {
        s.flag("http_address", v, "--http-address")?;
    }
    if let Some(v) = &flags.stream_address {
        s.flag("stream_address", v, "--stream-address")?;
    }
    Ok(s)
}

/// `berthd config ...`: prints and exits.
fn config_command(cmd: &ConfigCommand, flags: &Flags) -> error::Result<String> {
    match cmd {
        ConfigCommand::Default => config::default_file::render(),
        ConfigCommand::Dump => config::dump::render(&config_sources(flags)?.load()?),
    }
}

/// What `run` needs besides the configuration.
struct Daemon {
    sources: config::layers::Sources,
    log: service::logging::LogHandle,
    service: Arc<service::ServiceManager>,
    config_file: Option<PathBuf>,
    /// Where CRI handlers run (`cri::offload_layer`).
    handlers: tokio::runtime::Handle,
}

async fn run(cfg: Config, d: Daemon) -> error::Result<()> {
    let Daemon {
        sources,
        log,
        service,
        config_file,
        handlers,
    } = d;
    let hup = service::reload::hangup()?;
    if !nix::unistd::geteuid().is_root() {
        return Err(error::Error::FailedPrecondition(
            "berthd must run as root (it creates namespaces, mounts and cgroups)".into(),
        ));
    }
    // SIGHUP compares new files with what was configured, not detected.
    let configured = cfg.clone();
    let mut cfg = cfg;
    let mut cgroups =
        cgroup::CgroupManager::new(&cfg.cgroup_root).with_registry(cfg.root.join("cgroup-parents.json"))?;
    // Resolved before any manager gets a copy of the config: past here
    // the driver is cgroupfs or systemd, never auto.
    let chosen = cgroup::detect::choose(
        cfg.cgroup_driver,
        cgroup::detect::booted_with_systemd(),
        cgroup::systemd::Systemd::connect,
    )
    .await?;
    cfg.cgroup_driver = chosen.driver;
    tracing::info!(driver = ?chosen.driver, reason = %chosen.reason, "cgroup driver");
    if let Some(sd) = chosen.systemd {
        cgroups = cgroups.with_systemd(sd);
        tracing::info!("systemd cgroup driver: containers are transient scopes");
    }
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
    service::reload::Reloader {
        sources,
        running: configured,
        log,
        images: images.clone(),
    }
    .spawn(hup);
    service.spawn_watchdog();
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
    containers.preload();
    // No CheckpointContainer runs yet: every work dir is a crash's.
    berthd::checkpoint::leftovers::sweep(&cfg.root);
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
    let root = cfg.root.clone();
    let event_streams = events.clone();
    let userns = sandbox::userns_probe::probe(&sandbox::userns_probe::RealProbe, &cfg.root);
    if userns.supported {
        tracing::info!(fs = %userns.fs, kernel = %userns.kernel, "{}", userns.describe());
    } else {
        tracing::warn!(fs = %userns.fs, kernel = %userns.kernel, "{}", userns.describe());
    }
    let cri = cri::Cri {
        userns,
        cfg: Arc::new(cfg),
        images,
        sandboxes,
        containers,
        stats,
        events,
        metrics,
        streams,
    };
    clean_after_reboot(&cri, &root).await?;
    let stopping = service.clone();
    let shutdown = async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutting down (containers keep running in their shims)");
        stopping.stopping();
        // Event streams never end on their own; kubelet resubscribes to the
        // next berthd.
        event_streams.close_all();
        let _ = stop_tx.send(true);
    };
    let serving = health.clone();
    let result = cri::serve(cri, &socket, handlers, shutdown, move || {
        serving.set_serving(true);
        service.ready();
    })
    .await;
    health.set_serving(false);
    result
}

/// After a reboot the pod records under `root` describe nothing that
/// runs: every pod is removed the way RemovePodSandbox removes it (CNI
/// DEL, mounts, cgroups, writable layers, records); images and snapshots
/// stay. The boot id is stored only when all are gone.
async fn clean_after_reboot(cri: &cri::Cri, root: &std::path::Path) -> error::Result<()> {
    let now = match service::boot::current(std::path::Path::new(service::boot::BOOT_ID_PATH)) {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "no boot id: a reboot cannot be told from a restart");
            return Ok(());
        }
    };
    let previous = match service::boot::check(root, &now)? {
        service::boot::Boot::Rebooted { previous } => previous,
        service::boot::Boot::Same | service::boot::Boot::Unknown => return service::boot::record(root, &now),
    };
    let pods = cri.sandboxes.list();
    tracing::info!(previous_boot = %previous, pods = pods.len(), "node rebooted; removing stale pods");
    let mut failed = 0;
    for sb in pods {
        let id = sb.record().id;
        let req = berth_proto::cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        };
        if let Err(e) = cri::sandbox_remove::handle(cri, req).await {
            failed += 1;
            tracing::error!(sandbox = %id, error = %e, "stale pod not removed; retried at the next start");
        }
    }
    if failed == 0 {
        service::boot::record(root, &now)?;
    }
    Ok(())
}

fn main() {
    // Fixes the start time (statusz, berth_start_time_seconds) first thing.
    let _ = *metrics::STARTED_AT;
    // Before any thread exists: it edits the environment.
    let service = Arc::new(service::ServiceManager::from_env());
    let flags = Flags::parse();
    if let Some(Command::Config(cmd)) = &flags.command {
        match config_command(cmd, &flags) {
            Ok(text) => {
                print!("{text}");
                return;
            }
            Err(e) => {
                eprintln!("berthd: {e}");
                std::process::exit(2);
            }
        }
    }
    let (sources, cfg) = match config_sources(&flags).and_then(|s| s.load().map(|l| (s, l.config))) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berthd: {e}");
            std::process::exit(2);
        }
    };
    let log = service::logging::init(
        &cfg.log_level,
        service::logging::Style {
            json: cfg.log_format == "json",
            journald: service.journald,
        },
    );
    tracing::info!(version = env!("CARGO_PKG_VERSION"), root = %cfg.root.display(), socket = %cfg.socket.display(), "berthd starting");
    let rt = match threads::main_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berthd: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let handlers = match cri::offload_layer::handler_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berthd: tokio runtime for CRI handlers: {e}");
            std::process::exit(1);
        }
    };
    let config_file = Some(sources.file.clone()).filter(|p| p.exists());
    let daemon = Daemon {
        sources,
        log,
        service,
        config_file,
        handlers: handlers.handle().clone(),
    };
    let result = rt.block_on(run(cfg, daemon));
    handlers.shutdown_background();
    if let Err(e) = result {
        tracing::error!(error = %e, "berthd failed");
        eprintln!("berthd: {e}");
        std::process::exit(1);
    }
}
