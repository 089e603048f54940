//! Leak detector: IPInstances whose pod is gone and that are not retained, Running pods without an
//! IPInstance, and drift between the in-memory IPAM and the IPInstances. Every finding must be
//! seen in two consecutive passes (so in-flight allocations are not mistaken for leaks); findings
//! are counted in metrics, reported as Events, and repaired where that is safe.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use hybridnet_api::kubevirt::MigrationPeer;
use hybridnet_api::leak::{BindingFacts, OwnerState, PodLookup, Verdict, classify, serves_pod};
use hybridnet_api::naming::instance_name_to_ip;
use hybridnet_api::v1::IPInstance;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use tracing::{info, warn};

use crate::controlplane::rules::defaults::PodDefaults;
use crate::controlplane::rules::objects::reserve_patch;
use crate::controlplane::rules::podstate::{
    is_handled, is_host_network, is_terminating, node_name,
};
use crate::controlplane::runtime::context::Ctx;
use hybridnet_api::selector::PodSelector;

pub const KIND_INSTANCE_WITHOUT_POD: &str = "ipinstance-without-pod";
pub const KIND_POD_WITHOUT_INSTANCE: &str = "pod-without-ipinstance";
pub const KIND_IPAM_DRIFT: &str = "ipam-drift";

/// What to do about a leaked IPInstance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Repair {
    /// Its pod is gone and nothing retains it: delete it (the IPInstance controller frees it).
    Delete,
    /// Its stateful pod is gone but it was never reserved: reserve it.
    Reserve,
}

/// A finding of one pass.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Finding {
    Instance {
        namespace: String,
        name: String,
        resource_version: String,
        repair: Repair,
    },
    PodWithoutInstance {
        namespace: String,
        name: String,
        uid: String,
    },
}

/// Finds leaked IPInstances and Running pods without addresses (pure).
pub fn find_leaks(
    instances: &[IPInstance],
    pods: &[Pod],
    cfg: &PodDefaults,
    selector: &PodSelector,
) -> Vec<Finding> {
    let pods_by_key: BTreeMap<(String, String), &Pod> = pods
        .iter()
        .map(|p| ((p.namespace().unwrap_or_default(), p.name_any()), p))
        .collect();
    let mut covered: HashSet<(String, String, Option<String>)> = HashSet::new();
    let mut out = Vec::new();
    for i in instances
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
    {
        let ns = i.namespace().unwrap_or_default();
        let b = BindingFacts::of(&i.spec);
        let stateful = b
            .owner_kind
            .is_some_and(|k| cfg.is_stateful_kind(k))
            // A gone owner's IPInstances are left to Kubernetes' garbage collection.
            .then_some(OwnerState::Unknown);
        let pod = b
            .pod_name
            .and_then(|name| pods_by_key.get(&(ns.clone(), name.to_string())));
        let target = MigrationPeer::of(i.metadata.annotations.as_ref());
        // The pods it gives an address: its bound pod, and a live migration's target pod.
        for name in b
            .pod_name
            .into_iter()
            .chain(target.as_ref().map(|t| t.pod.as_str()))
        {
            if let Some(p) = pods_by_key.get(&(ns.clone(), name.to_string()))
                && serves_pod(&b, target.as_ref(), name, p.metadata.uid.as_deref())
            {
                covered.insert((ns.clone(), name.to_string(), p.metadata.uid.clone()));
            }
        }
        let lookup = match pod {
            Some(p) => PodLookup::Exists {
                uid: p.metadata.uid.as_deref(),
            },
            None => PodLookup::Gone,
        };
        let repair = match classify(&b, lookup, stateful) {
            Verdict::Keep => None,
            Verdict::Reserve => Some(Repair::Reserve),
            Verdict::Leaked(_) => Some(Repair::Delete),
        };
        if let Some(repair) = repair {
            out.push(Finding::Instance {
                namespace: ns,
                name: i.name_any(),
                resource_version: i.resource_version().unwrap_or_default(),
                repair,
            });
        }
    }
    for p in pods {
        let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        if !running
            || is_terminating(p)
            || is_host_network(p)
            || node_name(p).is_none()
            || !is_handled(selector, p)
        {
            continue;
        }
        let key = (
            p.namespace().unwrap_or_default(),
            p.name_any(),
            p.metadata.uid.clone(),
        );
        if !covered.contains(&key) {
            out.push(Finding::PodWithoutInstance {
                namespace: key.0,
                name: key.1,
                uid: key.2.unwrap_or_default(),
            });
        }
    }
    out.sort();
    out
}

/// Addresses the IPAM holds without an IPInstance, and IPInstances the IPAM does not hold as
/// theirs (pure). Keys are (network, subnet, ip).
pub fn find_drift(
    held: &[(String, String, IpAddr, String, Option<String>)],
    instances: &[IPInstance],
) -> (Vec<(String, String, IpAddr)>, Vec<IPInstance>) {
    let mut by_ip: BTreeMap<(String, IpAddr), (String, Option<String>)> = BTreeMap::new();
    for (network, _subnet, ip, ns, pod) in held {
        by_ip.insert((network.clone(), *ip), (ns.clone(), pod.clone()));
    }
    let mut seen = BTreeSet::new();
    let mut missing_in_memory = Vec::new();
    for i in instances {
        let Some(ip) = instance_name_to_ip(&i.name_any()) else {
            continue;
        };
        seen.insert((i.spec.network.clone(), ip));
        if i.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = i.namespace().unwrap_or_default();
        match by_ip.get(&(i.spec.network.clone(), ip)) {
            Some((hns, hpod)) if *hns == ns && *hpod == i.spec.binding.pod_name => {}
            _ => missing_in_memory.push(i.clone()),
        }
    }
    let orphans = held
        .iter()
        .filter(|(n, _, ip, _, _)| !seen.contains(&(n.clone(), *ip)))
        .map(|(n, s, ip, _, _)| (n.clone(), s.clone(), *ip))
        .collect();
    (orphans, missing_in_memory)
}

/// State kept between passes.
#[derive(Default)]
pub struct LeakDetector {
    previous: HashSet<Finding>,
    previous_orphans: HashSet<(String, String, IpAddr)>,
    previous_missing: HashSet<(String, String, String)>,
}

impl LeakDetector {
    /// One pass: list from the API (IPInstances first, so every pod they name already existed),
    /// compare, report and repair what was also found in the previous pass.
    pub async fn pass(&mut self, ctx: &Arc<Ctx>) -> Result<usize, kube::Error> {
        let instances = Api::<IPInstance>::all(ctx.client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let pods = Api::<Pod>::all(ctx.client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let findings = find_leaks(
            &instances,
            &pods,
            &ctx.defaults().defaults,
            &ctx.config.pod_selector,
        );
        let now: HashSet<Finding> = findings.iter().cloned().collect();
        let confirmed: Vec<Finding> = findings
            .into_iter()
            .filter(|f| self.previous.contains(f))
            .collect();
        self.previous = now;
        let mut repaired = 0;
        for f in &confirmed {
            if ctx.ensure_leading().is_err() {
                return Ok(repaired);
            }
            match f {
                Finding::Instance {
                    namespace,
                    name,
                    repair,
                    ..
                } => {
                    ctx.metrics.leak_found(KIND_INSTANCE_WITHOUT_POD);
                    let api: Api<IPInstance> = Api::namespaced(ctx.client.clone(), namespace);
                    let res = match repair {
                        Repair::Delete => {
                            api.delete(name, &DeleteParams::default()).await.map(|_| ())
                        }
                        Repair::Reserve => api
                            .patch(
                                name,
                                &PatchParams::default(),
                                &Patch::Merge(reserve_patch(false)),
                            )
                            .await
                            .map(|_| ()),
                    };
                    match res {
                        Ok(()) => {
                            repaired += 1;
                            ctx.metrics.leak_repaired(KIND_INSTANCE_WITHOUT_POD);
                            info!(namespace, ipinstance = %name, ?repair, "repaired a leaked IPInstance");
                            if let Some(obj) = instances.iter().find(|i| {
                                i.name_any() == *name && i.namespace().as_deref() == Some(namespace)
                            }) {
                                let ev = Event {
                                    type_: EventType::Warning,
                                    reason: "IPLeakRepaired".into(),
                                    note: Some(format!(
                                        "IPInstance {namespace}/{name} outlived its pod {:?}; {}",
                                        obj.spec.binding.pod_name,
                                        match repair {
                                            Repair::Delete => "deleted it",
                                            Repair::Reserve =>
                                                "reserved it for the stateful workload",
                                        }
                                    )),
                                    action: "LeakRepair".into(),
                                    secondary: None,
                                };
                                let _ = ctx.recorder.publish(&ev, &obj.object_ref(&())).await;
                            }
                        }
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        Err(e) => {
                            warn!(namespace, ipinstance = %name, error = %e, "could not repair a leaked IPInstance")
                        }
                    }
                }
                Finding::PodWithoutInstance {
                    namespace, name, ..
                } => {
                    ctx.metrics.leak_found(KIND_POD_WITHOUT_INSTANCE);
                    if let Some(p) = pods.iter().find(|p| {
                        p.name_any() == *name && p.namespace().as_deref() == Some(namespace)
                    }) {
                        ctx.pod_event(
                            p,
                            EventType::Warning,
                            "IPAllocationMissing",
                            "the pod is Running but has no IPInstance; allocating again".into(),
                        );
                    }
                    ctx.pod_records().remove(&(namespace.clone(), name.clone()));
                    if ctx
                        .pod_requeue
                        .send(ObjectRef::new(name).within(namespace))
                        .is_ok()
                    {
                        repaired += 1;
                        ctx.metrics.leak_repaired(KIND_POD_WITHOUT_INSTANCE);
                    }
                }
            }
        }
        repaired += self.drift(ctx, &instances);
        Ok(repaired)
    }

    fn drift(&mut self, ctx: &Arc<Ctx>, instances: &[IPInstance]) -> usize {
        let held: Vec<(String, String, IpAddr, String, Option<String>)> = ctx
            .engine()
            .held_ips()
            .into_iter()
            .map(|h| (h.network, h.subnet, h.ip, h.namespace, h.pod))
            .collect();
        let (orphans, missing) = find_drift(&held, instances);
        let now_orphans: HashSet<_> = orphans.iter().cloned().collect();
        let now_missing: HashSet<(String, String, String)> = missing
            .iter()
            .map(|i| {
                (
                    i.namespace().unwrap_or_default(),
                    i.name_any(),
                    i.resource_version().unwrap_or_default(),
                )
            })
            .collect();
        let mut repaired = 0;
        {
            let mut engine = ctx.engine();
            for o in orphans
                .iter()
                .filter(|o| self.previous_orphans.contains(*o))
            {
                warn!(network = %o.0, subnet = %o.1, ip = %o.2, "IPAM held an address without IPInstance; freeing it");
                engine.release(&o.0, &o.1, o.2);
                ctx.metrics.leak_found(KIND_IPAM_DRIFT);
                ctx.metrics.leak_repaired(KIND_IPAM_DRIFT);
                repaired += 1;
            }
            for i in &missing {
                let key = (
                    i.namespace().unwrap_or_default(),
                    i.name_any(),
                    i.resource_version().unwrap_or_default(),
                );
                if self.previous_missing.contains(&key) {
                    warn!(ipinstance = %key.1, namespace = %key.0, "IPAM did not hold an IPInstance's address; recording it");
                    engine.observe(i);
                    ctx.metrics.leak_found(KIND_IPAM_DRIFT);
                    ctx.metrics.leak_repaired(KIND_IPAM_DRIFT);
                    repaired += 1;
                }
            }
        }
        if repaired > 0 {
            ctx.notify_ipam_changed();
        }
        self.previous_orphans = now_orphans;
        self.previous_missing = now_missing;
        repaired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridnet_api::v1::{Binding, IPInstanceSpec, ReferredObject};
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};

    fn inst(
        ns: &str,
        ip: &str,
        pod: &str,
        uid: Option<&str>,
        node: Option<&str>,
        kind: &str,
    ) -> IPInstance {
        let mut i = IPInstance::new(
            &hybridnet_api::naming::ip_to_instance_name(ip.parse().unwrap()),
            IPInstanceSpec {
                network: "n".into(),
                subnet: "s".into(),
                binding: Binding {
                    referred_object: Some(ReferredObject {
                        kind: Some(kind.into()),
                        ..Default::default()
                    }),
                    node_name: node.map(String::from),
                    pod_uid: uid.map(String::from),
                    pod_name: Some(pod.into()),
                    stateful: None,
                },
                ..Default::default()
            },
        );
        i.metadata.namespace = Some(ns.into());
        i
    }

    fn pod(ns: &str, name: &str, uid: &str, phase: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(uid.into());
        p.spec = Some(PodSpec {
            node_name: Some("n1".into()),
            ..Default::default()
        });
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        p
    }

    #[test]
    fn leaks_and_non_leaks() {
        let cfg = PodDefaults::default();
        let instances = vec![
            inst("a", "10.0.0.1", "ok", Some("u1"), Some("n1"), "Pod"),
            inst("a", "10.0.0.2", "gone", Some("u2"), Some("n1"), "Pod"),
            inst("a", "10.0.0.3", "web-0", None, None, "StatefulSet"),
            inst(
                "a",
                "10.0.0.4",
                "web-1",
                Some("u4"),
                Some("n1"),
                "StatefulSet",
            ),
            inst("a", "10.0.0.5", "reused", Some("old"), Some("n1"), "Pod"),
        ];
        let pods = vec![
            pod("a", "ok", "u1", "Running"),
            pod("a", "reused", "new", "Running"),
            pod("a", "bare", "u9", "Running"),
            pod("a", "pending", "u8", "Pending"),
        ];
        let f = find_leaks(&instances, &pods, &cfg, &PodSelector::everything());
        let names: Vec<(String, Option<Repair>)> = f
            .iter()
            .map(|x| match x {
                Finding::Instance { name, repair, .. } => (name.clone(), Some(repair.clone())),
                Finding::PodWithoutInstance { name, .. } => (name.clone(), None),
            })
            .collect();
        assert!(
            names.contains(&("10-0-0-2".into(), Some(Repair::Delete))),
            "{names:?}"
        );
        assert!(
            names.contains(&("10-0-0-4".into(), Some(Repair::Reserve))),
            "{names:?}"
        );
        assert!(
            names.contains(&("10-0-0-5".into(), Some(Repair::Delete))),
            "{names:?}"
        );
        assert!(names.contains(&("bare".into(), None)), "{names:?}");
        assert!(names.contains(&("reused".into(), None)), "{names:?}");
        assert_eq!(names.len(), 5, "{names:?}");
    }

    #[test]
    fn a_live_migrations_target_pod_has_the_vms_address() {
        let cfg = PodDefaults::default();
        let mut vm = inst(
            "a",
            "10.0.0.1",
            "src",
            Some("u1"),
            Some("n1"),
            "VirtualMachine",
        );
        let target = hybridnet_api::kubevirt::MigrationPeer {
            pod: "dst".into(),
            uid: "u2".into(),
            node: "n2".into(),
        };
        vm.metadata.annotations = Some(
            [(
                hybridnet_api::kubevirt::MIGRATION_PEER_ANNOTATION.to_string(),
                target.to_annotation(),
            )]
            .into(),
        );
        let pods = vec![
            pod("a", "src", "u1", "Running"),
            pod("a", "dst", "u2", "Running"),
        ];
        let sel = PodSelector::everything();
        assert_eq!(
            find_leaks(std::slice::from_ref(&vm), &pods, &cfg, &sel),
            vec![]
        );
        // A recreated pod of the target's name is not served; nor is anyone without the mark.
        let recreated = vec![
            pod("a", "src", "u1", "Running"),
            pod("a", "dst", "u3", "Running"),
        ];
        assert_eq!(
            find_leaks(std::slice::from_ref(&vm), &recreated, &cfg, &sel),
            vec![Finding::PodWithoutInstance {
                namespace: "a".into(),
                name: "dst".into(),
                uid: "u3".into(),
            }]
        );
        let mut hostile = vm.clone();
        hostile.metadata.annotations = Some(
            [(
                hybridnet_api::kubevirt::MIGRATION_PEER_ANNOTATION.to_string(),
                r#"{"pod":"dst","uid":"u2","node":"../n2"}"#.to_string(),
            )]
            .into(),
        );
        assert_eq!(find_leaks(&[hostile], &pods, &cfg, &sel).len(), 1);
    }

    #[test]
    fn pods_outside_the_selector_are_not_missing_addresses() {
        let mut chosen = pod("a", "chosen", "u1", "Running");
        chosen.metadata.labels = Some([("hybridnet".to_string(), "yes".to_string())].into());
        let other = pod("a", "other", "u2", "Running");
        let pods = vec![chosen, other];
        let selector = hybridnet_api::selector::parse("hybridnet=yes").unwrap();
        let f = find_leaks(&[], &pods, &PodDefaults::default(), &selector);
        assert_eq!(
            f,
            vec![Finding::PodWithoutInstance {
                namespace: "a".into(),
                name: "chosen".into(),
                uid: "u1".into(),
            }]
        );
        let all = find_leaks(
            &[],
            &pods,
            &PodDefaults::default(),
            &PodSelector::everything(),
        );
        assert_eq!(all.len(), 2, "{all:?}");
    }

    #[test]
    fn drift_both_ways() {
        let held = vec![
            (
                "n".to_string(),
                "s".to_string(),
                "10.0.0.1".parse().unwrap(),
                "a".to_string(),
                Some("ok".to_string()),
            ),
            (
                "n".to_string(),
                "s".to_string(),
                "10.0.0.9".parse().unwrap(),
                "a".to_string(),
                Some("x".to_string()),
            ),
        ];
        let instances = vec![
            inst("a", "10.0.0.1", "ok", Some("u1"), Some("n1"), "Pod"),
            inst("a", "10.0.0.2", "other", Some("u2"), Some("n1"), "Pod"),
        ];
        let (orphans, missing) = find_drift(&held, &instances);
        assert_eq!(
            orphans,
            vec![(
                "n".to_string(),
                "s".to_string(),
                "10.0.0.9".parse().unwrap()
            )]
        );
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].name_any(), "10-0-0-2");
    }
}
