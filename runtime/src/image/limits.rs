//! Bounds on what one pull may make, from the config's `[image_limits]`.
//!
//! A hostile image must not fill the node's disk (a decompression bomb: a
//! few KiB of gzip that inflate to terabytes), its inode table (millions
//! of tiny entries) or make berthd do unbounded work (thousands of layers,
//! megabyte-long paths). Byte limits are counted while the layer streams
//! through the decompressor, so unpacking stops at the limit, not after.

use std::cell::RefCell;
use std::io::Read;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use crate::config::image_limits::{Limits, DOCKER_MAX_LAYERS};
use crate::error::{Error, Result};

impl Limits {
    /// Refuses an image with more layers than allowed.
    pub fn check_layers(&self, layers: usize) -> Result<()> {
        if layers > self.max_layers {
            return Err(Error::Image(format!(
                "image has {layers} layers, more than image_limits.max_layers ({})",
                self.max_layers
            )));
        }
        Ok(())
    }

    /// Refuses a layer blob the manifest says is larger than a layer may be
    /// unpacked (gzip and zstd never shrink a tar by less than their own
    /// framing), before a byte is downloaded.
    pub fn check_blob_size(&self, digest: &super::Digest, size: u64) -> Result<()> {
        if size > self.max_layer_bytes {
            return Err(Error::Image(format!(
                "layer {digest} is {size} bytes, more than image_limits.max_layer_bytes ({})",
                self.max_layer_bytes
            )));
        }
        Ok(())
    }
}

/// One pull's count of unpacked bytes, shared by its parallel layers.
#[derive(Debug, Default)]
pub struct ImageBytes(AtomicU64);

impl ImageBytes {
    /// Adds `n` unpacked bytes; errs once the pull is over its limit.
    pub fn add(&self, n: u64, limits: &Limits) -> Result<()> {
        let total = self.0.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if total > limits.max_image_bytes {
            return Err(Error::Image(format!(
                "image unpacks to more than image_limits.max_image_bytes ({} bytes)",
                limits.max_image_bytes
            )));
        }
        Ok(())
    }
}

/// Counts a layer's uncompressed bytes as the decompressor yields them and
/// fails the read that passes a limit, so a bomb stops there, before its
/// bytes reach the disk.
pub struct CountingReader<'a, R> {
    inner: R,
    bytes: u64,
    limits: &'a Limits,
    image_bytes: &'a ImageBytes,
    tripped: Tripped,
}

/// Why a [`CountingReader`] stopped: the tar error that follows says only
/// that a read failed.
#[derive(Clone, Default)]
pub struct Tripped(Rc<RefCell<Option<Error>>>);

impl Tripped {
    /// The limit error if a limit stopped the read, else `e`.
    pub fn or(&self, e: Error) -> Error {
        self.0.borrow_mut().take().unwrap_or(e)
    }
}

impl<'a, R: Read> CountingReader<'a, R> {
    /// Counts `inner` against `limits` (the layer's) and `image_bytes` (the pull's).
    pub fn new(inner: R, limits: &'a Limits, image_bytes: &'a ImageBytes) -> (Self, Tripped) {
        let tripped = Tripped::default();
        let reader = CountingReader {
            inner,
            bytes: 0,
            limits,
            image_bytes,
            tripped: tripped.clone(),
        };
        (reader, tripped)
    }
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes = self.bytes.saturating_add(n as u64);
        let over = if self.bytes > self.limits.max_layer_bytes {
            Err(Error::Image(format!(
                "layer unpacks to more than image_limits.max_layer_bytes ({} bytes)",
                self.limits.max_layer_bytes
            )))
        } else {
            self.image_bytes.add(n as u64, self.limits)
        };
        match over {
            Ok(()) => Ok(n),
            Err(e) => {
                *self.tripped.0.borrow_mut() = Some(e);
                Err(std::io::Error::other("image limit reached"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_accept_docker_images_and_zero_is_refused() {
        let d = Limits::default();
        d.validate().unwrap();
        d.check_layers(DOCKER_MAX_LAYERS).unwrap();
        d.check_layers(128).unwrap();
        let e = d.check_layers(129).unwrap_err().to_string();
        assert!(e.contains("129 layers") && e.contains("max_layers (128)"), "{e}");
        for zero in ["max_layer_bytes", "max_layers", "max_path_bytes"] {
            let l: Limits = toml::from_str(&format!("{zero} = 0")).unwrap();
            assert!(l.validate().unwrap_err().to_string().contains(zero));
        }
    }

    #[test]
    fn image_bytes_add_up_across_layers() {
        let l = Limits {
            max_image_bytes: 10,
            ..Limits::default()
        };
        let used = ImageBytes::default();
        used.add(6, &l).unwrap();
        used.add(4, &l).unwrap();
        assert!(used
            .add(1, &l)
            .unwrap_err()
            .to_string()
            .contains("max_image_bytes"));
    }
}
