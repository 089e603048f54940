//! Pod controller behaviour against kube-lite with the webhooks registered (spec section 11's
//! pod-controller table, plus stateful re-creation on another node, scale down/up, eviction,
//! ip-pool changes).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use hybridnet_api::constants::{annotation, finalizer, label};
use hybridnet_api::v1::{IpVersion, NetworkType};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

/// Nodes n1, n2 in underlay u1 (192.168.56.0/24), n3 in no underlay; overlay `o` with IPv4
/// 100.10.0.0/24 and IPv6 fd00:10::/120.
async fn cluster() -> (
    Env,
    hybridnet_operator::controlplane::runtime::replica::Replica,
) {
    let env = Env::start().await;
    let r = env.replica("r1").await;
    env.register_webhooks(r.webhook_addr.expect("webhook"))
        .await;
    env.node("n1", &[("network", "u1")]).await;
    env.node("n2", &[("network", "u1")]).await;
    env.node("n3", &[]).await;
    env.underlay("u1", "u1-sub", "192.168.56.0/24", "192.168.56.1")
        .await;
    env.create_network(network("o", NetworkType::Overlay, Some(4), None))
        .await
        .expect("overlay");
    env.create_subnet(subnet_of("o-v4", "o", IpVersion::V4, "100.10.0.0/24", None))
        .await
        .expect("o-v4");
    env.create_subnet(subnet_of("o-v6", "o", IpVersion::V6, "fd00:10::/120", None))
        .await
        .expect("o-v6");
    env.network_ready("u1", true, false).await;
    env.network_ready("o", true, true).await;
    (env, r)
}

async fn events_of(env: &Env, ns: &str, pod: &str) -> Vec<(String, String)> {
    Api::<Event>::namespaced(env.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

async fn wait_event(env: &Env, ns: &str, pod: &str, reason: &str) -> String {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Some((_, n)) = events_of(env, ns, pod)
            .await
            .into_iter()
            .find(|(r, _)| r == reason)
        {
            return n;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "no event {reason} on {ns}/{pod}: {:?}",
                events_of(env, ns, pod).await
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_by_type_family_network_subnet_and_namespace() {
    let (env, _r) = cluster().await;

    // Default (Underlay, IPv4) on an underlay node.
    env.pod(pod("default", "plain", "n1", &[])).await;
    let v = env.allocated("default", "plain", 1).await;
    let i = &v[0];
    assert_eq!(i.spec.network, "u1");
    assert_eq!(i.spec.subnet, "u1-sub");
    assert!(ip_of(i).starts_with("192.168.56."), "{}", i.spec.address.ip);
    assert!(i.spec.address.ip.ends_with("/24"));
    assert_eq!(i.spec.address.gateway.as_deref(), Some("192.168.56.1"));
    assert_eq!(i.spec.address.net_id, Some(0));
    assert_eq!(i.name_any(), ip_of(i).replace('.', "-"));
    assert_eq!(
        i.metadata.finalizers.clone().unwrap(),
        vec![finalizer::IP_ALLOCATED.to_string()]
    );
    let l = i.metadata.labels.clone().unwrap();
    assert_eq!(l[label::NODE], "n1");
    assert_eq!(l[label::NETWORK], "u1");
    assert_eq!(l[label::VERSION], "v1.2");
    let owner = &i.metadata.owner_references.clone().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Pod", "plain"));
    assert!(
        i.spec.address.mac.starts_with("02:12:34:"),
        "{}",
        i.spec.address.mac
    );
    assert_eq!(i.spec.binding.node_name.as_deref(), Some("n1"));
    assert!(i.spec.binding.stateful.is_none());
    let note = wait_event(&env, "default", "plain", "IPAllocationSucceed").await;
    assert!(note.contains(&ip_of(i)), "{note}");
    // The mutating webhook recorded the resolution and pinned the pod to attached nodes.
    let p: Pod = Api::namespaced(env.client.clone(), "default")
        .get("plain")
        .await
        .unwrap();
    assert_eq!(
        ann(&p, annotation::HANDLED_BY_WEBHOOK).as_deref(),
        Some("true")
    );
    let sel = p.spec.unwrap().node_selector.unwrap();
    assert_eq!(sel[label::UNDERLAY_NETWORK_ATTACHMENT], "true");
    assert_eq!(sel[label::IPV4_ADDRESS_QUOTA], "nonempty");

    // IPv6 overlay by annotation.
    env.pod(pod(
        "default",
        "v6",
        "n3",
        &[
            (annotation::NETWORK_TYPE, "Overlay"),
            (annotation::IP_FAMILY, "IPv6"),
        ],
    ))
    .await;
    let v = env.allocated("default", "v6", 1).await;
    assert_eq!(
        (v[0].spec.subnet.as_str(), v[0].spec.address.version),
        ("o-v6", IpVersion::V6)
    );
    assert_eq!(v[0].spec.address.net_id, Some(4));

    // Dual stack overlay: one IPv4, one IPv6, one MAC.
    env.pod(pod(
        "default",
        "dual",
        "n3",
        &[
            (annotation::NETWORK_TYPE, "overlay"),
            (annotation::IP_FAMILY, "DualStack"),
        ],
    ))
    .await;
    let v = env.allocated("default", "dual", 2).await;
    assert_eq!(v[0].spec.address.version, IpVersion::V4);
    assert_eq!(v[1].spec.address.version, IpVersion::V6);
    assert_eq!(v[0].spec.address.mac, v[1].spec.address.mac);

    // Network by pod annotation, by pod label; type by label.
    env.pod(pod(
        "default",
        "by-ann",
        "n3",
        &[(annotation::SPECIFIED_NETWORK, "o")],
    ))
    .await;
    assert_eq!(
        env.allocated("default", "by-ann", 1).await[0].spec.network,
        "o"
    );
    let mut p = pod("default", "by-label", "n3", &[]);
    p.metadata.labels = Some(map(&[(annotation::NETWORK_TYPE, "Overlay")]));
    env.pod(p).await;
    assert_eq!(
        env.allocated("default", "by-label", 1).await[0]
            .spec
            .network,
        "o"
    );

    // Namespace annotations: type and family.
    env.namespace(
        "ns6",
        &[
            (annotation::NETWORK_TYPE, "Overlay"),
            (annotation::IP_FAMILY, "IPv6"),
        ],
    )
    .await;
    env.pod(pod("ns6", "from-ns", "n3", &[])).await;
    let v = env.allocated("ns6", "from-ns", 1).await;
    assert_eq!(
        (v[0].spec.network.as_str(), v[0].spec.address.version),
        ("o", IpVersion::V6)
    );

    // Subnet selection: a second IPv4 overlay subnet named by the pod, and by the namespace.
    env.create_subnet(subnet_of(
        "o-v4b",
        "o",
        IpVersion::V4,
        "100.11.0.0/24",
        None,
    ))
    .await
    .unwrap();
    env.pod(pod(
        "default",
        "by-subnet",
        "n3",
        &[(annotation::SPECIFIED_SUBNET, "o-v4b")],
    ))
    .await;
    assert_eq!(
        env.allocated("default", "by-subnet", 1).await[0]
            .spec
            .subnet,
        "o-v4b"
    );
    env.namespace("nssub", &[(annotation::SPECIFIED_SUBNET, "o-v4b")])
        .await;
    env.pod(pod("nssub", "x", "n3", &[])).await;
    assert_eq!(env.allocated("nssub", "x", 1).await[0].spec.subnet, "o-v4b");
    // Without a named subnet the sticky cursor keeps filling the first subnet.
    env.pod(pod(
        "default",
        "auto",
        "n3",
        &[(annotation::NETWORK_TYPE, "Overlay")],
    ))
    .await;
    assert_eq!(
        env.allocated("default", "auto", 1).await[0].spec.subnet,
        "o-v4"
    );

    // An underlay pod on a node of no underlay network fails with a reason the user can act on.
    let mut p = pod("default", "homeless", "n3", &[]);
    p.metadata.labels = Some(map(&[(label::WEBHOOK_IGNORE, "true")]));
    env.pod(p).await;
    let note = wait_event(&env, "default", "homeless", "IPAllocationFail").await;
    assert!(note.contains("belongs to no Underlay network"), "{note}");
    assert!(env.instances_of("default", "homeless").await.is_empty());

    // No address is held twice.
    let all = env.all_instances().await;
    let mut ips: Vec<String> = all.iter().map(ip_of).collect();
    ips.sort();
    let n = ips.len();
    ips.dedup();
    assert_eq!(ips.len(), n, "duplicate addresses");
}

async fn wait_reserved(
    env: &Env,
    ns: &str,
    pod: &str,
    n: usize,
) -> Vec<hybridnet_api::v1::IPInstance> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let v = env.instances_of(ns, pod).await;
        if v.len() == n && v.iter().all(|i| i.spec.is_reserved()) {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{ns}/{pod}: not {n} reserved IPInstances: {v:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_pods_keep_addresses_across_recreation_nodes_and_scaling() {
    let (env, _r) = cluster().await;
    let sts = env.create_statefulset("default", "web").await;

    // web-0 underlay on n1; the pod gets our finalizer.
    env.pod(stateful_pod(&sts, 0, "n1", &[])).await;
    env.set_pod_status("default", "web-0", running()).await;
    let first = env.allocated("default", "web-0", 1).await;
    let i0 = &first[0];
    let owner = &i0.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("StatefulSet", "web")
    );
    assert_eq!(
        i0.spec.binding.stateful.as_ref().and_then(|s| s.index),
        Some(0)
    );
    assert_eq!(
        i0.spec
            .binding
            .referred_object
            .as_ref()
            .and_then(|r| r.kind.as_deref()),
        Some("StatefulSet")
    );
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let p = pods.get("web-0").await.unwrap();
    assert!(p.finalizers().iter().any(|f| f == finalizer::IP_ALLOCATED));

    // Deleted while a container still runs (preStop): nothing is reserved yet.
    env.delete_pod("default", "web-0").await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let still = env.instances_of("default", "web-0").await;
    assert_eq!(still.len(), 1);
    assert!(
        !still[0].spec.is_reserved(),
        "reserved while a container was running"
    );
    assert!(
        pods.get_opt("web-0").await.unwrap().is_some(),
        "pod left before its containers stopped"
    );
    // Containers stop: the address is reserved and the pod goes.
    env.set_pod_status("default", "web-0", container_status("Running", false))
        .await;
    let reserved = wait_reserved(&env, "default", "web-0", 1).await;
    assert_eq!(reserved[0].name_any(), i0.name_any());
    assert!(
        reserved[0]
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .get(label::NODE)
            .is_none()
    );
    env.pod_gone("default", "web-0").await;

    // Recreated on another node of the same underlay network: same IPInstance, same address.
    env.pod(stateful_pod(&sts, 0, "n2", &[])).await;
    let again = env.allocated("default", "web-0", 1).await;
    assert_eq!(again[0].name_any(), i0.name_any());
    assert_eq!(again[0].spec.address, i0.spec.address);
    assert_eq!(again[0].spec.binding.node_name.as_deref(), Some("n2"));
    assert_ne!(again[0].spec.binding.pod_uid, i0.spec.binding.pod_uid);

    // Dual-stack overlay stateful pod: network and family are retained even when the new pod
    // asks for nothing.
    let db = env.create_statefulset("default", "db").await;
    env.pod(stateful_pod(
        &db,
        0,
        "n3",
        &[
            (annotation::NETWORK_TYPE, "Overlay"),
            (annotation::IP_FAMILY, "DualStack"),
        ],
    ))
    .await;
    let dual = env.allocated("default", "db-0", 2).await;
    env.delete_pod("default", "db-0").await;
    wait_reserved(&env, "default", "db-0", 2).await;
    env.pod_gone("default", "db-0").await;
    env.pod(stateful_pod(&db, 0, "n3", &[])).await;
    let dual2 = env.allocated("default", "db-0", 2).await;
    assert_eq!(
        dual.iter().map(ip_of).collect::<Vec<_>>(),
        dual2.iter().map(ip_of).collect::<Vec<_>>()
    );
    assert_eq!(dual2[0].spec.address.mac, dual[0].spec.address.mac);

    // Scale up to 3, scale down to 1: the removed ordinals keep their reserved addresses; they
    // count as used and come back on scale-up.
    for o in 1..3 {
        env.pod(stateful_pod(&sts, o, "n1", &[])).await;
    }
    let a1 = env.allocated("default", "web-1", 1).await;
    let a2 = env.allocated("default", "web-2", 1).await;
    for o in [2, 1] {
        env.delete_pod("default", &format!("web-{o}")).await;
        env.pod_gone("default", &format!("web-{o}")).await;
    }
    wait_reserved(&env, "default", "web-1", 1).await;
    wait_reserved(&env, "default", "web-2", 1).await;
    // A new pod never receives a reserved address.
    env.pod(pod("default", "other", "n2", &[])).await;
    let other = env.allocated("default", "other", 1).await;
    assert!(![ip_of(&a1[0]), ip_of(&a2[0])].contains(&ip_of(&other[0])));
    for o in 1..3 {
        env.pod(stateful_pod(&sts, o, "n2", &[])).await;
    }
    assert_eq!(
        ip_of(&env.allocated("default", "web-1", 1).await[0]),
        ip_of(&a1[0])
    );
    assert_eq!(
        ip_of(&env.allocated("default", "web-2", 1).await[0]),
        ip_of(&a2[0])
    );

    // ip-retain=false: a recreated pod gets fresh addresses and the old IPInstance goes.
    let tmp = env.create_statefulset("default", "tmp").await;
    env.pod(stateful_pod(
        &tmp,
        0,
        "n1",
        &[(annotation::IP_RETAIN, "false")],
    ))
    .await;
    let old = env.allocated("default", "tmp-0", 1).await;
    env.delete_pod("default", "tmp-0").await;
    env.pod_gone("default", "tmp-0").await;
    env.pod(stateful_pod(
        &tmp,
        0,
        "n1",
        &[(annotation::IP_RETAIN, "false")],
    ))
    .await;
    let new = env.allocated("default", "tmp-0", 1).await;
    assert_ne!(ip_of(&new[0]), ip_of(&old[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_pool_and_mac_pool_by_ordinal() {
    let (env, _r) = cluster().await;
    let sts = env.create_statefulset("default", "pool").await;
    let anns = |pool: &str| {
        vec![
            (annotation::SPECIFIED_NETWORK, "u1".to_string()),
            (IP_POOL, pool.to_string()),
            (
                MAC_POOL,
                "02:00:00:00:00:0a,02:00:00:00:00:0b,02:00:00:00:00:0c".to_string(),
            ),
        ]
    };
    let pool = "192.168.56.100,192.168.56.101,192.168.56.102";
    for o in 0..3 {
        let a = anns(pool);
        let a: Vec<(&str, &str)> = a.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.pod(stateful_pod(&sts, o, "n1", &a)).await;
    }
    for o in 0..3u32 {
        let v = env.allocated("default", &format!("pool-{o}"), 1).await;
        assert_eq!(v[0].spec.address.ip, format!("192.168.56.{}/24", 100 + o));
        assert_eq!(
            v[0].spec.address.mac,
            format!("02:00:00:00:00:0{}", ["a", "b", "c"][o as usize])
        );
    }
    // Change the entry of ordinal 1 and recreate it: the new address, one IPInstance, the old
    // reserved address freed.
    env.delete_pod("default", "pool-1").await;
    env.pod_gone("default", "pool-1").await;
    let a = anns("192.168.56.100,192.168.56.110,192.168.56.102");
    let a: Vec<(&str, &str)> = a.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.pod(stateful_pod(&sts, 1, "n1", &a)).await;
    let v = env.allocated("default", "pool-1", 1).await;
    assert_eq!(v[0].spec.address.ip, "192.168.56.110/24");
    let ipis: Api<hybridnet_api::v1::IPInstance> = Api::namespaced(env.client.clone(), "default");
    wait_for("old pool address freed", || async {
        matches!(ipis.get_opt("192-168-56-101").await, Ok(None))
    })
    .await;
    // The freed address can be pre-assigned to another pod.
    let other = env.create_statefulset("default", "other").await;
    env.pod(stateful_pod(
        &other,
        0,
        "n2",
        &[
            (annotation::SPECIFIED_NETWORK, "u1"),
            (IP_POOL, "192.168.56.101"),
        ],
    ))
    .await;
    assert_eq!(
        env.allocated("default", "other-0", 1).await[0]
            .spec
            .address
            .ip,
        "192.168.56.101/24"
    );

    // A MAC of the pool already used by another pod of the network is refused.
    let clash = env.create_statefulset("default", "clash").await;
    env.pod(stateful_pod(
        &clash,
        0,
        "n2",
        &[
            (annotation::SPECIFIED_NETWORK, "u1"),
            (MAC_POOL, "02:00:00:00:00:0b"),
        ],
    ))
    .await;
    let note = wait_event(&env, "default", "clash-0", "IPAllocationFail").await;
    assert!(note.contains("02:00:00:00:00:0b"), "{note}");
    assert!(env.instances_of("default", "clash-0").await.is_empty());

    // mac-pool is ignored for pods that are not stateful.
    env.pod(pod(
        "default",
        "loner",
        "n1",
        &[(MAC_POOL, "02:00:00:00:00:0f")],
    ))
    .await;
    let v = env.allocated("default", "loner", 1).await;
    assert!(
        v[0].spec.address.mac.starts_with("02:12:34:"),
        "{}",
        v[0].spec.address.mac
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_completed_and_deleted_pods_release() {
    let (env, _r) = cluster().await;
    let subnets: Api<hybridnet_api::v1::Subnet> = Api::all(env.client.clone());
    let used = || async {
        subnets
            .get("u1-sub")
            .await
            .ok()
            .and_then(|s| s.status)
            .and_then(|s| s.used)
    };

    env.pod(pod("default", "ev", "n1", &[])).await;
    env.pod(pod("default", "done", "n1", &[])).await;
    env.pod(pod("default", "gone", "n1", &[])).await;
    for p in ["ev", "done", "gone"] {
        env.allocated("default", p, 1).await;
    }
    wait_for("used = 3", || async { used().await == Some(3) }).await;

    // Evicted: released at once although the pod object stays.
    let mut st = container_status("Failed", false);
    st.reason = Some("Evicted".into());
    env.set_pod_status("default", "ev", st).await;
    wait_for("evicted pod released", || async {
        env.instances_of("default", "ev").await.is_empty()
    })
    .await;
    wait_event(&env, "default", "ev", "IPReleaseSucceed").await;
    // Completed: every container has a status and the phase is Succeeded.
    env.set_pod_status("default", "done", container_status("Succeeded", false))
        .await;
    wait_for("completed pod released", || async {
        env.instances_of("default", "done").await.is_empty()
    })
    .await;
    // Deleted: the IPInstance goes with its owner (garbage collection), then the IPAM frees it.
    env.delete_pod("default", "gone").await;
    wait_for("deleted pod released", || async {
        env.instances_of("default", "gone").await.is_empty()
    })
    .await;
    wait_for("used back to 0", || async { used().await == Some(0) }).await;

    // A stateful pod that is evicted keeps (reserves) its address instead.
    let sts = env.create_statefulset("default", "kept").await;
    env.pod(stateful_pod(&sts, 0, "n1", &[])).await;
    let a = env.allocated("default", "kept-0", 1).await;
    let mut st = container_status("Failed", false);
    st.reason = Some("Evicted".into());
    env.set_pod_status("default", "kept-0", st).await;
    let r = wait_reserved(&env, "default", "kept-0", 1).await;
    assert_eq!(ip_of(&r[0]), ip_of(&a[0]));
    wait_event(&env, "default", "kept-0", "IPReserveSucceed").await;
}
