//! The mirrors of a Ready remote cluster, as plain data: which RemoteSubnets
//! (`<cluster>.<subnet>`) and RemoteVteps (`<cluster>.<node>`) should exist in this cluster for
//! what the remote cluster holds, and which existing ones go (upstream
//! pkg/controllers/multicluster/remotesubnet_controller.go, remotevtep_controller.go and
//! garbagecollection.go). The operator reads the remote snapshot, applies the difference and
//! stamps `status.lastModifyTime` on what it changed; the node agent reads the mirrors.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;

use super::{RemoteCluster, RemoteSubnet, RemoteSubnetSpec, RemoteVtep, RemoteVtepSpec};
use crate::constants::label;
use crate::ipmath::Cidr;
use crate::v1::{IPInstance, Network, NodeInfo, Subnet};

/// `<cluster>.<subnet>` (upstream `generateRemoteSubnetName`).
pub fn remote_subnet_name(cluster: &str, subnet: &str) -> String {
    format!("{cluster}.{subnet}")
}

/// `<cluster>.<node>` (upstream `generateVTEPName`).
pub fn remote_vtep_name(cluster: &str, node: &str) -> String {
    format!("{cluster}.{node}")
}

fn name(m: &ObjectMeta) -> &str {
    m.name.as_deref().unwrap_or("")
}

/// The controller owner reference to the RemoteCluster: mirrors go with it (upstream sets an
/// owner reference on RemoteVteps; here on both kinds). Not `blockOwnerDeletion`: that needs
/// update rights on the owner's finalizers where OwnerReferencesPermissionEnforcement is on.
/// `None` until the RemoteCluster has a uid.
pub(crate) fn owner(rc: &RemoteCluster) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: format!("{}/v1", super::GROUP),
        kind: "RemoteCluster".into(),
        name: rc.metadata.name.clone()?,
        uid: rc.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: None,
    })
}

fn mirror_meta(rc: &RemoteCluster, name: String, of_key: &str, of: &str) -> ObjectMeta {
    let cluster = rc.metadata.name.clone().unwrap_or_default();
    ObjectMeta {
        name: Some(name),
        labels: Some(BTreeMap::from([
            (label::CLUSTER.to_string(), cluster),
            (of_key.to_string(), of.to_string()),
        ])),
        owner_references: owner(rc).map(|o| vec![o]),
        ..Default::default()
    }
}

/// The RemoteSubnets for the remote cluster's Subnets: every Subnet not being deleted whose
/// Network is known (its type is copied; a Subnet of a Network not seen yet waits for the next
/// snapshot), sorted by name.
pub fn desired_remote_subnets(
    rc: &RemoteCluster,
    subnets: &[Subnet],
    networks: &[Network],
) -> Vec<RemoteSubnet> {
    let cluster = name(&rc.metadata);
    let mut out: Vec<RemoteSubnet> = subnets
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter_map(|s| {
            let net = networks
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(s.spec.network.as_str()))?;
            let sname = name(&s.metadata);
            Some(RemoteSubnet {
                metadata: mirror_meta(rc, remote_subnet_name(cluster, sname), label::SUBNET, sname),
                spec: RemoteSubnetSpec {
                    range: s.spec.range.clone(),
                    network_type: Some(net.spec.effective_type()),
                    cluster_name: Some(cluster.to_string()),
                },
                status: None,
            })
        })
        .collect();
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out
}

/// The pod addresses on each node, as RemoteVtep `endpointIPList`s: IPInstances bound to a node
/// (reserved ones, without a node, are not endpoints) and not being deleted, of a Subnet that is
/// mirrored (upstream's "recognised subnets"), the address without its prefix length; sorted
/// as text (upstream `sort.Strings`, so mirrors written by either compare equal) and without
/// duplicates.
fn endpoints_by_node<'a>(
    ipinstances: &'a [IPInstance],
    mirrored_subnets: &BTreeSet<&str>,
) -> BTreeMap<&'a str, BTreeSet<String>> {
    let mut by_node: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for i in ipinstances {
        if i.metadata.deletion_timestamp.is_some()
            || i.spec.is_reserved()
            || !mirrored_subnets.contains(i.spec.subnet.as_str())
        {
            continue;
        }
        let (Some(node), Ok(cidr)) = (
            i.spec.binding.node_name.as_deref(),
            Cidr::parse_any(&i.spec.address.ip),
        ) else {
            continue;
        };
        by_node
            .entry(node)
            .or_default()
            .insert(cidr.addr().to_string());
    }
    by_node
}

/// The RemoteVteps for the remote cluster's NodeInfos: every NodeInfo with a VTEP address and
/// MAC, with the addresses of the pods on that node in `subnets` (the Subnets mirrored),
/// sorted by name.
pub fn desired_remote_vteps(
    rc: &RemoteCluster,
    nodeinfos: &[NodeInfo],
    ipinstances: &[IPInstance],
    subnets: &[Subnet],
) -> Vec<RemoteVtep> {
    let cluster = name(&rc.metadata);
    let mirrored: BTreeSet<&str> = subnets.iter().map(|s| name(&s.metadata)).collect();
    let endpoints = endpoints_by_node(ipinstances, &mirrored);
    let mut out: Vec<RemoteVtep> = nodeinfos
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .filter_map(|n| {
            let node = name(&n.metadata);
            let vtep = n.spec.vtep_info.as_ref()?;
            let ip = vtep.ip.clone().filter(|s| !s.is_empty())?;
            let mac = vtep.mac.clone().filter(|s| !s.is_empty())?;
            let list: Vec<String> = endpoints.get(node).into_iter().flatten().cloned().collect();
            Some(RemoteVtep {
                metadata: mirror_meta(rc, remote_vtep_name(cluster, node), label::NODE, node),
                spec: RemoteVtepSpec {
                    cluster_name: Some(cluster.to_string()),
                    node_name: Some(node.to_string()),
                    ip: Some(ip),
                    mac: Some(mac),
                    local_ips: vtep.local_ips.clone(),
                    endpoint_ip_list: Some(list),
                },
                status: None,
            })
        })
        .collect();
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out
}

/// What to do with the mirrors of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MirrorPlan {
    /// Names to create or update (their spec or labels differ, or they do not exist).
    pub apply: Vec<String>,
    /// Names to delete: mirrors of this cluster that are no longer desired.
    pub delete: Vec<String>,
}

/// Mirror objects by name, with what [`plan_mirrors`] compares: labels (ours only) and spec.
pub struct Mirror<'a, S> {
    pub meta: &'a ObjectMeta,
    pub spec: &'a S,
}

fn label_of<'a>(m: &'a ObjectMeta, k: &str) -> Option<&'a str> {
    m.labels.as_ref()?.get(k).map(String::as_str)
}

/// The difference between the desired mirrors of cluster `cluster` and the existing mirrors
/// (of any cluster: those labelled with another cluster are left alone). A desired mirror is
/// applied when it is missing, its spec differs or one of its labels differs; an existing
/// mirror of this cluster that is not desired is deleted (the remote side removed its Subnet or
/// node). Both lists sorted.
pub fn plan_mirrors<S: PartialEq>(
    cluster: &str,
    desired: &[Mirror<'_, S>],
    existing: &[Mirror<'_, S>],
) -> MirrorPlan {
    plan_mirrors_labelled(label::CLUSTER, cluster, desired, existing)
}

/// [`plan_mirrors`] for mirrors that name their cluster in label `cluster_label`
/// (RemoteEndpointSlices carry upstream's `networking.alibaba.com/remote-cluster`).
pub fn plan_mirrors_labelled<S: PartialEq>(
    cluster_label: &str,
    cluster: &str,
    desired: &[Mirror<'_, S>],
    existing: &[Mirror<'_, S>],
) -> MirrorPlan {
    let by_name: BTreeMap<&str, &Mirror<'_, S>> =
        existing.iter().map(|m| (name(m.meta), m)).collect();
    let wanted: BTreeSet<&str> = desired.iter().map(|m| name(m.meta)).collect();
    let mut plan = MirrorPlan::default();
    for d in desired {
        let stale = match by_name.get(name(d.meta)) {
            None => true,
            Some(e) => {
                e.spec != d.spec
                    || d.meta
                        .labels
                        .iter()
                        .flatten()
                        .any(|(k, v)| label_of(e.meta, k) != Some(v.as_str()))
            }
        };
        if stale {
            plan.apply.push(name(d.meta).to_string());
        }
    }
    for e in existing {
        if label_of(e.meta, cluster_label) == Some(cluster) && !wanted.contains(name(e.meta)) {
            plan.delete.push(name(e.meta).to_string());
        }
    }
    plan.apply.sort();
    plan.delete.sort();
    plan
}

/// Mirrors whose RemoteCluster is gone (labelled with a cluster not in `clusters`): the
/// garbage the owner reference normally removes, for mirrors written without one (upstream's
/// RemoteSubnets) or while the garbage collector lags. Sorted.
pub fn orphans(existing: &[&ObjectMeta], clusters: &BTreeSet<&str>) -> Vec<String> {
    orphans_labelled(label::CLUSTER, existing, clusters)
}

/// [`orphans`] for mirrors that name their cluster in label `cluster_label`.
pub fn orphans_labelled(
    cluster_label: &str,
    existing: &[&ObjectMeta],
    clusters: &BTreeSet<&str>,
) -> Vec<String> {
    let mut out: Vec<String> = existing
        .iter()
        .filter(|m| label_of(m, cluster_label).is_some_and(|c| !clusters.contains(c)))
        .map(|m| name(m).to_string())
        .collect();
    out.sort();
    out
}

/// Builds [`Mirror`]s of RemoteSubnets.
pub fn subnet_mirrors(list: &[RemoteSubnet]) -> Vec<Mirror<'_, RemoteSubnetSpec>> {
    list.iter()
        .map(|r| Mirror {
            meta: &r.metadata,
            spec: &r.spec,
        })
        .collect()
}

/// Builds [`Mirror`]s of RemoteVteps.
pub fn vtep_mirrors(list: &[RemoteVtep]) -> Vec<Mirror<'_, RemoteVtepSpec>> {
    list.iter()
        .map(|r| Mirror {
            meta: &r.metadata,
            spec: &r.spec,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multicluster::RemoteClusterSpec;
    use crate::v1::{
        AddressRange, Binding, IPInstanceSpec, IpVersion, NetworkSpec, NetworkType, NodeInfoSpec,
        SubnetSpec, VtepInfo,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn rc() -> RemoteCluster {
        let mut rc = RemoteCluster::new("b", RemoteClusterSpec::default());
        rc.metadata.uid = Some("uid-rc-b".into());
        rc
    }

    fn net(n: &str, t: NetworkType) -> Network {
        Network::new(
            n,
            NetworkSpec {
                network_type: Some(t),
                ..Default::default()
            },
        )
    }

    fn subnet(n: &str, network: &str, cidr: &str) -> Subnet {
        Subnet::new(
            n,
            SubnetSpec {
                network: network.into(),
                range: AddressRange {
                    version: IpVersion::V4,
                    cidr: cidr.into(),
                    gateway: Some(String::new()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
    }

    fn nodeinfo(n: &str, ip: &str, mac: &str) -> NodeInfo {
        NodeInfo::new(
            n,
            NodeInfoSpec {
                vtep_info: Some(VtepInfo {
                    ip: Some(ip.into()),
                    mac: Some(mac.into()),
                    local_ips: Some(vec![ip.into()]),
                }),
            },
        )
    }

    fn ipi(ip: &str, subnet: &str, node: Option<&str>) -> IPInstance {
        let mut i = IPInstance::new(
            &ip.split('/').next().unwrap().replace('.', "-"),
            IPInstanceSpec {
                network: "init".into(),
                subnet: subnet.into(),
                binding: Binding {
                    node_name: node.map(Into::into),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        i.spec.address.ip = ip.into();
        i
    }

    #[test]
    fn subnet_mirrors_copy_range_and_type_with_labels_and_owner() {
        let nets = [
            net("init", NetworkType::Overlay),
            net("vlan", NetworkType::Underlay),
        ];
        let subs = [
            subnet("init", "init", "100.65.0.0/16"),
            subnet("v", "vlan", "192.168.60.0/24"),
            subnet("orphan", "missing-network", "10.9.0.0/24"),
        ];
        let d = desired_remote_subnets(&rc(), &subs, &nets);
        let names: Vec<&str> = d.iter().map(|r| name(&r.metadata)).collect();
        assert_eq!(names, ["b.init", "b.v"]);
        assert_eq!(d[0].spec.range, subs[0].spec.range);
        assert_eq!(d[0].spec.network_type, Some(NetworkType::Overlay));
        assert_eq!(d[1].spec.network_type, Some(NetworkType::Underlay));
        assert_eq!(d[0].spec.cluster_name.as_deref(), Some("b"));
        let labels = d[0].metadata.labels.as_ref().unwrap();
        assert_eq!(labels[label::CLUSTER], "b");
        assert_eq!(labels[label::SUBNET], "init");
        let o = &d[0].metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (o.kind.as_str(), o.uid.as_str(), o.controller),
            ("RemoteCluster", "uid-rc-b", Some(true))
        );
        // Terminating subnets are not mirrored.
        let mut going = subs[0].clone();
        going.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(desired_remote_subnets(&rc(), &[going], &nets).is_empty());
        // No uid yet: no owner reference rather than a wrong one.
        let mut fresh = rc();
        fresh.metadata.uid = None;
        assert!(
            desired_remote_subnets(&fresh, &subs, &nets)[0]
                .metadata
                .owner_references
                .is_none()
        );
    }

    #[test]
    fn vtep_mirrors_carry_the_nodes_pod_addresses_sorted() {
        let subs = [subnet("init", "init", "100.65.0.0/16")];
        let infos = [
            nodeinfo("node2", "192.168.56.32", "52:54:00:00:00:02"),
            nodeinfo("node1", "192.168.56.31", "52:54:00:00:00:01"),
            NodeInfo::new("novtep", NodeInfoSpec::default()),
            nodeinfo("emptymac", "192.168.56.33", ""),
        ];
        let mut dying = ipi("100.65.0.99/16", "init", Some("node1"));
        dying.metadata.deletion_timestamp = Some(Time(Default::default()));
        let insts = [
            ipi("100.65.0.12/16", "init", Some("node1")),
            ipi("100.65.0.7/16", "init", Some("node1")),
            ipi("100.65.0.8/16", "init", Some("node2")),
            ipi("100.65.0.9/16", "init", None), // reserved
            ipi("10.9.0.5/24", "unmirrored", Some("node1")),
            ipi("garbage", "init", Some("node1")),
            dying,
        ];
        let d = desired_remote_vteps(&rc(), &infos, &insts, &subs);
        let names: Vec<&str> = d.iter().map(|r| name(&r.metadata)).collect();
        assert_eq!(names, ["b.node1", "b.node2"]);
        assert_eq!(
            d[0].spec.endpoint_ip_list.as_deref().unwrap(),
            ["100.65.0.12", "100.65.0.7"],
            "text order as upstream, no prefix, reserved/unmirrored/terminating/malformed left out"
        );
        assert_eq!(d[0].spec.ip.as_deref(), Some("192.168.56.31"));
        assert_eq!(d[0].spec.local_ips.as_deref().unwrap(), ["192.168.56.31"]);
        assert_eq!(d[0].metadata.labels.as_ref().unwrap()[label::NODE], "node1");
        assert_eq!(
            d[1].spec.endpoint_ip_list.as_deref().unwrap(),
            ["100.65.0.8"]
        );
    }

    #[test]
    fn plan_applies_changes_and_deletes_only_this_clusters_stale_mirrors() {
        let nets = [net("init", NetworkType::Overlay)];
        let desired = desired_remote_subnets(
            &rc(),
            &[
                subnet("init", "init", "100.65.0.0/16"),
                subnet("new", "init", "100.66.0.0/16"),
            ],
            &nets,
        );
        let mut existing = vec![desired[0].clone()];
        // A mirror of a subnet the remote side removed, and one of another cluster.
        let mut gone = desired[0].clone();
        gone.metadata.name = Some("b.removed".into());
        existing.push(gone);
        let mut other = desired[0].clone();
        other.metadata.name = Some("c.init".into());
        other
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(label::CLUSTER.into(), "c".into());
        existing.push(other);
        let plan = plan_mirrors("b", &subnet_mirrors(&desired), &subnet_mirrors(&existing));
        assert_eq!(plan.apply, ["b.new"]);
        assert_eq!(plan.delete, ["b.removed"]);

        // Nothing changed: nothing to do. A changed range or a lost label: apply.
        let same = plan_mirrors("b", &subnet_mirrors(&desired), &subnet_mirrors(&desired));
        assert_eq!(same, MirrorPlan::default());
        let mut changed = desired.clone();
        changed[1].spec.range.cidr = "100.67.0.0/16".into();
        changed[0].metadata.labels = None;
        let plan = plan_mirrors("b", &subnet_mirrors(&desired), &subnet_mirrors(&changed));
        assert_eq!(plan.apply, ["b.init", "b.new"]);
        assert!(
            plan.delete.is_empty(),
            "unlabelled objects are not ours to delete"
        );
        // The remote cluster has no subnets left: every mirror of it goes.
        let plan = plan_mirrors::<RemoteSubnetSpec>("b", &[], &subnet_mirrors(&desired));
        assert_eq!(plan.delete, ["b.init", "b.new"]);
    }

    #[test]
    fn orphans_are_mirrors_of_clusters_that_are_gone() {
        let d = desired_remote_subnets(
            &rc(),
            &[subnet("init", "init", "100.65.0.0/16")],
            &[net("init", NetworkType::Overlay)],
        );
        let metas: Vec<&ObjectMeta> = d.iter().map(|r| &r.metadata).collect();
        assert!(orphans(&metas, &BTreeSet::from(["b"])).is_empty());
        assert_eq!(orphans(&metas, &BTreeSet::new()), ["b.init"]);
        let unlabelled = ObjectMeta {
            name: Some("x".into()),
            ..Default::default()
        };
        assert!(orphans(&[&unlabelled], &BTreeSet::new()).is_empty());
    }
}
