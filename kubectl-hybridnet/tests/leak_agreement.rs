//! The operator's leak repair and `kubectl hybridnet ip check` judge the same objects alike: every
//! combination of binding (reserved or not, pod name, pod uid, owner kind) and pod (gone, same
//! uid, other uid) goes through both, and they must delete the same IPInstances and report the
//! same pods without an address. Both apply `hybridnet_api::leak`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::BTreeSet;

use hybridnet_api::naming::ip_to_instance_name;
use hybridnet_api::selector::PodSelector;
use hybridnet_api::v1::{Binding, IPInstance, IPInstanceSpec, ReferredObject};
use hybridnet_operator::controlplane::controllers::leak::{Finding, Repair, find_leaks};
use hybridnet_operator::controlplane::rules::defaults::PodDefaults;
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use kubectl_hybridnet::check::{CheckInput, FindingKind, check};
use kubectl_hybridnet::inventory::{InstanceFacts, PodFacts};

fn instance(
    ns: &str,
    n: usize,
    reserved: bool,
    pod: Option<&str>,
    uid: Option<&str>,
    kind: Option<&str>,
) -> IPInstance {
    let ip: std::net::IpAddr = format!("198.18.{}.{}", n / 200, n % 200 + 10)
        .parse()
        .unwrap();
    let mut i = IPInstance::new(
        &ip_to_instance_name(ip),
        IPInstanceSpec {
            network: "net".into(),
            subnet: "s1".into(),
            binding: Binding {
                referred_object: kind.map(|k| ReferredObject {
                    kind: Some(k.into()),
                    name: Some("web".into()),
                    ..Default::default()
                }),
                node_name: (!reserved).then(|| "n1".to_string()),
                pod_uid: uid.map(String::from),
                pod_name: pod.map(String::from),
                stateful: None,
            },
            ..Default::default()
        },
    );
    i.spec.address.ip = format!("{ip}/16");
    i.metadata.namespace = Some(ns.into());
    i
}

fn pod(ns: &str, uid: &str) -> Pod {
    let mut p = Pod::default();
    p.metadata.namespace = Some(ns.into());
    p.metadata.name = Some("p".into());
    p.metadata.uid = Some(uid.into());
    p.spec = Some(PodSpec {
        node_name: Some("n1".into()),
        ..Default::default()
    });
    p.status = Some(PodStatus {
        phase: Some("Running".into()),
        ..Default::default()
    });
    p
}

#[test]
fn operator_and_cli_agree_on_leaks_and_pods_without_address() {
    let mut instances = Vec::new();
    let mut pods = Vec::new();
    let mut n = 0;
    for reserved in [false, true] {
        for pod_name in [None, Some("p")] {
            for uid in [None, Some("u1")] {
                for kind in [
                    None,
                    Some("Pod"),
                    Some("StatefulSet"),
                    Some("VirtualMachine"),
                ] {
                    for pod_uid in [None, Some("u1"), Some("u2")] {
                        let ns = format!("c{n}");
                        instances.push(instance(&ns, n, reserved, pod_name, uid, kind));
                        if let Some(u) = pod_uid {
                            pods.push(pod(&ns, u));
                        }
                        n += 1;
                    }
                }
            }
        }
    }
    let defaults = PodDefaults::default();
    assert!(defaults.is_stateful_kind("StatefulSet"));
    let operator = find_leaks(&instances, &pods, &defaults, &PodSelector::everything());
    let mut op_deleted = BTreeSet::new();
    let mut op_without = BTreeSet::new();
    for f in &operator {
        match f {
            Finding::Instance {
                namespace,
                name,
                repair: Repair::Delete,
                ..
            } => {
                op_deleted.insert((namespace.clone(), name.clone()));
            }
            Finding::Instance { .. } => {}
            Finding::PodWithoutInstance {
                namespace, name, ..
            } => {
                op_without.insert(format!("pod/{namespace}/{name}"));
            }
        }
    }

    // The CLI sees every StatefulSet as existing: the operator does not look (garbage collection
    // removes a gone StatefulSet's IPInstances).
    let input = CheckInput {
        instances: instances
            .iter()
            .map(InstanceFacts::from_ipinstance)
            .collect(),
        pods: pods.iter().map(PodFacts::from_pod).collect(),
        statefulsets: (0..n)
            .map(|i| ((format!("c{i}"), "web".to_string()), None))
            .collect(),
        stateful_kinds: vec!["StatefulSet".into()],
        ..Default::default()
    };
    let report = check(&input);
    let cli_deleted: BTreeSet<(String, String)> = report.fixes.iter().cloned().collect();
    let cli_without: BTreeSet<String> = report
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::PodWithoutAddress)
        .map(|f| f.object.clone())
        .collect();

    assert_eq!(op_deleted, cli_deleted);
    assert_eq!(op_without, cli_without);
    // The matrix exercises both answers.
    assert!(!op_deleted.is_empty() && op_deleted.len() < instances.len());
    assert!(!op_without.is_empty() && op_without.len() < pods.len());
    // The case the two once disagreed on: reserved, no stateful owner, pod exists.
    let disputed = instance("c0", 0, true, Some("p"), None, Some("Pod"));
    let key = |i: &IPInstance| {
        (
            i.metadata.namespace.clone().unwrap_or_default(),
            i.metadata.name.clone().unwrap_or_default(),
        )
    };
    let same: Vec<&IPInstance> = instances
        .iter()
        .filter(|i| i.spec.binding == disputed.spec.binding)
        .collect();
    assert!(
        same.iter().all(|i| op_deleted.contains(&key(i))),
        "{same:?}"
    );
}
