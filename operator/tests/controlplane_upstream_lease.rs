//! Only one IPAM leader ever allocates during a migration from upstream hybridnet
//! (docs/migration.md): while upstream's manager holds its Lease (`kube-system/
//! hybridnet-manager-election`, renewed as controller-runtime renews it) the operator does not
//! allocate; once that Lease expires the operator takes it over and keeps it, so a returning
//! upstream manager cannot lead.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use hybridnet_api::migration::{UPSTREAM_LEADER_LEASE, UPSTREAM_NAMESPACE};
use hybridnet_api::v1::{IpVersion, NetworkType};
use hybridnet_operator::controlplane::runtime::config::ControlPlaneConfig;
use hybridnet_operator::controlplane::runtime::leader::{LeaseElector, Round};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

const UPSTREAM_ID: &str = "hybridnet-manager-6f5d9c7b8-x2x7q_5b0a2a6e-1f0e-4d7c-9a55-2b1f1f3c9d11";

fn upstream_lease() -> Lease {
    serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": UPSTREAM_LEADER_LEASE, "namespace": UPSTREAM_NAMESPACE},
        "spec": {
            "holderIdentity": UPSTREAM_ID,
            "leaseDurationSeconds": 2,
            "acquireTime": k8s_openapi::jiff::Timestamp::now().to_string(),
            "renewTime": k8s_openapi::jiff::Timestamp::now().to_string(),
            "leaseTransitions": 3,
        }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_allocation_while_upstreams_manager_holds_its_lease_then_the_lease_is_taken_over() {
    let env = Env::start().await;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), UPSTREAM_NAMESPACE);
    leases
        .create(&PostParams::default(), &upstream_lease())
        .await
        .unwrap();
    // Upstream's manager renews every 200 ms until it is stopped.
    let alive = Arc::new(AtomicBool::new(true));
    let renewer = {
        let (leases, alive) = (leases.clone(), alive.clone());
        tokio::spawn(async move {
            while alive.load(Ordering::SeqCst) {
                let now = k8s_openapi::jiff::Timestamp::now().to_string();
                let _ = leases
                    .patch(
                        UPSTREAM_LEADER_LEASE,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"renewTime": now}})),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Our Lease is another one (the operator's namespace in a real install).
    let config = ControlPlaneConfig {
        leader_election_id: "hybridnet-operator".into(),
        ..test_config("op-1")
    };
    assert_eq!(
        config.upstream_lease,
        Some((UPSTREAM_NAMESPACE.into(), UPSTREAM_LEADER_LEASE.into()))
    );
    let r = env.replica_with(config, true).await;
    overlay_pod_on_n1(&env).await;
    // Our own Lease is ours, yet nothing is allocated while upstream's is renewed.
    let own: Api<Lease> = Api::namespaced(env.client.clone(), "kube-system");
    wait_for("op-1 holds its own Lease", || async {
        own.get_opt("hybridnet-operator")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
            .as_deref()
            == Some("op-1")
    })
    .await;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            env.instances_of("default", "p").await.is_empty(),
            "allocated while upstream's manager holds its Lease"
        );
        assert!(r.metrics.encode().contains("hybridnet_leader 0"));
    }
    let held = leases.get(UPSTREAM_LEADER_LEASE).await.unwrap();
    assert_eq!(
        held.spec.unwrap().holder_identity.as_deref(),
        Some(UPSTREAM_ID),
        "the guard never writes a live holder's Lease"
    );

    // Upstream's manager is scaled to zero: its Lease expires, we take it over and allocate.
    alive.store(false, Ordering::SeqCst);
    renewer.await.unwrap();
    env.allocated("default", "p", 1).await;
    let taken = leases
        .get(UPSTREAM_LEADER_LEASE)
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(taken.holder_identity.as_deref(), Some("op-1"));
    assert_eq!(taken.lease_transitions, Some(4));

    // A returning upstream manager finds the Lease held and renewed: it cannot lead.
    let mut upstream = LeaseElector::new(
        env.client.clone(),
        UPSTREAM_NAMESPACE,
        UPSTREAM_LEADER_LEASE,
        UPSTREAM_ID,
        Duration::from_secs(2),
    );
    for _ in 0..15 {
        assert_eq!(
            upstream.round().await.unwrap(),
            Round::Following {
                holder: Some("op-1".into())
            }
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(r.metrics.encode().contains("hybridnet_leader 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_upstream_lease_nothing_is_created_and_allocation_goes_on() {
    let env = Env::start().await;
    let config = ControlPlaneConfig {
        leader_election_id: "hybridnet-operator".into(),
        ..test_config("op-1")
    };
    let _r = env.replica_with(config, true).await;
    overlay_pod_on_n1(&env).await;
    env.allocated("default", "p", 1).await;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), UPSTREAM_NAMESPACE);
    assert!(
        leases
            .get_opt(UPSTREAM_LEADER_LEASE)
            .await
            .unwrap()
            .is_none(),
        "the guard Lease is never created"
    );
}

/// Node n1, an overlay network with one IPv4 subnet, and pod default/p asking for it.
async fn overlay_pod_on_n1(env: &Env) {
    env.node("n1", &[]).await;
    env.create_network(network("o", NetworkType::Overlay, Some(4), None))
        .await
        .unwrap();
    env.create_subnet(subnet_of("o-v4", "o", IpVersion::V4, "100.64.0.0/24", None))
        .await
        .unwrap();
    env.pod(pod(
        "default",
        "p",
        "n1",
        &[(
            hybridnet_api::constants::annotation::NETWORK_TYPE,
            "Overlay",
        )],
    ))
    .await;
}
