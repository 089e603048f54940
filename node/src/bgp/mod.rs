//! BGP mode in the node agent (upstream `pkg/daemon/bgp/bgp.go`): wires the in-house speaker
//! ([`hybridnet_bgp`]) to the agent's API state.
//!
//! - [`desired`]: pure. API state and host facts -> the speaker's identity (AS = the BGP
//!   network's netID, router id and next hops from the BGP interface), its peers (the
//!   networks' `bgpPeers`) and its announcements (each BGP-mode subnet prefix; each local pod
//!   /32 or /128, with NO_EXPORT for BGP-mode pods and without for GlobalBGP pods).
//! - [`BgpController`]: the shell the reconcile loop calls; one speaker per agent, created
//!   lazily, peers and routes applied live. The speaker connects to every peer and also
//!   listens on TCP 179 of the node's BGP addresses, so a ToR configured to connect actively
//!   works too (collisions resolved by the speaker, unknown sources refused).
//! - [`BgpState`]: shared with the CNI server (ADD of a BGP pod is ready only once its address
//!   is announced to every required peer and the kernel holds its subnet's policy rule and the
//!   table's default route via the peer ([`routing`]), else CNI code 11 after a bounded wait),
//!   `/readyz` (required sessions established) and [`BgpCollector`] (metrics).
//!
//! The routing tables of BGP subnets (default via the traffic-routing peer, else a copy of the
//! main default route) are rendered by the planner from the same API state;
//! [`desired::family_gateway`] states the rule and the tests check that both agree. Like
//! upstream, the tables do not depend on whether a session is up: a pod is not ready (and the
//! agent not ready) until the required sessions are, and a session that drops later keeps its
//! routes at the ToR for the graceful restart time.

//!
//! [`sessions`] (portable, also used by `kubectl hybridnet status`) is the wire form of the
//! session summary each agent publishes on its NodeInfo; [`publish`] maps the speaker's snapshot
//! to it and rate-limits changes.

pub mod sessions;

#[cfg(all(target_os = "linux", feature = "dataplane"))]
pub mod controller;
#[cfg(all(target_os = "linux", feature = "dataplane"))]
pub mod desired;
#[cfg(all(target_os = "linux", feature = "dataplane"))]
pub mod metrics;
#[cfg(all(target_os = "linux", feature = "dataplane"))]
pub mod publish;
#[cfg(all(target_os = "linux", feature = "dataplane"))]
pub mod routing;

#[cfg(all(test, target_os = "linux", feature = "dataplane"))]
mod tests;

#[cfg(all(target_os = "linux", feature = "dataplane"))]
pub use controller::{BgpController, BgpReport, BgpState, DEFAULT_POD_WAIT};
#[cfg(all(target_os = "linux", feature = "dataplane"))]
pub use desired::{DesiredBgp, DesiredSpeaker, SpeakerIdentity, desired_bgp, needs_ip_instances};
#[cfg(all(target_os = "linux", feature = "dataplane"))]
pub use metrics::BgpCollector;
#[cfg(all(target_os = "linux", feature = "dataplane"))]
pub use publish::{DEFAULT_CHURN_INTERVAL, DEFAULT_PUBLISH_INTERVAL, follow_sessions};
pub use sessions::{BGP_SESSIONS_ANNOTATION, BgpSession, SessionState};
