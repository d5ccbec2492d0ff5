//! ListImages, optionally filtered by reference.

use berth_proto::cri::{ListImagesRequest, ListImagesResponse};

use super::{convert, Cri};
use crate::error::Result;

/// Handles ListImages.
pub async fn handle(cri: &Cri, req: ListImagesRequest) -> Result<ListImagesResponse> {
    let wanted = req
        .filter
        .and_then(|f| f.image)
        .map(|i| i.image)
        .filter(|i| !i.is_empty());
    let images = match wanted {
        Some(name) => cri.images.resolve(&name).into_iter().collect(),
        None => cri.images.list(),
    };
    Ok(ListImagesResponse {
        images: images.iter().map(convert::image).collect(),
    })
}
