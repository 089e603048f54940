//! CNI error objects (spec "Error" result) with the well-known codes and hybridnet's own.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::version::CniVersion;

/// Error codes. 1-99 are reserved by the spec (11 and 50/51 included); 100+ are hybridnet's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: the requested `cniVersion` (or command for it) is not supported.
    IncompatibleVersion,
    /// 2: a field of the network config is not supported.
    UnsupportedField,
    /// 3: the container does not exist.
    UnknownContainer,
    /// 4: a `CNI_*` environment variable is missing or invalid (CNI_ARGS included).
    InvalidEnvironment,
    /// 5: I/O failure (stdin, the agent socket).
    Io,
    /// 6: the input could not be decoded (bad JSON, too large).
    Decode,
    /// 7: the network configuration is invalid.
    InvalidNetworkConfig,
    /// 11: transient; the runtime should retry later (e.g. the IPInstance does not exist yet).
    TryAgainLater,
    /// 50 (STATUS): the plugin is not available (the agent is not ready).
    PluginNotAvailable,
    /// 51 (STATUS): not available, and existing containers may have limited connectivity.
    PluginNotAvailableLimitedConnectivity,
    /// 100: the pod's address data is inconsistent (MAC mismatch, two IPs of one family, ...).
    InvalidPodAddresses,
    /// 101: programming the pod's interfaces or routes failed.
    InterfaceSetup,
    /// 102: CHECK found the pod's networking different from what ADD built.
    CheckFailed,
    /// 103: the agent answered with something this plugin cannot understand.
    AgentProtocol,
    /// Any other code (kept verbatim when decoding).
    Other(u32),
}

impl ErrorCode {
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnvironment => 4,
            ErrorCode::Io => 5,
            ErrorCode::Decode => 6,
            ErrorCode::InvalidNetworkConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::PluginNotAvailable => 50,
            ErrorCode::PluginNotAvailableLimitedConnectivity => 51,
            ErrorCode::InvalidPodAddresses => 100,
            ErrorCode::InterfaceSetup => 101,
            ErrorCode::CheckFailed => 102,
            ErrorCode::AgentProtocol => 103,
            ErrorCode::Other(c) => c,
        }
    }

    pub fn from_code(code: u32) -> ErrorCode {
        match code {
            1 => ErrorCode::IncompatibleVersion,
            2 => ErrorCode::UnsupportedField,
            3 => ErrorCode::UnknownContainer,
            4 => ErrorCode::InvalidEnvironment,
            5 => ErrorCode::Io,
            6 => ErrorCode::Decode,
            7 => ErrorCode::InvalidNetworkConfig,
            11 => ErrorCode::TryAgainLater,
            50 => ErrorCode::PluginNotAvailable,
            51 => ErrorCode::PluginNotAvailableLimitedConnectivity,
            100 => ErrorCode::InvalidPodAddresses,
            101 => ErrorCode::InterfaceSetup,
            102 => ErrorCode::CheckFailed,
            103 => ErrorCode::AgentProtocol,
            c => ErrorCode::Other(c),
        }
    }
}

/// A CNI error: what the plugin prints on stdout (with `cniVersion`) before exiting non-zero,
/// and what the agent returns over the socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> CniError {
        CniError {
            code: code.code(),
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    pub fn kind(&self) -> ErrorCode {
        ErrorCode::from_code(self.code)
    }

    /// The spec's error object for the caller's version.
    pub fn to_json(&self, version: CniVersion) -> Value {
        let mut m = Map::new();
        m.insert("cniVersion".into(), Value::from(version.as_str()));
        m.insert("code".into(), Value::from(self.code));
        m.insert("msg".into(), Value::from(self.msg.clone()));
        if !self.details.is_empty() {
            m.insert("details".into(), Value::from(self.details.clone()));
        }
        Value::Object(m)
    }

    pub fn incompatible_version(msg: impl Into<String>) -> CniError {
        CniError::new(ErrorCode::IncompatibleVersion, msg)
    }
    pub fn invalid_env(msg: impl Into<String>) -> CniError {
        CniError::new(ErrorCode::InvalidEnvironment, msg)
    }
    pub fn decode(msg: impl Into<String>) -> CniError {
        CniError::new(ErrorCode::Decode, msg)
    }
    pub fn invalid_config(msg: impl Into<String>) -> CniError {
        CniError::new(ErrorCode::InvalidNetworkConfig, msg)
    }
    pub fn io(msg: impl Into<String>) -> CniError {
        CniError::new(ErrorCode::Io, msg)
    }
    pub fn try_again_later(msg: impl Into<String>) -> CniError {
        CniError::new(ErrorCode::TryAgainLater, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in [1, 2, 3, 4, 5, 6, 7, 11, 50, 51, 100, 101, 102, 103, 999] {
            assert_eq!(ErrorCode::from_code(c).code(), c);
        }
    }

    #[test]
    fn error_object_is_spec_shaped() {
        let e = CniError::try_again_later("no IPInstance yet").with_details("pod default/web-0");
        assert_eq!(
            e.to_json(CniVersion::V1_0_0),
            serde_json::json!({"cniVersion":"1.0.0","code":11,"msg":"no IPInstance yet","details":"pod default/web-0"})
        );
        let plain = CniError::decode("bad");
        assert_eq!(
            plain.to_json(CniVersion::V0_3_1),
            serde_json::json!({"cniVersion":"0.3.1","code":6,"msg":"bad"})
        );
        assert_eq!(e.kind(), ErrorCode::TryAgainLater);
        assert!(e.to_string().contains("pod default/web-0"));
    }
}
