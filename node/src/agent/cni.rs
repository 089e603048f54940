//! The agent's side of the CNI server: pod addresses from the IPInstance watch cache, pod MTU from
//! the plan, readiness, BGP reachability, and CNI request metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hybridnet_api::constants::label;
use hybridnet_api::naming::pod_name_label_value;
use hybridnet_api::v1::IPInstance;
use hybridnet_cni::{AgentCommand, PodRef};

use super::{Caches, Shared};
use crate::cniserver::{
    AttachmentEvent, CniObserver, IpInstanceLookup, PodAddressing, ReadinessFuture,
};

/// [`IpInstanceLookup`] over the agent's caches.
pub struct AgentLookup {
    /// Reads the pod (its `ip-family` annotation) at ADD.
    pub client: kube::Client,
    pub caches: Caches,
    pub node_name: String,
    pub shared: Arc<Shared>,
    /// Write IPInstance status after ADD (`--update-ipinstance-status`).
    pub update_ipinstance_status: bool,
    /// The status writes still running (a shutdown waits for them).
    pub writes: Arc<BackgroundWrites>,
    /// Events on pods whose ADD failed (reporting controller `hybridnet-node`, instance the
    /// node); it deduplicates: one Event per pod and reason, `series.count` raised on repeats.
    pub recorder: kube::runtime::events::Recorder,
}

/// The reporter of the agent's Events (also those on NetworkPolicies, `agent::policy`).
pub fn event_reporter(node: &str) -> kube::runtime::events::Reporter {
    kube::runtime::events::Reporter {
        controller: "hybridnet-node".into(),
        instance: Some(node.to_string()),
    }
}

/// The reference an Event on `pod` points at (the UID when the runtime passed it).
pub fn pod_reference(pod: &PodRef) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(pod.namespace.clone()),
        name: Some(pod.name.clone()),
        uid: pod.uid.clone(),
        ..Default::default()
    }
}

/// Writes a CNI request started and that outlive its answer (the IPInstance status); the
/// agent's shutdown waits for them after the CNI server drained.
#[derive(Debug, Default)]
pub struct BackgroundWrites {
    running: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Counts one write as running until dropped (also when the write panics).
struct Running(Arc<BackgroundWrites>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl BackgroundWrites {
    pub fn spawn(self: &Arc<Self>, write: impl std::future::Future<Output = ()> + Send + 'static) {
        self.running.fetch_add(1, Ordering::SeqCst);
        let running = Running(self.clone());
        tokio::spawn(async move {
            let _running = running;
            write.await;
        });
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Returns once no write runs.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.running() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// The IPInstance status upstream's daemon writes at ADD (pkg/daemon/server in alibaba/hybridnet;
/// fields of `IPInstanceStatus` in pkg/apis/networking/v1/ipinstance_types.go), as a merge patch.
pub fn ipinstance_status_patch(
    node: &str,
    pod: &PodRef,
    sandbox_id: &str,
    now: &str,
) -> serde_json::Value {
    serde_json::json!({"status": {
        "nodeName": node,
        "podName": pod.name,
        "podNamespace": pod.namespace,
        "sandboxID": sandbox_id,
        "updateTimestamp": now,
    }})
}

/// The non-terminating IPInstances of `pod` bound to `node` (by the node label, or the binding
/// when unlabelled), pod matched by the label value upstream writes (hashed for long names) or
/// the binding's pod name. Without any, those that name `pod` on `node` as a KubeVirt live
/// migration's target ([`migration_peer_instances`]).
pub fn pod_instances_on_node(all: &[Arc<IPInstance>], node: &str, pod: &PodRef) -> Vec<IPInstance> {
    let bound = bound_instances_on_node(all, node, pod);
    if bound.is_empty() {
        return migration_peer_instances(all, node, pod);
    }
    bound
}

/// The non-terminating IPInstances that name `pod` (with its uid, when known) on `node` as the
/// target of a KubeVirt VM's live migration while another pod holds them
/// (`hybridnet_api::kubevirt::MIGRATION_PEER_ANNOTATION`), as the target sees them: bound to
/// it (pod name and uid, node), everything else (address, MAC, network) as written.
pub fn migration_peer_instances(
    all: &[Arc<IPInstance>],
    node: &str,
    pod: &PodRef,
) -> Vec<IPInstance> {
    all.iter()
        .filter(|i| i.metadata.namespace.as_deref() == Some(pod.namespace.as_str()))
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .filter_map(|i| {
            let t = hybridnet_api::kubevirt::MigrationPeer::of(i.metadata.annotations.as_ref())?;
            if t.node != node || !t.names_pod(&pod.name, pod.uid.as_deref()) {
                return None;
            }
            let mut seen = (**i).clone();
            seen.spec.binding.pod_name = Some(t.pod);
            seen.spec.binding.pod_uid = Some(t.uid);
            seen.spec.binding.node_name = Some(node.to_string());
            Some(seen)
        })
        .collect()
}

fn bound_instances_on_node(all: &[Arc<IPInstance>], node: &str, pod: &PodRef) -> Vec<IPInstance> {
    let pod_label = pod_name_label_value(&pod.name);
    all.iter()
        .filter(|i| i.metadata.namespace.as_deref() == Some(pod.namespace.as_str()))
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .filter(|i| {
            let labels = i.metadata.labels.as_ref();
            let on_node = labels
                .and_then(|l| l.get(label::NODE))
                .map(String::as_str)
                .or(i.spec.binding.node_name.as_deref())
                == Some(node);
            let of_pod = labels.and_then(|l| l.get(label::POD)) == Some(&pod_label)
                || i.spec.binding.pod_name.as_deref() == Some(pod.name.as_str());
            on_node && of_pod
        })
        .map(|i| (**i).clone())
        .collect()
}

impl IpInstanceLookup for AgentLookup {
    fn pod_instances(&self, pod: &PodRef) -> Vec<IPInstance> {
        pod_instances_on_node(&self.caches.ip_instances.state(), &self.node_name, pod)
    }

    fn migration_peer(&self, pod: &PodRef) -> bool {
        let all = self.caches.ip_instances.state();
        bound_instances_on_node(&all, &self.node_name, pod).is_empty()
            && !migration_peer_instances(&all, &self.node_name, pod).is_empty()
    }

    fn network_mtu(&self, network: &str) -> Option<u32> {
        let is_overlay = self.caches.networks.state().iter().any(|n| {
            n.metadata.name.as_deref() == Some(network)
                && n.spec.effective_type() == hybridnet_api::v1::NetworkType::Overlay
        });
        let mtu = self.shared.vxlan_mtu.load(Ordering::SeqCst);
        (is_overlay && mtu > 0).then_some(mtu)
    }

    fn ready(&self) -> Result<(), String> {
        self.shared.readiness()
    }

    fn attached(&self, event: &AttachmentEvent) {
        // The new veth gets its local-direct route checked and the pod its nft set entries.
        self.shared.trigger.notify_one();
        // A live migration's target: the status stays the source's (which holds the binding).
        if !self.update_ipinstance_status || self.migration_peer(&event.pod) {
            return;
        }
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let body = ipinstance_status_patch(&self.node_name, &event.pod, &event.container_id, &now);
        let api: kube::Api<IPInstance> =
            kube::Api::namespaced(self.client.clone(), &event.pod.namespace);
        let names = event.addressing.instances.clone();
        let pod = event.pod.to_string();
        // Informational (nothing of ours reads it): written after the ADD answered, never
        // failing it; a shutdown waits for it.
        self.writes.spawn(async move {
            for name in names {
                if let Err(e) = api
                    .patch_status(
                        &name,
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(&body),
                    )
                    .await
                {
                    tracing::warn!(%pod, ipinstance = %name, error = %e,
                        "could not write the IPInstance status");
                }
            }
        });
    }

    fn detached(&self, _pod: &PodRef, _container_id: &str) {
        self.shared.trigger.notify_one();
    }

    fn add_failed(
        &self,
        pod: &PodRef,
        failure: crate::cniserver::events::AddFailure,
        error: &hybridnet_cni::CniError,
    ) {
        let ev = crate::cniserver::events::pod_event(failure, error);
        let event = kube::runtime::events::Event {
            type_: kube::runtime::events::EventType::Warning,
            reason: ev.reason.into(),
            note: Some(ev.note),
            action: crate::cniserver::events::ACTION.into(),
            secondary: None,
        };
        let reference = pod_reference(pod);
        let recorder = self.recorder.clone();
        let pod = pod.to_string();
        // Best effort, after the ADD answered; a shutdown waits for it.
        self.writes.spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(%pod, reason = %event.reason, error = %e,
                    "could not publish the Event on the pod");
            }
        });
    }

    fn vlan_check_targets(
        &self,
        addressing: &PodAddressing,
    ) -> Vec<crate::cniserver::vlancheck::VlanTarget> {
        let subnets = match self.shared.vlan_subnets.read() {
            Ok(g) => g.clone(),
            Err(_) => return Vec::new(),
        };
        subnets.targets(
            addressing
                .ipv4
                .map(std::net::IpAddr::V4)
                .into_iter()
                .chain(addressing.ipv6.map(std::net::IpAddr::V6)),
        )
    }

    fn expected_addresses<'a>(&'a self, pod: &'a PodRef) -> crate::cniserver::ExpectedFuture<'a> {
        Box::pin(async move {
            let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
                kube::Api::namespaced(self.client.clone(), &pod.namespace);
            let p = api.get_opt(&pod.name).await.ok().flatten()?;
            let family = p
                .metadata
                .annotations
                .as_ref()?
                .get(hybridnet_api::constants::annotation::IP_FAMILY)?;
            hybridnet_api::operator::IpFamily::parse_case_insensitive(family)
                .map(|f| f.versions().len())
        })
    }

    fn wait_pod_reachable<'a>(&'a self, addressing: &'a PodAddressing) -> ReadinessFuture<'a> {
        let bgp = self.shared.bgp.clone();
        Box::pin(async move { bgp.wait_pod_reachable(addressing).await })
    }
}

/// Records CNI requests in the agent's metrics.
pub struct MetricsObserver(pub Arc<Shared>);

impl CniObserver for MetricsObserver {
    fn started(&self, _command: AgentCommand) {
        self.0.metrics.cni_started();
    }

    fn observe(&self, command: AgentCommand, elapsed: Duration, error_code: Option<u32>) {
        let name = match command {
            AgentCommand::Add => "ADD",
            AgentCommand::Del => "DEL",
            AgentCommand::Check => "CHECK",
            AgentCommand::Status => "STATUS",
            AgentCommand::Gc => "GC",
        };
        self.0.metrics.observe_cni(name, elapsed, error_code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridnet_api::v1::{Address, Binding, IPInstanceSpec, IpVersion};
    use std::collections::BTreeMap;

    fn ipi(ns: &str, name: &str, pod: &str, node: &str, terminating: bool) -> Arc<IPInstance> {
        let mut i = IPInstance::new(
            name,
            IPInstanceSpec {
                network: "n".into(),
                subnet: "s".into(),
                address: Address {
                    version: IpVersion::V4,
                    ip: "198.19.0.5".into(),
                    gateway: None,
                    net_id: None,
                    mac: "02:00:00:00:00:01".into(),
                },
                binding: Binding {
                    node_name: Some(node.into()),
                    pod_name: Some(pod.into()),
                    ..Default::default()
                },
            },
        );
        i.metadata.namespace = Some(ns.into());
        i.metadata.labels = Some(BTreeMap::from([
            (label::NODE.to_string(), node.to_string()),
            (label::POD.to_string(), pod_name_label_value(pod)),
        ]));
        if terminating {
            i.metadata.deletion_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
            );
        }
        Arc::new(i)
    }

    #[test]
    fn selects_by_namespace_node_pod_and_liveness() {
        let long = "p".repeat(80);
        let all = vec![
            ipi("a", "1", "web", "n1", false),
            ipi("a", "2", "web", "n2", false),
            ipi("b", "3", "web", "n1", false),
            ipi("a", "4", "web", "n1", true),
            ipi("a", "5", "db", "n1", false),
            ipi("a", "6", &long, "n1", false),
        ];
        let pod = |ns: &str, n: &str| PodRef {
            namespace: ns.into(),
            name: n.into(),
            uid: None,
        };
        let names = |v: Vec<IPInstance>| {
            v.into_iter()
                .filter_map(|i| i.metadata.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(pod_instances_on_node(&all, "n1", &pod("a", "web"))),
            ["1"]
        );
        assert_eq!(
            names(pod_instances_on_node(&all, "n1", &pod("a", &long))),
            ["6"]
        );
        assert!(pod_instances_on_node(&all, "n3", &pod("a", "web")).is_empty());
        assert!(pod_instances_on_node(&all, "n1", &pod("a/../b", "web")).is_empty());
    }
}

#[cfg(test)]
mod migration_tests {
    use super::*;
    use hybridnet_api::kubevirt::{MIGRATION_PEER_ANNOTATION, MigrationPeer};
    use hybridnet_api::v1::{Address, Binding, IPInstanceSpec, IpVersion};
    use std::collections::BTreeMap;

    fn shared(annotation: Option<String>) -> Arc<IPInstance> {
        let mut i = IPInstance::new(
            "192-168-56-2",
            IPInstanceSpec {
                network: "u1".into(),
                subnet: "u1-sub".into(),
                address: Address {
                    version: IpVersion::V4,
                    ip: "192.168.56.2/24".into(),
                    gateway: Some("192.168.56.1".into()),
                    net_id: None,
                    mac: "02:12:34:aa:bb:cc".into(),
                },
                binding: Binding {
                    node_name: Some("n1".into()),
                    pod_name: Some("src".into()),
                    pod_uid: Some("u1".into()),
                    ..Default::default()
                },
            },
        );
        i.metadata.namespace = Some("default".into());
        i.metadata.labels = Some(BTreeMap::from([
            (label::NODE.to_string(), "n1".to_string()),
            (label::POD.to_string(), "src".to_string()),
        ]));
        i.metadata.annotations =
            annotation.map(|a| BTreeMap::from([(MIGRATION_PEER_ANNOTATION.to_string(), a)]));
        Arc::new(i)
    }

    fn pod(name: &str, uid: Option<&str>) -> PodRef {
        PodRef {
            namespace: "default".into(),
            name: name.into(),
            uid: uid.map(String::from),
        }
    }

    #[test]
    fn a_migration_peer_gets_its_vms_address_and_mac_on_its_node_only() {
        let t = MigrationPeer {
            pod: "dst".into(),
            uid: "u2".into(),
            node: "n2".into(),
        };
        let all = vec![shared(Some(t.to_annotation()))];
        for uid in [Some("u2"), None] {
            let got = pod_instances_on_node(&all, "n2", &pod("dst", uid));
            assert_eq!(got.len(), 1);
            let b = &got[0].spec.binding;
            assert_eq!(
                (
                    b.pod_name.as_deref(),
                    b.pod_uid.as_deref(),
                    b.node_name.as_deref()
                ),
                (Some("dst"), Some("u2"), Some("n2"))
            );
            // Address and MAC as the source has them.
            assert_eq!(got[0].spec.address, all[0].spec.address);
            let mine = crate::cniserver::addressing::matching_instances(&pod("dst", uid), &got);
            let a = crate::cniserver::addressing::pod_addressing(&pod("dst", uid), &mine).unwrap();
            assert_eq!(a.ipv4, Some("192.168.56.2".parse().unwrap()));
            assert_eq!(a.mac, [0x02, 0x12, 0x34, 0xaa, 0xbb, 0xcc]);
        }
        // Not on another node, not for another incarnation or pod; the source keeps its own.
        assert!(pod_instances_on_node(&all, "n1", &pod("dst", Some("u2"))).is_empty());
        assert!(pod_instances_on_node(&all, "n2", &pod("dst", Some("u3"))).is_empty());
        assert!(pod_instances_on_node(&all, "n2", &pod("other", None)).is_empty());
        let src = pod_instances_on_node(&all, "n1", &pod("src", Some("u1")));
        assert_eq!(src[0].spec.binding.node_name.as_deref(), Some("n1"));
        assert_eq!(src[0].spec.binding.pod_name.as_deref(), Some("src"));
    }

    #[test]
    fn malformed_or_absent_marks_share_nothing() {
        for a in [
            None,
            Some(String::new()),
            Some("dst".to_string()),
            Some(r#"{"pod":"dst","uid":"u2","node":"n2/../n1"}"#.to_string()),
            Some(r#"{"pod":"dst","uid":"u2"}"#.to_string()),
        ] {
            let all = vec![shared(a.clone())];
            assert!(
                pod_instances_on_node(&all, "n2", &pod("dst", Some("u2"))).is_empty(),
                "{a:?}"
            );
        }
    }
}

#[cfg(test)]
mod status_tests {
    use super::*;

    #[test]
    fn status_patch_has_upstreams_fields() {
        let pod = PodRef {
            namespace: "default".into(),
            name: "web-0".into(),
            uid: None,
        };
        let p = ipinstance_status_patch("node1", &pod, "c0ffee", "2026-01-01T00:00:00Z");
        assert_eq!(
            p,
            serde_json::json!({"status": {"nodeName": "node1", "podName": "web-0",
                "podNamespace": "default", "sandboxID": "c0ffee",
                "updateTimestamp": "2026-01-01T00:00:00Z"}})
        );
        // The keys are the IPInstanceStatus fields of our type (and upstream's CRD).
        let st: hybridnet_api::v1::IPInstanceStatus =
            serde_json::from_value(p["status"].clone()).unwrap();
        assert_eq!(st.sandbox_id.as_deref(), Some("c0ffee"));
    }
}

#[cfg(test)]
mod writes_tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_waits_for_every_background_write() {
        let w = Arc::new(BackgroundWrites::default());
        w.wait_idle().await;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        w.spawn(async move {
            let _ = rx.await;
            d.fetch_add(1, Ordering::SeqCst);
        });
        w.spawn(async { panic!("a write that panics still ends") });
        assert!(w.running() >= 1);
        let waiter = tokio::spawn({
            let w = w.clone();
            async move { w.wait_idle().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("idle after the writes ended")
            .unwrap();
        assert_eq!(done.load(Ordering::SeqCst), 1);
        assert_eq!(w.running(), 0);
    }
}
