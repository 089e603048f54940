//! A minimal client of the Kubernetes Container Runtime Interface (CRI, `runtime.v1`), the gRPC
//! API a kubelet speaks to containerd: the calls of a pod's life (RunPodSandbox, CreateContainer,
//! StartContainer, PodSandboxStatus, StopPodSandbox, RemovePodSandbox, and the container and
//! listing calls around them). Messages are encoded by hand ([`proto`]) with the field numbers of
//! `pkg/apis/runtime/v1/api.proto` of kubernetes/cri-api; the transport is HTTP/2 over the
//! runtime's Unix socket (`h2`, already in the workspace through hyper), one connection per call.
//! Debian ships no CRI client (no `crictl`), and tonic with prost would add a code generator and
//! a dozen crates for these few unary calls.

pub mod proto;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use proto::{DecodeError, Enc, Msg};

/// The gRPC service of pods and containers.
const RUNTIME_SERVICE: &str = "runtime.v1.RuntimeService";
/// Largest response accepted (the runtime's are a few KiB; verbose status carries the OCI spec).
const MAX_RESPONSE: usize = 16 << 20;

/// A failed CRI call.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("CRI {method}: connecting to {socket}: {source}")]
    Connect {
        method: &'static str,
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("CRI {method}: HTTP/2: {0}", .source)]
    Http2 {
        method: &'static str,
        source: h2::Error,
    },
    #[error("CRI {method}: no answer within {0:?}", .timeout)]
    Timeout {
        method: &'static str,
        timeout: Duration,
    },
    /// The runtime answered with a gRPC status other than OK.
    #[error("CRI {method}: {} (gRPC status {code})", .message)]
    Status {
        method: &'static str,
        code: u32,
        message: String,
    },
    #[error("CRI {method}: malformed response: {reason}")]
    Malformed {
        method: &'static str,
        reason: String,
    },
}

impl CriError {
    /// gRPC NOT_FOUND: the sandbox or container does not exist (any more).
    pub fn is_not_found(&self) -> bool {
        matches!(self, CriError::Status { code: 5, .. })
    }
}

/// The 5-byte gRPC message prefix (not compressed, big-endian length) and the message.
pub fn grpc_frame(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 5);
    out.push(0);
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// The message of a unary gRPC response body (exactly one uncompressed message).
pub fn grpc_unframe(body: &[u8]) -> Result<&[u8], String> {
    if body.is_empty() {
        return Err("no message in the response".into());
    }
    if body.len() < 5 {
        return Err(format!(
            "{} bytes: shorter than a gRPC message prefix",
            body.len()
        ));
    }
    if body[0] != 0 {
        return Err(format!(
            "compressed-flag {} (no compression was negotiated)",
            body[0]
        ));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() != 5 + len {
        return Err(format!(
            "message length {len} but {} bytes follow the prefix",
            body.len() - 5
        ));
    }
    Ok(&body[5..])
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2, "Responses").
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The gRPC status of a response: from its trailers, or from its headers (a "Trailers-Only"
/// response, which is how errors usually come).
fn grpc_status(method: &'static str, headers: &http::HeaderMap) -> Option<Result<(), CriError>> {
    let code = headers.get("grpc-status")?;
    let code: u32 = match code.to_str().ok().and_then(|c| c.parse().ok()) {
        Some(c) => c,
        None => {
            return Some(Err(CriError::Malformed {
                method,
                reason: format!("grpc-status {code:?}"),
            }));
        }
    };
    if code == 0 {
        return Some(Ok(()));
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some(Err(CriError::Status {
        method,
        code,
        message,
    }))
}

/// A pod sandbox as the kubelet describes it to the runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxConfig {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub hostname: String,
    pub log_directory: String,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    /// Parent cgroup (cgroupfs syntax).
    pub cgroup_parent: String,
    /// The node's network namespace instead of one of the pod's (no CNI).
    pub host_network: bool,
}

/// `NamespaceMode` values.
const NAMESPACE_NODE: i64 = 2;
const NAMESPACE_CONTAINER: i64 = 1;

fn pairs(v: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str()))
}

/// `PodSandboxConfig`.
pub fn encode_sandbox_config(c: &SandboxConfig) -> Enc {
    let metadata = Enc::new()
        .string(1, &c.name)
        .string(2, &c.uid)
        .string(3, &c.namespace)
        .int(4, i64::from(c.attempt));
    // NamespaceOption: network (1) NODE for host-network pods; pid (2) CONTAINER as the kubelet
    // sets for v1 pods.
    let ns_options = Enc::new()
        .int(1, if c.host_network { NAMESPACE_NODE } else { 0 })
        .int(2, NAMESPACE_CONTAINER);
    let linux = Enc::new()
        .string(1, &c.cgroup_parent)
        .message(2, Enc::new().message(1, ns_options));
    Enc::new()
        .message(1, metadata)
        .string(2, &c.hostname)
        .string(3, &c.log_directory)
        .map(6, pairs(&c.labels))
        .map(7, pairs(&c.annotations))
        .message(8, linux)
}

/// A host folder mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    /// `MountPropagation`: 0 private, 1 host to container (rslave), 2 bidirectional (rshared).
    pub propagation: i64,
}

/// A container of a pod, as the kubelet describes it to the runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerConfig {
    pub name: String,
    pub attempt: u32,
    pub image: String,
    /// Empty: the image's entrypoint.
    pub command: Vec<String>,
    /// Empty: the image's command.
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub labels: Vec<(String, String)>,
    /// Relative to the sandbox's log directory.
    pub log_path: String,
    pub privileged: bool,
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub readonly_rootfs: bool,
    pub no_new_privs: bool,
    /// The node's network namespace (a host-network pod).
    pub host_network: bool,
}

/// `ContainerConfig`.
pub fn encode_container_config(c: &ContainerConfig) -> Enc {
    let mut e = Enc::new()
        .message(
            1,
            Enc::new().string(1, &c.name).int(2, i64::from(c.attempt)),
        )
        .message(2, Enc::new().string(1, &c.image))
        .strings(3, &c.command)
        .strings(4, &c.args);
    for (k, v) in &c.envs {
        e = e.message(6, Enc::new().string(1, k).string(2, v));
    }
    for m in &c.mounts {
        e = e.message(
            7,
            Enc::new()
                .string(1, &m.container_path)
                .string(2, &m.host_path)
                .bool(3, m.readonly)
                .int(5, m.propagation),
        );
    }
    let mut sc = Enc::new()
        .message(
            1,
            Enc::new()
                .strings(1, &c.add_capabilities)
                .strings(2, &c.drop_capabilities),
        )
        .bool(2, c.privileged)
        .message(
            3,
            Enc::new()
                .int(1, if c.host_network { NAMESPACE_NODE } else { 0 })
                .int(2, NAMESPACE_CONTAINER),
        );
    if let Some(u) = c.run_as_user {
        sc = sc.message_always(5, Enc::new().int(1, u));
    }
    if let Some(g) = c.run_as_group {
        sc = sc.message_always(12, Enc::new().int(1, g));
    }
    sc = sc.bool(7, c.readonly_rootfs).bool(11, c.no_new_privs);
    e.map(9, pairs(&c.labels))
        .string(11, &c.log_path)
        .message(15, Enc::new().message(2, sc))
}

/// What PodSandboxStatus (verbose) says about a sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxStatus {
    pub id: String,
    pub ready: bool,
    /// `network.ip` then `network.additional_ips`, as the kubelet builds `status.podIPs`.
    pub ips: Vec<String>,
    /// The sandbox (pause) process, from the verbose `info`.
    pub pid: Option<u32>,
    /// The sandbox's network namespace file, from the verbose `info`'s OCI spec.
    pub netns_path: Option<String>,
}

fn malformed(method: &'static str) -> impl Fn(DecodeError) -> CriError {
    move |e| CriError::Malformed {
        method,
        reason: e.to_string(),
    }
}

/// `PodSandboxStatusResponse`.
pub fn parse_sandbox_status(buf: &[u8]) -> Result<SandboxStatus, DecodeError> {
    let resp = Msg::parse(buf)?;
    let st = resp.message(1)?;
    let net = st.message(5)?;
    let mut ips = Vec::new();
    let first = net.string(1)?;
    if !first.is_empty() {
        ips.push(first);
    }
    for extra in net.messages(2)? {
        let ip = extra.string(1)?;
        if !ip.is_empty() {
            ips.push(ip);
        }
    }
    let mut out = SandboxStatus {
        id: st.string(1)?,
        ready: st.int(3)? == 0,
        ips,
        pid: None,
        netns_path: None,
    };
    // containerd's verbose info: {"info": "<JSON with pid and runtimeSpec>"}.
    if let Some((_, info)) = resp.map(2)?.into_iter().find(|(k, _)| k == "info")
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&info)
    {
        out.pid = v["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0);
        out.netns_path = v["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["type"] == "network")
            .and_then(|n| n["path"].as_str())
            .filter(|p| !p.is_empty())
            .map(str::to_string);
    }
    Ok(out)
}

/// One entry of ListPodSandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxItem {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub ready: bool,
    pub labels: Vec<(String, String)>,
}

/// `ListPodSandboxResponse`.
pub fn parse_sandbox_list(buf: &[u8]) -> Result<Vec<SandboxItem>, DecodeError> {
    Msg::parse(buf)?
        .messages(1)?
        .into_iter()
        .map(|s| {
            let md = s.message(2)?;
            Ok(SandboxItem {
                id: s.string(1)?,
                name: md.string(1)?,
                uid: md.string(2)?,
                namespace: md.string(3)?,
                ready: s.int(3)? == 0,
                labels: s.map(5)?,
            })
        })
        .collect()
}

/// One entry of ListContainers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerItem {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u64,
    /// `ContainerState`: 0 created, 1 running, 2 exited, 3 unknown.
    pub state: u64,
}

/// `ListContainersResponse`.
pub fn parse_container_list(buf: &[u8]) -> Result<Vec<ContainerItem>, DecodeError> {
    Msg::parse(buf)?
        .messages(1)?
        .into_iter()
        .map(|c| {
            let md = c.message(3)?;
            Ok(ContainerItem {
                id: c.string(1)?,
                sandbox_id: c.string(2)?,
                name: md.string(1)?,
                attempt: md.int(2)?,
                state: c.int(6)?,
            })
        })
        .collect()
}

/// A CRI runtime at a Unix socket.
#[derive(Debug, Clone)]
pub struct CriClient {
    socket: PathBuf,
    /// Bound of each call (RunPodSandbox runs the whole CNI chain).
    pub timeout: Duration,
}

impl CriClient {
    pub fn new(socket: &Path) -> Self {
        CriClient {
            socket: socket.to_path_buf(),
            timeout: Duration::from_secs(120),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// One unary call: the response message's bytes.
    pub async fn call(&self, method: &'static str, request: Enc) -> Result<Vec<u8>, CriError> {
        match tokio::time::timeout(self.timeout, self.call_inner(method, request)).await {
            Ok(r) => r,
            Err(_) => Err(CriError::Timeout {
                method,
                timeout: self.timeout,
            }),
        }
    }

    async fn call_inner(&self, method: &'static str, request: Enc) -> Result<Vec<u8>, CriError> {
        let h2err = |source| CriError::Http2 { method, source };
        let io = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| CriError::Connect {
                method,
                socket: self.socket.clone(),
                source,
            })?;
        let (client, conn) = h2::client::handshake(io).await.map_err(h2err)?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let result = async {
            let mut client = client.ready().await.map_err(h2err)?;
            let req = http::Request::builder()
                .method("POST")
                .uri(format!("http://localhost/{RUNTIME_SERVICE}/{method}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .map_err(|e| CriError::Malformed {
                    method,
                    reason: e.to_string(),
                })?;
            let (resp, mut send) = client.send_request(req, false).map_err(h2err)?;
            send.send_data(Bytes::from(grpc_frame(&request.into_bytes())), true)
                .map_err(h2err)?;
            let resp = resp.await.map_err(h2err)?;
            let (parts, mut body) = resp.into_parts();
            if parts.status != http::StatusCode::OK {
                return Err(CriError::Malformed {
                    method,
                    reason: format!("HTTP status {}", parts.status),
                });
            }
            if let Some(st) = grpc_status(method, &parts.headers) {
                st?;
            }
            let mut data = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.map_err(h2err)?;
                let _ = body.flow_control().release_capacity(chunk.len());
                data.extend_from_slice(&chunk);
                if data.len() > MAX_RESPONSE {
                    return Err(CriError::Malformed {
                        method,
                        reason: format!("response larger than {MAX_RESPONSE} bytes"),
                    });
                }
            }
            let trailers = body.trailers().await.map_err(h2err)?.unwrap_or_default();
            match grpc_status(method, &trailers) {
                Some(st) => st?,
                None => {
                    return Err(CriError::Malformed {
                        method,
                        reason: "no grpc-status".into(),
                    });
                }
            }
            grpc_unframe(&data)
                .map(<[u8]>::to_vec)
                .map_err(|reason| CriError::Malformed { method, reason })
        }
        .await;
        conn.abort();
        result
    }

    /// Version: the runtime's name and version.
    pub async fn version(&self) -> Result<(String, String), CriError> {
        let b = self.call("Version", Enc::new().string(1, "v1")).await?;
        let m = Msg::parse(&b).map_err(malformed("Version"))?;
        let f = |n| m.string(n).map_err(malformed("Version"));
        Ok((f(2)?, f(3)?))
    }

    /// RunPodSandbox: the sandbox id.
    pub async fn run_pod_sandbox(&self, c: &SandboxConfig) -> Result<String, CriError> {
        let b = self
            .call(
                "RunPodSandbox",
                Enc::new().message(1, encode_sandbox_config(c)),
            )
            .await?;
        let id = Msg::parse(&b)
            .and_then(|m| m.string(1))
            .map_err(malformed("RunPodSandbox"))?;
        if id.is_empty() {
            return Err(CriError::Malformed {
                method: "RunPodSandbox",
                reason: "empty pod_sandbox_id".into(),
            });
        }
        Ok(id)
    }

    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        self.call("StopPodSandbox", Enc::new().string(1, id))
            .await
            .map(drop)
    }

    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        self.call("RemovePodSandbox", Enc::new().string(1, id))
            .await
            .map(drop)
    }

    /// PodSandboxStatus with `verbose` (for the sandbox's process and network namespace).
    pub async fn pod_sandbox_status(&self, id: &str) -> Result<SandboxStatus, CriError> {
        let b = self
            .call("PodSandboxStatus", Enc::new().string(1, id).bool(2, true))
            .await?;
        parse_sandbox_status(&b).map_err(malformed("PodSandboxStatus"))
    }

    /// ListPodSandbox, optionally only those carrying every label of `labels`.
    pub async fn list_pod_sandboxes(
        &self,
        labels: &[(String, String)],
    ) -> Result<Vec<SandboxItem>, CriError> {
        let filter = Enc::new().map(3, pairs(labels));
        let b = self
            .call("ListPodSandbox", Enc::new().message(1, filter))
            .await?;
        parse_sandbox_list(&b).map_err(malformed("ListPodSandbox"))
    }

    /// CreateContainer: the container id.
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        c: &ContainerConfig,
        sandbox: &SandboxConfig,
    ) -> Result<String, CriError> {
        let req = Enc::new()
            .string(1, sandbox_id)
            .message(2, encode_container_config(c))
            .message(3, encode_sandbox_config(sandbox));
        let b = self.call("CreateContainer", req).await?;
        Msg::parse(&b)
            .and_then(|m| m.string(1))
            .map_err(malformed("CreateContainer"))
    }

    pub async fn start_container(&self, id: &str) -> Result<(), CriError> {
        self.call("StartContainer", Enc::new().string(1, id))
            .await
            .map(drop)
    }

    pub async fn stop_container(&self, id: &str, timeout_s: i64) -> Result<(), CriError> {
        self.call("StopContainer", Enc::new().string(1, id).int(2, timeout_s))
            .await
            .map(drop)
    }

    pub async fn remove_container(&self, id: &str) -> Result<(), CriError> {
        self.call("RemoveContainer", Enc::new().string(1, id))
            .await
            .map(drop)
    }

    /// ContainerStatus: the container's state (0 created, 1 running, 2 exited, 3 unknown) and exit
    /// code.
    pub async fn container_status(&self, id: &str) -> Result<(u64, i64), CriError> {
        let b = self
            .call("ContainerStatus", Enc::new().string(1, id))
            .await?;
        let parse = || {
            let st = Msg::parse(&b)?.message(1)?;
            Ok((st.int(3)?, st.int(7)? as i32 as i64))
        };
        parse().map_err(malformed("ContainerStatus"))
    }

    /// ListContainers, optionally of one sandbox.
    pub async fn list_containers(&self, sandbox_id: &str) -> Result<Vec<ContainerItem>, CriError> {
        let filter = Enc::new().string(3, sandbox_id);
        let b = self
            .call("ListContainers", Enc::new().message(1, filter))
            .await?;
        parse_container_list(&b).map_err(malformed("ListContainers"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_frames_round_trip_and_bad_bodies_are_refused() {
        let f = grpc_frame(b"abc");
        assert_eq!(f, [0, 0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(grpc_unframe(&f).unwrap(), b"abc");
        assert_eq!(grpc_unframe(&grpc_frame(b"")).unwrap(), b"");
        assert!(grpc_unframe(&[]).is_err());
        assert!(grpc_unframe(&[0, 0, 0]).is_err());
        // Compressed.
        assert!(grpc_unframe(&[1, 0, 0, 0, 0]).is_err());
        // Length larger or smaller than what follows (two messages in a unary response).
        assert!(grpc_unframe(&[0, 0, 0, 0, 9, 1]).is_err());
        assert!(grpc_unframe(&[0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]).is_err());
        assert!(grpc_unframe(&[0, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn grpc_status_from_headers() {
        let mut h = http::HeaderMap::new();
        assert!(grpc_status("X", &h).is_none());
        h.insert("grpc-status", "0".parse().unwrap());
        assert!(matches!(grpc_status("X", &h), Some(Ok(()))));
        h.insert("grpc-status", "5".parse().unwrap());
        h.insert(
            "grpc-message",
            "sandbox%20%22x%22 not found%".parse().unwrap(),
        );
        match grpc_status("X", &h) {
            Some(Err(e)) => {
                assert!(e.is_not_found());
                assert_eq!(
                    e.to_string(),
                    "CRI X: sandbox \"x\" not found% (gRPC status 5)"
                );
            }
            other => panic!("{other:?}"),
        }
        h.insert("grpc-status", "five".parse().unwrap());
        assert!(matches!(
            grpc_status("X", &h),
            Some(Err(CriError::Malformed { .. }))
        ));
    }

    #[test]
    fn sandbox_config_carries_the_pod_metadata_kubelet_sends() {
        let c = SandboxConfig {
            name: "web".into(),
            namespace: "default".into(),
            uid: "u-1".into(),
            attempt: 1,
            hostname: "web".into(),
            labels: vec![("io.kubernetes.pod.uid".into(), "u-1".into())],
            cgroup_parent: "/lab/node1".into(),
            ..Default::default()
        };
        let bytes = encode_sandbox_config(&c).into_bytes();
        let m = Msg::parse(&bytes).unwrap();
        let md = m.message(1).unwrap();
        assert_eq!(md.string(1).unwrap(), "web");
        assert_eq!(md.string(2).unwrap(), "u-1");
        assert_eq!(md.string(3).unwrap(), "default");
        assert_eq!(md.int(4).unwrap(), 1);
        assert_eq!(m.string(2).unwrap(), "web");
        assert_eq!(m.map(6).unwrap(), c.labels);
        let linux = m.message(8).unwrap();
        assert_eq!(linux.string(1).unwrap(), "/lab/node1");
        let ns = linux.message(2).unwrap().message(1).unwrap();
        assert_eq!(ns.int(1).unwrap(), 0, "pod network namespace (POD)");
        assert_eq!(ns.int(2).unwrap(), NAMESPACE_CONTAINER as u64);
        let host = encode_sandbox_config(&SandboxConfig {
            host_network: true,
            ..c
        })
        .into_bytes();
        let hm = Msg::parse(&host).unwrap();
        let ns = hm
            .message(8)
            .unwrap()
            .message(2)
            .unwrap()
            .message(1)
            .unwrap();
        assert_eq!(ns.int(1).unwrap(), NAMESPACE_NODE as u64);
    }

    #[test]
    fn container_config_fields() {
        let c = ContainerConfig {
            name: "agent".into(),
            image: "docker.io/hybridnet/hybridnet:v0.1.0".into(),
            command: vec!["hybridnet-node".into()],
            args: vec!["agent".into(), "--x=1".into()],
            envs: vec![("NODE_NAME".into(), "node1".into())],
            mounts: vec![Mount {
                container_path: "/run/hybridnet".into(),
                host_path: "/lab/n1/run".into(),
                readonly: true,
                propagation: 1,
            }],
            readonly_rootfs: true,
            no_new_privs: true,
            add_capabilities: vec!["NET_ADMIN".into()],
            run_as_user: Some(0),
            ..Default::default()
        };
        let b = encode_container_config(&c).into_bytes();
        let m = Msg::parse(&b).unwrap();
        assert_eq!(m.message(1).unwrap().string(1).unwrap(), "agent");
        assert_eq!(m.message(2).unwrap().string(1).unwrap(), c.image);
        assert_eq!(m.strings(3).unwrap(), c.command);
        assert_eq!(m.strings(4).unwrap(), c.args);
        let env = &m.messages(6).unwrap()[0];
        assert_eq!(
            (env.string(1).unwrap(), env.string(2).unwrap()),
            c.envs[0].clone()
        );
        let mount = &m.messages(7).unwrap()[0];
        assert_eq!(mount.string(1).unwrap(), "/run/hybridnet");
        assert_eq!(mount.string(2).unwrap(), "/lab/n1/run");
        assert_eq!(mount.int(3).unwrap(), 1);
        assert_eq!(mount.int(5).unwrap(), 1);
        let sc = m.message(15).unwrap().message(2).unwrap();
        assert_eq!(sc.message(1).unwrap().strings(1).unwrap(), ["NET_ADMIN"]);
        // runAsUser 0 is present (root asked for explicitly), run_as_group absent.
        let uid = sc.messages(5).unwrap();
        assert_eq!(uid.len(), 1);
        assert_eq!(uid[0].int(1).unwrap(), 0);
        assert!(sc.messages(12).unwrap().is_empty());
        assert_eq!((sc.int(7).unwrap(), sc.int(11).unwrap()), (1, 1));
    }

    #[test]
    fn sandbox_status_ips_pid_and_netns() {
        let info = serde_json::json!({"pid": 4242, "runtimeSpec": {"linux": {"namespaces": [
            {"type": "pid"}, {"type": "network", "path": "/run/x/netns/cni-1"}]}}})
        .to_string();
        let status = Enc::new().string(1, "sb1").message(
            5,
            Enc::new()
                .string(1, "198.18.64.5")
                .message(2, Enc::new().string(1, "fd00:64::5")),
        );
        let b = Enc::new()
            .message(1, status)
            .map(2, [("info", info.as_str())])
            .into_bytes();
        let s = parse_sandbox_status(&b).unwrap();
        assert_eq!(
            s,
            SandboxStatus {
                id: "sb1".into(),
                ready: true,
                ips: vec!["198.18.64.5".into(), "fd00:64::5".into()],
                pid: Some(4242),
                netns_path: Some("/run/x/netns/cni-1".into()),
            }
        );
        // Not ready, no network, info not JSON: no pid, no path, no error.
        let b = Enc::new()
            .message(1, Enc::new().string(1, "sb2").int(3, 1))
            .map(2, [("info", "{not json")])
            .into_bytes();
        let s = parse_sandbox_status(&b).unwrap();
        assert!(!s.ready && s.ips.is_empty() && s.pid.is_none() && s.netns_path.is_none());
        // A hostile pid.
        let b = Enc::new().map(2, [("info", r#"{"pid": -1}"#)]).into_bytes();
        assert_eq!(parse_sandbox_status(&b).unwrap().pid, None);
        assert!(parse_sandbox_status(&[0x0a, 0x09]).is_err());
    }

    #[test]
    fn sandbox_and_container_lists() {
        let item = Enc::new()
            .string(1, "sb1")
            .message(
                2,
                Enc::new().string(1, "web").string(2, "u1").string(3, "ns"),
            )
            .int(3, 1)
            .map(5, [("lab", "0")]);
        let b = Enc::new().message(1, item).into_bytes();
        assert_eq!(
            parse_sandbox_list(&b).unwrap(),
            vec![SandboxItem {
                id: "sb1".into(),
                name: "web".into(),
                namespace: "ns".into(),
                uid: "u1".into(),
                ready: false,
                labels: vec![("lab".into(), "0".into())],
            }]
        );
        assert!(parse_sandbox_list(&[]).unwrap().is_empty());
        let c = Enc::new()
            .string(1, "c1")
            .string(2, "sb1")
            .message(3, Enc::new().string(1, "main").int(2, 2))
            .int(6, 1);
        let b = Enc::new().message(1, c).into_bytes();
        let l = parse_container_list(&b).unwrap();
        assert_eq!(
            (
                l[0].id.as_str(),
                l[0].name.as_str(),
                l[0].attempt,
                l[0].state
            ),
            ("c1", "main", 2, 1)
        );
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error_naming_it() {
        let c = CriClient::new(Path::new("/nonexistent/cri.sock"));
        let e = c.version().await.unwrap_err();
        assert!(matches!(e, CriError::Connect { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/cri.sock"), "{e}");
    }
}
