//! RemoveImage's rule: an image a container was created from, or mounts
//! as an image volume, stays until that container is removed (its rootfs
//! or volume is an overlay over the image's snapshots). The image store
//! does not know containers, so the caller names the images in use and a
//! container using each.

use std::collections::HashMap;

use super::ImageStore;
use crate::error::{Error, Result};

impl ImageStore {
    /// Removes the image `name` resolves to unless its id is a key of
    /// `in_use` (image id -> a container using it): FailedPrecondition then,
    /// naming the image and the container. An unknown name is OK, as
    /// RemoveImage wants. Blocks on file removal.
    pub fn remove_unless_used(&self, name: &str, in_use: &HashMap<String, String>) -> Result<()> {
        if let Some(rec) = self.resolve(name) {
            if let Some(container) = in_use.get(&rec.id) {
                return Err(Error::FailedPrecondition(format!(
                    "image {} is used by container {container}",
                    rec.id
                )));
            }
        }
        self.remove(name)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ImageConfig, ImageRecord};
    use super::*;
    use crate::store;

    #[test]
    fn an_image_in_use_stays_and_an_unused_one_goes() {
        let d = tempfile::tempdir().unwrap();
        let s = ImageStore::open(d.path()).unwrap();
        let id = format!("sha256:{}", "5".repeat(64));
        let rec = ImageRecord {
            id: id.clone(),
            repo_tags: vec!["docker.io/library/x:latest".into()],
            repo_digests: vec![],
            size_bytes: 1,
            config: ImageConfig::default(),
            chain_ids: vec![],
        };
        let digest = crate::image::digest::Digest::parse(&id).unwrap();
        store::write_record(&s.meta_path(&digest), &rec).unwrap();
        s.images.lock().unwrap().insert(id.clone(), rec);

        let used = HashMap::from([(id.clone(), "c0ffee".to_string())]);
        let err = s.remove_unless_used("x:latest", &used).unwrap_err();
        assert!(
            matches!(&err, Error::FailedPrecondition(m) if m.contains(&id) && m.contains("c0ffee")),
            "{err}"
        );
        assert!(s.resolve("x:latest").is_some(), "still there");

        s.remove_unless_used("x:latest", &HashMap::new()).unwrap();
        assert!(s.resolve("x:latest").is_none() && !s.meta_path(&digest).exists());
        s.remove_unless_used("x:latest", &used).expect("unknown is OK");
    }
}
