//! `networking.alibaba.com/v1`: wire-compatible with the original hybridnet.

mod ipinstance;
mod network;
mod nodeinfo;
mod subnet;

pub use ipinstance::*;
pub use network::*;
pub use nodeinfo::*;
pub use subnet::*;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Address counts of a subnet, a network or a family of a network.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Count {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<i32>,
}

impl Count {
    /// Upstream `IsAvailable`: some address is left.
    pub fn has_available(&self) -> bool {
        self.available.unwrap_or(0) > 0
    }
}
