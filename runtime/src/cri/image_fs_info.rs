//! ImageFsInfo: bytes and inodes under the image store and the writable layers.

use std::path::Path;

use berth_proto::cri::{
    FilesystemIdentifier, FilesystemUsage, ImageFsInfoRequest, ImageFsInfoResponse, UInt64Value,
};

use super::Cri;
use crate::error::Result;
use crate::stats::du;

/// The usage of the tree at `path` as the CRI reports it (zero when it does
/// not exist yet). Walks the tree: call it on the blocking pool.
fn fs_usage(path: &Path) -> FilesystemUsage {
    let u = du::measure(path).unwrap_or_default();
    FilesystemUsage {
        timestamp: crate::store::now_ns(),
        fs_id: Some(FilesystemIdentifier {
            mountpoint: path.to_string_lossy().into_owned(),
        }),
        used_bytes: Some(UInt64Value { value: u.used_bytes }),
        inodes_used: Some(UInt64Value { value: u.inodes_used }),
    }
}

/// Handles ImageFsInfo.
pub async fn handle(cri: &Cri, _req: ImageFsInfoRequest) -> Result<ImageFsInfoResponse> {
    let images = cri.images.root().to_path_buf();
    let containers = cri.cfg.root.join("containers");
    crate::blocking::run("fs info task", move || ImageFsInfoResponse {
        image_filesystems: vec![fs_usage(&images)],
        container_filesystems: vec![fs_usage(&containers)],
    })
    .await
}
