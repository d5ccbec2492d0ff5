//! RemoveImage by id, tag or digest; unknown is OK.

use std::collections::HashSet;

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
    let in_use: HashSet<String> = cri
        .containers
        .list()
        .iter()
        .map(|c| c.record().image_ref)
        .collect();
    let images = cri.images.clone();
    crate::blocking::run("remove task", move || images.remove_unless_used(&name, &in_use)).await??;
    Ok(RemoveImageResponse {})
}
