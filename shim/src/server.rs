//! The shim's gRPC server (package `berth.shim.v1`) on a unix socket: start
//! up, then each RPC handed to the module that owns it (create.rs,
//! lifecycle.rs, exec.rs, attach.rs, the container's log).

use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use berth_proto::shim::shim_server::{Shim, ShimServer};
use berth_proto::shim::*;
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::pod::Pod;
use crate::reaper::Reaper;
use crate::table::Table;

/// Runs the shim until Shutdown.
pub fn run(
    sandbox_id: String,
    socket: PathBuf,
    pod_pid_ns: bool,
    cgroup_root: PathBuf,
    ready: Option<std::os::fd::OwnedFd>,
) -> anyhow::Result<()> {
    // Orphans of container processes must be reaped by us, not by host init.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        anyhow::bail!("PR_SET_CHILD_SUBREAPER: {}", std::io::Error::from(e));
    }
    // The pod's shared PID namespace: its PID 1 must exist before any
    // container and live exactly as long as we do (it exits on EOF of a pipe
    // only we hold, close-on-exec so no container inherits it).
    let pod_pid_ns = if pod_pid_ns {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let pid =
            crate::spawn::spawn_pod_init(&read).map_err(|e| anyhow::anyhow!("start the pod's PID 1: {e}"))?;
        drop(read);
        std::mem::forget(write);
        Some(File::open(format!("/proc/{pid}/ns/pid"))?)
    } else {
        None
    };
    // Exec'd now, while the pod's network is set up, so that no
    // container's init needs an exec of its own.
    let zygote = crate::zygote::Zygote::start();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_SHIM_LOG").unwrap_or_else(|_| "info".into()),
        )
        .init();
    crate::threads::runtime()?.block_on(serve(sandbox_id, socket, pod_pid_ns, zygote, cgroup_root, ready))
}

async fn serve(
    sandbox_id: String,
    socket: PathBuf,
    pod_pid_ns: Option<File>,
    zygote: Option<crate::zygote::Zygote>,
    cgroup_root: PathBuf,
    ready: Option<std::os::fd::OwnedFd>,
) -> anyhow::Result<()> {
    let reaper = Reaper::start()?;
    let _ = std::fs::remove_file(&socket);
    if let Some(dir) = socket.parent() {
        // berthd made it 0700; if not, ours is 0700 whatever the umask.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let listener = tokio::net::UnixListener::bind(&socket)?;
    let (shutdown_tx, mut shutdown_rx) = tokio::sync::mpsc::channel::<()>(1);
    let svc = std::sync::Arc::new(ShimService {
        pod: Pod {
            sandbox_id: sandbox_id.clone(),
            pid_ns: pod_pid_ns,
            reaper,
            table: Table::default(),
            cgroup_root,
            zygote,
        },
        shutdown: shutdown_tx,
    });
    let zygote = svc.pod.zygote.as_ref().map(|z| z.pid());
    tracing::info!(sandbox = %sandbox_id, socket = %socket.display(), cgroup_root = %svc.pod.cgroup_root.display(), zygote, "shim serving");
    // The socket is bound and listening: a connect from berthd now queues
    // until tonic accepts it.
    if let Some(fd) = ready {
        crate::ready::signal(fd)?;
    }
    // While berthd finishes the pod (CNI ADD): the first CreateContainer
    // then finds the spec's decoder paged in, a blocking thread up and the
    // helper thread waiting.
    tokio::task::spawn_blocking(crate::init::prewarm);
    crate::threads::start_helper();
    // One socket, two kinds of connection: the fast path's (Create and
    // Start) are served by crate::fast, the rest reach tonic through this
    // channel.
    let (grpc_tx, grpc_rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(crate::fast::accept(listener, svc.clone(), grpc_tx));
    tonic::transport::Server::builder()
        .add_service(ShimServer::from_arc(svc))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(grpc_rx), async move {
            let _ = shutdown_rx.recv().await;
        })
        .await?;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("shim stopped");
    Ok(())
}

struct ShimService {
    pod: Pod,
    shutdown: tokio::sync::mpsc::Sender<()>,
}

/// The output of ExecStream and Attach.
type OutputStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<StreamOutput, Status>> + Send>>;

fn output(rx: tokio::sync::mpsc::Receiver<Result<StreamOutput, Status>>) -> Response<OutputStream> {
    Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

#[tonic::async_trait]
impl Shim for ShimService {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(InfoResponse {
            shim_pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            sandbox_id: self.pod.sandbox_id.clone(),
        }))
    }

    async fn create(&self, req: Request<CreateRequest>) -> Result<Response<CreateResponse>, Status> {
        let received_ns = crate::sync::mono_ns();
        let req = req.into_inner();
        // A checkpoint's container: no init until Start restores it.
        let mut resp = if !req.restore_images_dir.is_empty() {
            crate::restore::create(&self.pod, req)?
        } else {
            crate::create::create(&self.pod, req).await?
        };
        resp.received_ns = received_ns;
        resp.replied_ns = crate::sync::mono_ns();
        Ok(Response::new(resp))
    }

    async fn start(&self, req: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        let received_ns = crate::sync::mono_ns();
        let mut resp = crate::restore::start_or_restore(&self.pod, req.into_inner().id).await?;
        resp.received_ns = received_ns;
        resp.replied_ns = crate::sync::mono_ns();
        Ok(Response::new(resp))
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<KillResponse>, Status> {
        crate::lifecycle::kill(&self.pod.table, req.into_inner())?;
        Ok(Response::new(KillResponse {}))
    }

    async fn wait(&self, req: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        Ok(Response::new(
            crate::lifecycle::wait(&self.pod.table, &req.into_inner().id).await?,
        ))
    }

    async fn state(&self, req: Request<StateRequest>) -> Result<Response<StateResponse>, Status> {
        Ok(Response::new(crate::lifecycle::state(
            &self.pod.table,
            &req.into_inner().id,
        )?))
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        Ok(Response::new(
            crate::lifecycle::delete(&self.pod.table, req.into_inner().id).await?,
        ))
    }

    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        Ok(Response::new(
            crate::exec::exec_sync(&self.pod, req.into_inner()).await?,
        ))
    }

    type ExecStreamStream = OutputStream;

    async fn exec_stream(
        &self,
        req: Request<tonic::Streaming<StreamInput>>,
    ) -> Result<Response<OutputStream>, Status> {
        Ok(output(
            crate::exec::exec_stream(&self.pod, req.into_inner()).await?,
        ))
    }

    type AttachStream = OutputStream;

    async fn attach(
        &self,
        req: Request<tonic::Streaming<StreamInput>>,
    ) -> Result<Response<OutputStream>, Status> {
        Ok(output(
            crate::attach::attach(&self.pod.table, req.into_inner()).await?,
        ))
    }

    async fn reopen_log(
        &self,
        req: Request<ReopenLogRequest>,
    ) -> Result<Response<ReopenLogResponse>, Status> {
        let id = req.into_inner().id;
        let c = self.pod.table.container(&id)?;
        c.log.reopen().map_err(|e| Error::io("reopen log file", e))?;
        tracing::info!(container = %id, "log file reopened");
        Ok(Response::new(ReopenLogResponse {}))
    }

    async fn shutdown(&self, req: Request<ShutdownRequest>) -> Result<Response<ShutdownResponse>, Status> {
        crate::lifecycle::kill_all(&self.pod.table, req.into_inner().force)?;
        let _ = self.shutdown.try_send(());
        Ok(Response::new(ShutdownResponse {}))
    }
}
