//! `supplemental_groups_enforcement`: the node-wide supplementalGroupsPolicy
//! (applied in `container::groups_policy`).

use serde::{Deserialize, Serialize};

/// What a node does with containers that ask for Merge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// Honour the request (Kubernetes' default behaviour).
    #[default]
    Off,
    /// Run Merge requests as Strict (logged).
    Upgrade,
    /// Refuse Merge requests with InvalidArgument.
    Reject,
}
