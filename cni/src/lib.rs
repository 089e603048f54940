//! CNI types (spec 1.1 and the older config versions 0.3.0 to 1.0.0), input validation, and the
//! small versioned protocol between the `hybridnet` CNI plugin and the node agent.
//!
//! The plugin binary stays thin: [`plugin::run`] turns (environment, stdin) into (stdout, exit
//! code) as a pure function of its inputs plus one call to the agent, so all decisions are unit
//! tested here without a process or a socket.

#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod env;
pub mod error;
pub mod plugin;
pub mod protocol;
pub mod result;
pub mod validate;
pub mod version;

pub use config::NetConf;
pub use env::{CniArgs, Command, RuntimeEnv};
pub use error::{CniError, ErrorCode};
pub use protocol::{AgentCommand, AgentRequest, AgentResponse, GcAttachment, PodRef};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use version::CniVersion;

/// Where the agent listens when the network config does not say (`server_socket`).
pub const DEFAULT_SERVER_SOCKET: &str = "/run/hybridnet/hybridnet.sock";

/// Largest accepted stdin (network configuration) and largest protocol frame.
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;
