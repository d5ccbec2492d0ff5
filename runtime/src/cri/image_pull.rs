//! PullImage.

use berth_proto::cri::{PullImageRequest, PullImageResponse};

use super::Cri;
use crate::error::{Error, Result};
use crate::image::pull_auth::PullAuth;

/// Handles PullImage. The pull runs on the blocking pool; the record's id
/// (the config digest) is the image_ref kubelet stores.
pub async fn handle(cri: &Cri, req: PullImageRequest) -> Result<PullImageResponse> {
    let image = req
        .image
        .map(|i| i.image)
        .filter(|i| !i.is_empty())
        .ok_or_else(|| Error::InvalidArgument("PullImage without image".into()))?;
    let auth = PullAuth::from_cri(req.auth.as_ref())?;
    let images = cri.images.clone();
    // Set when this future is dropped (kubelet's deadline, a cancelled
    // crictl): the blocking pull sees it between reads and stops.
    let cancel = CancelOnDrop::default();
    let flag = cancel.0.clone();
    let started = std::time::Instant::now();
    let pulled = crate::blocking::run("pull task", move || {
        let pulled = images.pull(&image, &auth, &flag);
        if let Err(e) = &pulled {
            if flag.load(std::sync::atomic::Ordering::Relaxed) {
                // Nobody reads this result any more: say how the pull ended.
                tracing::info!(image = %image, error = %e, "pull stopped: the caller went away");
            }
        }
        pulled
    })
    .await
    .and_then(|r| r);
    cri.metrics
        .observe_pull(pulled.is_ok(), started.elapsed().as_secs_f64());
    let rec = pulled?;
    drop(cancel);
    Ok(PullImageResponse { image_ref: rec.id })
}

/// Raises its flag when dropped.
#[derive(Default)]
struct CancelOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
