//! Pod admission: the mutation of upstream `pkg/webhook/mutating/pod.go` and the checks of
//! `pkg/webhook/validating/pod.go`.

use std::collections::BTreeMap;
use std::sync::Arc;

use hybridnet_api::FieldErrors;
use hybridnet_api::constants::{annotation, label, taint};
use hybridnet_api::operator::IpFamily;
use hybridnet_api::resolve::PodNetworkConfig;
use hybridnet_api::v1::{IPInstance, NetworkType};
use hybridnet_api::validate::{self, PodCheckInput};
use k8s_openapi::api::core::v1::{Namespace, Pod, Toleration};
use tracing::warn;

use super::WebhookState;
use crate::controlplane::rules::podstate::is_host_network;
use crate::controlplane::rules::resolution::{
    ipinstances_of_pod_name, resolve_for_pod, webhook_vm_ipinstances,
};

/// The Namespace of a pod under review (cache, else API:
/// `Caches::namespace_or_live`). `None` when it cannot be read.
pub async fn pod_namespace(st: &WebhookState, ns: &str) -> Option<Arc<Namespace>> {
    match st.caches.namespace_or_live(&st.client, ns).await {
        Ok(n) => n,
        Err(e) => {
            warn!(namespace = ns, error = %e, "cannot read the pod's Namespace: resolving without its annotations");
            None
        }
    }
}

/// The namespace a pod under review is created in.
pub fn review_namespace<'a>(pod: &'a Pod, namespace: Option<&'a str>) -> &'a str {
    pod.metadata
        .namespace
        .as_deref()
        .or(namespace)
        .unwrap_or("default")
}

fn resolve(
    st: &WebhookState,
    pod: &Pod,
    namespace: Option<&str>,
    namespace_obj: Option<&Namespace>,
) -> Result<(PodNetworkConfig, Vec<IPInstance>), FieldErrors> {
    let ns = review_namespace(pod, namespace);
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let defaults = st.defaults.current();
    let all = st.caches.ipinstances.state();
    let ipis = if name.is_empty() {
        Vec::new()
    } else {
        ipinstances_of_pod_name(ns, name, all.iter().map(|a| a.as_ref()))
    };
    let vm_ipis =
        webhook_vm_ipinstances(pod, ns, &defaults.defaults, all.iter().map(|a| a.as_ref()));
    let config = resolve_for_pod(
        pod,
        namespace_obj,
        &defaults.defaults,
        &st.caches.networks(),
        &st.caches.subnets(),
        &ipis,
        &vm_ipis,
    )
    .map_err(FieldErrors::from)?;
    Ok((config, ipis))
}

/// Pod CREATE validation (upstream `pkg/webhook/validating/pod.go`). hostNetwork pods are always allowed.
pub fn check_pod(
    st: &WebhookState,
    pod: &Pod,
    namespace: Option<&str>,
    namespace_obj: Option<&Namespace>,
) -> Result<(), FieldErrors> {
    if is_host_network(pod) {
        return Ok(());
    }
    let (config, ipis) = resolve(st, pod, namespace, namespace_obj)?;
    let empty = BTreeMap::new();
    let networks = st.caches.networks();
    validate::pod_create(&PodCheckInput {
        pod_name: pod.metadata.name.as_deref().unwrap_or(""),
        pod_annotations: pod.metadata.annotations.as_ref().unwrap_or(&empty),
        config: &config,
        pod_ipinstances: &ipis,
        networks: &networks,
    })
}

/// The toleration every hostNetwork pod gets, so it runs on nodes in no network.
pub fn network_unavailable_toleration() -> Toleration {
    Toleration {
        key: Some(taint::NETWORK_UNAVAILABLE.to_string()),
        operator: Some("Exists".to_string()),
        effect: Some("NoSchedule".to_string()),
        ..Default::default()
    }
}

/// The pod as the mutating webhook leaves it (pure; upstream `pkg/webhook/mutating/pod.go`).
pub fn mutated_pod(pod: &Pod, config: Option<&PodNetworkConfig>) -> Pod {
    let mut out = pod.clone();
    let Some(spec) = out.spec.as_mut() else {
        return out;
    };
    if spec.host_network.unwrap_or(false) {
        let tol = network_unavailable_toleration();
        let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
        if !tolerations
            .iter()
            .any(|t| t.key == tol.key && t.operator == tol.operator && t.effect == tol.effect)
        {
            tolerations.push(tol);
        }
        return out;
    }
    let Some(cfg) = config else {
        return out;
    };
    let anns = out.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if let Some(n) = &cfg.network {
        anns.insert(annotation::SPECIFIED_NETWORK.into(), n.clone());
    }
    if !cfg.subnets.is_empty() {
        anns.insert(annotation::SPECIFIED_SUBNET.into(), cfg.subnets.join("/"));
    }
    anns.insert(
        annotation::NETWORK_TYPE.into(),
        cfg.network_type.as_str().into(),
    );
    anns.insert(annotation::IP_FAMILY.into(), cfg.ip_family.as_str().into());
    anns.insert(annotation::HANDLED_BY_WEBHOOK.into(), "true".into());

    let selector = spec.node_selector.get_or_insert_with(BTreeMap::new);
    match cfg.network_type {
        NetworkType::Underlay => {
            if cfg.network.is_some() {
                for (k, v) in &cfg.node_selector {
                    selector.insert(k.clone(), v.clone());
                }
            } else {
                selector.insert(
                    label::UNDERLAY_NETWORK_ATTACHMENT.into(),
                    label::ATTACHED.into(),
                );
            }
            // A pod holding retained addresses does not need new ones (upstream v0.7.2).
            if !cfg.retained_ip_exist {
                let key = match cfg.ip_family {
                    IpFamily::IPv4 => label::IPV4_ADDRESS_QUOTA,
                    IpFamily::IPv6 => label::IPV6_ADDRESS_QUOTA,
                    IpFamily::DualStack => label::DUALSTACK_ADDRESS_QUOTA,
                };
                selector.insert(key.into(), label::QUOTA_NONEMPTY.into());
            }
        }
        NetworkType::Overlay => {
            selector.insert(
                label::OVERLAY_NETWORK_ATTACHMENT.into(),
                label::ATTACHED.into(),
            );
        }
        NetworkType::GlobalBgp => {
            selector.insert(label::BGP_NETWORK_ATTACHMENT.into(), label::ATTACHED.into());
        }
    }
    out
}

/// Pod CREATE mutation as a JSON patch.
pub fn mutate_pod(
    st: &WebhookState,
    pod: &Pod,
    namespace: Option<&str>,
    namespace_obj: Option<&Namespace>,
) -> Result<json_patch::Patch, FieldErrors> {
    let config = if is_host_network(pod) {
        None
    } else {
        Some(resolve(st, pod, namespace, namespace_obj)?.0)
    };
    let new = mutated_pod(pod, config.as_ref());
    let (Ok(before), Ok(after)) = (serde_json::to_value(pod), serde_json::to_value(&new)) else {
        return Ok(json_patch::Patch(Vec::new()));
    };
    Ok(json_patch::diff(&before, &after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    fn cfg(t: NetworkType, net: Option<&str>, fam: IpFamily, retained: bool) -> PodNetworkConfig {
        PodNetworkConfig {
            network: net.map(String::from),
            subnets: vec![],
            network_type: t,
            ip_family: fam,
            retained_ip_exist: retained,
            node_selector: [("network".to_string(), "u1".to_string())].into(),
        }
    }

    fn pod() -> Pod {
        Pod {
            spec: Some(PodSpec::default()),
            ..Default::default()
        }
    }

    #[test]
    fn host_network_gets_only_the_toleration_once() {
        let mut p = pod();
        p.spec.as_mut().unwrap().host_network = Some(true);
        let m = mutated_pod(&p, None);
        assert_eq!(
            m.spec.as_ref().unwrap().tolerations.as_ref().unwrap().len(),
            1
        );
        assert!(m.metadata.annotations.is_none());
        let again = mutated_pod(&m, None);
        assert_eq!(again, m);
    }

    #[test]
    fn underlay_selectors() {
        let m = mutated_pod(
            &pod(),
            Some(&cfg(
                NetworkType::Underlay,
                Some("u1"),
                IpFamily::DualStack,
                false,
            )),
        );
        let sel = m.spec.unwrap().node_selector.unwrap();
        assert_eq!(sel["network"], "u1");
        assert_eq!(sel[label::DUALSTACK_ADDRESS_QUOTA], "nonempty");
        assert!(!sel.contains_key(label::UNDERLAY_NETWORK_ATTACHMENT));
        let anns = m.metadata.annotations.unwrap();
        assert_eq!(anns[annotation::HANDLED_BY_WEBHOOK], "true");
        assert_eq!(anns[annotation::SPECIFIED_NETWORK], "u1");
        assert_eq!(anns[annotation::IP_FAMILY], "DualStack");

        let m = mutated_pod(
            &pod(),
            Some(&cfg(NetworkType::Underlay, None, IpFamily::IPv4, true)),
        );
        let sel = m.spec.unwrap().node_selector.unwrap();
        assert_eq!(sel[label::UNDERLAY_NETWORK_ATTACHMENT], "true");
        assert!(
            !sel.contains_key(label::IPV4_ADDRESS_QUOTA),
            "retained pods need no quota"
        );
    }

    #[test]
    fn overlay_and_bgp_selectors() {
        let m = mutated_pod(
            &pod(),
            Some(&cfg(NetworkType::Overlay, None, IpFamily::IPv6, false)),
        );
        let sel = m.spec.unwrap().node_selector.unwrap();
        assert_eq!(sel.len(), 1);
        assert_eq!(sel[label::OVERLAY_NETWORK_ATTACHMENT], "true");
        let m = mutated_pod(
            &pod(),
            Some(&cfg(NetworkType::GlobalBgp, None, IpFamily::IPv4, false)),
        );
        assert_eq!(
            m.spec.unwrap().node_selector.unwrap()[label::BGP_NETWORK_ATTACHMENT],
            "true"
        );
    }
}
