//! What can go wrong resolving CDI devices. Every error names the device
//! and, where there is one, the spec file, so an operator knows which file
//! to fix; `crate::error` maps each to its gRPC code.

use std::path::PathBuf;

/// A CDI resolution failure.
#[derive(Debug, thiserror::Error)]
pub enum CdiError {
    /// The request names a device in a way the CDI grammar refuses.
    #[error("CDI device name {name:?}: {reason}")]
    BadName {
        /// As requested.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No spec file defines the device.
    #[error("CDI device {name:?} is not defined by any spec file in {dirs}")]
    UnknownDevice {
        /// As requested.
        name: String,
        /// The directories searched.
        dirs: String,
    },
    /// A spec file cannot be read or used (so no device is resolved: the
    /// broken file might define or override the requested one).
    #[error("CDI spec file {}: {reason}", file.display())]
    BadSpec {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Two files of one directory define the same device.
    #[error("CDI device {name:?} is defined by two spec files of one directory: {} and {}", first.display(), second.display())]
    Conflict {
        /// The device.
        name: String,
        /// One file.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
    /// An edit of the device cannot be applied (a missing host path, a bad
    /// node, an edit kind berth does not support).
    #[error("CDI device {name:?} in {}: {reason}", file.display())]
    BadEdit {
        /// The device.
        name: String,
        /// Its spec file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
}
