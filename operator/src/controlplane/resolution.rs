//! Glue between API objects and the pure pod network-config resolution of `hybridnet_api`.

use std::collections::BTreeMap;

use hybridnet_api::FieldError;
use hybridnet_api::constants::{annotation, label};
use hybridnet_api::naming::pod_name_label_value;
use hybridnet_api::resolve::{PodConfigInput, PodNetworkConfig, resolve_pod_network_config};
use hybridnet_api::v1::{IPInstance, IpVersion, Network, Subnet};
use k8s_openapi::api::core::v1::{Namespace, Pod};

use super::defaults::PodDefaults;
use super::podstate::is_stateful;

/// Go's `strconv.ParseBool`, as upstream reads `ip-retain`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Whether the pod keeps its addresses across re-creation (`ip-retain`, else the default).
pub fn ip_retain(pod: &Pod, cfg: &PodDefaults) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotation::IP_RETAIN))
        .and_then(|v| parse_go_bool(v))
        .unwrap_or(cfg.ip_retain)
}

/// Non-terminating IPInstances in the pod's namespace labelled with the pod's name.
pub fn ipinstances_of_pod_name<'a>(
    namespace: &str,
    pod_name: &str,
    ipinstances: impl IntoIterator<Item = &'a IPInstance>,
) -> Vec<IPInstance> {
    let value = pod_name_label_value(pod_name);
    let mut out: Vec<IPInstance> = ipinstances
        .into_iter()
        .filter(|i| i.metadata.namespace.as_deref() == Some(namespace))
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .filter(|i| {
            i.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(label::POD))
                .is_some_and(|v| *v == value)
        })
        .cloned()
        .collect();
    // IPv4 first, then by subnet and address (upstream sort order).
    out.sort_by(|a, b| {
        let key = |i: &IPInstance| {
            (
                i.spec.address.version == IpVersion::V6,
                i.spec.subnet.clone(),
                i.spec.address.ip.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    out
}

/// Resolves the network configuration of `pod` (upstream `pkg/controllers/networking/pod_controller.go`) from the given state.
pub fn resolve_for_pod(
    pod: &Pod,
    namespace: Option<&Namespace>,
    cfg: &PodDefaults,
    networks: &[Network],
    subnets: &[Subnet],
    pod_ipinstances: &[IPInstance],
) -> Result<PodNetworkConfig, FieldError> {
    let empty = BTreeMap::new();
    let retained: Vec<(String, IpVersion)> = if is_stateful(pod, cfg) && ip_retain(pod, cfg) {
        pod_ipinstances
            .iter()
            .map(|i| (i.spec.network.clone(), i.spec.address.version))
            .collect()
    } else {
        Vec::new()
    };
    let input = PodConfigInput {
        pod_annotations: pod.metadata.annotations.as_ref().unwrap_or(&empty),
        pod_labels: pod.metadata.labels.as_ref().unwrap_or(&empty),
        namespace_annotations: namespace
            .and_then(|n| n.metadata.annotations.as_ref())
            .unwrap_or(&empty),
        namespace_labels: namespace
            .and_then(|n| n.metadata.labels.as_ref())
            .unwrap_or(&empty),
        retained: &retained,
        default_network_type: cfg.network_type,
        default_ip_family: cfg.ip_family,
        networks,
        subnets,
    };
    resolve_pod_network_config(&input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_bools() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(t), Some(true));
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(f), Some(false));
        }
        for bad in ["", "yes", "tRuE", "2", "no"] {
            assert_eq!(parse_go_bool(bad), None);
        }
    }
}
