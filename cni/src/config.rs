//! The network configuration the runtime passes on stdin (one plugin of a conflist, with
//! `prevResult`, `runtimeConfig` and, for GC, `cni.dev/valid-attachments` filled in).

use serde::Deserialize;
use serde_json::Value;
use serde_json::error::Category;

use crate::DEFAULT_SERVER_SOCKET;
use crate::error::{CniError, ErrorCode};
use crate::protocol::GcAttachment;
use crate::validate;
use crate::version::CniVersion;

/// Default for how long the plugin waits for the agent's answer (ADD waits for the IPInstance).
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 60;
/// Upper bound for `timeout_seconds`.
pub const MAX_TIMEOUT_SECONDS: u64 = 600;

#[derive(Deserialize)]
struct RawNetConf {
    #[serde(rename = "cniVersion")]
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
    server_socket: Option<String>,
    timeout_seconds: Option<u64>,
    #[serde(rename = "prevResult")]
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<GcAttachment>>,
    // libcni 1.2 also sends the misspelt key of spec 1.1's first draft (cni issue #1101).
    #[serde(rename = "cni.dev/attachments")]
    attachments: Option<Vec<GcAttachment>>,
}

/// A validated network configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    pub cni_version: CniVersion,
    pub name: String,
    pub server_socket: String,
    pub timeout_seconds: u64,
    pub prev_result: Option<Value>,
    pub valid_attachments: Option<Vec<GcAttachment>>,
}

/// Only the version, for error objects: the best guess at the caller's `cniVersion`.
pub fn sniff_version(stdin: &[u8]) -> Option<CniVersion> {
    #[derive(Deserialize)]
    struct V {
        #[serde(rename = "cniVersion")]
        cni_version: Option<String>,
    }
    let v: V = serde_json::from_slice(stdin).ok()?;
    CniVersion::parse(v.cni_version.as_deref()?)
}

fn json_error(e: serde_json::Error) -> CniError {
    match e.classify() {
        Category::Data => CniError::invalid_config(format!("network configuration: {e}")),
        Category::Io | Category::Syntax | Category::Eof => CniError::decode(format!(
            "network configuration on stdin is not valid JSON: {e}"
        )),
    }
}

impl NetConf {
    /// Parses and validates stdin. Bad JSON is code 6, a wrong field type or value code 7,
    /// an unknown `cniVersion` code 1.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        if stdin.len() > crate::MAX_INPUT_BYTES {
            return Err(CniError::decode(format!(
                "network configuration is larger than {} bytes",
                crate::MAX_INPUT_BYTES
            )));
        }
        if stdin.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(CniError::decode(
                "no network configuration on stdin (expected the plugin's JSON config)",
            ));
        }
        let raw: RawNetConf = serde_json::from_slice(stdin).map_err(json_error)?;
        let v = raw.cni_version.ok_or_else(|| {
            CniError::incompatible_version(format!(
                "network configuration has no cniVersion; hybridnet supports {}",
                CniVersion::supported_list()
            ))
        })?;
        let cni_version = CniVersion::parse(&v).ok_or_else(|| {
            CniError::incompatible_version(format!(
                "cniVersion {:?} is not supported; hybridnet supports {}",
                v.chars().take(40).collect::<String>(),
                CniVersion::supported_list()
            ))
        })?;
        let name = raw
            .name
            .ok_or_else(|| CniError::invalid_config("network configuration has no \"name\""))?;
        validate::network_name(&name).map_err(CniError::invalid_config)?;
        if let Some(t) = &raw.plugin_type
            && t != "hybridnet"
        {
            return Err(CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!(
                    "plugin type {:?} is not \"hybridnet\"",
                    t.chars().take(40).collect::<String>()
                ),
            ));
        }
        let server_socket = raw
            .server_socket
            .unwrap_or_else(|| DEFAULT_SERVER_SOCKET.to_string());
        validate::absolute_path("server_socket", &server_socket)
            .map_err(CniError::invalid_config)?;
        let timeout_seconds = raw.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
        if timeout_seconds == 0 || timeout_seconds > MAX_TIMEOUT_SECONDS {
            return Err(CniError::invalid_config(format!(
                "timeout_seconds {timeout_seconds} is outside 1..={MAX_TIMEOUT_SECONDS}"
            )));
        }
        let valid_attachments = raw.valid_attachments.or(raw.attachments);
        if let Some(list) = &valid_attachments {
            for a in list {
                validate::container_id(&a.container_id).map_err(|e| {
                    CniError::invalid_config(format!("cni.dev/valid-attachments: {e}"))
                })?;
                validate::ifname(&a.ifname).map_err(|e| {
                    CniError::invalid_config(format!("cni.dev/valid-attachments: {e}"))
                })?;
            }
        }
        Ok(NetConf {
            cni_version,
            name,
            server_socket,
            timeout_seconds,
            prev_result: raw.prev_result,
            valid_attachments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_and_full() {
        let c = NetConf::parse(br#"{"cniVersion":"0.3.1","name":"hybridnet","type":"hybridnet"}"#)
            .unwrap();
        assert_eq!(c.server_socket, DEFAULT_SERVER_SOCKET);
        assert_eq!(c.cni_version, CniVersion::V0_3_1);
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"hybridnet","server_socket":"/run/x.sock",
                 "timeout_seconds":5,"prevResult":{"ips":[]},"unknownField":{"a":1},
                 "cni.dev/valid-attachments":[{"containerID":"abc","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(c.server_socket, "/run/x.sock");
        assert_eq!(c.valid_attachments.unwrap()[0].container_id, "abc");
        assert!(c.prev_result.is_some());
    }

    #[test]
    fn errors_have_the_right_codes() {
        let cases: &[(&[u8], u32)] = &[
            (b"", 6),
            (b"   ", 6),
            (b"{", 6),
            (b"not json", 6),
            (b"[1,2]", 7),
            (br#"{"cniVersion":"9.9.9","name":"n"}"#, 1),
            (br#"{"name":"n"}"#, 1),
            (br#"{"cniVersion":1,"name":"n"}"#, 7),
            (br#"{"cniVersion":"1.0.0"}"#, 7),
            (br#"{"cniVersion":"1.0.0","name":"../x"}"#, 7),
            (br#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#, 7),
            (br#"{"cniVersion":"1.0.0","name":"n","server_socket":"../../tmp/s"}"#, 7),
            (br#"{"cniVersion":"1.0.0","name":"n","server_socket":5}"#, 7),
            (br#"{"cniVersion":"1.0.0","name":"n","timeout_seconds":0}"#, 7),
            (br#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"containerID":"../x","ifname":"eth0"}]}"#, 7),
        ];
        for (input, code) in cases {
            let e = NetConf::parse(input).unwrap_err();
            assert_eq!(e.code, *code, "{}: {e}", String::from_utf8_lossy(input));
        }
        let huge = vec![b' '; crate::MAX_INPUT_BYTES + 1];
        assert_eq!(NetConf::parse(&huge).unwrap_err().code, 6);
    }

    #[test]
    fn sniffs_version_for_errors() {
        assert_eq!(sniff_version(br#"{"cniVersion":"0.4.0","x":"#), None);
        assert_eq!(
            sniff_version(br#"{"cniVersion":"0.4.0"}"#),
            Some(CniVersion::V0_4_0)
        );
    }
}
