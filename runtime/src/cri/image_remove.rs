//! RemoveImage by id, tag or digest; unknown is OK.

use berth_proto::cri::{RemoveImageRequest, RemoveImageResponse};

use super::Cri;
use crate::error::{Error, Result};

/// Handles RemoveImage.
pub async fn handle(cri: &Cri, req: RemoveImageRequest) -> Result<RemoveImageResponse> {
    let name = req
        .image
        .map(|i| i.image)
        .filter(|i| !i.is_empty())
        .ok_or_else(|| Error::InvalidArgument("RemoveImage without image".into()))?;
    if let Some(rec) = cri.images.resolve(&name) {
        let in_use = cri
            .containers
            .list()
            .iter()
            .any(|c| c.record().image_ref == rec.id);
        if in_use {
            return Err(Error::FailedPrecondition(format!(
                "image {} is used by a container",
                rec.id
            )));
        }
    }
    let images = cri.images.clone();
    crate::blocking::run("remove task", move || images.remove(&name)).await??;
    Ok(RemoveImageResponse {})
}
