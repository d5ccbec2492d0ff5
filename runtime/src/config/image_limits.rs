//! `[image_limits]`: bounds on what one image pull may make, as plain
//! data; the pull enforces them (`image::limits`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Docker's own limit on the layers of an image; the default is one above,
/// so every image Docker can build is accepted.
pub const DOCKER_MAX_LAYERS: usize = 127;

/// The configured bounds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Uncompressed bytes of one layer's tar stream; a layer blob whose
    /// manifest size is larger is refused before it is downloaded.
    pub max_layer_bytes: u64,
    /// Uncompressed bytes one pull unpacks, all its new layers together.
    pub max_image_bytes: u64,
    /// Layers of one image.
    pub max_layers: usize,
    /// Tar entries in one layer.
    pub max_layer_entries: u64,
    /// Bytes of one entry's path or link target.
    pub max_path_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_layer_bytes: 16 << 30,
            max_image_bytes: 32 << 30,
            max_layers: DOCKER_MAX_LAYERS + 1,
            max_layer_entries: 1_000_000,
            // PATH_MAX: no longer path can be opened anyway.
            max_path_bytes: 4096,
        }
    }
}

impl Limits {
    /// Every bound must allow something.
    pub fn validate(&self) -> Result<()> {
        let zero = [
            ("max_layer_bytes", self.max_layer_bytes == 0),
            ("max_image_bytes", self.max_image_bytes == 0),
            ("max_layers", self.max_layers == 0),
            ("max_layer_entries", self.max_layer_entries == 0),
            ("max_path_bytes", self.max_path_bytes == 0),
        ];
        for (name, is_zero) in zero {
            if is_zero {
                return Err(Error::InvalidArgument(format!(
                    "config image_limits.{name} must be greater than 0"
                )));
            }
        }
        Ok(())
    }
}
