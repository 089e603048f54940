//! The admission webhook through kube-lite: the valid upstream examples are accepted; invalid
//! Networks, Subnets and Pods are refused with messages that name the field.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use hybridnet_api::constants::annotation;
use hybridnet_api::v1::{Network, NetworkType, Subnet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!(
        "{}/../crds/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn refusal(r: Result<impl std::fmt::Debug, kube::Error>) -> String {
    match r {
        Err(kube::Error::Api(s)) => {
            assert!(s.code >= 400, "{s:?}");
            s.message
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_accepts_upstream_examples_and_refuses_invalid_objects_naming_the_field() {
    let env = Env::start().await;
    let r = env.replica("r1").await;
    env.register_webhooks(r.webhook_addr.expect("webhook"))
        .await;
    env.node("node1", &[("network", "network1")]).await;
    env.node("bgp1", &[("network", "bgp-network1")]).await;
    let nets: Api<Network> = Api::all(env.client.clone());
    let subs: Api<Subnet> = Api::all(env.client.clone());
    let pp = PostParams::default();

    // The upstream examples.
    let vlan: Network = fixture("network-vlan.yaml");
    let mut overlay: Network = fixture("network-overlay.yaml");
    overlay.metadata.name = Some("overlay-network".into());
    overlay.status = None;
    let bgp: Network = fixture("network-bgp.yaml");
    let global: Network = fixture("network-globalbgp.yaml");
    for n in [vlan, overlay, bgp, global] {
        let mut n = n;
        n.status = None;
        nets.create(&pp, &n)
            .await
            .unwrap_or_else(|e| panic!("{:?} refused: {e}", n.name_any()));
    }
    for f in ["subnet-vlan.yaml", "subnet-overlay-v6.yaml"] {
        let mut s: Subnet = fixture(f);
        s.status = None;
        env.create_subnet(s)
            .await
            .unwrap_or_else(|e| panic!("{f} refused: {e}"));
    }

    // Invalid creations: (what, kind, object, field the message must name).
    let net = |spec: Value| json!({"apiVersion": "networking.alibaba.com/v1", "kind": "Network", "metadata": {"name": "bad"}, "spec": spec});
    let sub = |spec: Value| json!({"apiVersion": "networking.alibaba.com/v1", "kind": "Subnet", "metadata": {"name": "bad"}, "spec": spec});
    let range = |cidr: &str, extra: Value| {
        let mut r = json!({"version": "4", "cidr": cidr});
        if let (Some(o), Some(e)) = (r.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                o.insert(k.clone(), v.clone());
            }
        }
        r
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "underlay without selector",
            net(json!({"type": "Underlay", "netID": 10})),
            "spec.nodeSelector",
        ),
        (
            "overlay with selector",
            net(json!({"type": "Overlay", "netID": 5, "nodeSelector": {"a": "b"}})),
            "spec.nodeSelector",
        ),
        (
            "second overlay",
            net(json!({"type": "Overlay", "netID": 7})),
            "spec.type",
        ),
        (
            "globalbgp with netID",
            net(json!({"type": "GlobalBGP", "netID": 3})),
            "spec.netID",
        ),
        (
            "vlan id out of range",
            net(json!({"type": "Underlay", "netID": 5000, "nodeSelector": {"x": "y"}})),
            "spec.netID",
        ),
        (
            "bgp without peers",
            net(
                json!({"type": "Underlay", "mode": "BGP", "netID": 65000, "nodeSelector": {"x": "y"}}),
            ),
            "spec.config.bgpPeers",
        ),
        (
            "bgp peer address",
            net(
                json!({"type": "Underlay", "mode": "BGP", "netID": 65000, "nodeSelector": {"x": "y"}, "config": {"bgpPeers": [{"asn": 65001, "address": "10.0.0.300"}]}}),
            ),
            "spec.config.bgpPeers[0].address",
        ),
        (
            "bgp peer asn 0",
            net(
                json!({"type": "Underlay", "mode": "BGP", "netID": 65000, "nodeSelector": {"x": "y"}, "config": {"bgpPeers": [{"asn": 0, "address": "10.0.0.1"}]}}),
            ),
            "spec.config.bgpPeers[0].asn",
        ),
        (
            "bgp without AS number",
            net(
                json!({"type": "Underlay", "mode": "BGP", "nodeSelector": {"x": "y"}, "config": {"bgpPeers": [{"asn": 65001, "address": "10.0.0.1"}]}}),
            ),
            "spec.netID",
        ),
        (
            "vxlan mode on underlay",
            net(
                json!({"type": "Underlay", "mode": "VXLAN", "netID": 5, "nodeSelector": {"x": "y"}}),
            ),
            "spec.mode",
        ),
        (
            "node already in an underlay network",
            net(json!({"type": "Underlay", "netID": 11, "nodeSelector": {"network": "network1"}})),
            "spec.nodeSelector",
        ),
        (
            "subnet of a missing network",
            sub(json!({"network": "nope", "range": range("10.1.0.0/24", json!({}))})),
            "spec.network",
        ),
        (
            "non-canonical cidr",
            sub(json!({"network": "overlay-network", "range": range("10.1.0.5/24", json!({}))})),
            "spec.range.cidr",
        ),
        (
            "/32 cidr",
            sub(json!({"network": "overlay-network", "range": range("10.1.0.5/32", json!({}))})),
            "spec.range.cidr",
        ),
        (
            "gateway outside",
            sub(
                json!({"network": "overlay-network", "range": range("10.1.0.0/24", json!({"gateway": "10.2.0.1"}))}),
            ),
            "spec.range.gateway",
        ),
        (
            "start after end",
            sub(
                json!({"network": "overlay-network", "range": range("10.1.0.0/24", json!({"start": "10.1.0.200", "end": "10.1.0.100"}))}),
            ),
            "spec.range.start",
        ),
        (
            "version mismatch",
            sub(
                json!({"network": "overlay-network", "range": {"version": "6", "cidr": "10.1.0.0/24"}}),
            ),
            "spec.range.version",
        ),
        (
            "reserved ip outside",
            sub(
                json!({"network": "overlay-network", "range": range("10.1.0.0/24", json!({"reservedIPs": ["10.9.9.9"]}))}),
            ),
            "spec.range.reservedIPs[0]",
        ),
        (
            "exclude ip malformed",
            sub(
                json!({"network": "overlay-network", "range": range("10.1.0.0/24", json!({"excludeIPs": ["not-an-ip"]}))}),
            ),
            "spec.range.excludeIPs[0]",
        ),
        (
            "too many addresses",
            sub(json!({"network": "overlay-network", "range": range("10.0.0.0/14", json!({}))})),
            "spec.range",
        ),
        (
            "vlan subnet without gateway",
            sub(json!({"network": "underlay-network1", "range": range("10.3.0.0/24", json!({}))})),
            "spec.range.gateway",
        ),
        (
            "overlay subnet with netID",
            sub(
                json!({"network": "overlay-network", "netID": 9, "range": range("10.1.0.0/24", json!({}))}),
            ),
            "spec.netID",
        ),
        (
            "vlan subnet with autoNatOutgoing",
            sub(
                json!({"network": "underlay-network1", "range": range("10.3.0.0/24", json!({"gateway": "10.3.0.1"})), "config": {"autoNatOutgoing": true}}),
            ),
            "spec.config.autoNatOutgoing",
        ),
        (
            "overlapping cidr",
            sub(
                json!({"network": "underlay-network1", "range": range("192.168.0.0/16", json!({"gateway": "192.168.0.1", "start": "192.168.0.10", "end": "192.168.0.20"}))}),
            ),
            "spec.range.cidr",
        ),
        (
            "same cidr, overlapping span",
            sub(
                json!({"network": "underlay-network1", "range": range("192.168.56.0/24", json!({"gateway": "192.168.56.1", "start": "192.168.56.150", "end": "192.168.56.250"}))}),
            ),
            "spec.range",
        ),
    ];
    let mut refused = 0;
    for (what, obj, field) in &cases {
        let kind = obj["kind"].as_str().unwrap_or("");
        let api = match kind {
            "Network" => Api::<kube::core::DynamicObject>::all_with(
                env.client.clone(),
                &kube::core::ApiResource::erase::<Network>(&()),
            ),
            _ => Api::<kube::core::DynamicObject>::all_with(
                env.client.clone(),
                &kube::core::ApiResource::erase::<Subnet>(&()),
            ),
        };
        let dobj: kube::core::DynamicObject = serde_json::from_value(obj.clone()).unwrap();
        let msg = refusal(api.create(&pp, &dobj).await);
        assert!(
            msg.contains(field),
            "{what}: message does not name {field}: {msg}"
        );
        refused += 1;
    }

    // Updates: immutable fields, nil BGP config (upstream's NetworkUpdateValidation dereferenced it), excludeIPs.
    let upd = |name: &'static str, patch: Value| {
        let nets = nets.clone();
        async move {
            nets.patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await
        }
    };
    let msg = refusal(upd("underlay-network1", json!({"spec": {"type": "Overlay"}})).await);
    assert!(msg.contains("spec.type"), "{msg}");
    let msg = refusal(upd("underlay-network1", json!({"spec": {"netID": 12}})).await);
    assert!(msg.contains("spec.netID"), "{msg}");
    let msg = refusal(upd("bgp-network1", json!({"spec": {"config": null}})).await);
    assert!(msg.contains("spec.config.bgpPeers"), "{msg}");
    let msg = refusal(upd("underlay-network1", json!({"spec": {"mode": "BGP"}})).await);
    assert!(msg.contains("spec.mode"), "{msg}");
    let msg = refusal(
        subs.patch(
            "underlay-subnet1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"range": {"excludeIPs": ["192.168.56.151"]}}})),
        )
        .await,
    );
    assert!(msg.contains("spec.range.excludeIPs"), "{msg}");
    // reservedIPs may change.
    subs.patch(
        "underlay-subnet1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"range": {"reservedIPs": ["192.168.56.103"]}}})),
    )
    .await
    .expect("reservedIPs are mutable");
    refused += 5;

    // Deletes: a Network with Subnets, a Subnet with addresses in use.
    let msg = refusal(
        nets.delete("underlay-network1", &DeleteParams::default())
            .await,
    );
    assert!(msg.contains("underlay-subnet1"), "{msg}");
    env.pod(pod("default", "holder", "node1", &[])).await;
    let held = env.allocated("default", "holder", 1).await;
    assert_eq!(held[0].spec.subnet, "underlay-subnet1");
    let msg = refusal(
        subs.delete("underlay-subnet1", &DeleteParams::default())
            .await,
    );
    assert!(
        msg.contains(&ip_of(&held[0])) || msg.contains("in use"),
        "{msg}"
    );
    refused += 2;

    // Pods.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    type PodCase<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let pod_cases: Vec<PodCase> = vec![
        (
            "missing network",
            vec![(annotation::SPECIFIED_NETWORK, "nope")],
            annotation::SPECIFIED_NETWORK,
        ),
        (
            "missing subnet",
            vec![(annotation::SPECIFIED_SUBNET, "nope")],
            annotation::SPECIFIED_SUBNET,
        ),
        (
            "three subnets",
            vec![(annotation::SPECIFIED_SUBNET, "a/b/c")],
            annotation::SPECIFIED_SUBNET,
        ),
        (
            "unknown family",
            vec![(annotation::IP_FAMILY, "IPv5")],
            annotation::IP_FAMILY,
        ),
        (
            "unknown type",
            vec![(annotation::NETWORK_TYPE, "Bridge")],
            annotation::NETWORK_TYPE,
        ),
        (
            "type contradicts network",
            vec![
                (annotation::SPECIFIED_NETWORK, "overlay-network"),
                (annotation::NETWORK_TYPE, "Underlay"),
            ],
            annotation::NETWORK_TYPE,
        ),
        (
            "ip-pool without network",
            vec![(annotation::IP_POOL, "192.168.56.120")],
            annotation::IP_POOL,
        ),
        (
            "ip-pool bad entry",
            vec![
                (annotation::SPECIFIED_NETWORK, "underlay-network1"),
                (annotation::IP_POOL, "192.168.56.120,300.1.1.1"),
            ],
            annotation::IP_POOL,
        ),
        (
            "ip-pool empty entry",
            vec![
                (annotation::SPECIFIED_NETWORK, "underlay-network1"),
                (annotation::IP_POOL, "192.168.56.120,,192.168.56.121"),
            ],
            annotation::IP_POOL,
        ),
        (
            "mac-pool bad",
            vec![(annotation::MAC_POOL, "02:00:00:00:00")],
            annotation::MAC_POOL,
        ),
        (
            "mac-pool multicast",
            vec![(annotation::MAC_POOL, "01:00:5e:00:00:01")],
            annotation::MAC_POOL,
        ),
        (
            "dual stack with one subnet",
            vec![
                (annotation::SPECIFIED_SUBNET, "overlay-ipv6-subnet"),
                (annotation::IP_FAMILY, "DualStack"),
            ],
            annotation::SPECIFIED_SUBNET,
        ),
    ];
    for (i, (what, anns, field)) in pod_cases.iter().enumerate() {
        let msg = refusal(
            pods.create(&pp, &pod("default", &format!("bad-{i}"), "node1", anns))
                .await,
        );
        assert!(
            msg.contains(field),
            "{what}: message does not name {field}: {msg}"
        );
        refused += 1;
    }
    assert!(refused >= 25, "only {refused} refusals");

    // A multi-entry ip-pool is accepted (upstream compared it as one address) and hostNetwork pods always are,
    // getting the network-unavailable toleration.
    pods.create(
        &pp,
        &pod(
            "default",
            "pooled-0",
            "node1",
            &[
                (annotation::SPECIFIED_NETWORK, "underlay-network1"),
                (annotation::IP_POOL, "192.168.56.120,192.168.56.121"),
            ],
        ),
    )
    .await
    .expect("multi-entry ip-pool accepted");
    let mut hn = pod(
        "default",
        "hostnet",
        "node1",
        &[(annotation::SPECIFIED_NETWORK, "nope")],
    );
    hn.spec.as_mut().unwrap().host_network = Some(true);
    let created = pods.create(&pp, &hn).await.expect("hostNetwork pod");
    let tol = created.spec.unwrap().tolerations.unwrap_or_default();
    assert!(
        tol.iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/network-unavailable")),
        "{tol:?}"
    );

    // Decisions are counted.
    let text = r.metrics.encode();
    assert!(text.contains("decision=\"denied\""), "{text}");
    assert!(
        text.contains("hybridnet_webhook_duration_seconds"),
        "{text}"
    );
}

/// A Network and its Subnet applied together reach the webhook before the Network's watch event
/// reaches the webhook's cache (the lab e2e hit this under load). The webhook here has caches
/// that never sync, the extreme of that lag: a Subnet of a Network the API server holds is
/// accepted, one of a Network nobody created is refused naming the field, and a second overlay
/// network is refused although the cache has not seen the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subnet_is_checked_against_the_api_when_the_cache_lags() {
    use hybridnet_operator::webhook::review;
    use kube::core::DynamicObject;
    use kube::core::admission::AdmissionReview;

    let env = Env::start().await;
    let st = lagging_webhook(&env, "lagging");
    env.create_network(network("fresh", NetworkType::Underlay, Some(0), None))
        .await
        .unwrap();
    let review_of = |uid: &str, network: &str| -> AdmissionReview<DynamicObject> {
        serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": uid, "operation": "CREATE",
                "kind": {"group": "networking.alibaba.com", "version": "v1", "kind": "Subnet"},
                "resource": {"group": "networking.alibaba.com", "version": "v1", "resource": "subnets"},
                "name": format!("{network}-v4"),
                "userInfo": {"username": "admin"},
                "object": {"apiVersion": "networking.alibaba.com/v1", "kind": "Subnet",
                           "metadata": {"name": format!("{network}-v4")},
                           "spec": {"network": network, "range": {"version": "4", "cidr": "198.18.0.0/24", "gateway": "198.18.0.1"}}}
            }
        }))
        .unwrap()
    };
    let response = |r: AdmissionReview<DynamicObject>| review::to_wire(r)["response"].clone();
    env.create_network(network("overlay-1", NetworkType::Overlay, Some(4), None))
        .await
        .unwrap();
    let second_overlay: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u0", "operation": "CREATE",
            "kind": {"group": "networking.alibaba.com", "version": "v1", "kind": "Network"},
            "resource": {"group": "networking.alibaba.com", "version": "v1", "resource": "networks"},
            "name": "overlay-2", "userInfo": {"username": "admin"},
            "object": {"apiVersion": "networking.alibaba.com/v1", "kind": "Network",
                       "metadata": {"name": "overlay-2"}, "spec": {"type": "Overlay", "netID": 5}}
        }
    }))
    .unwrap();
    let second = response(review::validate(&st, second_overlay).await);
    assert!(
        second["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("already exists and there can be only one")),
        "{second}"
    );
    let ok = response(review::validate(&st, review_of("u1", "fresh")).await);
    assert_eq!(ok["allowed"], true, "{ok}");
    let no = response(review::validate(&st, review_of("u2", "never-created")).await);
    assert_eq!(no["allowed"], false, "{no}");
    let message = no["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec.network") && message.contains("does not exist"),
        "{message}"
    );
}

/// A Namespace and its pods applied together: the pod's review can reach the webhook before the
/// Namespace reaches the webhook's cache. With caches that never sync, the webhook still applies
/// the Namespace's network annotations (read from the API): the mutation records the
/// Namespace's network type and family on the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_is_resolved_with_its_namespace_when_the_cache_lags() {
    use hybridnet_operator::webhook::review;
    use kube::core::DynamicObject;
    use kube::core::admission::AdmissionReview;

    let env = Env::start().await;
    let st = lagging_webhook(&env, "lagging-ns");
    env.namespace(
        "fresh-ns",
        &[
            (annotation::NETWORK_TYPE, "Overlay"),
            (annotation::IP_FAMILY, "IPv6"),
        ],
    )
    .await;
    let review_of = |uid: &str, ns: &str| -> AdmissionReview<DynamicObject> {
        serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": uid, "operation": "CREATE",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "name": "p", "namespace": ns,
                "userInfo": {"username": "admin"},
                "object": {"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": "p", "namespace": ns},
                           "spec": {"containers": [{"name": "c", "image": "i"}]}}
            }
        }))
        .unwrap()
    };
    let patch_of = |r: AdmissionReview<DynamicObject>| -> String {
        let wire = review::to_wire(r);
        let response = &wire["response"];
        assert_eq!(response["allowed"], true, "{wire}");
        // The wire patch is base64, as ByteString (de)serializes.
        let bytes: k8s_openapi::ByteString =
            serde_json::from_value(response["patch"].clone()).unwrap();
        String::from_utf8(bytes.0).unwrap()
    };
    let patch = patch_of(review::mutate(&st, review_of("u1", "fresh-ns")).await);
    assert!(
        patch.contains("\"Overlay\"") && patch.contains("\"IPv6\""),
        "{patch}"
    );
    // Negative control: a namespace without annotations gets the defaults.
    env.namespace("plain-ns", &[]).await;
    let patch = patch_of(review::mutate(&st, review_of("u2", "plain-ns")).await);
    assert!(!patch.contains("\"IPv6\""), "{patch}");
}

/// A webhook whose caches never sync (their watch futures are dropped): the extreme of a cache
/// that lags behind the API server.
fn lagging_webhook(env: &Env, identity: &str) -> hybridnet_operator::webhook::WebhookState {
    use hybridnet_operator::controlplane::runtime::caches::Caches;
    use hybridnet_operator::controlplane::runtime::live_defaults::LiveDefaults;
    use hybridnet_operator::controlplane::runtime::metrics::Metrics;

    let config = test_config(identity);
    let (caches, _never_run) = Caches::start(&env.client);
    let (defaults, _never_run_either) = LiveDefaults::watch(&env.client, config.defaults.clone());
    hybridnet_operator::webhook::WebhookState {
        caches,
        client: env.client.clone(),
        config,
        defaults,
        metrics: Metrics::new(),
    }
}
