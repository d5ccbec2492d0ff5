//! ImageStatus: an unknown image is an empty response, not an error (CRI).

use std::collections::HashMap;

use berth_proto::cri::{ImageStatusRequest, ImageStatusResponse};

use super::{convert, Cri};
use crate::error::{Error, Result};

/// Handles ImageStatus.
pub async fn handle(cri: &Cri, req: ImageStatusRequest) -> Result<ImageStatusResponse> {
    let name = req
        .image
        .map(|i| i.image)
        .filter(|i| !i.is_empty())
        .ok_or_else(|| Error::InvalidArgument("ImageStatus without image".into()))?;
    let Some(rec) = cri.images.resolve(&name) else {
        return Ok(ImageStatusResponse::default());
    };
    let mut info = HashMap::new();
    if req.verbose {
        info.insert(
            "info".to_string(),
            serde_json::json!({"config": rec.config, "chainIDs": rec.chain_ids}).to_string(),
        );
    }
    Ok(ImageStatusResponse {
        image: Some(convert::image(&rec)),
        info,
    })
}
