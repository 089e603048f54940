//! A small BGP-4 speaker for the hybridnet node agent.
pub mod prefix;
pub mod rib;
pub mod session;
pub mod speaker;
pub mod tcp;
pub mod wire;

pub use prefix::{Ipv4Prefix, Ipv6Prefix, Prefix};
pub use rib::{Announcement, Communities};
pub use session::State;
pub use speaker::{BgpSpeaker, ConfigError, PeerConfig, PeerState, SpeakerConfig, traffic_gateway};
