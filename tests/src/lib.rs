//! Test helpers for Berth: a small CRI client that talks to berthd over its
//! unix socket exactly as kubelet and crictl do, a harness that starts berthd
//! with private directories, and probes of the host (mounts, cgroups,
//! processes) for asserting that nothing leaked.

#![forbid(unsafe_code)]

pub mod fds;
pub mod figures;
pub mod gated_registry;
pub mod hostile_registry;
pub mod node;
pub mod prom;
pub mod registry;
pub mod spdy;
pub mod stream;
pub mod token_server;
pub mod transport;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_proto::cri::image_service_client::ImageServiceClient;
use berth_proto::cri::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// Both CRI services on one connection.
#[derive(Clone)]
pub struct CriClient {
    /// RuntimeService.
    pub runtime: RuntimeServiceClient<Channel>,
    /// ImageService.
    pub images: ImageServiceClient<Channel>,
}

impl CriClient {
    /// The streaming URL of an Exec request (berthd's default loopback
    /// streaming server).
    pub async fn exec_url(&mut self, req: cri::ExecRequest) -> String {
        let url = self.runtime.exec(req).await.expect("Exec").into_inner().url;
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        url
    }

    /// Connects to a CRI unix socket.
    pub async fn connect(socket: &Path) -> anyhow::Result<Self> {
        let path = socket.to_path_buf();
        let channel =
            Endpoint::try_from("http://berth.invalid")?
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
                    }
                }))
                .await?;
        Ok(CriClient {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    /// PullImage; returns the image ref.
    pub async fn pull(&mut self, image: &str) -> Result<String, tonic::Status> {
        Ok(self
            .images
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?
            .into_inner()
            .image_ref)
    }

    /// RunPodSandbox; returns the sandbox id.
    pub async fn run_pod(&mut self, config: &cri::PodSandboxConfig) -> Result<String, tonic::Status> {
        Ok(self
            .runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id)
    }

    /// CreateContainer; returns the container id.
    pub async fn create(
        &mut self,
        sandbox_id: &str,
        config: &cri::ContainerConfig,
        sandbox_config: &cri::PodSandboxConfig,
    ) -> Result<String, tonic::Status> {
        Ok(self
            .runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.into(),
                config: Some(config.clone()),
                sandbox_config: Some(sandbox_config.clone()),
            })
            .await?
            .into_inner()
            .container_id)
    }

    /// StartContainer.
    pub async fn start(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.runtime
            .start_container(cri::StartContainerRequest {
                container_id: id.into(),
            })
            .await?;
        Ok(())
    }

    /// StopContainer.
    pub async fn stop(&mut self, id: &str, timeout_s: i64) -> Result<(), tonic::Status> {
        self.runtime
            .stop_container(cri::StopContainerRequest {
                container_id: id.into(),
                timeout: timeout_s,
            })
            .await?;
        Ok(())
    }

    /// RemoveContainer.
    pub async fn remove(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.runtime
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.into(),
            })
            .await?;
        Ok(())
    }

    /// ContainerStatus (verbose).
    pub async fn status(&mut self, id: &str) -> Result<cri::ContainerStatusResponse, tonic::Status> {
        Ok(self
            .runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await?
            .into_inner())
    }

    /// ExecSync of `argv` (10 s timeout): exit code and stdout.
    pub async fn exec(&mut self, id: &str, argv: &[&str]) -> Result<(i32, String), tonic::Status> {
        let r = self
            .runtime
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.into(),
                cmd: argv.iter().map(|s| s.to_string()).collect(),
                timeout: 10,
            })
            .await?
            .into_inner();
        Ok((r.exit_code, String::from_utf8_lossy(&r.stdout).into_owned()))
    }

    /// PodSandboxStatus (verbose): the status and berthd's parsed `info`
    /// (pid, cgroupPath, namespaces, network, files, resources).
    pub async fn pod_status(
        &mut self,
        id: &str,
    ) -> Result<(cri::PodSandboxStatus, serde_json::Value), tonic::Status> {
        let r = self
            .runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            })
            .await?
            .into_inner();
        let info = pod_info_json(&r.info).unwrap_or_else(|e| panic!("PodSandboxStatus of {id}: {e:#}"));
        Ok((r.status.unwrap_or_default(), info))
    }

    /// StopPodSandbox + RemovePodSandbox.
    pub async fn stop_and_remove_pod(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await?;
        self.runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await?;
        Ok(())
    }

    /// Polls ContainerStatus until the container has exited (or times out).
    pub async fn wait_exited(&mut self, id: &str, timeout: Duration) -> anyhow::Result<cri::ContainerStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status(id).await?.status.expect("status");
            if s.state == cri::ContainerState::ContainerExited as i32 {
                return Ok(s);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "container {id} still {:?} after {timeout:?}",
                s.state
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The runtime's Status (not verbose).
    pub async fn runtime_status(&mut self) -> Result<cri::StatusResponse, tonic::Status> {
        Ok(self
            .runtime
            .status(cri::StatusRequest::default())
            .await?
            .into_inner())
    }

    /// Every image ListImages reports.
    pub async fn list_images(&mut self) -> Result<Vec<cri::Image>, tonic::Status> {
        Ok(self
            .images
            .list_images(cri::ListImagesRequest::default())
            .await?
            .into_inner()
            .images)
    }

    /// Creates and starts `cfg` in the pod and waits (30 s) until it has
    /// exited; returns its id and the status it ended with.
    pub async fn run_to_exit(
        &mut self,
        sb: &str,
        cfg: &cri::ContainerConfig,
        pod: &cri::PodSandboxConfig,
    ) -> anyhow::Result<(String, cri::ContainerStatus)> {
        let id = self.create(sb, cfg, pod).await?;
        self.start(&id).await?;
        let st = self.wait_exited(&id, Duration::from_secs(30)).await?;
        Ok((id, st))
    }
}

/// The content of every record of a CRI log file, in order (none if the
/// file does not exist).
pub fn log_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(parse_cri_log_line)
        .map(|l| l.3)
        .collect()
}

/// A pod config like kubelet sends, with a log directory under `log_dir`.
pub fn pod_config(name: &str, log_dir: &Path) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.to_string_lossy().into_owned(),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

/// A CRI Exec request running `cmd` with stdout, and stderr unless `tty`.
pub fn exec_request(id: &str, cmd: &[&str], tty: bool, stdin: bool) -> cri::ExecRequest {
    cri::ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

/// `sh -c script` in a running container through ExecSync (which joins the
/// container's cgroup, so its device filter applies): the exit code and
/// stdout followed by stderr.
pub async fn sh_joined(c: &mut CriClient, id: &str, script: &str) -> (i32, String) {
    let r = c
        .runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 20,
        })
        .await
        .expect("exec")
        .into_inner();
    let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
    out.push_str(&String::from_utf8_lossy(&r.stderr));
    (r.exit_code, out)
}

/// A berthd (with `extra_config` appended to its config) running one pod
/// named `name` with one started busybox container running `argv`, after
/// `edit` adjusted its config. Returns (berthd, client, sandbox id, container id).
pub async fn start_pod_with_container(
    name: &str,
    extra_config: &str,
    argv: &[&str],
    edit: impl FnOnce(&mut cri::ContainerConfig),
) -> (Berthd, CriClient, String, String) {
    let image = format!("{}/library/busybox:latest", registry());
    let (b, mut c) = Berthd::start_with(extra_config).await.expect("berthd");
    c.pull(&image).await.expect("pull");
    let pod = pod_config(name, &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let mut cfg = container_config(name, &image, argv);
    edit(&mut cfg);
    let id = c.create(&sb, &cfg, &pod).await.expect("create");
    c.start(&id).await.expect("start");
    (b, c, sb, id)
}

/// A container config running `argv` from `image`, logging to `<name>.log`.
pub fn container_config(name: &str, image: &str, argv: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: argv.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// berthd's verbose PodSandboxStatus `info["info"]`, parsed. Missing or
/// unparseable info is an error, never `Null`: a test reading
/// `info["network"].is_null()` must not pass because the info is absent.
pub fn pod_info_json(info: &std::collections::HashMap<String, String>) -> anyhow::Result<serde_json::Value> {
    let text = info
        .get("info")
        .ok_or_else(|| anyhow::anyhow!("verbose status without an \"info\" entry: {info:?}"))?;
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| anyhow::anyhow!("info {text:?}: {e}"))?;
    anyhow::ensure!(v.is_object(), "info is not a JSON object: {text}");
    Ok(v)
}

/// A berthd process with private root, state and socket; killed on drop.
pub struct Berthd {
    child: Option<Child>,
    /// Temp dir holding root/, state/, berth.sock, logs/.
    pub dir: tempfile::TempDir,
    /// The CRI socket.
    pub socket: PathBuf,
    /// Pod cgroup parent default for this instance (unique per test run).
    pub cgroup_parent: String,
    /// The test CNI network: a bridge of its own and a /24 subnet, unless
    /// the test brought its own `cni_conf_dir`.
    pub net: Option<TestNet>,
}

/// The CNI network a test berthd uses (Debian's bridge + host-local plugins).
#[derive(Debug, Clone)]
pub struct TestNet {
    /// Bridge device name.
    pub bridge: String,
    /// Pod subnet, e.g. `10.99.7.0/24`.
    pub subnet: String,
    /// The gateway (bridge) address.
    pub gateway: String,
    /// The CNI config dir.
    pub conf_dir: PathBuf,
}

impl TestNet {
    /// Writes a bridge + portmap network config (what most nodes run) into
    /// `dir/net.d`; `n` picks the bridge and subnet.
    fn create(dir: &Path, n: u8) -> std::io::Result<Self> {
        let conf_dir = dir.join("net.d");
        std::fs::create_dir_all(&conf_dir)?;
        let bridge = format!("bt{n}");
        let subnet = format!("10.99.{n}.0/24");
        let gateway = format!("10.99.{n}.1");
        let conf = format!(
            r#"{{"cniVersion":"1.0.0","name":"berth-test","plugins":[
  {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":false,"hairpinMode":true,
    "ipam":{{"type":"host-local","ranges":[[{{"subnet":"{subnet}","gateway":"{gateway}"}}]],
             "routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"{ipam}"}}}},
  {{"type":"portmap","capabilities":{{"portMappings":true}}}}]}}"#,
            ipam = dir.join("ipam").display()
        );
        std::fs::write(conf_dir.join("10-berth-test.conflist"), conf)?;
        Ok(TestNet {
            bridge,
            subnet,
            gateway,
            conf_dir,
        })
    }
}

/// Where the test binaries find berthd and berth-shim.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("BERTH_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug"))
}

/// The loopback registry the VM serves test images from.
pub fn registry() -> String {
    std::env::var("BERTH_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
}

impl Berthd {
    /// Starts berthd and waits until its socket answers Version.
    pub async fn start() -> anyhow::Result<(Self, CriClient)> {
        Self::start_with("").await
    }

    /// Like [`Berthd::start`], with extra config lines (TOML) appended.
    pub async fn start_with(extra_config: &str) -> anyhow::Result<(Self, CriClient)> {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir_in("/tmp")?;
        let socket = dir.path().join("berth.sock");
        let unique = dir.path().file_name().unwrap().to_string_lossy().replace('.', "");
        let cgroup_parent = format!("/{unique}");
        // A network of its own per berthd (bridge bt<n>, 10.99.<n>.0/24).
        let net = if extra_config.contains("cni_conf_dir") {
            None
        } else {
            let n = (std::process::id() as u64 + NEXT_NET.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
                % 250
                + 1;
            Some(TestNet::create(dir.path(), n as u8)?)
        };
        let net_toml = net
            .as_ref()
            .map(|n| format!("cni_conf_dir = \"{}\"\n", n.conf_dir.display()))
            .unwrap_or_default();
        let cfg = dir.path().join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                "root = \"{0}/root\"\nstate = \"{0}/state\"\nsocket = \"{1}\"\ndefault_cgroup_parent = \"{2}\"\nlog_level = \"debug\"\n",
                dir.path().display(),
                socket.display(),
                cgroup_parent
            ) + &net_toml
                + extra_config,
        )?;
        let mut me = Berthd {
            child: None,
            dir,
            socket,
            cgroup_parent,
            net,
        };
        let c = me.spawn().await?;
        Ok((me, c))
    }

    /// Starts (or restarts, after [`Berthd::kill_hard`]) the berthd process
    /// on this instance's config and state, and waits for it to answer.
    pub async fn spawn(&mut self) -> anyhow::Result<CriClient> {
        self.spawn_env(&[]).await
    }

    /// [`Berthd::spawn`] with extra environment variables for this one
    /// process (e.g. `BERTH_CRASH_AT`).
    pub async fn spawn_env(&mut self, env: &[(&str, &str)]) -> anyhow::Result<CriClient> {
        anyhow::ensure!(self.child.is_none(), "berthd is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("berthd.log"))?;
        let child = Command::new(bin_dir().join("berthd"))
            .envs(env.iter().copied())
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.socket.exists() {
                if let Ok(mut c) = CriClient::connect(&self.socket).await {
                    if c.runtime
                        .version(cri::VersionRequest { version: "v1".into() })
                        .await
                        .is_ok()
                    {
                        return Ok(c);
                    }
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                anyhow::bail!("berthd exited with {status}: {}", self.log());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "berthd did not come up: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// berthd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("berthd.log")).unwrap_or_default()
    }

    /// Directory for pod logs.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// berthd's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Waits (bounded) until berthd exits by itself and reaps it; its exit
    /// status, or None if it still runs after `timeout` (it keeps running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.as_mut()?.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        }
    }

    /// SIGKILLs berthd (simulates a crash) and reaps it.
    pub fn kill_hard(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

static NEXT_NET: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Drop for Berthd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Our own child.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            // berthd exits within its 3 s shutdown grace; never hang a test run.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while matches!(c.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            if matches!(c.try_wait(), Ok(None)) {
                eprintln!("berthd did not exit 10 s after SIGTERM; killing it");
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        // The bridge is node infrastructure the plugin leaves on DEL; this
        // berthd's network goes with it -- after berthd has stopped, so no
        // RunPodSandbox still under way re-creates it behind our back.
        if let Some(n) = &self.net {
            let _ = Command::new("ip")
                .args(["link", "del", &n.bridge])
                .stderr(Stdio::null())
                .status();
        }
        if std::thread::panicking() {
            eprintln!("---- berthd log ----\n{}", self.log());
        }
    }
}

/// berthd on the host for image tests: a fake cgroup tree and an empty CNI
/// dir (pulling needs neither), plus `extra_config`. The returned dir
/// holds both and must outlive berthd.
pub async fn berthd_on_host(extra_config: &str) -> anyhow::Result<(Berthd, CriClient, tempfile::TempDir)> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "berthd refuses to start without root; run the host tests as root (CI does)"
    );
    let dirs = tempfile::tempdir()?;
    let (cg, cni) = (dirs.path().join("cgroup"), dirs.path().join("cni"));
    std::fs::create_dir_all(&cg)?;
    std::fs::create_dir_all(&cni)?;
    fake_cgroup_tree(&cg, "cpuset cpu io memory hugetlb pids")?;
    let cfg = format!(
        "cgroup_root = \"{}\"\ncni_conf_dir = \"{}\"\n{extra_config}",
        cg.display(),
        cni.display()
    );
    let (b, c) = Berthd::start_with(&cfg).await?;
    Ok((b, c, dirs))
}

/// Lays out `root` as berthd's start-up checks see a cgroup2 root: its
/// controllers, and one child cgroup (`init.scope`, as on a systemd node)
/// with the `cgroup.kill` file only non-root cgroups have.
pub fn fake_cgroup_tree(root: &Path, controllers: &str) -> std::io::Result<()> {
    std::fs::write(root.join("cgroup.controllers"), controllers)?;
    std::fs::write(root.join("cgroup.subtree_control"), "")?;
    let child = root.join("init.scope");
    std::fs::create_dir_all(&child)?;
    std::fs::write(child.join("cgroup.controllers"), controllers)?;
    std::fs::write(child.join("cgroup.kill"), "")
}

/// Lines of /proc/self/mountinfo mentioning `needle`.
pub fn mounts_containing(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Resident memory of a process (KiB), from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Pids whose command line contains `needle` (excluding this process).
pub fn processes_matching(needle: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            out.push((pid, cmd));
        }
    }
    out
}

/// Parses one CRI log line into (timestamp, stream, tag, content).
pub fn parse_cri_log_line(line: &str) -> Option<(String, String, String, String)> {
    let mut it = line.splitn(4, ' ');
    let ts = it.next()?.to_string();
    let stream = it.next()?.to_string();
    let tag = it.next()?.to_string();
    let content = it.next().unwrap_or_default().to_string();
    Some((ts, stream, tag, content))
}

/// The median of some durations.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Wall-clock time in nanoseconds since the epoch (CRI timestamps).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Detaches a test's mount when the test ends, failed assertion included,
/// so the next test (and the next use of a shared device such as the VM's
/// `/dev/ram0`) starts clean.
pub struct Unmount(pub std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        match nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH) {
            // Not a mount point (any more), or gone: the test (or berthd)
            // undid it already.
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => eprintln!("unmount {}: {e}", self.0.display()),
        }
    }
}

/// Runs a cleanup when the test ends, failed assertion included: what a
/// test leaves on the node (a loaded AppArmor profile, a bridge, a node
/// directory) must not depend on the test passing.
pub struct Cleanup(Option<Box<dyn FnOnce()>>);

impl Cleanup {
    /// Runs `undo` on drop.
    pub fn new(undo: impl FnOnce() + 'static) -> Self {
        Cleanup(Some(Box::new(undo)))
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(undo) = self.0.take() {
            undo();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_info_is_never_null_for_want_of_info() {
        let mut info = std::collections::HashMap::new();
        assert!(pod_info_json(&info).is_err(), "no info entry");
        info.insert("info".to_string(), "not json".to_string());
        assert!(pod_info_json(&info).is_err());
        info.insert("info".to_string(), "null".to_string());
        assert!(pod_info_json(&info).is_err());
        info.insert("info".to_string(), r#"{"pid":7,"network":null}"#.to_string());
        let v = pod_info_json(&info).unwrap();
        assert_eq!(v.get("network"), Some(&serde_json::Value::Null));
        assert_eq!(v["pid"], 7);
    }
}
