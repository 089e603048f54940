//! kubectl's list flags on the plugin's list commands, through the real kubectl against kube-lite:
//! `-l` reaches the API server as a labelSelector, `--no-headers`, `-o jsonpath=...`, and
//! `--chunk-size` pages with limit/continue (counted on the server). Malformed values are usage
//! errors sent nowhere.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use hybridnet_api::v1::{Network, Subnet};

/// overlay (+ subnet overlay-a), vlan100 and the VLAN networks n0..n6; labels env=prod on
/// overlay, n1, n2 and env=dev on n3.
async fn networks(c: &Cluster) {
    let k = c.kubeconfig.as_path();
    overlay_and_vlan100(k).await;
    for i in 0..7 {
        let (name, vlan, rack) = (format!("n{i}"), (10 + i).to_string(), format!("rack=r{i}"));
        kubectl(
            k,
            &[
                "network",
                "create",
                &name,
                "--vlan-id",
                &vlan,
                "--node-selector",
                &rack,
            ],
        )
        .await
        .ok();
    }
    for n in ["overlay", "n1", "n2"] {
        label_cluster_scoped::<Network>(&c.client, n, &[("env", "prod")]).await;
    }
    label_cluster_scoped::<Network>(&c.client, "n3", &[("env", "dev")]).await;
}

const NAMES: &str = "jsonpath={.items[*].metadata.name}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_reach_the_server_and_jsonpath_prints_as_kubectl() {
    if !kubectl_available() {
        return;
    }
    let c = cluster(true).await;
    let k = c.kubeconfig.as_path();
    networks(&c).await;

    // -l is sent as labelSelector: the server answers only the matching networks.
    let r = kubectl(k, &["network", "ls", "-l", "env=prod", "-o", NAMES]).await;
    assert_eq!(r.ok().stdout, "n1 n2 overlay");
    let r = kubectl(
        k,
        &[
            "network",
            "ls",
            "-l",
            "env in (prod,dev),env!=prod",
            "-o",
            NAMES,
        ],
    )
    .await;
    assert_eq!(r.ok().stdout, "n3");
    let r = kubectl(k, &["network", "ls", "--selector", "!env", "-o", "name"]).await;
    assert_eq!(
        r.ok().stdout,
        "network.networking.alibaba.com/n0\nnetwork.networking.alibaba.com/n4\nnetwork.networking.alibaba.com/n5\nnetwork.networking.alibaba.com/n6\nnetwork.networking.alibaba.com/vlan100\n"
    );
    let r = kubectl(k, &["network", "ls", "-l", "env=none"]).await;
    assert_eq!(
        (r.ok().stdout.as_str(), r.stderr.trim()),
        ("", "No networks found.")
    );

    // range/end, literals with escapes, field access into spec.
    let r = kubectl(
        k,
        &[
            "network",
            "ls",
            "-l",
            "env",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name}{"\t"}{.spec.type}{"\t"}{.metadata.labels.env}{"\n"}{end}"#,
        ],
    )
    .await;
    assert_eq!(
        r.ok().stdout,
        "n1\tUnderlay\tprod\nn2\tUnderlay\tprod\nn3\tUnderlay\tdev\noverlay\tOverlay\tprod\n"
    );
    // get: one object is the template's root, as `kubectl get network NAME -o jsonpath`.
    let r = kubectl(
        k,
        &[
            "network",
            "get",
            "vlan100",
            "-o",
            "jsonpath={.metadata.name}/{.spec.netID}",
        ],
    )
    .await;
    assert_eq!(r.ok().stdout, "vlan100/100");
    let r = kubectl(
        k,
        &[
            "network",
            "get",
            "n1",
            "n2",
            "-o",
            "jsonpath={.items[-1].metadata.name}",
        ],
    )
    .await;
    assert_eq!(r.ok().stdout, "n2");

    // subnets: -l, jsonpath, --no-headers.
    create_subnet(k, "n1-a", "n1", "10.10.1.0/24", &["--gateway", "10.10.1.1"]).await;
    label_cluster_scoped::<Subnet>(&c.client, "n1-a", &[("team", "a")]).await;
    let r = kubectl(
        k,
        &[
            "subnet",
            "ls",
            "-l",
            "team=a",
            "-o",
            "jsonpath={.items[*].spec.range.cidr}",
        ],
    )
    .await;
    assert_eq!(r.ok().stdout, "10.10.1.0/24");
    let with = kubectl(k, &["subnet", "ls"]).await;
    let without = kubectl(k, &["subnet", "ls", "--no-headers"]).await;
    let with_lines: Vec<&str> = with.ok().stdout.lines().collect();
    let without_lines: Vec<&str> = without.ok().stdout.lines().collect();
    assert!(with_lines[0].starts_with("NAME"), "{with_lines:?}");
    assert_eq!(
        without_lines.len(),
        with_lines.len() - 1,
        "{without_lines:?}"
    );
    assert!(
        without_lines
            .iter()
            .all(|l| !l.contains("NAME") && !l.contains("CIDR"))
    );
    assert!(without_lines[0].starts_with("n1-a "), "{without_lines:?}");
    let r = kubectl(k, &["network", "ls", "-o", "wide", "--no-headers"]).await;
    assert_eq!(r.ok().stdout.lines().count(), 9, "{}", r.stdout);

    // ip ls: the template sees the IPInstance objects of the listed rows.
    for (ip, node) in [
        ("10.244.0.10", "node-a"),
        ("10.244.0.11", "node-b"),
        ("10.244.0.12", "node-a"),
    ] {
        ipinstance(
            &c.client,
            "default",
            ip,
            24,
            "overlay-a",
            "overlay",
            None,
            Some(node),
            ("Pod", "p", "u"),
            false,
        )
        .await;
    }
    let r = kubectl(
        k,
        &[
            "ip",
            "ls",
            "-l",
            "networking.alibaba.com/node=node-a",
            "-o",
            "jsonpath={range .items[*]}{.spec.address.ip} {.spec.binding.nodeName}{\"\\n\"}{end}",
        ],
    )
    .await;
    assert_eq!(
        r.ok().stdout,
        "10.244.0.10/24 node-a\n10.244.0.12/24 node-a\n"
    );
    let r = kubectl(
        k,
        &[
            "ip",
            "ls",
            "--no-headers",
            "-l",
            "networking.alibaba.com/node=node-b",
        ],
    )
    .await;
    let out = r.ok().stdout.clone();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("10.244.0.11"), "{out}");
    capture(
        "list-jsonpath",
        "kubectl hybridnet network ls -l env=prod -o jsonpath='{.items[*].metadata.name}'",
        &kubectl(k, &["network", "ls", "-l", "env=prod", "-o", NAMES]).await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_size_pages_with_limit_and_continue() {
    if !kubectl_available() {
        return;
    }
    let c = cluster(true).await;
    let k = c.kubeconfig.as_path();
    networks(&c).await;
    let all = "n0 n1 n2 n3 n4 n5 n6 overlay vlan100";

    // 9 networks in pages of 2: 5 requests, every network once, in order.
    let (r, lists) = requests_during(
        &c,
        "list",
        "networks",
        kubectl(k, &["network", "ls", "--chunk-size", "2", "-o", NAMES]),
    )
    .await;
    assert_eq!(r.ok().stdout, all);
    assert_eq!(lists, 5);
    // pages of 2 with a selector: 2 requests for 3 matches, so the server filters (a client-side
    // filter would read all 9 networks in 5 pages).
    let (r, lists) = requests_during(
        &c,
        "list",
        "networks",
        kubectl(
            k,
            &[
                "network",
                "ls",
                "--chunk-size",
                "2",
                "-l",
                "env=prod",
                "-o",
                NAMES,
            ],
        ),
    )
    .await;
    assert_eq!(r.ok().stdout, "n1 n2 overlay");
    assert_eq!(lists, 2);
    // --chunk-size 0: one request; the default (500): one request here.
    for args in [
        &["network", "ls", "--chunk-size", "0", "-o", NAMES][..],
        &["network", "ls", "-o", NAMES][..],
    ] {
        let (r, lists) = requests_during(&c, "list", "networks", kubectl(k, args)).await;
        assert_eq!(r.ok().stdout, all, "{args:?}");
        assert_eq!(lists, 1, "{args:?}");
    }
    // IPInstances across namespaces, in pages of 3.
    namespace(&c.client, "team-b").await;
    for i in 0..7u8 {
        let ns = if i % 2 == 0 { "default" } else { "team-b" };
        ipinstance(
            &c.client,
            ns,
            &format!("10.244.0.{}", 20 + i),
            24,
            "overlay-a",
            "overlay",
            None,
            Some("node-a"),
            ("Pod", "p", "u"),
            false,
        )
        .await;
    }
    let (r, lists) = requests_during(
        &c,
        "list",
        "ipinstances",
        kubectl(
            k,
            &[
                "ip",
                "ls",
                "-A",
                "--chunk-size",
                "3",
                "-o",
                "jsonpath={.items[*].spec.address.ip}",
            ],
        ),
    )
    .await;
    let mut ips: Vec<&str> = r.ok().stdout.split(' ').collect();
    ips.sort();
    let want: Vec<String> = (0..7).map(|i| format!("10.244.0.{}/24", 20 + i)).collect();
    assert_eq!(ips, want.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(lists, 3);
    let (r, lists) = requests_during(
        &c,
        "list",
        "subnets",
        kubectl(k, &["subnet", "ls", "--chunk-size", "1", "--no-headers"]),
    )
    .await;
    assert_eq!(r.ok().stdout.lines().count(), 1);
    assert_eq!(lists, 1, "one subnet, one page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_list_flags_are_usage_errors_sent_nowhere() {
    if !kubectl_available() {
        return;
    }
    let c = cluster(true).await;
    let k = c.kubeconfig.as_path();
    networks(&c).await;
    for args in [
        &["network", "ls", "-l", "env in (prod"][..],
        &["network", "ls", "-l", "=prod"][..],
        &["network", "ls", "-l", "env=prod,,"][..],
        &["network", "ls", "-l", "env==a==b"][..],
        &["network", "ls", "-l", "bad key=x"][..],
        &["subnet", "ls", "-l", "a b=c"][..],
        &["ip", "ls", "-l", "app notin a,b"][..],
        &["network", "ls", "--chunk-size", "-1"][..],
        &["network", "ls", "--chunk-size", "1e3"][..],
        &["network", "ls", "-o", "jsonpath={.items[*].metadata.name"][..],
        &["network", "ls", "-o", "jsonpath={end}"][..],
        &["network", "ls", "-o", "jsonpath={.items[?(@.a=~\"x\")]}"][..],
        &["network", "ls", "-o", "jsonpath"][..],
        &["network", "ls", "-o", "jsonpath-file=/etc/passwd"][..],
        &["ip", "ls", "-o", "jsonpath={.items[0}"][..],
        &["network", "get", "n1", "-o", "jsonpath={items}"][..],
        &["ip", "usage", "-o", "jsonpath={.a}"][..],
    ] {
        let (r, lists) = requests_during(&c, "list", "networks", kubectl(k, args)).await;
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert_eq!(lists, 0, "{args:?}: nothing is sent");
        assert!(!r.stderr.is_empty(), "{args:?}");
    }
    // A template that parses but cannot apply to the data: an error naming the problem (exit 1).
    let r = kubectl(
        k,
        &["network", "ls", "-o", "jsonpath={.items[42].metadata.name}"],
    )
    .await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("array index out of bounds: index 42, length 9"),
        "{}",
        r.stderr
    );
    let r = kubectl(k, &["network", "ls", "-o", "jsonpath={.kind[0]}"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("not an array"), "{}", r.stderr);
    // An unclosed range runs to the end of the template, as in kubectl.
    let r = kubectl(
        k,
        &[
            "network",
            "ls",
            "-l",
            "env=dev",
            "-o",
            "jsonpath={range .items[*]}<{.metadata.name}>",
        ],
    )
    .await;
    assert_eq!(r.ok().stdout, "<n3>");
    // A missing field prints nothing (kubectl's --allow-missing-template-keys=true).
    let r = kubectl(k, &["network", "ls", "-o", "jsonpath={.items[*].nothing}"]).await;
    assert_eq!(r.ok().stdout, "");
}
