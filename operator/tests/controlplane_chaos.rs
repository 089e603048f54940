//! Chaos: 500 pods (overlay, underlay, dual stack, stateful) created concurrently while the
//! active replica is killed twice and kube-lite injects conflicts and watch drops. Afterwards:
//! no duplicate address, no leaked IPInstance, every scheduled pod has its addresses, and the
//! status counters equal a recount.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use hybridnet_api::constants::annotation;
use hybridnet_api::v1::{IPInstance, IpVersion, Network, NetworkType, Subnet};
use hybridnet_operator::controlplane::replica::Replica;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

const LONG: Duration = Duration::from_secs(120);

async fn holder(env: &Env) -> Option<String> {
    Api::<Lease>::namespaced(env.client.clone(), "kube-system")
        .get_opt("hybridnet-manager-election")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

/// Kills the replica that holds the Lease and starts a fresh standby in its place.
async fn kill_leader(env: &Env, replicas: &mut Vec<(String, Replica)>, next: &mut u32) -> String {
    let deadline = tokio::time::Instant::now() + LONG;
    let leader = loop {
        if let Some(h) = holder(env).await
            && replicas.iter().any(|(id, _)| *id == h)
        {
            break h;
        }
        assert!(tokio::time::Instant::now() < deadline, "nobody leads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let pos = replicas.iter().position(|(id, _)| *id == leader).unwrap();
    let (_, r) = replicas.remove(pos);
    r.kill();
    *next += 1;
    let id = format!("r{next}");
    let fresh = env.replica(&id).await;
    env.register_webhooks(fresh.webhook_addr.unwrap()).await;
    replicas.push((id, fresh));
    leader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_500_pods_with_failovers_conflicts_and_watch_drops() {
    let env = Env::start().await;
    let mut replicas = vec![
        ("r1".to_string(), env.replica("r1").await),
        ("r2".to_string(), env.replica("r2").await),
    ];
    let mut next = 2;
    env.register_webhooks(replicas[0].1.webhook_addr.unwrap())
        .await;
    for i in 0..4 {
        env.node(&format!("u{i}"), &[("network", "u1")]).await;
        env.node(&format!("o{i}"), &[]).await;
    }
    env.underlay("u1", "u1-sub", "10.20.0.0/22", "10.20.0.1")
        .await;
    env.create_network(network("o", NetworkType::Overlay, Some(4), None))
        .await
        .unwrap();
    env.create_subnet(subnet_of("o-v4", "o", IpVersion::V4, "100.64.0.0/22", None))
        .await
        .unwrap();
    env.create_subnet(subnet_of("o-v6", "o", IpVersion::V6, "fd00:64::/118", None))
        .await
        .unwrap();
    env.network_ready("u1", true, false).await;
    env.network_ready("o", true, true).await;

    // The pod mix: (name, node, annotations, stateful set, ordinal).
    let mut stses = Vec::new();
    for s in 0..10 {
        stses.push(env.create_statefulset("default", &format!("sts{s}")).await);
    }
    let mut specs: Vec<(Pod, usize)> = Vec::new(); // pod and expected address count
    for i in 0..150 {
        specs.push((
            pod(
                "default",
                &format!("under-{i}"),
                &format!("u{}", i % 4),
                &[],
            ),
            1,
        ));
    }
    for i in 0..150 {
        specs.push((
            pod(
                "default",
                &format!("over-{i}"),
                &format!("o{}", i % 4),
                &[(annotation::NETWORK_TYPE, "Overlay")],
            ),
            1,
        ));
    }
    for i in 0..100 {
        specs.push((
            pod(
                "default",
                &format!("dual-{i}"),
                &format!("o{}", i % 4),
                &[
                    (annotation::NETWORK_TYPE, "Overlay"),
                    (annotation::IP_FAMILY, "DualStack"),
                ],
            ),
            2,
        ));
    }
    for (s, sts) in stses.iter().enumerate() {
        for o in 0..10 {
            let (node, anns): (String, Vec<(&str, &str)>) = if s % 2 == 0 {
                (format!("u{}", o % 4), vec![])
            } else {
                (
                    format!("o{}", o % 4),
                    vec![(annotation::NETWORK_TYPE, "Overlay")],
                )
            };
            specs.push((stateful_pod(sts, o, &node, &anns), 1));
        }
    }
    assert_eq!(specs.len(), 500);
    let expected: BTreeMap<String, usize> = specs.iter().map(|(p, n)| (p.name_any(), *n)).collect();

    let client = env.client.clone();
    let creator = tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client, "default");
        futures::stream::iter(specs)
            .map(|(p, _)| {
                let pods = pods.clone();
                async move {
                    // Creation itself may meet an injected fault: retry.
                    for _ in 0..50 {
                        match pods.create(&Default::default(), &p).await {
                            Ok(_) => return,
                            Err(kube::Error::Api(s))
                                if s.code == 409 && s.reason == "AlreadyExists" =>
                            {
                                return;
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                    panic!("could not create pod {}", p.name_any());
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
    });

    // Chaos while the pods come in.
    tokio::time::sleep(Duration::from_millis(400)).await;
    env.srv.faults().conflict_next_updates(25);
    env.srv.faults().disconnect_watches();
    let first = kill_leader(&env, &mut replicas, &mut next).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    env.srv.faults().disconnect_watches();
    env.srv.faults().conflict_next_updates(25);
    let second = kill_leader(&env, &mut replicas, &mut next).await;
    assert_ne!(
        first, second,
        "the same replica cannot lead twice after being killed"
    );
    env.srv.faults().disconnect_watches();
    creator.await.expect("pods created");

    // Convergence: every pod has its addresses.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let ipis: Api<IPInstance> = Api::all(env.client.clone());
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let all_pods = pods.list(&ListParams::default()).await.unwrap().items;
        let instances = ipis.list(&ListParams::default()).await.unwrap().items;
        let mut by_pod: BTreeMap<(String, String), usize> = BTreeMap::new();
        for i in instances
            .iter()
            .filter(|i| i.metadata.deletion_timestamp.is_none())
        {
            if let Some(uid) = &i.spec.binding.pod_uid {
                *by_pod
                    .entry((
                        i.spec.binding.pod_name.clone().unwrap_or_default(),
                        uid.clone(),
                    ))
                    .or_default() += 1;
            }
        }
        let missing: Vec<String> = all_pods
            .iter()
            .filter(|p| {
                let want = expected.get(&p.name_any()).copied().unwrap_or(1);
                by_pod
                    .get(&(p.name_any(), p.uid().unwrap_or_default()))
                    .copied()
                    != Some(want)
            })
            .map(|p| p.name_any())
            .collect();
        if all_pods.len() == 500 && missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} pods, {} without their addresses, e.g. {:?}",
            all_pods.len(),
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Let the leak detector and status writers settle, then check the invariants.
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let problems = invariants(&env).await;
        if problems.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "invariants do not hold: {problems:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Leadership really moved twice while pods were being allocated.
    let lease = Api::<Lease>::namespaced(env.client.clone(), "kube-system")
        .get("hybridnet-manager-election")
        .await
        .unwrap();
    let transitions = lease.spec.and_then(|s| s.lease_transitions).unwrap_or(0);
    assert!(transitions >= 2, "lease transitions {transitions}");
    for (_, r) in replicas {
        r.shutdown().await;
    }
}

/// Duplicate addresses, leaked IPInstances and status counters that differ from a recount.
async fn invariants(env: &Env) -> Vec<String> {
    let mut problems = Vec::new();
    let instances = Api::<IPInstance>::all(env.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let pods = Api::<Pod>::all(env.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let live: Vec<&IPInstance> = instances
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .collect();
    let mut seen = BTreeSet::new();
    for i in &live {
        if !seen.insert(ip_of(i)) {
            problems.push(format!("duplicate address {}", ip_of(i)));
        }
        let pod = pods.iter().find(|p| {
            p.namespace() == i.namespace() && Some(p.name_any()) == i.spec.binding.pod_name
        });
        let ok = match pod {
            Some(p) => p.metadata.uid == i.spec.binding.pod_uid,
            None => i.spec.is_reserved(),
        };
        if !ok {
            problems.push(format!(
                "leaked IPInstance {} of pod {:?}",
                i.name_any(),
                i.spec.binding.pod_name
            ));
        }
    }
    let subnets = Api::<Subnet>::all(env.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    for s in &subnets {
        let count = live
            .iter()
            .filter(|i| i.spec.subnet == s.name_any())
            .count() as i32;
        let used = s.status.as_ref().and_then(|st| st.used);
        if used != Some(count) {
            problems.push(format!(
                "subnet {} used {used:?} != recount {count}",
                s.name_any()
            ));
        }
        let st = s.status.clone().unwrap_or_default();
        if st.total.zip(st.used).map(|(t, u)| t - u) != st.available {
            problems.push(format!("subnet {} available != total - used", s.name_any()));
        }
    }
    let networks = Api::<Network>::all(env.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    for n in &networks {
        let v4 = live
            .iter()
            .filter(|i| i.spec.network == n.name_any() && i.spec.address.version == IpVersion::V4)
            .count() as i32;
        let used = n
            .status
            .as_ref()
            .and_then(|s| s.statistics)
            .and_then(|c| c.used);
        if used != Some(v4) {
            problems.push(format!(
                "network {} v4 used {used:?} != recount {v4}",
                n.name_any()
            ));
        }
    }
    problems
}
