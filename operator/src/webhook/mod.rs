//! Admission webhook server: validating Network/Subnet/Pod (upstream's pkg/webhook/validating/) and the node agents'
//! NodeInfo/IPInstance writes ([`nodescope`]), mutating Pod (upstream's pkg/webhook/mutating/),
//! over HTTPS with rustls (ring), AdmissionReview v1.

pub mod mutate;
pub mod nodescope;
pub mod review;
pub mod server;

use crate::controlplane::runtime::caches::Caches;
use crate::controlplane::runtime::config::ControlPlaneConfig;
use crate::controlplane::runtime::live_defaults::LiveDefaults;
use crate::controlplane::runtime::metrics::Metrics;

/// What the handlers read.
pub struct WebhookState {
    pub caches: Caches,
    /// For reads the caches may not have caught up with yet (`review::live_networks_and_subnets`).
    pub client: kube::Client,
    pub config: ControlPlaneConfig,
    /// Pod defaults in force (HybridnetCluster, else the flags).
    pub defaults: LiveDefaults,
    pub metrics: Metrics,
}
