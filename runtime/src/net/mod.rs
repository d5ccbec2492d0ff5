//! Pod networking: CNI attachments for sandboxes and the pod's name-service
//! files (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`).

pub mod cni;
pub mod files;
mod plugin_exec;
pub mod plugin_wait;
