//! `kubectl hybridnet ip ls|usage|check`, `status` and `install` through the real kubectl against
//! kube-lite, with seeded IPInstances, pods and StatefulSets.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use hybridnet_api::v1::IPInstance;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Api;
use kube::api::PostParams;

async fn statefulset(c: &Cluster, ns: &str, name: &str) -> String {
    let api: Api<StatefulSet> = Api::namespaced(c.client.clone(), ns);
    let s: StatefulSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {"serviceName": name, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &s)
        .await
        .expect("statefulset")
        .metadata
        .uid
        .unwrap_or_default()
}

/// Networks and subnets through the plugin itself.
async fn base(c: &Cluster) {
    let k = c.kubeconfig.as_path();
    overlay_and_vlan100(k).await;
    create_subnet(k, "tiny", "overlay", "10.246.0.0/28", &["--private"]).await;
    create_subnet(
        k,
        "vlan100-a",
        "vlan100",
        "192.168.100.0/24",
        &[
            "--gateway",
            "192.168.100.1",
            "--start",
            "192.168.100.10",
            "--end",
            "192.168.100.200",
            "--reserved",
            "192.168.100.20,192.168.100.21",
            "--exclude",
            "192.168.100.30",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_ls_and_usage() {
    if !kubectl_available() {
        return;
    }
    let c = cluster(true).await;
    let k = c.kubeconfig.as_path();
    base(&c).await;
    namespace(&c.client, "team-a").await;
    let cl = &c.client;
    ipinstance(
        cl,
        "default",
        "10.244.0.10",
        24,
        "overlay-a",
        "overlay",
        Some(("web-5d9c", "u1")),
        Some("node1"),
        ("Pod", "web-5d9c", "u1"),
        true,
    )
    .await;
    ipinstance(
        cl,
        "default",
        "10.244.0.11",
        24,
        "overlay-a",
        "overlay",
        Some(("db-0", "u2")),
        None,
        ("StatefulSet", "db", "s1"),
        true,
    )
    .await;
    ipinstance(
        cl,
        "team-a",
        "192.168.100.10",
        24,
        "vlan100-a",
        "vlan100",
        Some(("api-0", "u3")),
        Some("node2"),
        ("Pod", "api-0", "u3"),
        true,
    )
    .await;
    // On a spec-reserved address (forced assignment): listed, but not counted as used.
    ipinstance(
        cl,
        "team-a",
        "192.168.100.20",
        24,
        "vlan100-a",
        "vlan100",
        Some(("api-1", "u4")),
        Some("node2"),
        ("Pod", "api-1", "u4"),
        true,
    )
    .await;
    for h in 1..=13 {
        ipinstance(
            cl,
            "team-a",
            &format!("10.246.0.{h}"),
            28,
            "tiny",
            "overlay",
            Some((&format!("t{h}"), "u")),
            Some("node1"),
            ("Pod", "t", "u"),
            false,
        )
        .await;
    }

    let r = kubectl(k, &["ip", "ls"]).await;
    r.ok();
    capture("ip-ls", "kubectl hybridnet ip ls", &r);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "default namespace only:\n{}", r.stdout);
    assert!(
        lines[0].starts_with("IP ") && lines[0].contains("MAC") && lines[0].contains("STATE"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("10.244.0.10 ")
            && lines[1].contains("web-5d9c")
            && lines[1].contains("node1")
            && lines[1].ends_with("allocated"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("10.244.0.11 ")
            && lines[2].contains("db-0")
            && lines[2].ends_with("reserved"),
        "{}",
        lines[2]
    );

    let r = kubectl(k, &["ip", "ls", "-A", "--network", "vlan100", "-o", "wide"]).await;
    r.ok();
    capture(
        "ip-ls-wide",
        "kubectl hybridnet ip ls -A --network vlan100 -o wide",
        &r,
    );
    assert_eq!(r.stdout.lines().count(), 3, "{}", r.stdout);
    assert!(
        r.stdout.contains("Pod/api-0") && r.stdout.contains("192-168-100-10"),
        "{}",
        r.stdout
    );
    let r = kubectl(
        k,
        &[
            "ip", "ls", "-n", "team-a", "--node", "node2", "--pod", "api-0", "-o", "json",
        ],
    )
    .await;
    let v = r.ok().json();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["ip"], "192.168.100.10");
    assert_eq!(v[0]["namespace"], "team-a");
    assert_eq!(v[0]["subnet"], "vlan100-a");
    assert_eq!(v[0]["network"], "vlan100");
    assert_eq!(v[0]["state"], "allocated");
    assert_eq!(v[0]["prefixLength"], 24);
    let r = kubectl(k, &["ip", "ls", "-A", "--reserved", "-o", "yaml"]).await;
    r.ok();
    assert!(
        r.stdout.starts_with("- ip: \"10.244.0.11\"\n"),
        "{}",
        r.stdout
    );
    assert_eq!(r.stdout.matches("- ip:").count(), 1);
    let r = kubectl(k, &["ip", "ls", "-n", "nowhere"]).await;
    r.ok();
    assert!(
        r.stderr.contains("No addresses found in namespace nowhere"),
        "{}",
        r.stderr
    );

    let r = kubectl(k, &["ip", "usage"]).await;
    r.ok();
    capture("ip-usage", "kubectl hybridnet ip usage", &r);
    let lines: Vec<&str> = r.stdout.lines().collect();
    // Sorted by used share: tiny (13 of 14) first, marked near exhaustion.
    assert!(
        lines[1].starts_with("tiny (private)")
            && lines[1].contains("92.9%")
            && lines[1].ends_with("! near exhaustion"),
        "{}",
        r.stdout
    );
    let v = kubectl(k, &["ip", "usage", "-o", "json"]).await.ok().json();
    let sub = |name: &str| {
        v["subnets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
            .clone()
    };
    // overlay-a: 254 addresses, 2 used (one reserved for the stateful pod db-0).
    assert_eq!(
        (
            sub("overlay-a")["total"].as_u64(),
            sub("overlay-a")["used"].as_u64(),
            sub("overlay-a")["reserved"].as_u64(),
            sub("overlay-a")["available"].as_u64()
        ),
        (Some(254), Some(2), Some(1), Some(252))
    );
    // vlan100-a: .10-.200 (191) minus excluded .30 and reserved .20/.21 = 188; api-1 sits on
    // reserved .20 and is not counted (Subnet status rule).
    assert_eq!(
        (
            sub("vlan100-a")["total"].as_u64(),
            sub("vlan100-a")["used"].as_u64()
        ),
        (Some(188), Some(1))
    );
    assert_eq!(sub("tiny")["level"], "near-exhaustion");
    let net = v["networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "overlay")
        .unwrap()
        .clone();
    assert_eq!(
        (
            net["total"].as_u64(),
            net["used"].as_u64(),
            net["subnets"].as_u64()
        ),
        (Some(268), Some(15), Some(2))
    );
    let r = kubectl(
        k,
        &["ip", "usage", "--network", "vlan100", "--threshold", "50"],
    )
    .await;
    r.ok();
    assert!(
        !r.stdout.contains("tiny") && r.stdout.contains("vlan100-a"),
        "{}",
        r.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_check_finds_and_fixes_seeded_leaks() {
    if !kubectl_available() {
        return;
    }
    let c = cluster(true).await;
    let k = c.kubeconfig.as_path();
    base(&c).await;
    namespace(&c.client, "team-a").await;
    let cl = &c.client;
    let web_uid = statefulset(&c, "default", "web").await;
    let p1 = pod(cl, "default", "p1", "node1", Some("10.244.0.10"), None).await;
    ipinstance(
        cl,
        "default",
        "10.244.0.10",
        24,
        "overlay-a",
        "overlay",
        Some(("p1", &p1)),
        Some("node1"),
        ("Pod", "p1", &p1),
        true,
    )
    .await;
    // Leaked: pod gone (finalizer: stays terminating until the operator releases it).
    ipinstance(
        cl,
        "default",
        "10.244.0.11",
        24,
        "overlay-a",
        "overlay",
        Some(("gone", "old")),
        Some("node1"),
        ("Pod", "gone", "old"),
        true,
    )
    .await;
    // Retained for StatefulSet web, which exists.
    ipinstance(
        cl,
        "default",
        "10.244.0.12",
        24,
        "overlay-a",
        "overlay",
        Some(("web-0", "w0")),
        None,
        ("StatefulSet", "web", &web_uid),
        true,
    )
    .await;
    // Leaked: reserved for StatefulSet db, which is gone.
    ipinstance(
        cl,
        "default",
        "10.244.0.13",
        24,
        "overlay-a",
        "overlay",
        Some(("db-0", "d0")),
        None,
        ("StatefulSet", "db", "gone-uid"),
        false,
    )
    .await;
    // A running pod without any IPInstance.
    pod(cl, "default", "lonely", "node2", Some("10.244.0.14"), None).await;
    // Two pods claiming 10.244.0.10.
    let p9 = pod(cl, "team-a", "p9", "node2", Some("10.244.0.10"), None).await;
    ipinstance(
        cl,
        "team-a",
        "10.244.0.10",
        24,
        "overlay-a",
        "overlay",
        Some(("p9", &p9)),
        Some("node2"),
        ("Pod", "p9", &p9),
        true,
    )
    .await;
    // Outside its subnet.
    let p2 = pod(cl, "default", "p2", "node1", Some("10.99.0.5"), None).await;
    ipinstance(
        cl,
        "default",
        "10.99.0.5",
        24,
        "overlay-a",
        "overlay",
        Some(("p2", &p2)),
        Some("node1"),
        ("Pod", "p2", &p2),
        true,
    )
    .await;
    // hostNetwork and pending pods are not judged.
    let mut host = k8s_openapi::api::core::v1::Pod::default();
    host.metadata.name = Some("agent".into());
    host.spec = Some(k8s_openapi::api::core::v1::PodSpec {
        host_network: Some(true),
        node_name: Some("node1".into()),
        containers: vec![k8s_openapi::api::core::v1::Container {
            name: "c".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(cl.clone(), "kube-system")
        .create(&PostParams::default(), &host)
        .await
        .unwrap();

    let r = kubectl(k, &["ip", "check"]).await;
    assert_eq!(r.code, 3, "{r:?}");
    capture("ip-check", "kubectl hybridnet ip check", &r);
    assert!(
        r.stdout.contains(
            "2 leaked, 1 pod-without-address, 1 duplicate, 1 outside-subnet in all namespaces"
        ),
        "{}",
        r.stdout
    );
    let v = kubectl(k, &["ip", "check", "-o", "json"]).await.json();
    let findings = v["findings"].as_array().unwrap();
    let objects = |kind: &str| {
        findings
            .iter()
            .filter(|f| f["kind"] == kind)
            .map(|f| f["object"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        objects("leaked"),
        vec![
            "ipinstance/default/10-244-0-11",
            "ipinstance/default/10-244-0-13"
        ]
    );
    assert_eq!(objects("pod-without-address"), vec!["pod/default/lonely"]);
    assert_eq!(
        objects("duplicate"),
        vec![
            "ipinstance/default/10-244-0-10, pod/default/p1, ipinstance/team-a/10-244-0-10, pod/team-a/p9"
        ]
    );
    assert_eq!(
        objects("outside-subnet"),
        vec!["ipinstance/default/10-99-0-5"]
    );
    // -n narrows the scope.
    let r = kubectl(k, &["ip", "check", "-n", "team-a"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("no problems found in namespace team-a"),
        "{}",
        r.stdout
    );

    // --fix refuses to prompt without a terminal, and "n" on a prompt deletes nothing.
    let r = kubectl(k, &["ip", "check", "--fix"]).await;
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("stdin is not a terminal: add --yes"),
        "{}",
        r.stderr
    );
    assert_eq!(
        c.server
            .object_count("networking.alibaba.com", "ipinstances"),
        6
    );

    let r = kubectl(k, &["ip", "check", "--fix", "--yes"]).await;
    capture("ip-check-fix", "kubectl hybridnet ip check --fix --yes", &r);
    assert_eq!(
        r.code, 3,
        "the duplicate and the address outside its subnet remain: {r:?}"
    );
    assert!(
        r.stderr
            .contains("ipinstance.networking.alibaba.com/10-244-0-11 deleted (namespace default)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("ipinstance.networking.alibaba.com/10-244-0-13 deleted (namespace default)"),
        "{}",
        r.stderr
    );
    let api: Api<IPInstance> = Api::namespaced(cl.clone(), "default");
    assert!(
        api.get_opt("10-244-0-13").await.unwrap().is_none(),
        "deleted"
    );
    let releasing = api.get("10-244-0-11").await.unwrap();
    assert!(
        releasing.metadata.deletion_timestamp.is_some(),
        "waits for the operator to release it"
    );
    assert!(
        api.get_opt("10-244-0-12").await.unwrap().is_some(),
        "the retained address stays"
    );
    let v = kubectl(k, &["ip", "check", "-o", "json"]).await.json();
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["kind"] != "leaked"),
        "{v}"
    );
    let r = kubectl(k, &["ip", "ls", "--pod", "gone"]).await;
    assert!(r.ok().stdout.contains("releasing"), "{}", r.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_and_status() {
    if !kubectl_available() {
        return;
    }
    let c = cluster(true).await;
    let k = c.kubeconfig.as_path();
    let r = kubectl(k, &["status"]).await;
    r.ok();
    assert!(
        r.stdout.contains("HybridnetCluster: none")
            && r.stdout.contains("run `kubectl hybridnet install`"),
        "{}",
        r.stdout
    );

    let r = kubectl(
        k,
        &[
            "install",
            "--hybridnet-version",
            "0.1.0",
            "--bootstrap-cidr",
            "100.64.0.0/16",
            "--default-network-type",
            "overlay",
            "-o",
            "yaml",
        ],
    )
    .await;
    r.ok();
    capture(
        "install-yaml",
        "kubectl hybridnet install --hybridnet-version 0.1.0 --bootstrap-cidr 100.64.0.0/16 --default-network-type overlay -o yaml",
        &r,
    );
    assert_eq!(
        r.stdout,
        "apiVersion: operator.hybridnet.io/v1alpha1\nkind: HybridnetCluster\nmetadata:\n  name: default\nspec:\n  bootstrap:\n    cidr: 100.64.0.0/16\n    ipVersion: \"4\"\n  defaults:\n    networkType: Overlay\n  version: \"0.1.0\"\n"
    );
    assert_eq!(
        c.server
            .object_count("operator.hybridnet.io", "hybridnetclusters"),
        0,
        "-o yaml only prints"
    );
    let r = kubectl(
        k,
        &[
            "install",
            "--hybridnet-version",
            "0.1.0",
            "--bootstrap-cidr",
            "100.64.0.0/16",
        ],
    )
    .await;
    r.ok();
    assert_eq!(
        r.stdout,
        "hybridnetcluster.operator.hybridnet.io/default serverside-applied\n"
    );
    capture(
        "install",
        "kubectl hybridnet install --hybridnet-version 0.1.0 --bootstrap-cidr 100.64.0.0/16",
        &r,
    );
    let api: Api<hybridnet_api::operator::HybridnetCluster> = Api::all(c.client.clone());
    let hc = api.get("default").await.unwrap();
    assert_eq!(hc.spec.version.as_deref(), Some("0.1.0"));
    let managers: Vec<String> = hc
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.contains(&"kubectl-hybridnet".to_string()),
        "{managers:?}"
    );

    // Another manager (say Argo CD) takes spec.version: install refuses to take it back unless
    // --force-conflicts, as kubectl's own server-side apply.
    api.patch(
        "default",
        &kube::api::PatchParams::apply("argocd").force(),
        &kube::api::Patch::Apply(serde_json::json!({"apiVersion": "operator.hybridnet.io/v1alpha1",
            "kind": "HybridnetCluster", "metadata": {"name": "default"}, "spec": {"version": "0.2.0"}})),
    )
    .await
    .unwrap();
    let args = [
        "install",
        "--hybridnet-version",
        "0.1.0",
        "--bootstrap-cidr",
        "100.64.0.0/16",
    ];
    let r = kubectl(k, &args).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("--force-conflicts"), "{}", r.stderr);
    assert_eq!(
        api.get("default").await.unwrap().spec.version.as_deref(),
        Some("0.2.0")
    );
    let mut forced = args.to_vec();
    forced.push("--force-conflicts");
    kubectl(k, &forced).await.ok();
    let hc = api.get("default").await.unwrap();
    assert_eq!(hc.spec.version.as_deref(), Some("0.1.0"));

    // The operator's status, written as the operator would.
    api.patch_status(
        "default",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"status": {
            "observedGeneration": hc.metadata.generation,
            "version": "0.1.0", "targetVersion": "0.1.0",
            "nodeAgents": {"desired": 3, "updated": 3, "ready": 2, "available": 2},
            "conditions": [
                {"type": "Available", "status": "True", "reason": "AsExpected", "message": "all components available", "lastTransitionTime": "2026-11-26T07:00:00Z", "observedGeneration": hc.metadata.generation},
                {"type": "Progressing", "status": "True", "reason": "RollingOut", "message": "node agents 2/3 ready", "lastTransitionTime": "2026-11-26T07:00:00Z"},
                {"type": "Degraded", "status": "False", "reason": "AsExpected", "message": "", "lastTransitionTime": "2026-11-26T07:00:00Z"}
            ]}})),
    )
    .await
    .unwrap();
    base(&c).await;
    network_nodes(&c.client, "vlan100", &["node1", "node2"]).await;
    ipinstance(
        &c.client,
        "default",
        "10.244.0.10",
        24,
        "overlay-a",
        "overlay",
        Some(("p", "u")),
        Some("node1"),
        ("Pod", "p", "u"),
        false,
    )
    .await;
    let r = kubectl(k, &["status"]).await;
    r.ok();
    capture("status", "kubectl hybridnet status", &r);
    assert!(
        r.stdout
            .contains("Version:          0.1.0 (target 0.1.0, requested 0.1.0)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("Node agents:      desired 3, updated 3, ready 2, available 2"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("node agents: 2 of 3 ready, 3 updated"),
        "{}",
        r.stdout
    );
    let avail = r
        .stdout
        .lines()
        .find(|l| l.starts_with("Available"))
        .unwrap();
    assert!(
        avail.contains("True") && avail.contains("AsExpected"),
        "{avail}"
    );
    let sub = r
        .stdout
        .lines()
        .find(|l| l.starts_with("vlan100-a "))
        .unwrap();
    assert!(
        sub.contains("192.168.100.0/24") && sub.contains("188"),
        "{sub}"
    );
    let vlan = r.stdout.lines().find(|l| l.starts_with("vlan100")).unwrap();
    assert!(vlan.contains("VLAN") && vlan.contains("188"), "{vlan}");
    let v = kubectl(k, &["status", "-o", "json"]).await.ok().json();
    assert_eq!(v["cluster"]["nodeAgents"]["ready"], 2);
    assert_eq!(v["cluster"]["conditions"][0]["type"], "Available");
    assert_eq!(v["networks"].as_array().unwrap().len(), 2);

    // Exit codes for scripts: 4 Degraded, 5 not Available (the output is printed either way).
    for (available, degraded, want) in [
        ("True", "True", 4),
        ("False", "False", 5),
        ("Unknown", "False", 5),
        ("True", "False", 0),
    ] {
        api.patch_status(
            "default",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"status": {"conditions": [
                {"type": "Available", "status": available, "reason": "R", "message": "", "lastTransitionTime": "2026-11-26T07:00:00Z"},
                {"type": "Degraded", "status": degraded, "reason": "R", "message": "", "lastTransitionTime": "2026-11-26T07:00:00Z"}
            ]}})),
        )
        .await
        .unwrap();
        for args in [&["status"][..], &["status", "-o", "json"][..]] {
            let r = kubectl(k, args).await;
            assert_eq!(
                r.code, want,
                "Available={available} Degraded={degraded} {args:?}: {}",
                r.stderr
            );
            assert!(r.stdout.contains("Available"), "{}", r.stdout);
        }
    }
}
