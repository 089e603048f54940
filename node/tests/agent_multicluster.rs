//! The real `hybridnet-node` against kube-lite: it picks up RemoteSubnets and RemoteVteps (added,
//! changed, deleted) and programs or removes their routes, FDB and neighbour entries; a malformed
//! RemoteVtep is logged and changes nothing; without the multi-cluster CRDs the agent still gets
//! ready, and follows them once they are installed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use hybridnet_api::multicluster::{RemoteSubnet, RemoteSubnetSpec, RemoteVtep, RemoteVtepSpec};
use hybridnet_api::v1::{AddressRange, IpVersion, NetworkType};

fn remote_subnet(name: &str, cidr: &str) -> RemoteSubnet {
    RemoteSubnet::new(
        name,
        RemoteSubnetSpec {
            range: AddressRange {
                version: IpVersion::V4,
                cidr: cidr.into(),
                ..Default::default()
            },
            network_type: Some(NetworkType::Overlay),
            cluster_name: Some("b".into()),
        },
    )
}

fn remote_vtep(name: &str, vtep: &str, mac: &str, eps: &[&str]) -> RemoteVtep {
    RemoteVtep::new(
        name,
        RemoteVtepSpec {
            cluster_name: Some("b".into()),
            node_name: name.split_once('.').map(|(_, n)| n.to_string()),
            ip: Some(vtep.into()),
            mac: Some(mac.into()),
            local_ips: Some(vec![vtep.into()]),
            endpoint_ip_list: Some(eps.iter().map(|s| s.to_string()).collect()),
        },
    )
}

/// kube-lite with n1 (the agent's node) and n2 on an overlay network.
fn cluster(cpns: &Netns) -> ControlPlane {
    let cp = ControlPlane::start(cpns, "198.18.0.250");
    cp.create(&node_object("n1", &["198.18.0.11"]));
    cp.create_network(&network(
        "overlay",
        NetworkType::Overlay,
        None,
        Some(4),
        &["n1", "n2"],
    ));
    cp.create(&subnet("ov4", "overlay", "198.19.0.0/24", None, None, None));
    cp.create(&nodeinfo(
        "n2",
        "198.18.0.12",
        "02:00:00:00:00:12",
        &["198.18.0.12"],
    ));
    cp
}

fn kernel(n1: &Netns) -> String {
    format!(
        "{}{}{}",
        n1.try_ip("route show table 40000").unwrap_or_default(),
        n1.exec(&["bridge", "fdb", "show", "dev", "eth0.vxlan4"])
            .unwrap_or_default(),
        n1.try_ip("neigh show dev eth0.vxlan4").unwrap_or_default(),
    )
}

#[test]
fn agent_follows_remote_subnets_and_vteps() {
    if !require_root("agent_follows_remote_subnets_and_vteps") {
        return;
    }
    let (_sw, cpns, n1) = l2_segment();
    let cp = cluster(&cpns);
    let agent = start_agent(&n1, "n1", &cp.kubeconfig, 11061, &[]);
    wait_for("the local overlay route", 30, || {
        kernel(&n1)
            .contains("198.19.0.0/24 dev eth0.vxlan4")
            .then_some(())
    });

    // Added: routes, FDB and neighbours of the remote cluster appear without waiting for a
    // resync.
    cp.create(&remote_subnet("b.ov4", "198.19.8.0/24"));
    cp.create(&remote_vtep(
        "b.m1",
        "198.18.0.21",
        "02:00:00:00:00:21",
        &["198.19.8.5"],
    ));
    wait_for("the remote cluster's route, FDB and neighbours", 4, || {
        let k = kernel(&n1);
        (k.contains("198.19.8.0/24 dev eth0.vxlan4")
            && k.contains("02:00:00:00:00:21 dst 198.18.0.21 self permanent")
            && k.contains("198.19.8.5 lladdr 02:00:00:00:00:21 PERMANENT")
            && k.contains("198.18.0.21 lladdr 02:00:00:00:00:21 PERMANENT"))
        .then_some(())
    });

    // Changed: a pod more on the remote node, the first one gone.
    cp.run(|c| async move {
        let patch = serde_json::json!({"spec": {"endpointIPList": ["198.19.8.6"]}});
        kube::Api::<RemoteVtep>::all(c)
            .patch(
                "b.m1",
                &Default::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .expect("patch RemoteVtep")
    });
    wait_for("the remote pod list followed", 4, || {
        let k = kernel(&n1);
        (k.contains("198.19.8.6 lladdr 02:00:00:00:00:21 PERMANENT") && !k.contains("198.19.8.5 "))
            .then_some(())
    });

    // Malformed: logged with the object and the field; the kernel keeps what it had.
    let before = kernel(&n1);
    cp.create(&remote_vtep(
        "b.m9",
        "198.18.0.29",
        "02:00:00:00:29",
        &["198.19.8.9"],
    ));
    wait_for("the malformed RemoteVtep reported", 10, || {
        let log = std::fs::read_to_string(&agent.1).unwrap_or_default();
        log.lines()
            .any(|l| {
                l.contains("RemoteVtep/b.m9")
                    && l.contains("spec.mac")
                    && l.contains("02:00:00:00:29")
                    && l.contains("is not a MAC address")
            })
            .then_some(())
    });
    assert_eq!(kernel(&n1), before);
    assert!(!before.contains("198.18.0.29"), "{before}");

    // Deleted: nothing of the remote cluster is left.
    cp.run(|c| async move {
        for name in ["b.m1", "b.m9"] {
            kube::Api::<RemoteVtep>::all(c.clone())
                .delete(name, &Default::default())
                .await
                .expect("delete RemoteVtep");
        }
        kube::Api::<RemoteSubnet>::all(c)
            .delete("b.ov4", &Default::default())
            .await
            .expect("delete RemoteSubnet");
    });
    wait_for("the remote cluster's entries gone", 4, || {
        let k = kernel(&n1);
        (!k.contains("198.19.8.") && !k.contains("198.18.0.21") && !k.contains(":21 "))
            .then_some(())
    });
    assert!(kernel(&n1).contains("198.19.0.0/24 dev eth0.vxlan4"));
    drop(agent);
}

#[test]
fn agent_without_the_multicluster_crds_gets_ready_and_follows_them_later() {
    if !require_root("agent_without_the_multicluster_crds_gets_ready_and_follows_them_later") {
        return;
    }
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let (_sw, cpns, n1) = l2_segment();
    let cp = cluster(&cpns);
    let crds = ["remotesubnets", "remotevteps"].map(|r| format!("{r}.multicluster.alibaba.com"));
    let removed: Vec<CustomResourceDefinition> = cp.run({
        let crds = crds.clone();
        |c| async move {
            let api = kube::Api::<CustomResourceDefinition>::all(c);
            let mut out = Vec::new();
            for name in crds {
                out.push(api.get(&name).await.expect("get CRD"));
                api.delete(&name, &Default::default())
                    .await
                    .expect("delete CRD");
            }
            out
        }
    });
    let agent = start_agent(&n1, "n1", &cp.kubeconfig, 11062, &[]);
    wait_for("/readyz 200 without the CRDs", 30, || {
        http_get(&n1, "198.18.0.11:11062", "/readyz").filter(|(c, _)| *c == 200)
    });
    assert!(kernel(&n1).contains("198.19.0.0/24 dev eth0.vxlan4"));
    let log = std::fs::read_to_string(&agent.1).unwrap_or_default();
    assert!(
        log.contains("RemoteVtep") && log.contains("CRD not installed"),
        "{log}"
    );

    // Installed later: followed without a restart.
    cp.run(|c| async move {
        let api = kube::Api::<CustomResourceDefinition>::all(c);
        for mut crd in removed {
            crd.metadata.resource_version = None;
            crd.metadata.uid = None;
            crd.metadata.creation_timestamp = None;
            crd.status = None;
            api.create(&Default::default(), &crd)
                .await
                .expect("create CRD");
        }
    });
    cp.create(&remote_subnet("b.ov4", "198.19.8.0/24"));
    cp.create(&remote_vtep(
        "b.m1",
        "198.18.0.21",
        "02:00:00:00:00:21",
        &["198.19.8.5"],
    ));
    wait_for("the remote entries after the CRDs came", 60, || {
        let k = kernel(&n1);
        (k.contains("198.19.8.0/24 dev eth0.vxlan4")
            && k.contains("198.19.8.5 lladdr 02:00:00:00:00:21 PERMANENT"))
        .then_some(())
    });
    drop(agent);
}
