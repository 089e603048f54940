//! The CNI server: the agent side of the CNI plugin protocol (`hybridnet_cni::protocol`) and
//! pod interface setup.
//!
//! Entry points:
//! - [`serve`] / [`CniServer`]: the unix socket (mode 0600, stale socket replaced) the
//!   `hybridnet` plugin talks to;
//! - [`CniService::handle`]: the same request handling without a socket;
//! - [`podnet::setup_pod_interface`] / [`podnet::teardown_pod_interface`] /
//!   [`podnet::check_pod_interface`]: the interface programming itself.
//!
//! The agent supplies the pod's IPInstances through [`IpInstanceLookup`] (backed by its kube
//! reflector store); ADD waits a bounded time for them ([`CniServerConfig::ipinstance_wait`])
//! and answers CNI code 11 ("try again later") naming the pod when they do not come.

pub mod addressing;
pub mod error;
pub mod events;
pub mod locks;
pub mod netns;
pub mod podnet;
pub mod podping;
mod rawsock;
pub mod server;
pub mod vlancheck;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hybridnet_api::v1::IPInstance;
use hybridnet_cni::{AgentCommand, CniError, PodRef};

pub use addressing::PodAddressing;
pub use error::PodNetError;
pub use netns::Netns;
pub use podnet::PodInterfaceSpec;
pub use server::{CniServer, CniServerError, CniService, Drained};

/// Where the agent finds a pod's addresses (and tells about attachments).
pub trait IpInstanceLookup: Send + Sync + 'static {
    /// The pod's non-terminating IPInstances on this node: the complete set (one per family
    /// the pod gets), or nothing while it is incomplete. Instances whose `binding.podUID`
    /// differs from a known pod UID are ignored by the server.
    fn pod_instances(&self, pod: &PodRef) -> Vec<IPInstance>;

    /// MTU for pods of a network (VXLAN: parent MTU - 50); `None` uses the configured default.
    fn network_mtu(&self, _network: &str) -> Option<u32> {
        None
    }

    /// Readiness for STATUS: `Err(reason)` while the agent cannot serve ADD.
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    /// Called after a successful ADD (e.g. to patch the IPInstance status, refresh proxy entries).
    fn attached(&self, _event: &AttachmentEvent) {}

    /// Called after DEL removed (or found gone) the pod's interface.
    fn detached(&self, _pod: &PodRef, _container_id: &str) {}

    /// Called when an ADD failed at a stage the pod's owner must see (`events::pod_event` says
    /// how); must not block (publish in the background).
    fn add_failed(&self, _pod: &PodRef, _failure: events::AddFailure, _error: &CniError) {}

    /// Readiness hook of ADD, after the interface is set up: waits (bounded) until the pod is
    /// reachable from outside the node, e.g. its address announced to every required BGP peer
    /// (`crate::bgp::BgpState::wait_pod_reachable`). `Err` fails the ADD (code 11: retry later).
    fn wait_pod_reachable<'a>(&'a self, _addressing: &'a PodAddressing) -> ReadinessFuture<'a> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// The VLAN checks of ADD for this pod (docs/operations.md, VLAN checks): one target per address inside a VLAN
    /// subnet of this node (forward interface, gateway). Empty: not a VLAN pod, nothing checked.
    fn vlan_check_targets(&self, _addressing: &PodAddressing) -> Vec<vlancheck::VlanTarget> {
        Vec::new()
    }

    /// Whether the pod is a KubeVirt live migration's target that shares its VM's addresses
    /// while the source pod (on another node) holds them
    /// (`hybridnet_api::kubevirt::MIGRATION_PEER_ANNOTATION`): ADD wires its interface with
    /// them but writes no local-direct route and skips the checks that need the address routed
    /// here (VLAN checks and announcement, ping from the node, BGP announcement).
    fn migration_peer(&self, _pod: &PodRef) -> bool {
        false
    }

    /// How many addresses the pod gets (2 for dual stack), when known: ADD then waits until all
    /// of them exist instead of wiring a dual-stack pod with the first one the cache shows.
    fn expected_addresses<'a>(&'a self, _pod: &'a PodRef) -> ExpectedFuture<'a> {
        Box::pin(std::future::ready(None))
    }
}

/// What [`IpInstanceLookup::expected_addresses`] returns.
pub type ExpectedFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<usize>> + Send + 'a>>;

/// What [`IpInstanceLookup::wait_pod_reachable`] returns.
pub type ReadinessFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), hybridnet_cni::CniError>> + Send + 'a>,
>;

/// A completed ADD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentEvent {
    pub pod: PodRef,
    pub container_id: String,
    pub ifname: String,
    pub host_veth: String,
    pub addressing: PodAddressing,
}

/// Receives one sample per handled request (for the agent's Prometheus metrics).
pub trait CniObserver: Send + Sync + 'static {
    /// A request began (each is followed by one [`CniObserver::observe`]).
    fn started(&self, _command: AgentCommand) {}
    fn observe(&self, command: AgentCommand, elapsed: Duration, error_code: Option<u32>);
}

/// Server settings.
#[derive(Clone)]
pub struct CniServerConfig {
    /// The node namespace pods are wired to; `None` = the agent's own (production).
    pub host_netns: Option<PathBuf>,
    /// How long ADD waits for the pod's IPInstances.
    pub ipinstance_wait: Duration,
    /// How often ADD looks again while waiting.
    pub ipinstance_poll: Duration,
    /// Pod MTU when the lookup has none for the network.
    pub default_mtu: u32,
    /// Table of the host routes to local pods.
    pub local_direct_table: u32,
    /// Requests handled at once; more wait for a slot.
    pub max_in_flight: usize,
    /// A client must send its request within this time.
    pub request_read_timeout: Duration,
    pub observer: Option<Arc<dyn CniObserver>>,
    /// ARP/NDP checks of VLAN pods at ADD (`--vlan-check-timeout`).
    pub vlan_check: vlancheck::VlanCheckConfig,
    /// Ping the pod from the node after ADD (`--check-pod-connectivity-from-host`); `None`
    /// skips it (the library default; the agent's flag defaults to on).
    pub ping_pod: Option<podping::PingConfig>,
}

impl Default for CniServerConfig {
    fn default() -> Self {
        CniServerConfig {
            host_netns: None,
            ipinstance_wait: Duration::from_secs(10),
            ipinstance_poll: Duration::from_millis(50),
            default_mtu: 1500,
            local_direct_table: 39999,
            max_in_flight: 64,
            request_read_timeout: Duration::from_secs(10),
            observer: None,
            vlan_check: vlancheck::VlanCheckConfig::default(),
            ping_pod: None,
        }
    }
}

impl std::fmt::Debug for CniServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CniServerConfig")
            .field("host_netns", &self.host_netns)
            .field("ipinstance_wait", &self.ipinstance_wait)
            .field("default_mtu", &self.default_mtu)
            .field("local_direct_table", &self.local_direct_table)
            .field("max_in_flight", &self.max_in_flight)
            .field("vlan_check", &self.vlan_check)
            .field("ping_pod", &self.ping_pod)
            .finish_non_exhaustive()
    }
}

/// Binds the socket and serves CNI requests until the future is dropped.
pub async fn serve(
    socket_path: impl AsRef<Path>,
    lookup: Arc<dyn IpInstanceLookup>,
    config: CniServerConfig,
) -> Result<(), CniServerError> {
    CniServer::bind(socket_path, lookup, config)?.run().await
}
