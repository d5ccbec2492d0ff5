//! ImageFsInfo: bytes and inodes under the image store and the writable layers.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_proto::cri::{
    FilesystemIdentifier, FilesystemUsage, ImageFsInfoRequest, ImageFsInfoResponse, UInt64Value,
};

use super::Cri;
use crate::error::Result;

/// Walks `dir` (without following symlinks) summing allocated bytes and inodes.
fn usage(dir: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut inodes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            inodes += 1;
            bytes += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

fn fs_usage(path: &Path) -> FilesystemUsage {
    let (b, i) = usage(path);
    FilesystemUsage {
        timestamp: crate::store::now_ns(),
        fs_id: Some(FilesystemIdentifier {
            mountpoint: path.to_string_lossy().into_owned(),
        }),
        used_bytes: Some(UInt64Value { value: b }),
        inodes_used: Some(UInt64Value { value: i }),
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
