//! The plugin <-> agent protocol (version 1), over the agent's unix socket.
//!
//! One request and one response per connection. Each message is a frame: a 4-byte big-endian
//! length followed by that many bytes of JSON; frames larger than [`MAX_FRAME`] are refused.
//!
//! Request:  `{"version":1,"command":"ADD","containerId":"…","netns":"/var/run/netns/…",
//!             "ifname":"eth0","pod":{"namespace":"default","name":"web-0","uid":"…"}}`
//!           (`GC` carries `"validAttachments":[{"containerID":"…","ifname":"eth0"}]`;
//!            `STATUS` carries only version and command.)
//! Response: `{"version":1,"result":{…CniResult…}}` for ADD/CHECK, `{"version":1}` for the
//!           others, or `{"version":1,"error":{"code":11,"msg":"…","details":"…"}}`.
//!
//! A peer that receives a `version` it does not speak answers with CNI code 1
//! ("incompatible version") naming both versions.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::error::{CniError, ErrorCode};
use crate::result::CniResult;
use crate::validate;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest frame either side accepts.
pub const MAX_FRAME: usize = crate::MAX_INPUT_BYTES;

/// The command forwarded to the agent (VERSION is answered by the plugin itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AgentCommand {
    Add,
    Del,
    Check,
    Status,
    Gc,
}

/// The Kubernetes pod an attachment belongs to (from CNI_ARGS).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if let Some(uid) = &self.uid {
            write!(f, " (uid {uid})")?;
        }
        Ok(())
    }
}

/// One entry of GC's valid-attachment list (spec 1.1 `cni.dev/valid-attachments`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GcAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// A request from the plugin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRequest {
    pub version: u32,
    pub command: AgentCommand,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub valid_attachments: Vec<GcAttachment>,
}

/// The validated attachment of an ADD/DEL/CHECK request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentRequest<'a> {
    pub container_id: &'a str,
    pub ifname: &'a str,
    pub netns: Option<&'a str>,
    pub pod: &'a PodRef,
}

impl AgentRequest {
    /// Re-validates an attachment request on the receiving side (the agent never trusts the
    /// socket more than the plugin trusts its environment). Errors carry CNI code 4.
    pub fn attachment(&self) -> Result<AttachmentRequest<'_>, CniError> {
        let cid = self
            .container_id
            .as_deref()
            .ok_or_else(|| CniError::invalid_env("request has no container id"))?;
        validate::container_id(cid).map_err(CniError::invalid_env)?;
        let ifname = self
            .ifname
            .as_deref()
            .ok_or_else(|| CniError::invalid_env("request has no ifname"))?;
        validate::ifname(ifname).map_err(CniError::invalid_env)?;
        if let Some(ns) = self.netns.as_deref() {
            validate::absolute_path("CNI_NETNS", ns).map_err(CniError::invalid_env)?;
        } else if self.command != AgentCommand::Del {
            return Err(CniError::invalid_env("request has no netns"));
        }
        let pod = self
            .pod
            .as_ref()
            .ok_or_else(|| CniError::invalid_env("request has no pod"))?;
        validate::dns_label("K8S_POD_NAMESPACE", &pod.namespace).map_err(CniError::invalid_env)?;
        validate::dns_subdomain("K8S_POD_NAME", &pod.name).map_err(CniError::invalid_env)?;
        if let Some(uid) = &pod.uid {
            validate::pod_uid(uid).map_err(CniError::invalid_env)?;
        }
        Ok(AttachmentRequest {
            container_id: cid,
            ifname,
            netns: self.netns.as_deref(),
            pod,
        })
    }

    /// Re-validates GC's list.
    pub fn gc_attachments(&self) -> Result<&[GcAttachment], CniError> {
        for a in &self.valid_attachments {
            validate::container_id(&a.container_id).map_err(CniError::invalid_config)?;
            validate::ifname(&a.ifname).map_err(CniError::invalid_config)?;
        }
        Ok(&self.valid_attachments)
    }
}

/// The agent's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentResponse {
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<CniResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CniError>,
}

impl AgentResponse {
    pub fn ok(result: Option<CniResult>) -> AgentResponse {
        AgentResponse {
            version: PROTOCOL_VERSION,
            result,
            error: None,
        }
    }

    pub fn err(error: CniError) -> AgentResponse {
        AgentResponse {
            version: PROTOCOL_VERSION,
            result: None,
            error: Some(error),
        }
    }

    /// Turns the wire answer into the outcome, checking the version.
    pub fn into_outcome(self) -> Result<Option<CniResult>, CniError> {
        if self.version != PROTOCOL_VERSION {
            return Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                format!(
                    "the hybridnet agent speaks protocol version {}, this plugin {}; install the plugin binary of the running agent",
                    self.version, PROTOCOL_VERSION
                ),
            ));
        }
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.result),
        }
    }
}

/// A frame problem.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is larger than the limit of {MAX_FRAME} bytes")]
    TooLarge(usize),
    #[error("empty frame")]
    Empty,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The body length announced by a frame header, checked against [`MAX_FRAME`].
pub fn frame_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let n = u32::from_be_bytes(header) as usize;
    if n == 0 {
        return Err(FrameError::Empty);
    }
    if n > MAX_FRAME {
        return Err(FrameError::TooLarge(n));
    }
    Ok(n)
}

/// The header and body of one frame.
pub fn encode_frame(body: &[u8]) -> Result<Vec<u8>, FrameError> {
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    if body.is_empty() {
        return Err(FrameError::Empty);
    }
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// Writes one frame (blocking).
pub fn write_frame(w: &mut impl Write, body: &[u8]) -> Result<(), FrameError> {
    w.write_all(&encode_frame(body)?)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame (blocking).
pub fn read_frame(r: &mut impl Read) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header)?;
    let n = frame_len(header)?;
    let mut body = vec![0u8; n];
    r.read_exact(&mut body)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn add() -> AgentRequest {
        AgentRequest {
            version: PROTOCOL_VERSION,
            command: AgentCommand::Add,
            container_id: Some("abc".into()),
            netns: Some("/var/run/netns/x".into()),
            ifname: Some("eth0".into()),
            pod: Some(PodRef {
                namespace: "default".into(),
                name: "web-0".into(),
                uid: None,
            }),
            valid_attachments: vec![],
        }
    }

    #[test]
    fn request_wire_shape() {
        let j = serde_json::to_value(add()).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"version":1,"command":"ADD","containerId":"abc","netns":"/var/run/netns/x",
                               "ifname":"eth0","pod":{"namespace":"default","name":"web-0"}})
        );
        assert!(add().attachment().is_ok());
    }

    #[test]
    fn agent_revalidates() {
        let mut r = add();
        r.netns = Some("/var/run/netns/../../proc/1/ns/net".into());
        assert_eq!(r.attachment().unwrap_err().code, 4);
        let mut r = add();
        r.ifname = Some("a/b".into());
        assert_eq!(r.attachment().unwrap_err().code, 4);
        let mut r = add();
        r.pod.as_mut().unwrap().name = "../../x".into();
        assert_eq!(r.attachment().unwrap_err().code, 4);
        let mut r = add();
        r.netns = None;
        assert_eq!(r.attachment().unwrap_err().code, 4);
        r.command = AgentCommand::Del;
        assert!(r.attachment().is_ok());
    }

    #[test]
    fn response_versions() {
        assert!(AgentResponse::ok(None).into_outcome().unwrap().is_none());
        let e = AgentResponse::err(CniError::try_again_later("x"))
            .into_outcome()
            .unwrap_err();
        assert_eq!(e.code, 11);
        let mut future = AgentResponse::ok(None);
        future.version = 2;
        assert_eq!(future.into_outcome().unwrap_err().code, 1);
    }

    #[test]
    fn frames() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"{}").unwrap();
        assert_eq!(&buf[..4], &[0, 0, 0, 2]);
        assert_eq!(read_frame(&mut buf.as_slice()).unwrap(), b"{}");
        assert!(matches!(
            frame_len((MAX_FRAME as u32 + 1).to_be_bytes()),
            Err(FrameError::TooLarge(_))
        ));
        assert!(matches!(frame_len([0; 4]), Err(FrameError::Empty)));
        // A truncated body is an I/O error, not a hang or a short read.
        assert!(matches!(
            read_frame(&mut [0u8, 0, 0, 9, b'{'].as_slice()),
            Err(FrameError::Io(_))
        ));
    }

    proptest! {
        #[test]
        fn frame_round_trip(body in proptest::collection::vec(any::<u8>(), 1..2048)) {
            let mut buf = Vec::new();
            write_frame(&mut buf, &body).unwrap();
            prop_assert_eq!(read_frame(&mut buf.as_slice()).unwrap(), body);
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(body) = read_frame(&mut bytes.as_slice()) {
                let _ = serde_json::from_slice::<AgentRequest>(&body);
            }
        }
    }
}
