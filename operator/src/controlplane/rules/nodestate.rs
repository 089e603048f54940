//! Pure decisions about a node's network membership: attachment and quota labels (upstream
//! `pkg/controllers/networking/node_controller.go`, `quota_controller.go`) and the
//! `network-unavailable` taint for nodes in no network.

use std::collections::BTreeMap;

use hybridnet_api::constants::label;
use hybridnet_api::v1::{Count, Network, NetworkMode, NetworkType};

/// Labels the operator manages on nodes; any other label is left alone.
pub const MANAGED_LABELS: [&str; 6] = [
    label::UNDERLAY_NETWORK_ATTACHMENT,
    label::OVERLAY_NETWORK_ATTACHMENT,
    label::BGP_NETWORK_ATTACHMENT,
    label::IPV4_ADDRESS_QUOTA,
    label::IPV6_ADDRESS_QUOTA,
    label::DUALSTACK_ADDRESS_QUOTA,
];

/// What a node should look like.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeNetworkState {
    /// The Underlay network whose selector the node matches (first by name).
    pub underlay_network: Option<String>,
    /// Desired values of [`MANAGED_LABELS`]; a missing key means "remove".
    pub labels: BTreeMap<String, String>,
    /// The node belongs to no network and should carry the `network-unavailable` taint.
    pub unavailable: bool,
}

fn live(networks: &[Network]) -> impl Iterator<Item = &Network> {
    networks
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
}

/// The Underlay networks a node with `labels` belongs to, sorted by name.
pub fn underlay_networks_of<'a>(
    labels: &BTreeMap<String, String>,
    networks: &'a [Network],
) -> Vec<&'a Network> {
    let mut out: Vec<&Network> = live(networks)
        .filter(|n| n.spec.effective_type() == NetworkType::Underlay)
        .filter(|n| n.spec.selects_node(labels))
        .collect();
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out
}

fn quota(count: Option<&Count>) -> &'static str {
    if count.is_some_and(Count::has_available) {
        label::QUOTA_NONEMPTY
    } else {
        label::QUOTA_EMPTY
    }
}

/// The desired network state of a node with `labels`, given all Networks (with their status).
pub fn desired_node_state(
    labels: &BTreeMap<String, String>,
    networks: &[Network],
) -> NodeNetworkState {
    let underlays = underlay_networks_of(labels, networks);
    let overlay_exists = live(networks).any(|n| n.spec.effective_type() == NetworkType::Overlay);
    let global_bgp_exists =
        live(networks).any(|n| n.spec.effective_type() == NetworkType::GlobalBgp);
    let in_bgp_network = underlays
        .iter()
        .any(|n| n.spec.effective_mode() == NetworkMode::Bgp);

    let mut out = NodeNetworkState::default();
    let attached = |l: &mut BTreeMap<String, String>, k: &str| {
        l.insert(k.to_string(), label::ATTACHED.to_string());
    };
    if let Some(first) = underlays.first() {
        attached(&mut out.labels, label::UNDERLAY_NETWORK_ATTACHMENT);
        out.underlay_network = first.metadata.name.clone();
        let status = first.status.clone().unwrap_or_default();
        out.labels.insert(
            label::IPV4_ADDRESS_QUOTA.to_string(),
            quota(status.statistics.as_ref()).to_string(),
        );
        out.labels.insert(
            label::IPV6_ADDRESS_QUOTA.to_string(),
            quota(status.ipv6_statistics.as_ref()).to_string(),
        );
        out.labels.insert(
            label::DUALSTACK_ADDRESS_QUOTA.to_string(),
            quota(status.dual_stack_statistics.as_ref()).to_string(),
        );
        if global_bgp_exists && in_bgp_network {
            attached(&mut out.labels, label::BGP_NETWORK_ATTACHMENT);
        }
    }
    if overlay_exists {
        attached(&mut out.labels, label::OVERLAY_NETWORK_ATTACHMENT);
    }
    out.unavailable = underlays.is_empty() && !overlay_exists;
    out
}

/// The label changes that turn `current` into `desired`, as a merge-patch map (None = remove).
pub fn label_patch(
    current: &BTreeMap<String, String>,
    desired: &BTreeMap<String, String>,
) -> BTreeMap<String, Option<String>> {
    let mut patch = BTreeMap::new();
    for key in MANAGED_LABELS {
        match (current.get(key), desired.get(key)) {
            (Some(c), Some(d)) if c == d => {}
            (_, Some(d)) => {
                patch.insert(key.to_string(), Some(d.clone()));
            }
            (Some(_), None) => {
                patch.insert(key.to_string(), None);
            }
            (None, None) => {}
        }
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridnet_api::v1::{NetworkSpec, NetworkStatus};
    use proptest::prelude::*;

    fn net(name: &str, t: NetworkType, mode: Option<NetworkMode>, sel: &[(&str, &str)]) -> Network {
        let mut n = Network::new(
            name,
            NetworkSpec {
                network_type: Some(t),
                mode,
                node_selector: (!sel.is_empty()).then(|| {
                    sel.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                }),
                ..Default::default()
            },
        );
        n.status = Some(NetworkStatus {
            statistics: Some(Count {
                total: Some(10),
                used: Some(10),
                available: Some(0),
            }),
            ipv6_statistics: Some(Count {
                total: Some(10),
                used: Some(1),
                available: Some(9),
            }),
            ..Default::default()
        });
        n
    }

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_network_taints() {
        let s = desired_node_state(&labels(&[("a", "b")]), &[]);
        assert!(s.unavailable);
        assert!(s.labels.is_empty());
        // An underlay network that does not select the node does not help.
        let nets = [net("u", NetworkType::Underlay, None, &[("network", "u")])];
        assert!(desired_node_state(&labels(&[("a", "b")]), &nets).unavailable);
    }

    #[test]
    fn underlay_member_gets_attachment_and_quota() {
        let nets = [net("u", NetworkType::Underlay, None, &[("network", "u")])];
        let s = desired_node_state(&labels(&[("network", "u")]), &nets);
        assert!(!s.unavailable);
        assert_eq!(s.underlay_network.as_deref(), Some("u"));
        assert_eq!(s.labels[label::UNDERLAY_NETWORK_ATTACHMENT], "true");
        assert_eq!(s.labels[label::IPV4_ADDRESS_QUOTA], "empty");
        assert_eq!(s.labels[label::IPV6_ADDRESS_QUOTA], "nonempty");
        assert_eq!(s.labels[label::DUALSTACK_ADDRESS_QUOTA], "empty");
        assert!(!s.labels.contains_key(label::OVERLAY_NETWORK_ATTACHMENT));
    }

    #[test]
    fn overlay_attaches_every_node_and_bgp_needs_both() {
        let nets = [
            net("o", NetworkType::Overlay, None, &[]),
            net(
                "b",
                NetworkType::Underlay,
                Some(NetworkMode::Bgp),
                &[("rack", "1")],
            ),
            net("g", NetworkType::GlobalBgp, None, &[]),
        ];
        let s = desired_node_state(&labels(&[]), &nets);
        assert!(!s.unavailable);
        assert_eq!(s.labels.len(), 1);
        let s = desired_node_state(&labels(&[("rack", "1")]), &nets);
        assert_eq!(s.labels[label::BGP_NETWORK_ATTACHMENT], "true");
        // Without the GlobalBGP network no bgp attachment.
        let s = desired_node_state(&labels(&[("rack", "1")]), &nets[..2]);
        assert!(!s.labels.contains_key(label::BGP_NETWORK_ATTACHMENT));
    }

    #[test]
    fn terminating_networks_do_not_count() {
        let mut o = net("o", NetworkType::Overlay, None, &[]);
        o.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        assert!(desired_node_state(&labels(&[]), &[o]).unavailable);
    }

    #[test]
    fn patch_touches_only_managed_labels() {
        let cur = labels(&[
            ("kubernetes.io/hostname", "n1"),
            (label::UNDERLAY_NETWORK_ATTACHMENT, "true"),
            (label::IPV4_ADDRESS_QUOTA, "empty"),
        ]);
        let want = labels(&[(label::IPV4_ADDRESS_QUOTA, "nonempty")]);
        let p = label_patch(&cur, &want);
        assert_eq!(p.len(), 2);
        assert_eq!(p[label::UNDERLAY_NETWORK_ATTACHMENT], None);
        assert_eq!(p[label::IPV4_ADDRESS_QUOTA].as_deref(), Some("nonempty"));
        assert!(label_patch(&want, &want).is_empty());
    }

    proptest! {
        #[test]
        fn applying_the_patch_reaches_the_desired_labels(
            cur in proptest::collection::btree_map(
                proptest::sample::select(MANAGED_LABELS.to_vec()).prop_map(String::from),
                "[a-z]{1,4}", 0..6),
            want in proptest::collection::btree_map(
                proptest::sample::select(MANAGED_LABELS.to_vec()).prop_map(String::from),
                "[a-z]{1,4}", 0..6),
        ) {
            let mut applied = cur.clone();
            for (k, v) in label_patch(&cur, &want) {
                match v { Some(v) => { applied.insert(k, v); } None => { applied.remove(&k); } }
            }
            prop_assert_eq!(applied, want.clone());
            let again = label_patch(&want, &want);
            prop_assert!(again.is_empty());
        }
    }
}
