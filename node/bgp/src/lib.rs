//! A small BGP-4 speaker for the hybridnet node agent.
//!
//! Underlay networks in BGP mode announce pod addresses and subnet prefixes to the top-of-rack
//! router instead of relying on a shared L2 segment. No Rust crate both keeps sessions and
//! announces routes, so this crate is an announce-only speaker built for exactly that job.
//!
//! # Layers
//!
//! - [`wire`]: the message codec (OPEN with capabilities, UPDATE with MP_REACH/MP_UNREACH,
//!   NOTIFICATION, KEEPALIVE, ROUTE-REFRESH). Total decoder: malformed input gives a
//!   [`wire::DecodeError`] that names the RFC 4271 NOTIFICATION to answer with.
//! - [`session`]: the RFC 4271 state machine as a pure function of events and a clock, and
//!   [`session::driver`], the tokio task per peer that owns the TCP connection (with TCP MD5,
//!   see [`tcp`]) and keeps the peer's Adj-RIB-Out equal to the desired routes.
//! - [`rib`]: pure Adj-RIB-Out logic: what a peer should get, the diff, the UPDATEs.
//! - [`speaker`]: [`BgpSpeaker`], the handle the node agent uses.
//!
//! # Using it from the node agent
//!
//! ```no_run
//! # async fn example() -> Result<(), hybridnet_bgp::ConfigError> {
//! use std::collections::BTreeSet;
//! use hybridnet_bgp::{Announcement, BgpSpeaker, Communities, PeerConfig, SpeakerConfig};
//!
//! // AS = the Network's netID, router id and next hops = the node's peering addresses.
//! let mut config = SpeakerConfig::new(65001, "198.18.0.2".parse().unwrap());
//! config.local_v4 = Some("198.18.0.2".parse().unwrap());
//! config.local_v6 = Some("fd00::2".parse().unwrap());
//! let speaker = BgpSpeaker::new(config)?; // inside a tokio runtime
//!
//! // Network.spec.config.bgpPeers, applied live whenever the Network changes.
//! let mut tor = PeerConfig::new("198.18.0.1".parse().unwrap(), 65000);
//! tor.graceful_restart_seconds = Some(300);
//! speaker.set_peers(vec![tor])?;
//!
//! // BGP-mode pods: /32 or /128 with NO_EXPORT; GlobalBGP pods and subnet prefixes: none.
//! let routes: BTreeSet<Announcement> = [
//!     Announcement::new("198.19.0.5/32".parse().unwrap(), Communities::NoExport),
//!     Announcement::new("198.19.0.0/24".parse().unwrap(), Communities::None),
//! ]
//! .into();
//! speaker.set_routes(routes);
//!
//! // CNI ADD readiness for a pod; metrics from peer_states().
//! let ready = speaker.is_announced_to_required_peers(&"198.19.0.5/32".parse().unwrap());
//! # let _ = ready;
//! speaker.shutdown(std::time::Duration::from_secs(5)).await; // Cease to every peer
//! # Ok(())
//! # }
//! ```
//!
//! Which peer is the gateway for pod traffic (the one with `does_not_route_traffic` unset) and
//! whether to use it (routing tables following session state) are the agent's decisions, based
//! on [`BgpSpeaker::peer_states`] and [`BgpSpeaker::subscribe`] for change notification.
//!
//! # Limits (by design)
//!
//! - Announce-only: learned routes are decoded (so malformed ones are answered with the right
//!   NOTIFICATION) and dropped; there is no Loc-RIB, no best-path selection, no FIB.
//! - Both directions: the speaker connects to each peer (unless the peer is `passive`) and,
//!   with `listen_port` set (the agent uses 179), accepts connections from configured peers
//!   only, with their TCP MD5 keys on the listening socket. Connection collisions are resolved
//!   as RFC 4271 6.8 says (higher BGP Identifier's connection wins; an Established session
//!   always wins), the loser closed with Cease / Connection Collision Resolution. A new
//!   connection from a peer whose session is Established is closed, unless the peer
//!   advertised graceful restart: then it restarted (RFC 4724 4.2) and the new connection
//!   replaces the old session.
//! - Graceful restart: we advertise the capability with the configured restart time, the R bit
//!   on the first session of a speaker instance and the F bit for IPv4 and IPv6 (the kernel keeps
//!   forwarding while the agent restarts). Dropping [`BgpSpeaker`] closes connections without
//!   NOTIFICATION so helpers keep our routes; we do not act as a helper for the peer's routes
//!   (we keep none). No RFC 8538 (notification GR) or long-lived GR.
//! - Only IPv4/IPv6 unicast; IPv6 uses the global next hop only (no link-local). IPv6 routes
//!   need `local_v6` and IPv4 routes `local_v4`; sessions that did not negotiate a family do
//!   not carry it. No route refresh capability is advertised (a received ROUTE-REFRESH is
//!   ignored); no ADD-PATH, no extended messages, no AS4_PATH towards 2-octet-only peers.
//! - Sessions live in the network namespace of the runtime thread that creates their sockets.

mod listener;
pub mod rib;
pub mod session;
pub mod speaker;
pub mod tcp;
pub mod wire;

/// A route's destination: hybridnet's one prefix type (crds/rules/src/prefix.rs). The speaker
/// builds them canonical ([`Prefix::masked`], [`Prefix::host`]) so two spellings of one block are
/// one Adj-RIB-Out entry and encode to the same bytes.
pub use hybridnet_rules::prefix::Cidr as Prefix;
pub use rib::{Announcement, Communities};
pub use session::State;
pub use session::collision::Direction;
pub use speaker::{BgpSpeaker, ConfigError, PeerConfig, PeerState, SpeakerConfig};
