//! PullImage.

use berth_proto::cri::{PullImageRequest, PullImageResponse};

use super::Cri;
use crate::error::{Error, Result};

/// Handles PullImage. The pull runs on the blocking pool; the record's id
/// (the config digest) is the image_ref kubelet stores.
pub async fn handle(cri: &Cri, req: PullImageRequest) -> Result<PullImageResponse> {
    let image = req
        .image
        .map(|i| i.image)
        .filter(|i| !i.is_empty())
        .ok_or_else(|| Error::InvalidArgument("PullImage without image".into()))?;
    if req.auth.as_ref().is_some_and(|a| {
        !a.username.is_empty()
            || !a.auth.is_empty()
            || !a.registry_token.is_empty()
            || !a.identity_token.is_empty()
    }) {
        return Err(Error::Unimplemented("PullImage with credentials"));
    }
    let images = cri.images.clone();
    let rec = tokio::task::spawn_blocking(move || images.pull(&image))
        .await
        .map_err(|e| Error::Internal(format!("pull task: {e}")))??;
    Ok(PullImageResponse { image_ref: rec.id })
}
