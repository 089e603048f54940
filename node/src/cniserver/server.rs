//! The agent's unix-socket server and the request handling behind it.

use std::collections::HashSet;
use std::net::IpAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hybridnet_api::naming;
use hybridnet_cni::protocol::{
    AttachmentRequest, FrameError, MAX_FRAME, PROTOCOL_VERSION, encode_frame, frame_len,
};
use hybridnet_cni::{
    AgentCommand, AgentRequest, AgentResponse, CniError, CniResult, ErrorCode, GcAttachment,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use super::addressing::{PodAddressing, cni_result, matching_instances, pod_addressing};
use super::error::PodNetError;
use super::events::AddFailure;
use super::locks::KeyedLocks;
use super::netns::Netns;
use super::podnet::{self, PodInterfaceSpec, Teardown};
use super::{AttachmentEvent, CniServerConfig, IpInstanceLookup};
use super::{podping, vlancheck};

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum CniServerError {
    #[error("CNI socket {path}: {what}: {source}")]
    Socket {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI socket {0}: exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
    #[error("node network namespace: {0}")]
    HostNetns(#[from] PodNetError),
}

/// Handles agent requests; usable without the socket (the lab and tests call it directly).
pub struct CniService {
    lookup: Arc<dyn IpInstanceLookup>,
    config: CniServerConfig,
    host: Netns,
    locks: Arc<KeyedLocks>,
}

impl CniService {
    /// Opens the node namespace (`config.host_netns`, else the caller's).
    pub fn new(
        lookup: Arc<dyn IpInstanceLookup>,
        config: CniServerConfig,
    ) -> Result<CniService, CniServerError> {
        let host = match &config.host_netns {
            Some(p) => Netns::open(p)?,
            None => Netns::current()?,
        };
        Ok(CniService {
            lookup,
            config,
            host,
            locks: KeyedLocks::new(),
        })
    }

    /// The node namespace this service programs.
    pub fn host_netns(&self) -> &Netns {
        &self.host
    }

    /// Answers one request.
    pub async fn handle(&self, req: AgentRequest) -> AgentResponse {
        let started = Instant::now();
        let command = req.command;
        if let Some(o) = &self.config.observer {
            o.started(command);
        }
        tracing::debug!(?command, container_id = req.container_id.as_deref().unwrap_or(""),
            pod = ?req.pod, "CNI request started");
        let outcome = self.dispatch(&req).await;
        let code = outcome.as_ref().err().map(|e| e.code);
        if let Some(o) = &self.config.observer {
            o.observe(command, started.elapsed(), code);
        }
        match &outcome {
            Ok(_) => {
                tracing::info!(?command, container_id = req.container_id.as_deref().unwrap_or(""),
                pod = ?req.pod, elapsed_ms = started.elapsed().as_millis() as u64, "CNI request done")
            }
            Err(e) => {
                tracing::warn!(?command, container_id = req.container_id.as_deref().unwrap_or(""),
                pod = ?req.pod, code = e.code, error = %e, "CNI request failed")
            }
        }
        match outcome {
            Ok(r) => AgentResponse::ok(r),
            Err(e) => AgentResponse::err(e),
        }
    }

    async fn dispatch(&self, req: &AgentRequest) -> Result<Option<CniResult>, CniError> {
        if req.version != PROTOCOL_VERSION {
            return Err(version_mismatch(req.version));
        }
        match req.command {
            AgentCommand::Status => self.lookup.ready().map(|_| None).map_err(|why| {
                CniError::new(
                    ErrorCode::PluginNotAvailable,
                    format!("hybridnet agent is not ready: {why}"),
                )
            }),
            AgentCommand::Gc => self.gc(req.gc_attachments()?).await.map(|_| None),
            AgentCommand::Add | AgentCommand::Del | AgentCommand::Check => {
                let att = req.attachment()?;
                let _guard = self.locks.lock(att.container_id).await;
                match req.command {
                    AgentCommand::Add => match self.add(&att).await {
                        Ok(r) => Ok(Some(r)),
                        Err((failure, e)) => {
                            if let Some(f) = failure {
                                self.lookup.add_failed(att.pod, f, &e);
                            }
                            Err(e)
                        }
                    },
                    AgentCommand::Del => self.del(&att).await.map(|_| None),
                    _ => self.check(&att).await.map(Some),
                }
            }
        }
    }

    fn open_pod_netns(&self, att: &AttachmentRequest<'_>) -> Result<Netns, CniError> {
        let path = att.netns.unwrap_or("");
        let ns =
            Netns::open(path).map_err(|e| e.to_cni().with_details(format!("pod {}", att.pod)))?;
        if ns.same_as(&self.host) {
            return Err(PodNetError::HostNetns(ns.path().to_path_buf())
                .to_cni()
                .with_details(format!("pod {}", att.pod)));
        }
        Ok(ns)
    }

    /// Waits (bounded) until the lookup knows the pod's IPInstances.
    async fn wait_for_addressing(
        &self,
        att: &AttachmentRequest<'_>,
    ) -> Result<PodAddressing, CniError> {
        let deadline = Instant::now() + self.config.ipinstance_wait;
        let expected = self.lookup.expected_addresses(att.pod).await.unwrap_or(1);
        loop {
            let all = self.lookup.pod_instances(att.pod);
            let mine = matching_instances(att.pod, &all);
            // The operator writes a dual-stack pod's two IPInstances one after the other: wire
            // the pod only once the cache holds all of them.
            if !mine.is_empty() && mine.len() >= expected {
                return pod_addressing(att.pod, &mine);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CniError::try_again_later(format!(
                    "no IPInstance for pod {} on this node after {:.1} s; the hybridnet operator creates it when the pod is scheduled \
                     (see `kubectl get ipinstances -n {} -l networking.alibaba.com/pod={}` and the operator's log); the runtime will retry",
                    att.pod,
                    self.config.ipinstance_wait.as_secs_f64(),
                    att.pod.namespace,
                    naming::pod_name_label_value(&att.pod.name),
                )));
            }
            tokio::time::sleep(self.config.ipinstance_poll.min(deadline - now)).await;
        }
    }

    fn spec_for(
        &self,
        att: &AttachmentRequest<'_>,
        a: &PodAddressing,
        migration_peer: bool,
    ) -> PodInterfaceSpec {
        PodInterfaceSpec {
            container_id: att.container_id.to_string(),
            ifname: att.ifname.to_string(),
            host_veth: naming::host_veth_name(&att.pod.namespace, &att.pod.name),
            mac: a.mac,
            ipv4: a.ipv4,
            ipv6: a.ipv6,
            mtu: self
                .lookup
                .network_mtu(&a.network)
                .unwrap_or(self.config.default_mtu),
            local_direct_table: self.config.local_direct_table,
            local_route: !migration_peer,
        }
    }

    /// ADD; a failure comes with the stage a user must be told about (`events`), if any (a
    /// missing network namespace is the runtime's business, not the pod owner's).
    async fn add(
        &self,
        att: &AttachmentRequest<'_>,
    ) -> Result<CniResult, (Option<AddFailure>, CniError)> {
        let pod_ns = self.open_pod_netns(att).map_err(|e| (None, e))?;
        let addressing = self
            .wait_for_addressing(att)
            .await
            .map_err(|e| (Some(AddFailure::NoAddress), e))?;
        let migration_peer = self.lookup.migration_peer(att.pod);
        let spec = self.spec_for(att, &addressing, migration_peer);
        podnet::setup_pod_interface(&self.host, &pod_ns, &spec)
            .await
            .map_err(|e| {
                (
                    Some(AddFailure::InterfaceSetup),
                    e.to_cni().with_details(format!("pod {}", att.pod)),
                )
            })?;
        if migration_peer {
            // The VM still runs at the source, which holds the address: nothing here may claim
            // it (no announcement, no duplicate-address check against the source, no ping of an
            // address routed to the source).
            tracing::info!(pod = %att.pod, instances = ?addressing.instances,
                "ADD: live migration target wired with its VM's addresses; the source keeps them routed until they move here");
        } else {
            // VLAN pods: gateway answers, address not in use elsewhere, new location announced;
            // then the node pings the pod.
            self.post_setup_checks(att, &addressing, &spec)
                .await
                .map_err(|(f, e)| (Some(f), e))?;
        }
        // Readiness hook (BGP pods: announced to every required peer). A pod that is not
        // reachable fails the ADD, and a failed ADD leaves nothing behind.
        if !migration_peer && let Err(e) = self.lookup.wait_pod_reachable(&addressing).await {
            self.remove_failed_interface(att, &spec, "did not become reachable")
                .await;
            return Err((Some(AddFailure::BgpNotAnnounced), e));
        }
        self.lookup.attached(&AttachmentEvent {
            pod: att.pod.clone(),
            container_id: spec.container_id.clone(),
            ifname: spec.ifname.clone(),
            host_veth: spec.host_veth.clone(),
            addressing: addressing.clone(),
        });
        Ok(cni_result(
            &addressing,
            &spec.host_veth,
            att.ifname,
            att.netns.unwrap_or(""),
            spec.mtu,
        ))
    }

    /// Runs the VLAN checks and the ping of a wired pod; a failure removes the interface again
    /// (the ADD leaves nothing behind) and names the pod, its address and the interface.
    async fn post_setup_checks(
        &self,
        att: &AttachmentRequest<'_>,
        addressing: &PodAddressing,
        spec: &PodInterfaceSpec,
    ) -> Result<(), (AddFailure, CniError)> {
        let targets = self.lookup.vlan_check_targets(addressing);
        let mut outcome =
            vlancheck::check_pod(&self.host, targets, spec.mac, self.config.vlan_check)
                .await
                .map(|_| ())
                .map_err(|e| (AddFailure::of_vlan_check(&e), e.to_cni(att.pod)));
        if outcome.is_ok()
            && let Some(ping) = self.config.ping_pod
        {
            let ips = [spec.ipv4.map(IpAddr::V4), spec.ipv6.map(IpAddr::V6)]
                .into_iter()
                .flatten()
                .collect();
            outcome = podping::check_pod(&self.host, ips, ping)
                .await
                .map_err(|e| (AddFailure::PodUnreachableFromNode, e.to_cni(att.pod)));
        }
        let Err(e) = outcome else {
            return Ok(());
        };
        self.remove_failed_interface(att, spec, "failed its checks")
            .await;
        Err(e)
    }

    /// Removes the interface of a pod whose ADD fails after wiring (the ADD leaves nothing
    /// behind); a failed removal is only logged, the ADD's own error is what the caller returns.
    async fn remove_failed_interface(
        &self,
        att: &AttachmentRequest<'_>,
        spec: &PodInterfaceSpec,
        failure: &str,
    ) {
        if let Err(cleanup) = podnet::teardown_pod_interface(
            &self.host,
            &spec.host_veth,
            att.container_id,
            att.ifname,
        )
        .await
        {
            tracing::warn!(host_veth = %spec.host_veth, error = %cleanup,
                "removing the interface of a pod that {failure} failed");
        }
    }

    async fn del(&self, att: &AttachmentRequest<'_>) -> Result<(), CniError> {
        let host_veth = naming::host_veth_name(&att.pod.namespace, &att.pod.name);
        let outcome =
            podnet::teardown_pod_interface(&self.host, &host_veth, att.container_id, att.ifname)
                .await
                .map_err(|e| e.to_cni().with_details(format!("pod {}", att.pod)))?;
        match &outcome {
            Teardown::NotOurs(alias) => {
                tracing::info!(%host_veth, %alias, container_id = att.container_id,
                    "DEL: host veth belongs to another attachment of the pod; left alone")
            }
            Teardown::Deleted | Teardown::Gone => self.lookup.detached(att.pod, att.container_id),
        }
        Ok(())
    }

    async fn check(&self, att: &AttachmentRequest<'_>) -> Result<CniResult, CniError> {
        let pod_ns = self.open_pod_netns(att)?;
        let all = self.lookup.pod_instances(att.pod);
        let mine = matching_instances(att.pod, &all);
        if mine.is_empty() {
            return Err(CniError::new(
                ErrorCode::CheckFailed,
                format!("pod {} has no IPInstance on this node any more", att.pod),
            ));
        }
        let addressing = pod_addressing(att.pod, &mine)?;
        let spec = self.spec_for(att, &addressing, self.lookup.migration_peer(att.pod));
        podnet::check_pod_interface(&self.host, &pod_ns, &spec)
            .await
            .map_err(|e| e.to_cni().with_details(format!("pod {}", att.pod)))?;
        Ok(cni_result(
            &addressing,
            &spec.host_veth,
            att.ifname,
            att.netns.unwrap_or(""),
            spec.mtu,
        ))
    }

    /// Deletes every hybridnet host veth whose attachment is not in `valid`; keeps going on
    /// errors and reports them all at the end.
    async fn gc(&self, valid: &[GcAttachment]) -> Result<(), CniError> {
        let valid: HashSet<(&str, &str)> = valid
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect();
        let veths = podnet::list_host_veths(&self.host)
            .await
            .map_err(|e| e.to_cni())?;
        let mut errors = Vec::new();
        for v in veths {
            let Some((cid, ifname)) = &v.attachment else {
                continue;
            };
            if valid.contains(&(cid.as_str(), ifname.as_str())) {
                continue;
            }
            let _guard = self.locks.lock(cid).await;
            match podnet::delete_host_veth(&self.host, &v).await {
                Ok(Teardown::Deleted) => {
                    tracing::info!(host_veth = %v.name, container_id = %cid, "GC removed a stale pod interface")
                }
                Ok(_) => {}
                Err(e) => errors.push(format!("{}: {e}", v.name)),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                ErrorCode::InterfaceSetup,
                format!("GC could not remove {} stale interface(s)", errors.len()),
            )
            .with_details(errors.join("; ")))
        }
    }
}

fn version_mismatch(got: u32) -> CniError {
    CniError::new(
        ErrorCode::IncompatibleVersion,
        format!(
            "the hybridnet plugin speaks protocol version {got}, this agent {PROTOCOL_VERSION}; install the plugin binary shipped with this agent"
        ),
    )
}

/// The socket server: [`CniServer::bind`] then [`CniServer::run`].
pub struct CniServer {
    listener: UnixListener,
    service: Arc<CniService>,
    path: PathBuf,
    in_flight: Arc<Semaphore>,
}

impl CniServer {
    /// Creates the socket: parent directory if missing, a stale socket removed (anything else at
    /// the path is an error), bound under a temporary name, restricted to mode 0600 and renamed
    /// into place, so no client ever sees a socket with wider permissions.
    pub fn bind(
        socket_path: impl AsRef<Path>,
        lookup: Arc<dyn IpInstanceLookup>,
        config: CniServerConfig,
    ) -> Result<CniServer, CniServerError> {
        let path = socket_path.as_ref().to_path_buf();
        let err = |what, source| CniServerError::Socket {
            path: path.clone(),
            what,
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err("creating its directory", e))?;
        }
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_socket() => {
                std::fs::remove_file(&path).map_err(|e| err("removing the stale socket", e))?
            }
            Ok(_) => return Err(CniServerError::NotASocket(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err("inspecting the path", e)),
        }
        let tmp = path.with_file_name(format!(
            ".{}.{}.tmp",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("hybridnet.sock"),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp).map_err(|e| err("binding", e))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                err("restricting to 0600 and moving into place", e)
            })?;
        let in_flight = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
        let service = Arc::new(CniService::new(lookup, config)?);
        tracing::info!(socket = %path.display(), "CNI server listening");
        Ok(CniServer {
            listener,
            service,
            path,
            in_flight,
        })
    }

    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    pub fn service(&self) -> Arc<CniService> {
        self.service.clone()
    }

    /// Serves until the task is dropped or aborted.
    pub async fn run(self) -> Result<(), CniServerError> {
        self.run_until(std::future::pending(), Duration::MAX)
            .await
            .map(|_| ())
    }

    /// Serves until `shutdown` completes, then drains: requests already accepted finish (for at
    /// most `grace`), and every connection that arrives meanwhile is answered with CNI code 11
    /// ("try again later"; the runtime retries, reaching the next agent). Returns when nothing is
    /// in flight any more or `grace` passed.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()>,
        grace: Duration,
    ) -> Result<Drained, CniServerError> {
        let me = nix::unistd::geteuid().as_raw();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                c = self.listener.accept() => match c {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "CNI socket accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let permit = tokio::select! {
                biased;
                _ = &mut shutdown => {
                    self.refuse(stream, me);
                    break;
                }
                p = self.in_flight.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return Ok(Drained::default()),
                },
            };
            let service = self.service.clone();
            let read_timeout = service.config.request_read_timeout;
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = serve_connection(stream, &service, me, read_timeout).await {
                    tracing::warn!(error = %e, "CNI connection failed");
                }
            });
        }
        Ok(self.drain(me, grace).await)
    }

    /// Requests handled right now (accepted, answer not yet written).
    fn busy(&self) -> usize {
        self.service
            .config
            .max_in_flight
            .max(1)
            .saturating_sub(self.in_flight.available_permits())
    }

    async fn drain(&self, me: u32, grace: Duration) -> Drained {
        let slots = self.service.config.max_in_flight.max(1);
        let mut out = Drained {
            in_flight: self.busy(),
            ..Default::default()
        };
        tracing::info!(
            in_flight = out.in_flight,
            grace_s = grace.as_secs(),
            "CNI server draining: requests in flight finish, new ones are told to try again later"
        );
        let all_done = self
            .in_flight
            .clone()
            .acquire_many_owned(u32::try_from(slots).unwrap_or(u32::MAX));
        let mut all_done = std::pin::pin!(all_done);
        let deadline = tokio::time::sleep(grace);
        let mut deadline = std::pin::pin!(deadline);
        loop {
            tokio::select! {
                biased;
                _ = &mut all_done => break,
                _ = &mut deadline => {
                    out.abandoned = self.busy();
                    tracing::warn!(abandoned = out.abandoned, grace_s = grace.as_secs(),
                        "CNI requests still in flight when the shutdown grace period ended");
                    break;
                }
                c = self.listener.accept() => {
                    if let Ok((stream, _)) = c {
                        out.refused += 1;
                        self.refuse(stream, me);
                    }
                }
            }
        }
        tracing::info!(
            in_flight = out.in_flight,
            refused = out.refused,
            abandoned = out.abandoned,
            "CNI server drained"
        );
        out
    }

    /// Answers a connection that arrived during the drain with code 11 after reading its
    /// request (so the client sees the answer, not a reset).
    fn refuse(&self, stream: UnixStream, me: u32) {
        let read_timeout = self.service.config.request_read_timeout;
        tokio::spawn(async move {
            if let Err(e) = refuse_connection(stream, me, read_timeout).await {
                tracing::debug!(error = %e, "CNI connection during shutdown");
            }
        });
    }
}

/// What [`CniServer::run_until`] did after the shutdown signal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Requests being handled when the shutdown came.
    pub in_flight: usize,
    /// Connections answered with "try again later" during the drain.
    pub refused: usize,
    /// Requests still running when the grace period ended.
    pub abandoned: usize,
}

/// The answer to every request that arrives while the agent shuts down.
pub fn shutting_down() -> CniError {
    CniError::try_again_later(
        "the hybridnet agent on this node is shutting down (restart or upgrade); the runtime retries and reaches the next agent",
    )
}

async fn refuse_connection(
    mut s: UnixStream,
    allowed_uid: u32,
    read_timeout: Duration,
) -> Result<(), std::io::Error> {
    if s.peer_cred()?.uid() == allowed_uid {
        // Only to let the client finish writing; its content does not matter.
        let _ = tokio::time::timeout(read_timeout, read_frame_async(&mut s)).await;
    }
    write_response(&mut s, &AgentResponse::err(shutting_down())).await
}

async fn write_response(
    s: &mut UnixStream,
    response: &AgentResponse,
) -> Result<(), std::io::Error> {
    let body = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    let frame = encode_frame(&body).map_err(|e| std::io::Error::other(e.to_string()))?;
    s.write_all(&frame).await?;
    s.shutdown().await
}

async fn read_frame_async(s: &mut UnixStream) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; 4];
    s.read_exact(&mut header).await?;
    let n = frame_len(header)?;
    let mut body = vec![0u8; n];
    s.read_exact(&mut body).await?;
    Ok(body)
}

async fn serve_connection(
    mut s: UnixStream,
    service: &CniService,
    allowed_uid: u32,
    read_timeout: Duration,
) -> Result<(), std::io::Error> {
    // The socket is 0600 already; refuse any other user that got a descriptor anyway.
    let uid = s.peer_cred()?.uid();
    let response = if uid != allowed_uid {
        AgentResponse::err(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("uid {uid} may not use the hybridnet agent socket"),
        ))
    } else {
        match tokio::time::timeout(read_timeout, read_frame_async(&mut s)).await {
            Err(_) => AgentResponse::err(CniError::decode(format!(
                "no complete request within {} s",
                read_timeout.as_secs()
            ))),
            Ok(Err(FrameError::Io(e))) => return Err(e),
            Ok(Err(e)) => AgentResponse::err(CniError::decode(format!(
                "request frame: {e} (limit {MAX_FRAME} bytes)"
            ))),
            Ok(Ok(body)) => match decode_request(&body) {
                Ok(req) => service.handle(req).await,
                Err(e) => AgentResponse::err(e),
            },
        }
    };
    write_response(&mut s, &response).await
}

/// Version first (so a newer plugin gets "incompatible version", not a decode error).
fn decode_request(body: &[u8]) -> Result<AgentRequest, CniError> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| CniError::decode(format!("request is not JSON: {e}")))?;
    match v.get("version").and_then(serde_json::Value::as_u64) {
        Some(n) if n == u64::from(PROTOCOL_VERSION) => {}
        Some(n) => return Err(version_mismatch(u32::try_from(n).unwrap_or(u32::MAX))),
        None => return Err(CniError::decode("request has no protocol version")),
    }
    serde_json::from_value(v).map_err(|e| CniError::decode(format!("request: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_decoded_version_first() {
        assert_eq!(decode_request(b"nope").unwrap_err().code, 6);
        assert_eq!(decode_request(br#"{"command":"ADD"}"#).unwrap_err().code, 6);
        assert_eq!(
            decode_request(br#"{"version":2,"command":"FLY"}"#)
                .unwrap_err()
                .code,
            1
        );
        assert_eq!(
            decode_request(br#"{"version":1,"command":"FLY"}"#)
                .unwrap_err()
                .code,
            6
        );
        let r = decode_request(br#"{"version":1,"command":"STATUS"}"#).unwrap();
        assert_eq!(r.command, AgentCommand::Status);
    }
}
