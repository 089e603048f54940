//! Chaos: 500 pods (overlay, underlay, dual stack, stateful) in four namespaces created
//! concurrently while the active replica is killed twice (no Lease release: the standby takes over
//! after expiry), pods are deleted, and kube-lite injects conflicts and watch drops. Each kill is
//! checked to land while allocations are in flight and the conflicts to be hit. Afterwards: no
//! duplicate address cluster-wide, no leaked IPInstance, every pod has its addresses, and the
//! status counters equal a recount; the checker itself is shown to catch an injected duplicate
//! and leak.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use hybridnet_api::constants::annotation;
use hybridnet_api::v1::{IPInstance, IpVersion, Network, NetworkType, Subnet};
use hybridnet_operator::controlplane::runtime::replica::Replica;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

const LONG: Duration = Duration::from_secs(120);

/// The pods are spread over these namespaces: IPInstances are named after their address, so only
/// instances in different namespaces can carry the same address.
const NAMESPACES: [&str; 4] = ["default", "chaos-b", "chaos-c", "chaos-d"];

/// Pods deleted while the failovers happen (the release and leak paths run under chaos).
const DELETED: [(&str, &str); 8] = [
    ("default", "under-0"),
    ("chaos-b", "under-1"),
    ("chaos-c", "over-2"),
    ("chaos-d", "over-3"),
    ("default", "dual-4"),
    ("chaos-b", "dual-5"),
    ("default", "sts0-1"),
    ("chaos-b", "sts1-2"),
];

async fn holder(env: &Env) -> Option<String> {
    Api::<Lease>::namespaced(env.client.clone(), "kube-system")
        .get_opt("hybridnet-manager-election")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

/// Kills (no Lease release) the replica that holds the Lease, starts a fresh standby in its place,
/// and waits for a live replica to take the Lease over after it expires. Returns the killed and
/// the new leader.
async fn kill_leader(
    env: &Env,
    replicas: &mut Vec<(String, Replica)>,
    next: &mut u32,
) -> (String, String) {
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
    let transitions_before = transitions(env).await;
    let pos = replicas.iter().position(|(id, _)| *id == leader).unwrap();
    let (_, r) = replicas.remove(pos);
    r.kill();
    *next += 1;
    let id = format!("r{next}");
    let fresh = env.replica(&id).await;
    env.register_webhooks(fresh.webhook_addr.unwrap()).await;
    replicas.push((id, fresh));
    let live: Vec<String> = replicas.iter().map(|(id, _)| id.clone()).collect();
    let deadline = tokio::time::Instant::now() + LONG;
    let new_leader = loop {
        let h = holder(env).await;
        if let Some(h) = h.as_ref().filter(|h| live.contains(h)) {
            break h.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no live replica of {live:?} took the Lease from the killed {leader}: holder {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let transitions_after = transitions(env).await;
    assert!(
        new_leader != leader && transitions_after > transitions_before,
        "the Lease moved from the killed {leader} to {new_leader} (transitions {transitions_before} -> {transitions_after})"
    );
    (leader, new_leader)
}

async fn transitions(env: &Env) -> i32 {
    Api::<Lease>::namespaced(env.client.clone(), "kube-system")
        .get_opt("hybridnet-manager-election")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0)
}

/// (pods that exist, pods with every address they need) right now: allocations are in flight
/// while the second is smaller than the number of pods the test creates.
async fn progress(env: &Env, expected: &BTreeMap<(String, String), usize>) -> (usize, usize) {
    let pods = Api::<Pod>::all(env.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let by_pod = bound_instances(env).await;
    let done = pods
        .iter()
        .filter(|p| {
            let key = (p.namespace().unwrap_or_default(), p.name_any());
            let want = expected.get(&key).copied().unwrap_or(1);
            by_pod.get(&(key, p.uid().unwrap_or_default())).copied() == Some(want)
        })
        .count();
    (pods.len(), done)
}

/// Live IPInstances per ((namespace, pod name), pod uid).
async fn bound_instances(env: &Env) -> BTreeMap<((String, String), String), usize> {
    let instances = Api::<IPInstance>::all(env.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let mut by_pod = BTreeMap::new();
    for i in instances
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
    {
        if let Some(uid) = &i.spec.binding.pod_uid {
            *by_pod
                .entry((
                    (
                        i.namespace().unwrap_or_default(),
                        i.spec.binding.pod_name.clone().unwrap_or_default(),
                    ),
                    uid.clone(),
                ))
                .or_default() += 1;
        }
    }
    by_pod
}

async fn delete_all_when_allocated(env: &Env, pods: &[(&str, &str)]) {
    for (ns, name) in pods {
        delete_when_allocated(env, ns, name).await;
    }
}

/// Deletes `ns/name` once it has its addresses (the creator may not have reached it yet), so the
/// release (or, for a stateful pod, the reservation) of allocated addresses runs.
async fn delete_when_allocated(env: &Env, ns: &str, name: &str) {
    let n = if name.starts_with("dual-") { 2 } else { 1 };
    env.allocated(ns, name, n).await;
    env.delete_pod(ns, name).await;
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
    for ns in &NAMESPACES[1..] {
        env.namespace(ns, &[]).await;
    }
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

    // The pod mix, spread over the namespaces: (pod, expected address count).
    let ns_of = |i: usize| NAMESPACES[i % NAMESPACES.len()];
    let mut stses = Vec::new();
    for s in 0..10 {
        stses.push(env.create_statefulset(ns_of(s), &format!("sts{s}")).await);
    }
    let mut specs: Vec<(Pod, usize)> = Vec::new();
    for i in 0..150 {
        specs.push((
            pod(ns_of(i), &format!("under-{i}"), &format!("u{}", i % 4), &[]),
            1,
        ));
    }
    for i in 0..150 {
        specs.push((
            pod(
                ns_of(i),
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
                ns_of(i),
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
    let key = |p: &Pod| (p.namespace().unwrap_or_default(), p.name_any());
    let mut expected: BTreeMap<(String, String), usize> =
        specs.iter().map(|(p, n)| (key(p), *n)).collect();
    for (ns, name) in DELETED {
        assert!(
            expected
                .remove(&(ns.to_string(), name.to_string()))
                .is_some(),
            "{ns}/{name} is one of the pods"
        );
    }

    let client = env.client.clone();
    let creator = tokio::spawn(async move {
        futures::stream::iter(specs)
            .map(|(p, _)| {
                let pods: Api<Pod> =
                    Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
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

    // Chaos while the pods come in: each kill must land while allocations are in flight.
    let all = 500;
    wait_for("the first allocations", || async {
        progress(&env, &expected).await.1 > 0
    })
    .await;
    env.srv.faults().conflict_next_updates(25);
    env.srv.faults().disconnect_watches();
    let at_first = progress(&env, &expected).await;
    let (killed1, took1) = kill_leader(&env, &mut replicas, &mut next).await;
    env.srv.faults().disconnect_watches();
    env.srv.faults().conflict_next_updates(25);
    // The second kill right after the takeover, while the first pods are being deleted.
    let at_second = progress(&env, &expected).await;
    let (_, (killed2, took2)) = tokio::join!(
        delete_all_when_allocated(&env, &DELETED[..4]),
        kill_leader(&env, &mut replicas, &mut next)
    );
    env.srv.faults().disconnect_watches();
    let (_, created) = tokio::join!(delete_all_when_allocated(&env, &DELETED[4..]), creator);
    created.expect("pods created");
    eprintln!(
        "chaos: killed {killed1} with {}/{all} pods allocated ({} created), {took1} took over; \
         killed {killed2} with {}/{all} allocated ({} created), {took2} took over",
        at_first.1, at_first.0, at_second.1, at_second.0
    );
    for (when, (_, done)) in [("first", at_first), ("second", at_second)] {
        assert!(
            done < all - DELETED.len(),
            "the {when} kill landed after every allocation was done ({done} of {all})"
        );
    }

    // Convergence: every pod has its addresses, deleted ones are gone.
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let all_pods = Api::<Pod>::all(env.client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        let by_pod = bound_instances(&env).await;
        let missing: Vec<String> = all_pods
            .iter()
            .filter(|p| {
                let want = expected.get(&key(p)).copied().unwrap_or(1);
                by_pod.get(&(key(p), p.uid().unwrap_or_default())).copied() != Some(want)
            })
            .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
            .collect();
        let names: BTreeSet<(String, String)> = all_pods.iter().map(key).collect();
        if names == expected.keys().cloned().collect() && missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} pods (want {}), {} without their addresses, e.g. {:?}",
            all_pods.len(),
            expected.len(),
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Let the leak detector and status writers settle, then check the invariants.
    let deadline = tokio::time::Instant::now() + LONG;
    let snapshot = loop {
        let snapshot = Snapshot::take(&env).await;
        let problems = snapshot.problems();
        if problems.is_empty() {
            break snapshot;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "invariants do not hold: {problems:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // The deleted stateful pods keep their address reserved; the others released theirs.
    for (ns, name) in DELETED {
        let left: Vec<&IPInstance> = snapshot
            .instances
            .iter()
            .filter(|i| {
                i.namespace().as_deref() == Some(ns)
                    && i.spec.binding.pod_name.as_deref() == Some(name)
                    && i.metadata.deletion_timestamp.is_none()
            })
            .collect();
        if name.starts_with("sts") {
            assert!(
                left.len() == 1 && left[0].spec.is_reserved(),
                "{ns}/{name} keeps one reserved address: {left:?}"
            );
        } else {
            assert!(
                left.is_empty(),
                "{ns}/{name} released its addresses: {left:?}"
            );
        }
    }
    // The injected conflicts were hit (none left over), by the replicas' updates.
    assert_eq!(
        env.srv.faults().conflicts_pending(),
        0,
        "injected conflicts left unhit"
    );
    assert!(
        env.srv.faults().conflicts_hit() >= 25,
        "conflicts hit: {}",
        env.srv.faults().conflicts_hit()
    );
    // Leadership really moved twice while pods were being allocated.
    let transitions = transitions(&env).await;
    assert!(transitions >= 2, "lease transitions {transitions}");
    eprintln!(
        "chaos: {} injected conflicts hit, {transitions} Lease transitions, {} pods deleted",
        env.srv.faults().conflicts_hit(),
        DELETED.len()
    );

    // Negative controls: the checker catches a duplicate address in another namespace and a
    // leaked IPInstance.
    let mut broken = snapshot.clone();
    let mut dup = snapshot.live()[0].clone();
    let other = NAMESPACES
        .iter()
        .find(|ns| Some(**ns) != dup.namespace().as_deref())
        .unwrap();
    dup.metadata.namespace = Some(other.to_string());
    let dup_ip = ip_of(&dup);
    broken.instances.push(dup);
    assert!(
        broken
            .problems()
            .contains(&format!("duplicate address {dup_ip}")),
        "{:?}",
        broken.problems()
    );
    let mut broken = snapshot.clone();
    let bound = snapshot
        .live()
        .into_iter()
        .find(|i| !i.spec.is_reserved())
        .unwrap()
        .clone();
    broken.pods.retain(|p| {
        !(p.namespace() == bound.namespace() && Some(p.name_any()) == bound.spec.binding.pod_name)
    });
    assert!(
        broken
            .problems()
            .iter()
            .any(|p| p.starts_with(&format!("leaked IPInstance {}", bound.name_any()))),
        "{:?}",
        broken.problems()
    );
    for (_, r) in replicas {
        r.shutdown().await;
    }
}

/// The objects the invariants are checked on, listed cluster-wide.
#[derive(Clone)]
struct Snapshot {
    instances: Vec<IPInstance>,
    pods: Vec<Pod>,
    subnets: Vec<Subnet>,
    networks: Vec<Network>,
}

impl Snapshot {
    async fn take(env: &Env) -> Snapshot {
        let lp = ListParams::default();
        Snapshot {
            instances: Api::<IPInstance>::all(env.client.clone())
                .list(&lp)
                .await
                .unwrap()
                .items,
            pods: Api::<Pod>::all(env.client.clone())
                .list(&lp)
                .await
                .unwrap()
                .items,
            subnets: Api::<Subnet>::all(env.client.clone())
                .list(&lp)
                .await
                .unwrap()
                .items,
            networks: Api::<Network>::all(env.client.clone())
                .list(&lp)
                .await
                .unwrap()
                .items,
        }
    }

    fn live(&self) -> Vec<&IPInstance> {
        self.instances
            .iter()
            .filter(|i| i.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// Duplicate addresses (across namespaces), leaked IPInstances and status counters that
    /// differ from a recount.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let live = self.live();
        let mut seen = BTreeSet::new();
        for i in &live {
            if !seen.insert(ip_of(i)) {
                problems.push(format!("duplicate address {}", ip_of(i)));
            }
            let pod = self.pods.iter().find(|p| {
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
        for s in &self.subnets {
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
        for n in &self.networks {
            let v4 = live
                .iter()
                .filter(|i| {
                    i.spec.network == n.name_any() && i.spec.address.version == IpVersion::V4
                })
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
}
