//! RemoveImage by id, tag or digest; unknown is OK.

use std::collections::HashMap;

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
    // Image id -> a container using it: its rootfs, or an image volume.
    let in_use: HashMap<String, String> = cri
        .containers
        .list()
        .iter()
        .flat_map(|c| {
            let r = c.record();
            let volumes = r.image_volumes.iter().map(|v| v.image_id.clone());
            std::iter::once(r.image_ref.clone())
                .chain(volumes)
                .map(|image| (image, r.id.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let images = cri.images.clone();
    crate::blocking::run("remove task", move || images.remove_unless_used(&name, &in_use)).await??;
    Ok(RemoveImageResponse {})
}
