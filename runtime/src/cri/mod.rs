//! The CRI v1 gRPC layer: one file per RPC (`<resource>_<verb>.rs`), each a
//! thin handler that validates, calls a manager and converts. The service
//! traits in `runtime_service.rs` / `image_service.rs` only dispatch.

mod container_attach;
mod container_checkpoint;
mod container_create;
mod container_events;
mod container_exec;
mod container_exec_sync;
mod container_list;
mod container_remove;
mod container_reopen_log;
mod container_start;
mod container_stats;
mod container_stats_list;
mod container_status;
mod container_stop;
mod container_update_resources;
mod convert;
mod image_fs_info;
mod image_list;
mod image_pull;
mod image_remove;
mod image_service;
mod image_status;
mod log_layer;
mod metric_descriptors_list;
pub mod offload_layer;
mod panic_layer;
mod runtime_config;
mod runtime_config_update;
mod runtime_service;
mod sandbox_list;
mod sandbox_metrics_list;
mod sandbox_port_forward;
pub mod sandbox_remove;
mod sandbox_run;
mod sandbox_stats;
mod sandbox_stats_list;
mod sandbox_status;
mod sandbox_stop;
mod sandbox_update_resources;
mod stats_convert;
mod status;
mod version;

use std::path::Path;
use std::sync::Arc;

use berth_proto::cri::image_service_server::ImageServiceServer;
use berth_proto::cri::runtime_service_server::RuntimeServiceServer;

use crate::config::Config;
use crate::container::ContainerManager;
use crate::error::{Error, Result};
use crate::events::Events;
use crate::image::ImageStore;
use crate::metrics::Metrics;
use crate::sandbox::SandboxManager;
use crate::stats::StatsManager;

pub use container_events::ManagerPodView;

/// Everything the handlers reach.
#[derive(Clone)]
pub struct Cri {
    /// Effective configuration.
    pub cfg: Arc<Config>,
    /// Images.
    pub images: Arc<ImageStore>,
    /// Sandboxes.
    pub sandboxes: Arc<SandboxManager>,
    /// Containers.
    pub containers: Arc<ContainerManager>,
    /// Resource usage readings (stats and metrics RPCs).
    pub stats: Arc<StatsManager>,
    /// Lifecycle events (GetContainerEvents).
    pub events: Arc<Events>,
    /// Metrics (the request layer and PullImage record into them).
    pub metrics: Arc<Metrics>,
    /// The streaming server (Exec, Attach, PortForward URLs).
    pub streams: Arc<crate::stream::StreamServer>,
    /// Whether pods could get user namespaces here (the start-up probe).
    pub userns: crate::sandbox::userns_probe::UsernsSupport,
}

/// Awaits a handler and makes its result the RPC's answer. Every service
/// method goes through here, so a handler's [`Error`] becomes a
/// `tonic::Status` in one way only: `From<Error>` in `error.rs`.
async fn answer<T>(
    handled: impl std::future::Future<Output = Result<T>>,
) -> std::result::Result<tonic::Response<T>, tonic::Status> {
    handled
        .await
        .map(tonic::Response::new)
        .map_err(tonic::Status::from)
}

/// Largest CRI message accepted or sent (kubelet uses 16 MiB).
pub(crate) const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// How long in-flight calls may run after SIGTERM before berthd exits anyway.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Serves RuntimeService and ImageService on the unix socket until
/// `shutdown`; `listening` runs once the socket accepts connections. The
/// connections are served on the calling runtime, each call's handler on
/// `handlers` (`offload_layer.rs`).
///
/// Only root (and the root group) may drive the runtime: the socket is
/// bound in a fresh 0700 directory beside its path, given mode 0660 there
/// and renamed into place, so it is never reachable with the umask's mode.
pub async fn serve(
    cri: Cri,
    socket: &Path,
    handlers: tokio::runtime::Handle,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    listening: impl FnOnce(),
) -> Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("remove stale {}", socket.display()), e)),
    }
    let listener = bind_private(socket)?;
    tracing::info!(socket = %socket.display(), "CRI server listening");
    let metrics = cri.metrics.clone();
    let runtime = RuntimeServiceServer::new(cri.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let images = ImageServiceServer::new(cri)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // Open client connections (kubelet keeps one forever) would hold a purely
    // graceful shutdown open indefinitely: in-flight calls get SHUTDOWN_GRACE.
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let mut server_rx = rx.clone();
    let server = tonic::transport::Server::builder()
        .layer(log_layer::RequestLogLayer::new(metrics))
        // Inside the log layer, so a caught panic is logged and counted as
        // the Internal it answers.
        .layer(panic_layer::CatchPanicLayer)
        // Innermost: a handler's panic is resumed in the connection's task,
        // where the panic layer catches it.
        .layer(offload_layer::OffloadLayer::new(handlers))
        .add_service(runtime)
        .add_service(images)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            async move {
                let _ = server_rx.wait_for(|stop| *stop).await;
            },
        );
    // Connections queue on the bound socket from here on.
    listening();
    let mut grace_rx = rx;
    let result = tokio::select! {
        r = server => r.map_err(|e| Error::Internal(format!("CRI server: {e}"))),
        _ = async move {
            let _ = grace_rx.wait_for(|stop| *stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "in-flight CRI calls did not finish; exiting");
            Ok(())
        }
    };
    let _ = std::fs::remove_file(socket);
    result
}

/// Binds the CRI socket at `socket` with mode 0660 from its first moment
/// (see [`serve`]).
fn bind_private(socket: &Path) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let dir = socket.with_file_name(format!(".berth-bind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    crate::store::modes::create_dir(&dir, crate::store::modes::PRIVATE_DIR)
        .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let tmp = dir.join("sock");
    let bound = tokio::net::UnixListener::bind(&tmp)
        .map_err(|e| Error::io(format!("listen on {}", socket.display()), e))
        .and_then(|l| {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o660))
                .map_err(|e| Error::io("chmod socket", e))?;
            std::fs::rename(&tmp, socket)
                .map_err(|e| Error::io(format!("move socket to {}", socket.display()), e))?;
            Ok(l)
        });
    let _ = std::fs::remove_dir_all(&dir);
    bound
}
