//! Global services, as plain data (upstream pkg/controllers/multicluster/
//! remoteendpointslice_controller.go and globalservice_controller.go): a Service annotated
//! `networking.alibaba.com/global-service: "true"` in a Ready remote cluster has its EndpointSlices
//! exported here as RemoteEndpointSlices; a local Service annotated the same way gets an
//! EndpointSlice per RemoteEndpointSlice of its namespace and name. The operator applies these
//! (operator/src/controlplane/controllers/remotecluster.rs; docs/multicluster.md, Global services).
//!
//! Cluster Kubernetes serves `discovery.k8s.io/v1` only; the RemoteEndpointSlice keeps upstream's
//! `v1beta1` shapes, so endpoints are converted both ways (`topology` <-> `deprecatedTopology`
//! and `zone`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;

use super::{
    Endpoint, EndpointConditions, EndpointHints, EndpointPort, ForZone, RemoteCluster,
    RemoteEndpointSlice, RemoteEndpointSliceSpec, RemoteServiceInfo,
};
use crate::constants::{annotation, label};

/// `endpointslice.kubernetes.io/managed-by` of the slices hybridnet writes (upstream's
/// `remoteEndpointSliceControllerName`).
pub const MANAGED_BY: &str = "remote-endpointslice.hybridnet";
/// The EndpointSlice label naming the owner Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The EndpointSlice label naming its controller.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// The topology key `zone` stands for in discovery/v1beta1.
const ZONE_KEY: &str = "topology.kubernetes.io/zone";

/// Upstream's `isGlobalService`: the annotation parses as true the way Go's `strconv.ParseBool`
/// reads it (`1`, `t`, `T`, `TRUE`, `true`, `True`); anything else, or none, is false.
pub fn is_global(annotations: Option<&BTreeMap<String, String>>) -> bool {
    matches!(
        annotations
            .and_then(|a| a.get(annotation::GLOBAL_SERVICE))
            .map(String::as_str),
        Some("1" | "t" | "T" | "TRUE" | "true" | "True")
    )
}

/// Name of the RemoteEndpointSlice of slice `slice` of namespace `namespace` in cluster
/// `cluster`: `<cluster>.<namespace>.<slice>` (upstream uses the slice's name alone, which
/// collides across namespaces and clusters; its own TODO asks for a prefix). `None` when longer
/// than an object name may be.
pub fn remote_slice_name(cluster: &str, namespace: &str, slice: &str) -> Option<String> {
    let n = format!("{cluster}.{namespace}.{slice}");
    (n.len() <= 253).then_some(n)
}

fn to_v1beta1(e: &discovery::Endpoint) -> Endpoint {
    let mut topology = e.deprecated_topology.clone().unwrap_or_default();
    if let Some(z) = &e.zone {
        topology.entry(ZONE_KEY.to_string()).or_insert(z.clone());
    }
    Endpoint {
        addresses: e.addresses.clone(),
        conditions: e.conditions.as_ref().map(|c| EndpointConditions {
            ready: c.ready,
            serving: c.serving,
            terminating: c.terminating,
        }),
        hints: e.hints.as_ref().map(|h| EndpointHints {
            for_zones: h.for_zones.as_ref().map(|z| {
                z.iter()
                    .map(|z| ForZone {
                        name: z.name.clone(),
                    })
                    .collect()
            }),
        }),
        hostname: e.hostname.clone(),
        node_name: e.node_name.clone(),
        target_ref: e.target_ref.clone(),
        topology: (!topology.is_empty()).then_some(topology),
    }
}

fn to_v1(e: &Endpoint) -> discovery::Endpoint {
    let mut topology = e.topology.clone().unwrap_or_default();
    let zone = topology.remove(ZONE_KEY);
    discovery::Endpoint {
        addresses: e.addresses.clone(),
        conditions: e
            .conditions
            .as_ref()
            .map(|c| discovery::EndpointConditions {
                ready: c.ready,
                serving: c.serving,
                terminating: c.terminating,
            }),
        deprecated_topology: (!topology.is_empty()).then_some(topology),
        hints: e.hints.as_ref().map(|h| discovery::EndpointHints {
            for_zones: h.for_zones.as_ref().map(|z| {
                z.iter()
                    .map(|z| discovery::ForZone {
                        name: z.name.clone(),
                    })
                    .collect()
            }),
            ..Default::default()
        }),
        hostname: e.hostname.clone(),
        node_name: e.node_name.clone(),
        target_ref: e.target_ref.clone(),
        zone,
    }
}

fn port_to_v1beta1(p: &discovery::EndpointPort) -> EndpointPort {
    EndpointPort {
        app_protocol: p.app_protocol.clone(),
        name: p.name.clone(),
        port: p.port,
        protocol: p.protocol.clone(),
    }
}

fn port_to_v1(p: &EndpointPort) -> discovery::EndpointPort {
    discovery::EndpointPort {
        app_protocol: p.app_protocol.clone(),
        name: p.name.clone(),
        port: p.port,
        protocol: p.protocol.clone(),
    }
}

fn label_of<'a>(m: &'a ObjectMeta, k: &str) -> Option<&'a str> {
    m.labels.as_ref()?.get(k).map(String::as_str)
}

/// Export: the RemoteEndpointSlices for the global Services of Ready cluster `rc`, from its
/// Services and EndpointSlices. A slice counts when its `kubernetes.io/service-name` Service in
/// its namespace is global and hybridnet did not write it (no loops between clusters). Labels and
/// annotations are copied, with `managed-by` hybridnet and `networking.alibaba.com/remote-cluster`
/// added; owned by the RemoteCluster. Sorted by name.
pub fn desired_remote_endpoint_slices(
    rc: &RemoteCluster,
    services: &[Service],
    slices: &[discovery::EndpointSlice],
) -> Vec<RemoteEndpointSlice> {
    let cluster = rc.metadata.name.clone().unwrap_or_default();
    let global = |ns: &str, name: &str| {
        services.iter().any(|s| {
            s.metadata.namespace.as_deref() == Some(ns)
                && s.metadata.name.as_deref() == Some(name)
                && s.metadata.deletion_timestamp.is_none()
                && is_global(s.metadata.annotations.as_ref())
        })
    };
    // Owned by the RemoteCluster like the other mirrors.
    let owner = super::mirror::owner(rc);
    let mut out: Vec<RemoteEndpointSlice> = slices
        .iter()
        .filter(|e| label_of(&e.metadata, LABEL_MANAGED_BY) != Some(MANAGED_BY))
        .filter_map(|e| {
            let ns = e.metadata.namespace.as_deref()?;
            let svc = label_of(&e.metadata, LABEL_SERVICE_NAME)?;
            if !global(ns, svc) {
                return None;
            }
            let name = remote_slice_name(&cluster, ns, e.metadata.name.as_deref()?)?;
            let mut labels = e.metadata.labels.clone().unwrap_or_default();
            labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
            labels.insert(label::REMOTE_CLUSTER.into(), cluster.clone());
            Some(RemoteEndpointSlice {
                metadata: ObjectMeta {
                    name: Some(name),
                    labels: Some(labels),
                    annotations: e.metadata.annotations.clone(),
                    owner_references: owner.clone().map(|o| vec![o]),
                    ..Default::default()
                },
                spec: RemoteEndpointSliceSpec {
                    remote_service: RemoteServiceInfo {
                        cluster: cluster.clone(),
                        name: svc.to_string(),
                        namespace: ns.to_string(),
                    },
                    address_type: e.address_type.clone(),
                    endpoints: e
                        .endpoints
                        .as_ref()
                        .map(|l| l.iter().map(to_v1beta1).collect()),
                    ports: e
                        .ports
                        .as_ref()
                        .map(|l| l.iter().map(port_to_v1beta1).collect()),
                },
                status: None,
            })
        })
        .collect();
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out
}

/// Import: the EndpointSlices local Service `svc` gets from the RemoteEndpointSlices of its
/// namespace and name (none when it is not global: `unbind`). Named as the RemoteEndpointSlice,
/// labels and annotations copied from it, owned by the Service as kube-controller-manager owns
/// its slices. Sorted by name.
pub fn desired_endpoint_slices(
    svc: &Service,
    remote: &[RemoteEndpointSlice],
) -> Vec<discovery::EndpointSlice> {
    let (Some(ns), Some(name)) = (
        svc.metadata.namespace.as_deref(),
        svc.metadata.name.as_deref(),
    ) else {
        return Vec::new();
    };
    if svc.metadata.deletion_timestamp.is_some() || !is_global(svc.metadata.annotations.as_ref()) {
        return Vec::new();
    }
    let owner = svc.metadata.uid.clone().map(|uid| OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: name.to_string(),
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    });
    let mut out: Vec<discovery::EndpointSlice> = remote
        .iter()
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .filter(|r| {
            r.spec.remote_service.namespace == ns
                && r.spec.remote_service.name == name
                && label_of(&r.metadata, LABEL_SERVICE_NAME) == Some(name)
        })
        .map(|r| discovery::EndpointSlice {
            metadata: ObjectMeta {
                name: r.metadata.name.clone(),
                namespace: Some(ns.to_string()),
                labels: r.metadata.labels.clone(),
                annotations: r.metadata.annotations.clone(),
                owner_references: owner.clone().map(|o| vec![o]),
                ..Default::default()
            },
            address_type: r.spec.address_type.clone(),
            endpoints: Some(r.spec.endpoints.iter().flatten().map(to_v1).collect()),
            ports: r
                .spec
                .ports
                .as_ref()
                .map(|l| l.iter().map(port_to_v1).collect()),
        })
        .collect();
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out
}

/// The EndpointSlices hybridnet wrote that no longer belong (their Service is gone or no longer
/// global, or their RemoteEndpointSlice went): `existing` are the slices labelled managed-by
/// hybridnet, `desired` every slice [`desired_endpoint_slices`] gives for the local Services.
/// `(namespace, name)` pairs, sorted.
pub fn stale_endpoint_slices(
    existing: &[discovery::EndpointSlice],
    desired: &[discovery::EndpointSlice],
) -> Vec<(String, String)> {
    let key = |m: &ObjectMeta| {
        (
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    };
    let wanted: std::collections::BTreeSet<(String, String)> =
        desired.iter().map(|d| key(&d.metadata)).collect();
    let mut out: Vec<(String, String)> = existing
        .iter()
        .filter(|e| label_of(&e.metadata, LABEL_MANAGED_BY) == Some(MANAGED_BY))
        .map(|e| key(&e.metadata))
        .filter(|k| !wanted.contains(k))
        .collect();
    out.sort();
    out
}

/// Builds [`super::mirror::Mirror`]s of RemoteEndpointSlices, for
/// [`super::mirror::plan_mirrors_labelled`] with [`label::REMOTE_CLUSTER`].
pub fn remote_slice_mirrors(
    list: &[RemoteEndpointSlice],
) -> Vec<super::mirror::Mirror<'_, RemoteEndpointSliceSpec>> {
    list.iter()
        .map(|r| super::mirror::Mirror {
            meta: &r.metadata,
            spec: &r.spec,
        })
        .collect()
}

/// What the import writes: the EndpointSlices to apply and the ones to delete.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImportPlan {
    /// Missing, or different from what is there (labels, annotations, owner, address type,
    /// endpoints, ports); sorted by namespace and name.
    pub apply: Vec<discovery::EndpointSlice>,
    /// `(namespace, name)` of slices hybridnet wrote that no longer belong; sorted.
    pub delete: Vec<(String, String)>,
}

/// Whether `existing` already is `desired` as far as the import writes it: every label and
/// annotation of `desired` with its value, the same owner references, address type, endpoints
/// and ports. Fields the API server or others add (other labels, `metadata.generation`) do not
/// count, so an unchanged import writes nothing.
fn is_current(existing: &discovery::EndpointSlice, desired: &discovery::EndpointSlice) -> bool {
    let subset = |want: &Option<BTreeMap<String, String>>,
                  have: &Option<BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    subset(&desired.metadata.labels, &existing.metadata.labels)
        && subset(
            &desired.metadata.annotations,
            &existing.metadata.annotations,
        )
        && existing.metadata.owner_references == desired.metadata.owner_references
        && existing.address_type == desired.address_type
        && existing.endpoints.as_deref().unwrap_or_default()
            == desired.endpoints.as_deref().unwrap_or_default()
        && existing.ports.as_deref().unwrap_or_default()
            == desired.ports.as_deref().unwrap_or_default()
}

/// The import for the whole cluster: every local Service's [`desired_endpoint_slices`] from the
/// RemoteEndpointSlices `remote`, compared with `existing` (the EndpointSlices labelled
/// managed-by hybridnet; others are never touched).
pub fn plan_import(
    services: &[Service],
    remote: &[RemoteEndpointSlice],
    existing: &[discovery::EndpointSlice],
) -> ImportPlan {
    let key = |m: &ObjectMeta| {
        (
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    };
    let ours: BTreeMap<(String, String), &discovery::EndpointSlice> = existing
        .iter()
        .filter(|e| label_of(&e.metadata, LABEL_MANAGED_BY) == Some(MANAGED_BY))
        .map(|e| (key(&e.metadata), e))
        .collect();
    let mut desired: Vec<discovery::EndpointSlice> = services
        .iter()
        .flat_map(|svc| desired_endpoint_slices(svc, remote))
        .collect();
    desired.sort_by_key(|d| key(&d.metadata));
    let delete = stale_endpoint_slices(existing, &desired);
    let apply = desired
        .into_iter()
        .filter(|d| {
            ours.get(&key(&d.metadata))
                .is_none_or(|e| !is_current(e, d))
        })
        .collect();
    ImportPlan { apply, delete }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multicluster::RemoteClusterSpec;

    fn svc(ns: &str, name: &str, global: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                annotations: global
                    .map(|g| BTreeMap::from([(annotation::GLOBAL_SERVICE.to_string(), g.into())])),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn slice(
        ns: &str,
        name: &str,
        svc: &str,
        managed_by: Option<&str>,
    ) -> discovery::EndpointSlice {
        let mut labels = BTreeMap::from([(LABEL_SERVICE_NAME.to_string(), svc.to_string())]);
        if let Some(m) = managed_by {
            labels.insert(LABEL_MANAGED_BY.into(), m.into());
        }
        discovery::EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                labels: Some(labels),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(vec![discovery::Endpoint {
                addresses: vec!["100.65.0.7".into()],
                conditions: Some(discovery::EndpointConditions {
                    ready: Some(true),
                    ..Default::default()
                }),
                zone: Some("zone-a".into()),
                deprecated_topology: Some(BTreeMap::from([(
                    "kubernetes.io/hostname".to_string(),
                    "node1".to_string(),
                )])),
                node_name: Some("node1".into()),
                ..Default::default()
            }]),
            ports: Some(vec![discovery::EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        }
    }

    fn rc() -> RemoteCluster {
        let mut rc = RemoteCluster::new("b", RemoteClusterSpec::default());
        rc.metadata.uid = Some("uid-rc-b".into());
        rc
    }

    #[test]
    fn global_is_read_as_go_reads_a_bool() {
        for yes in ["1", "t", "T", "TRUE", "true", "True"] {
            assert!(
                is_global(svc("d", "s", Some(yes)).metadata.annotations.as_ref()),
                "{yes}"
            );
        }
        for no in ["", "yes", "0", "false", " true", "tRuE"] {
            assert!(
                !is_global(svc("d", "s", Some(no)).metadata.annotations.as_ref()),
                "{no:?}"
            );
        }
        assert!(!is_global(None));
    }

    #[test]
    fn export_takes_slices_of_global_services_only_and_never_our_own() {
        let services = [
            svc("default", "web", Some("true")),
            svc("default", "plain", None),
            svc("other", "web", Some("false")),
        ];
        let slices = [
            slice(
                "default",
                "web-abc",
                "web",
                Some("endpointslice-controller.k8s.io"),
            ),
            slice("default", "plain-abc", "plain", None),
            slice("other", "web-xyz", "web", None),
            // Imported by hybridnet from a third cluster: not exported again.
            slice("default", "c.default.web-q", "web", Some(MANAGED_BY)),
        ];
        let out = desired_remote_endpoint_slices(&rc(), &services, &slices);
        assert_eq!(out.len(), 1, "{out:#?}");
        let r = &out[0];
        assert_eq!(r.metadata.name.as_deref(), Some("b.default.web-abc"));
        assert_eq!(
            r.spec.remote_service,
            RemoteServiceInfo {
                cluster: "b".into(),
                name: "web".into(),
                namespace: "default".into()
            }
        );
        let labels = r.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_MANAGED_BY], MANAGED_BY);
        assert_eq!(labels[label::REMOTE_CLUSTER], "b");
        assert_eq!(labels[LABEL_SERVICE_NAME], "web");
        let e = &r.spec.endpoints.as_ref().unwrap()[0];
        let topo = e.topology.as_ref().unwrap();
        assert_eq!(topo[ZONE_KEY], "zone-a");
        assert_eq!(topo["kubernetes.io/hostname"], "node1");
        assert_eq!(
            r.metadata.owner_references.as_ref().unwrap()[0].uid,
            "uid-rc-b"
        );
        assert_eq!(r.spec.ports.as_ref().unwrap()[0].port, Some(8080));
    }

    #[test]
    fn import_binds_a_global_service_to_its_remote_slices_and_round_trips_endpoints() {
        let remote = desired_remote_endpoint_slices(
            &rc(),
            &[svc("default", "web", Some("true"))],
            &[slice("default", "web-abc", "web", None)],
        );
        let local = svc("default", "web", Some("true"));
        let out = desired_endpoint_slices(&local, &remote);
        assert_eq!(out.len(), 1);
        let e = &out[0];
        assert_eq!(
            (e.metadata.namespace.as_deref(), e.metadata.name.as_deref()),
            (Some("default"), Some("b.default.web-abc"))
        );
        let o = &e.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((o.kind.as_str(), o.uid.as_str()), ("Service", "uid-web"));
        // v1 -> v1beta1 -> v1 gives the endpoint back.
        assert_eq!(
            e.endpoints.as_ref().unwrap()[0],
            slice("default", "web-abc", "web", None).endpoints.unwrap()[0]
        );
        // Not global here, another namespace, or terminating: nothing.
        assert!(desired_endpoint_slices(&svc("default", "web", None), &remote).is_empty());
        assert!(desired_endpoint_slices(&svc("prod", "web", Some("true")), &remote).is_empty());
        let mut gone = local.clone();
        gone.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        assert!(desired_endpoint_slices(&gone, &remote).is_empty());
    }

    #[test]
    fn stale_slices_are_only_ours_that_are_not_desired() {
        let ours_kept = slice("default", "b.default.web-abc", "web", Some(MANAGED_BY));
        let ours_stale = slice("default", "b.default.web-old", "web", Some(MANAGED_BY));
        let theirs = slice(
            "default",
            "web-abc",
            "web",
            Some("endpointslice-controller.k8s.io"),
        );
        let stale = stale_endpoint_slices(
            &[ours_kept.clone(), ours_stale, theirs],
            std::slice::from_ref(&ours_kept),
        );
        assert_eq!(
            stale,
            [("default".to_string(), "b.default.web-old".to_string())]
        );
    }

    #[test]
    fn the_import_writes_only_what_changed_and_removes_only_its_own() {
        let remote = desired_remote_endpoint_slices(
            &rc(),
            &[svc("default", "web", Some("true"))],
            &[slice("default", "web-abc", "web", None)],
        );
        let services = [
            svc("default", "web", Some("true")),
            svc("default", "plain", None),
        ];
        // Nothing there yet: one slice to write.
        let first = plan_import(&services, &remote, &[]);
        assert_eq!(first.apply.len(), 1);
        assert!(first.delete.is_empty());
        // Written (the API server adds a label and a generation): nothing more to do.
        let mut written = first.apply[0].clone();
        written
            .metadata
            .labels
            .get_or_insert_default()
            .insert("extra".into(), "by-someone".into());
        written.metadata.generation = Some(3);
        assert_eq!(
            plan_import(&services, &remote, std::slice::from_ref(&written)),
            ImportPlan::default()
        );
        // An endpoint changed there: written again.
        let mut changed = written.clone();
        changed.endpoints = Some(Vec::new());
        assert_eq!(
            plan_import(&services, &remote, std::slice::from_ref(&changed)).apply,
            first.apply
        );
        // The Service is no longer global: ours goes, a slice of someone else's stays.
        let theirs = slice(
            "default",
            "web-abc",
            "web",
            Some("endpointslice-controller.k8s.io"),
        );
        let plan = plan_import(
            &[svc("default", "web", None)],
            &remote,
            &[written.clone(), theirs],
        );
        assert!(plan.apply.is_empty());
        assert_eq!(
            plan.delete,
            [("default".to_string(), "b.default.web-abc".to_string())]
        );
        // The remote slice went: ours goes too.
        let plan = plan_import(&services, &[], std::slice::from_ref(&written));
        assert_eq!(plan.delete.len(), 1);
    }

    #[test]
    fn remote_slices_are_planned_by_their_remote_cluster_label() {
        use crate::multicluster::mirror::plan_mirrors_labelled;
        let desired = desired_remote_endpoint_slices(
            &rc(),
            &[svc("default", "web", Some("true"))],
            &[slice("default", "web-abc", "web", None)],
        );
        let mut other = desired[0].clone();
        other.metadata.name = Some("c.default.web-abc".into());
        other
            .metadata
            .labels
            .get_or_insert_default()
            .insert(label::REMOTE_CLUSTER.into(), "c".into());
        let mut old = desired[0].clone();
        old.metadata.name = Some("b.default.web-old".into());
        let existing = [other, old];
        let plan = plan_mirrors_labelled(
            label::REMOTE_CLUSTER,
            "b",
            &remote_slice_mirrors(&desired),
            &remote_slice_mirrors(&existing),
        );
        assert_eq!(plan.apply, ["b.default.web-abc"]);
        // Cluster c's slice is left alone; b's slice that is no longer exported goes.
        assert_eq!(plan.delete, ["b.default.web-old"]);
    }

    #[test]
    fn names_too_long_for_an_object_are_skipped() {
        assert_eq!(
            remote_slice_name("b", "default", "web").as_deref(),
            Some("b.default.web")
        );
        assert!(remote_slice_name("b", "default", &"x".repeat(250)).is_none());
    }
}
