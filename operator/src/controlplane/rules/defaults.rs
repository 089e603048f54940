//! The cluster-wide pod defaults (network type, IP family, IP retention, stateful kinds) and where
//! they come from.
//!
//! `HybridnetCluster/default` wins when it exists: its `spec.defaults`, with the documented
//! default for every field it leaves out (the same values the lifecycle renders into the node
//! agent's environment). The operator flags are the fallback for clusters without that object or
//! even without its CRD (a control plane installed without the lifecycle part). The watch that
//! keeps the value current is `runtime/live_defaults.rs`; this module is the pure rule.

use hybridnet_api::operator::{
    CLUSTER_SINGLETON_NAME, ClusterDefaults, HybridnetCluster, IpFamily,
};
use hybridnet_api::v1::NetworkType;

/// Defaults for pods that do not say otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDefaults {
    /// Type of pods that name no network type (`DEFAULT_NETWORK_TYPE`).
    pub network_type: NetworkType,
    /// Family of pods that name no family (`DEFAULT_IP_FAMILY`).
    pub ip_family: IpFamily,
    /// Stateful pods keep their addresses unless `ip-retain: "false"`.
    pub ip_retain: bool,
    /// Owner kinds whose pods are stateful.
    pub stateful_workload_kinds: Vec<String>,
    /// Upstream's `VMIPRetain` feature gate: pods of a KubeVirt VirtualMachine keep their
    /// addresses across VM restarts (docs/api.md, "KubeVirt VMs").
    pub vm_ip_retain: bool,
    /// Upstream's `MultiCluster` feature gate: RemoteClusters are checked and mirrored
    /// (docs/multicluster.md); off, they are left alone.
    pub multi_cluster: bool,
}

impl Default for PodDefaults {
    /// The documented defaults (HybridnetCluster CRD, upstream chart): Overlay, IPv4, retain,
    /// StatefulSet.
    fn default() -> Self {
        Self {
            network_type: NetworkType::Overlay,
            ip_family: IpFamily::IPv4,
            ip_retain: true,
            stateful_workload_kinds: vec!["StatefulSet".to_string()],
            vm_ip_retain: false,
            multi_cluster: false,
        }
    }
}

impl PodDefaults {
    /// Whether an owner of `kind` makes its pods stateful.
    pub fn is_stateful_kind(&self, kind: &str) -> bool {
        self.stateful_workload_kinds.iter().any(|k| k == kind)
    }
}

/// Where the effective defaults came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultsSource {
    /// The operator flags (no `HybridnetCluster/default`, or its CRD is not served).
    Flags,
    /// `HybridnetCluster/default`.
    Cluster,
}

impl DefaultsSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Flags => "flags",
            Self::Cluster => "HybridnetCluster/default",
        }
    }
}

/// The defaults in force and their origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveDefaults {
    pub defaults: PodDefaults,
    pub source: DefaultsSource,
}

/// The defaults in force (pure): the singleton's `spec.defaults` when `cluster` is it, each
/// absent field at its documented default; the flags otherwise. The `VMIPRetain` and
/// `MultiCluster` gates are the singleton's `spec.features.vmIPRetain` and `multiCluster` when
/// set, else the operator's `--feature-gates`. Blank stateful kinds are dropped
/// (no owner has an empty kind); the rest is checked by the CRD schema.
pub fn effective_defaults(
    flags: &PodDefaults,
    cluster: Option<&HybridnetCluster>,
) -> EffectiveDefaults {
    let Some(cluster) =
        cluster.filter(|c| c.metadata.name.as_deref() == Some(CLUSTER_SINGLETON_NAME))
    else {
        return EffectiveDefaults {
            defaults: flags.clone(),
            source: DefaultsSource::Flags,
        };
    };
    let documented = PodDefaults::default();
    let vm_ip_retain = cluster
        .spec
        .features
        .as_ref()
        .and_then(|f| f.vm_ip_retain)
        .unwrap_or(flags.vm_ip_retain);
    let multi_cluster = cluster
        .spec
        .features
        .as_ref()
        .and_then(|f| f.multi_cluster)
        .unwrap_or(flags.multi_cluster);
    let spec = cluster.spec.defaults.clone().unwrap_or_default();
    let ClusterDefaults {
        network_type,
        ip_family,
        ip_retain,
        stateful_workload_kinds,
    } = spec;
    EffectiveDefaults {
        defaults: PodDefaults {
            network_type: network_type.unwrap_or(documented.network_type),
            ip_family: ip_family.unwrap_or(documented.ip_family),
            ip_retain: ip_retain.unwrap_or(documented.ip_retain),
            stateful_workload_kinds: match stateful_workload_kinds {
                Some(kinds) => kinds
                    .iter()
                    .map(|k| k.trim())
                    .filter(|k| !k.is_empty())
                    .map(str::to_string)
                    .collect(),
                None => documented.stateful_workload_kinds,
            },
            vm_ip_retain,
            multi_cluster,
        },
        source: DefaultsSource::Cluster,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridnet_api::operator::HybridnetClusterSpec;

    fn cluster(name: &str, defaults: Option<ClusterDefaults>) -> HybridnetCluster {
        let mut c = HybridnetCluster::new(
            name,
            HybridnetClusterSpec {
                defaults,
                ..Default::default()
            },
        );
        c.metadata.name = Some(name.to_string());
        c
    }

    fn flags() -> PodDefaults {
        PodDefaults {
            network_type: NetworkType::Underlay,
            ip_family: IpFamily::DualStack,
            ip_retain: false,
            stateful_workload_kinds: vec!["AdvancedStatefulSet".into()],
            vm_ip_retain: true,
            multi_cluster: true,
        }
    }

    #[test]
    fn multi_cluster_is_the_clusters_when_set_else_the_flag() {
        use hybridnet_api::operator::FeatureSwitches;
        let with = |mc: Option<bool>| {
            let mut c = cluster(CLUSTER_SINGLETON_NAME, None);
            c.spec.features = Some(FeatureSwitches {
                multi_cluster: mc,
                ..Default::default()
            });
            c
        };
        let on = PodDefaults {
            multi_cluster: true,
            ..flags()
        };
        let off = PodDefaults {
            multi_cluster: false,
            ..flags()
        };
        assert!(
            !PodDefaults::default().multi_cluster,
            "off by default, as upstream"
        );
        for (flags, cluster, want) in [
            (&on, None, true),
            (&off, None, false),
            (&on, Some(with(None)), true),
            (&off, Some(with(None)), false),
            (&off, Some(with(Some(true))), true),
            (&on, Some(with(Some(false))), false),
        ] {
            assert_eq!(
                effective_defaults(flags, cluster.as_ref())
                    .defaults
                    .multi_cluster,
                want,
                "{flags:?} {cluster:?}"
            );
        }
    }

    #[test]
    fn vm_ip_retain_is_the_clusters_when_set_else_the_flag() {
        use hybridnet_api::operator::FeatureSwitches;
        let with = |vm: Option<bool>| {
            let mut c = cluster(CLUSTER_SINGLETON_NAME, None);
            c.spec.features = Some(FeatureSwitches {
                vm_ip_retain: vm,
                ..Default::default()
            });
            c
        };
        let off = PodDefaults {
            vm_ip_retain: false,
            ..flags()
        };
        assert!(!PodDefaults::default().vm_ip_retain);
        assert!(effective_defaults(&flags(), None).defaults.vm_ip_retain);
        assert!(
            effective_defaults(&flags(), Some(&with(None)))
                .defaults
                .vm_ip_retain
        );
        assert!(
            !effective_defaults(&off, Some(&with(None)))
                .defaults
                .vm_ip_retain
        );
        assert!(
            effective_defaults(&off, Some(&with(Some(true))))
                .defaults
                .vm_ip_retain
        );
        assert!(
            !effective_defaults(&flags(), Some(&with(Some(false))))
                .defaults
                .vm_ip_retain
        );
        let mut no_features = cluster(CLUSTER_SINGLETON_NAME, None);
        no_features.spec.features = None;
        assert!(
            effective_defaults(&flags(), Some(&no_features))
                .defaults
                .vm_ip_retain
        );
    }

    #[test]
    fn documented_defaults_are_overlay_ipv4_retain_statefulset() {
        let d = PodDefaults::default();
        assert_eq!(d.network_type, NetworkType::Overlay);
        assert_eq!(d.ip_family, IpFamily::IPv4);
        assert!(d.ip_retain);
        assert!(d.is_stateful_kind("StatefulSet"));
        assert!(!d.is_stateful_kind("Deployment"));
    }

    #[test]
    fn without_the_cluster_the_flags_apply() {
        let e = effective_defaults(&flags(), None);
        assert_eq!(e.source, DefaultsSource::Flags);
        assert_eq!(e.defaults, flags());
    }

    #[test]
    fn the_cluster_wins_over_every_flag() {
        let c = cluster(
            "default",
            Some(ClusterDefaults {
                network_type: Some(NetworkType::GlobalBgp),
                ip_family: Some(IpFamily::IPv6),
                ip_retain: Some(true),
                stateful_workload_kinds: Some(vec!["StatefulSet".into(), "Kruise".into()]),
            }),
        );
        let e = effective_defaults(&flags(), Some(&c));
        assert_eq!(e.source, DefaultsSource::Cluster);
        assert_eq!(
            e.defaults,
            PodDefaults {
                network_type: NetworkType::GlobalBgp,
                ip_family: IpFamily::IPv6,
                ip_retain: true,
                stateful_workload_kinds: vec!["StatefulSet".into(), "Kruise".into()],
                // Not in the cluster's spec.features: the flags'.
                vm_ip_retain: true,
                multi_cluster: true,
            }
        );
    }

    #[test]
    fn fields_the_cluster_leaves_out_take_the_documented_default_not_the_flag() {
        // The lifecycle renders the same documented values into the node agent: the control
        // plane must not disagree with it because of a flag.
        for defaults in [None, Some(ClusterDefaults::default())] {
            let e = effective_defaults(&flags(), Some(&cluster("default", defaults)));
            assert_eq!(e.source, DefaultsSource::Cluster);
            // The VMIPRetain and MultiCluster gates are the control plane's alone (nothing
            // rendered to agents): absent from spec.features, the operator's --feature-gates
            // stay in force.
            assert_eq!(
                e.defaults,
                PodDefaults {
                    vm_ip_retain: true,
                    multi_cluster: true,
                    ..PodDefaults::default()
                }
            );
        }
        let partial = cluster(
            "default",
            Some(ClusterDefaults {
                network_type: Some(NetworkType::Underlay),
                ..Default::default()
            }),
        );
        let e = effective_defaults(&flags(), Some(&partial));
        assert_eq!(e.defaults.network_type, NetworkType::Underlay);
        assert_eq!(e.defaults.ip_family, IpFamily::IPv4);
        assert!(e.defaults.ip_retain);
    }

    #[test]
    fn a_cluster_not_named_default_is_ignored() {
        let other = cluster(
            "second",
            Some(ClusterDefaults {
                network_type: Some(NetworkType::Overlay),
                ..Default::default()
            }),
        );
        assert_eq!(
            effective_defaults(&flags(), Some(&other)),
            effective_defaults(&flags(), None)
        );
    }

    #[test]
    fn blank_stateful_kinds_are_dropped_and_an_empty_list_means_none() {
        let c = cluster(
            "default",
            Some(ClusterDefaults {
                stateful_workload_kinds: Some(vec![" ".into(), "".into(), " StatefulSet ".into()]),
                ..Default::default()
            }),
        );
        let e = effective_defaults(&flags(), Some(&c));
        assert_eq!(e.defaults.stateful_workload_kinds, vec!["StatefulSet"]);
        assert!(!e.defaults.is_stateful_kind(""));
        let none = cluster(
            "default",
            Some(ClusterDefaults {
                stateful_workload_kinds: Some(vec![]),
                ..Default::default()
            }),
        );
        let e = effective_defaults(&flags(), Some(&none));
        assert!(e.defaults.stateful_workload_kinds.is_empty());
        assert!(!e.defaults.is_stateful_kind("StatefulSet"));
    }
}
