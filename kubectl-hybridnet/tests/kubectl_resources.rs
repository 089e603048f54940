//! `kubectl hybridnet network|subnet ...` and error handling, through the real kubectl against
//! kube-lite.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_and_subnets_from_flags_to_the_cluster() {
    if !kubectl_available() {
        return;
    }
    let c = cluster(true).await;
    let k = c.kubeconfig.as_path();
    node(&c.client, "node1", "192.0.2.11", &[("rack", "a")]).await;
    node(&c.client, "node2", "192.0.2.12", &[("rack", "b")]).await;

    // GitOps manifest without contacting the cluster: stable YAML with only name and spec.
    let r = kubectl(
        k,
        &[
            "network",
            "create",
            "overlay",
            "--vni",
            "4",
            "--dry-run=client",
            "-o",
            "yaml",
        ],
    )
    .await;
    r.ok();
    capture(
        "network-create-dry-run",
        "kubectl hybridnet network create overlay --vni 4 --dry-run=client -o yaml",
        &r,
    );
    assert_eq!(
        r.stdout,
        "apiVersion: networking.alibaba.com/v1\nkind: Network\nmetadata:\n  name: overlay\nspec:\n  mode: VXLAN\n  netID: 4\n  type: Overlay\n"
    );
    let r = kubectl(k, &["network", "ls"]).await;
    r.ok();
    assert!(
        r.stdout.is_empty() && r.stderr.contains("No networks found"),
        "{r:?}"
    );

    let r = kubectl(k, &["network", "create", "overlay", "--vni", "4"]).await;
    r.ok();
    assert_eq!(r.stdout, "network.networking.alibaba.com/overlay created\n");
    capture(
        "network-create-overlay",
        "kubectl hybridnet network create overlay --vni 4",
        &r,
    );
    let r = kubectl(
        k,
        &[
            "network",
            "create",
            "vlan100",
            "--vlan-id",
            "100",
            "--node-selector",
            "rack=a",
        ],
    )
    .await;
    r.ok();
    capture(
        "network-create-vlan",
        "kubectl hybridnet network create vlan100 --vlan-id 100 --node-selector rack=a",
        &r,
    );
    let r = kubectl(
        k,
        &[
            "network",
            "create",
            "bgp",
            "--asn",
            "65010",
            "--peer",
            "65000@192.0.2.254,password=s3cret",
            "--node-selector",
            "rack=b",
        ],
    )
    .await;
    r.ok();
    capture(
        "network-create-bgp",
        "kubectl hybridnet network create bgp --asn 65010 --peer 65000@192.0.2.254,password=s3cret --node-selector rack=b",
        &r,
    );

    // The shared rules against the cluster: one overlay network only; a node in one underlay network.
    let r = kubectl(k, &["network", "create", "overlay2", "--vni", "5"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("--mode (spec.type)") && r.stderr.contains("already exists"),
        "{}",
        r.stderr
    );
    let r = kubectl(
        k,
        &[
            "network",
            "create",
            "vlan200",
            "--vlan-id",
            "200",
            "--node-selector",
            "rack=a",
        ],
    )
    .await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("node \"node1\" already belongs to underlay network \"vlan100\""),
        "{}",
        r.stderr
    );
    capture(
        "network-create-overlap",
        "kubectl hybridnet network create vlan200 --vlan-id 200 --node-selector rack=a",
        &r,
    );

    let r = kubectl(
        k,
        &[
            "subnet",
            "create",
            "overlay-a",
            "--network",
            "overlay",
            "--cidr",
            "10.244.0.0/24",
        ],
    )
    .await;
    r.ok();
    capture(
        "subnet-create-overlay",
        "kubectl hybridnet subnet create overlay-a --network overlay --cidr 10.244.0.0/24",
        &r,
    );
    let r = kubectl(
        k,
        &[
            "subnet",
            "create",
            "overlay-nonat",
            "--network",
            "overlay",
            "--cidr",
            "10.245.0.0/24",
            "--no-nat",
            "--private",
        ],
    )
    .await;
    r.ok();
    let r = kubectl(
        k,
        &[
            "subnet",
            "create",
            "vlan100-a",
            "--network",
            "vlan100",
            "--cidr",
            "192.168.100.0/24",
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
    r.ok();
    capture(
        "subnet-create-vlan",
        "kubectl hybridnet subnet create vlan100-a --network vlan100 --cidr 192.168.100.0/24 --gateway 192.168.100.1 --start 192.168.100.10 --end 192.168.100.200 --reserved 192.168.100.20,192.168.100.21 --exclude 192.168.100.30",
        &r,
    );
    // VLAN subnets need a gateway; overlapping CIDRs are refused.
    let r = kubectl(
        k,
        &[
            "subnet",
            "create",
            "vlan100-b",
            "--network",
            "vlan100",
            "--cidr",
            "192.168.101.0/24",
        ],
    )
    .await;
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("--gateway (spec.range.gateway)"),
        "{}",
        r.stderr
    );
    let r = kubectl(
        k,
        &[
            "subnet",
            "create",
            "overlay-b",
            "--network",
            "overlay",
            "--cidr",
            "10.244.0.0/16",
        ],
    )
    .await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--cidr"), "{}", r.stderr);

    let r = kubectl(k, &["network", "ls"]).await;
    r.ok();
    capture("network-ls", "kubectl hybridnet network ls", &r);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{}", r.stdout);
    assert!(
        lines[1].starts_with("bgp")
            && lines[1].contains("Underlay")
            && lines[1].contains("BGP")
            && lines[1].contains("65010"),
        "{}",
        r.stdout
    );
    assert!(
        lines[2].starts_with("overlay") && lines[2].contains("VXLAN"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains('\u{1b}'), "no colour off a terminal");
    let r = kubectl(k, &["network", "ls", "-o", "wide"]).await;
    r.ok();
    assert!(
        r.stdout.contains("65000@192.0.2.254") && r.stdout.contains("rack=a"),
        "{}",
        r.stdout
    );
    capture(
        "network-ls-wide",
        "kubectl hybridnet network ls -o wide",
        &r,
    );

    let r = kubectl(k, &["subnet", "ls"]).await;
    r.ok();
    capture("subnet-ls", "kubectl hybridnet subnet ls", &r);
    assert_eq!(r.stdout.lines().count(), 4, "{}", r.stdout);
    let r = kubectl(k, &["subnet", "ls", "--network", "vlan100", "-o", "wide"]).await;
    r.ok();
    assert!(
        r.stdout.contains("192.168.100.1") && !r.stdout.contains("overlay-a"),
        "{}",
        r.stdout
    );
    let r = kubectl(k, &["subnet", "get", "vlan100-a", "-o", "json"]).await;
    r.ok();
    let v = r.json();
    assert_eq!(v["kind"], "Subnet");
    assert_eq!(
        v["spec"]["range"]["reservedIPs"],
        serde_json::json!(["192.168.100.20", "192.168.100.21"])
    );
    assert!(v["metadata"].get("managedFields").is_none());
    let r = kubectl(k, &["network", "get", "overlay", "bgp", "-o", "yaml"]).await;
    r.ok();
    assert!(
        r.stdout.starts_with("apiVersion: v1\nitems:\n") && r.stdout.contains("\nkind: List\n"),
        "{}",
        r.stdout
    );
    assert_eq!(r.stdout.matches("kind: Network").count(), 2);
    let r = kubectl(k, &["network", "get", "bgp", "-o", "name"]).await;
    assert_eq!(r.ok().stdout, "network.networking.alibaba.com/bgp\n");

    // Not found, and deletion rules.
    let r = kubectl(k, &["network", "get", "nope"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("network \"nope\" not found"),
        "{}",
        r.stderr
    );
    let r = kubectl(k, &["network", "delete", "overlay"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("still has subnets"), "{}", r.stderr);
    capture(
        "network-delete-refused",
        "kubectl hybridnet network delete overlay",
        &r,
    );
    let r = kubectl(
        k,
        &["subnet", "delete", "overlay-nonat", "--dry-run=server"],
    )
    .await;
    r.ok();
    assert!(r.stdout.contains("deleted (server dry run)"));
    let r = kubectl(k, &["subnet", "delete", "overlay-nonat"]).await;
    r.ok();
    let r = kubectl(k, &["subnet", "get", "overlay-nonat"]).await;
    assert_eq!(r.code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_hostile_flags_fail_clearly() {
    if !kubectl_available() {
        return;
    }
    let c = cluster(true).await;
    let k = c.kubeconfig.as_path();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "subnet",
                "create",
                "s",
                "--network",
                "n",
                "--cidr",
                "10.0.0.0/33",
            ],
            "--cidr (spec.range.cidr)",
        ),
        (
            &[
                "subnet",
                "create",
                "s",
                "--network",
                "n",
                "--cidr",
                "10.0.0.1/24",
            ],
            "not canonical",
        ),
        (
            &[
                "subnet",
                "create",
                "s",
                "--network",
                "n",
                "--cidr",
                "$(reboot)",
            ],
            "--cidr (spec.range.cidr)",
        ),
        (
            &[
                "subnet",
                "create",
                "s",
                "--network",
                "n",
                "--cidr",
                "10.0.0.0/24",
                "--gateway",
                "10.0.1.1",
            ],
            "--gateway (spec.range.gateway): 10.0.1.1 is outside 10.0.0.0/24",
        ),
        (
            &[
                "subnet",
                "create",
                "s",
                "--network",
                "n",
                "--cidr",
                "10.0.0.0/24",
                "--start",
                "10.0.0.9",
                "--end",
                "10.0.0.2",
            ],
            "--start (spec.range.start)",
        ),
        (
            &[
                "subnet",
                "create",
                "S_bad",
                "--network",
                "n",
                "--cidr",
                "10.0.0.0/24",
            ],
            "subnet name \"S_bad\" is invalid",
        ),
        (
            &[
                "network",
                "create",
                "b",
                "--asn",
                "65010",
                "--peer",
                "65000",
                "--node-selector",
                "a=b",
            ],
            "--peer \"65000\": expected ASN@ADDRESS",
        ),
        (
            &[
                "network",
                "create",
                "b",
                "--asn",
                "65010",
                "--peer",
                "65000@1.2.3.4,evil=1",
                "--node-selector",
                "a=b",
            ],
            "unknown option",
        ),
        (
            &[
                "network",
                "create",
                "b",
                "--asn",
                "99999999999",
                "--peer",
                "65000@1.2.3.4",
                "--node-selector",
                "a=b",
            ],
            "int32",
        ),
        (
            &[
                "network",
                "create",
                "v",
                "--vlan-id",
                "5000",
                "--node-selector",
                "a=b",
            ],
            "0..4094",
        ),
        (
            &[
                "network",
                "create",
                "v",
                "--vlan-id",
                "5",
                "--node-selector",
                "a b=c",
            ],
            "--node-selector",
        ),
        (&["network", "create", "x"], "choose a mode"),
        (&["ip", "ls", "-o", "xml"], "unknown output format \"xml\""),
        (
            &["ip", "usage", "-o", "wide"],
            "ip usage does not support -o wide",
        ),
        (
            &["network", "ls", "--request-timeout", "soon"],
            "--request-timeout",
        ),
        (
            &["trace", "p", "--to", "10.0.0.300"],
            "is not an IP address",
        ),
        (
            &["install", "--bootstrap-cidr", "100.64.0.1/10", "-o", "yaml"],
            "--bootstrap-cidr",
        ),
        (&["nosuchcommand"], "unrecognized subcommand"),
        (
            &["ip", "ls", "-n", "../../api/v1/secrets"],
            "-n/--namespace: namespace \"../../api/v1/secrets\" is invalid",
        ),
        (
            &["network", "get", "../x"],
            "network name \"../x\" is invalid",
        ),
        (
            &["subnet", "delete", "a/b"],
            "subnet name \"a/b\" is invalid",
        ),
        (
            &["trace", "../etc", "--to", "o2"],
            "namespace \"..\" is invalid",
        ),
        (&["trace", "Bad_Pod"], "pod name \"Bad_Pod\" is invalid"),
        (&["trace", "o1", "--to", "x/../y"], "--to:"),
        // A wrong -o is refused before anything is written (it used to create, then fail).
        (
            &["network", "create", "n", "--vni", "4", "-o", "table"],
            "-o table is not an output of create: use yaml, json or name",
        ),
        (
            &["network", "create", "n", "--vni", "4", "-o", ""],
            "-o is empty",
        ),
        (
            &[
                "subnet",
                "create",
                "s",
                "--network",
                "n",
                "--cidr",
                "10.0.0.0/24",
                "-o",
                "wide",
            ],
            "-o wide is not an output of create",
        ),
        (
            &["install", "-o", "table"],
            "install -o table: use yaml or json",
        ),
        // The operator builds image names from these: only reference characters get through.
        (
            &["install", "--registry", "docker.io/ü", "-o", "yaml"],
            "--registry \"docker.io/ü\" (spec.registry)",
        ),
        (
            &["install", "--registry", "../x", "-o", "yaml"],
            "--registry \"../x\" (spec.registry)",
        ),
        (
            &["install", "--hybridnet-version", "0.1.0-a b", "-o", "yaml"],
            "--hybridnet-version \"0.1.0-a b\" (spec.version)",
        ),
        // Negative numbers reach the range checks instead of being taken for flags.
        (
            &["network", "create", "n", "--vni", "-1"],
            "--vni (spec.netID): -1 is outside 1..16777215",
        ),
        (
            &[
                "network",
                "create",
                "v",
                "--vlan-id",
                "-1",
                "--node-selector",
                "a=b",
            ],
            "--vlan-id (spec.netID): -1 is outside 0..4094",
        ),
        (
            &[
                "subnet",
                "create",
                "s",
                "--network",
                "n",
                "--cidr",
                "10.0.0.0/24",
                "--vlan-id",
                "-3",
            ],
            "--vlan-id (spec.netID): -3 is outside 0..4094",
        ),
        (
            &[
                "network",
                "create",
                "b",
                "--asn",
                "-5",
                "--peer",
                "65000@1.2.3.4",
                "--node-selector",
                "a=b",
            ],
            "AS number -5 is negative",
        ),
        (
            &[
                "network",
                "create",
                "b",
                "--asn",
                "65010",
                "--peer",
                "-1@1.2.3.4",
                "--node-selector",
                "a=b",
            ],
            "--peer \"-1@1.2.3.4\": AS number -1 is negative",
        ),
        (
            &["ip", "usage", "--threshold", "-5"],
            "-5 is not in 1..=100",
        ),
        (
            &["ip", "ls", "--request-timeout", "-1s"],
            "--request-timeout \"-1s\"",
        ),
        // Names in filters are checked like names in paths: a typo is not "nothing found".
        (
            &["subnet", "ls", "--network", "../x"],
            "network name \"../x\" is invalid",
        ),
        (&["ip", "ls", "--subnet", ""], "subnet name \"\" is invalid"),
        (
            &["ip", "ls", "--node", "nöde"],
            "node name \"nöde\" is invalid",
        ),
        (
            &["ip", "ls", "--pod", "ns/pod"],
            "pod name \"ns/pod\" is invalid",
        ),
        (&["ip", "usage", "--network", LONG_NAME], "network name"),
        (
            &["network", "create", LONG_NAME, "--vni", "4"],
            "is invalid",
        ),
        (
            &["network", "get", "ok", "../bad"],
            "network name \"../bad\" is invalid",
        ),
        // An empty owner kind would leave StatefulSet addresses unprotected from --fix.
        (
            &["ip", "check", "--stateful-kinds", ""],
            "kind \"\" is invalid",
        ),
        (
            &["ip", "check", "--stateful-kinds", "StatefulSet,../x"],
            "kind \"../x\" is invalid",
        ),
        (
            &[
                "subnet",
                "create",
                "s",
                "--network",
                "n",
                "--cidr",
                "10.0.0.0/24",
                "--exclude",
                "10.0.0.5/32",
            ],
            "--exclude \"10.0.0.5/32\"",
        ),
        (
            &[
                "subnet",
                "create",
                "s",
                "--network",
                "n",
                "--cidr",
                "１０.0.0.0/24",
            ],
            "--cidr (spec.range.cidr)",
        ),
        (
            &["trace", "o1", "--to", "10.0.0.0/24"],
            "a destination is one IP address, not a CIDR",
        ),
        (
            &["trace", "o1", "--to", "node/"],
            "--to: node name \"\" is invalid",
        ),
        (
            &["trace", "o1", "--uplink", "../eth0"],
            "interface name \"../eth0\" is invalid",
        ),
        (
            &["trace", "o1", "--uplink", "a-very-long-interface"],
            "interface name",
        ),
        (
            &["trace", "o1", "--live", "--agent-namespace", "../x"],
            "namespace \"../x\" is invalid",
        ),
        (
            &["trace", "o1", "--live", "--agent-selector", ""],
            "label selector \"\" is invalid",
        ),
    ];
    for (args, want) in cases {
        let r = kubectl(k, args).await;
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains(want),
            "{args:?}: want {want:?} in {}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "{args:?} printed {}", r.stdout);
    }
    let r = kubectl(
        k,
        &[
            "subnet",
            "create",
            "s",
            "--network",
            "n",
            "--cidr",
            "10.0.0.0/24",
            "--gateway",
            "10.0.1.1",
        ],
    )
    .await;
    capture(
        "error-gateway-outside",
        "kubectl hybridnet subnet create s --network n --cidr 10.0.0.0/24 --gateway 10.0.1.1",
        &r,
    );
    let r = kubectl(
        k,
        &[
            "network",
            "create",
            "b",
            "--asn",
            "65010",
            "--peer",
            "65000",
            "--node-selector",
            "a=b",
        ],
    )
    .await;
    capture(
        "error-bad-peer",
        "kubectl hybridnet network create b --asn 65010 --peer 65000 --node-selector a=b",
        &r,
    );
    // Nothing was created by any of them.
    for kind in ["network", "subnet"] {
        let r = kubectl(k, &[kind, "ls", "-o", "json"]).await;
        assert_eq!(r.ok().json()["items"], serde_json::json!([]), "{kind}s");
    }
}

/// A name longer than the 253 characters of a DNS subdomain.
const LONG_NAME: &str = concat!(
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_checks_every_name_before_deleting_any() {
    if !kubectl_available() {
        return;
    }
    let c = cluster(true).await;
    let k = c.kubeconfig.as_path();
    kubectl(k, &["network", "create", "free", "--vni", "5"])
        .await
        .ok();
    for (network, vlan, rack, subnet, cidr, gateway) in [
        ("busy", "6", "rack=b", "busy-a", "10.30.0.0/24", "10.30.0.1"),
        (
            "spare",
            "7",
            "rack=c",
            "spare-a",
            "10.31.0.0/24",
            "10.31.0.1",
        ),
    ] {
        kubectl(
            k,
            &[
                "network",
                "create",
                network,
                "--vlan-id",
                vlan,
                "--node-selector",
                rack,
            ],
        )
        .await
        .ok();
        create_subnet(k, subnet, network, cidr, &["--gateway", gateway]).await;
    }

    // `busy` still has a subnet: the refusal comes before `free` is deleted.
    let r = kubectl(k, &["network", "delete", "free", "busy"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("cannot delete network busy")
            && r.stderr.contains("still has subnets [\"busy-a\"]"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    // A malformed or missing name among valid ones: nothing deleted either.
    let r = kubectl(k, &["network", "delete", "free", "../bad"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    let r = kubectl(k, &["network", "delete", "free", "missing"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("network \"missing\" not found"),
        "{}",
        r.stderr
    );
    let r = kubectl(k, &["subnet", "delete", "spare-a", "nope"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    let r = kubectl(k, &["network", "ls", "-o", "name"]).await;
    assert_eq!(
        r.ok().stdout,
        "network.networking.alibaba.com/busy\nnetwork.networking.alibaba.com/free\nnetwork.networking.alibaba.com/spare\n"
    );
    let r = kubectl(k, &["subnet", "ls", "-o", "name"]).await;
    assert_eq!(
        r.ok().stdout,
        "subnet.networking.alibaba.com/busy-a\nsubnet.networking.alibaba.com/spare-a\n"
    );
    // All deletable: every one goes, in the order given.
    let r = kubectl(k, &["subnet", "delete", "spare-a", "busy-a"]).await;
    assert_eq!(
        r.ok().stdout,
        "subnet.networking.alibaba.com/spare-a deleted\nsubnet.networking.alibaba.com/busy-a deleted\n"
    );
    let r = kubectl(k, &["network", "delete", "free", "busy", "spare"]).await;
    r.ok();
    let r = kubectl(k, &["network", "ls", "-o", "json"]).await;
    assert_eq!(r.ok().json()["items"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_to_do() {
    if !kubectl_available() {
        return;
    }
    // CRDs not installed.
    let c = cluster(false).await;
    let k = c.kubeconfig.as_path();
    let r = kubectl(k, &["network", "ls"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("networks.networking.alibaba.com CRD is not installed")
            && r.stderr.contains("install hybridnet first"),
        "{}",
        r.stderr
    );
    capture("error-no-crds", "kubectl hybridnet network ls", &r);
    let r = kubectl(k, &["install"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("hybridnetclusters.operator.hybridnet.io CRD is not installed"),
        "{}",
        r.stderr
    );

    // Cluster unreachable: a kubeconfig pointing at a closed port.
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    std::fs::write(
        &dead,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user: {{}}\n"),
    )
    .unwrap();
    let r = kubectl(&dead, &["ip", "ls", "--request-timeout", "5s"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(&format!(
            "cannot reach the cluster at http://127.0.0.1:{port}/"
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("check that the API server is running"),
        "{}",
        r.stderr
    );
    capture(
        "error-unreachable",
        "kubectl hybridnet ip ls",
        &Run {
            stderr: r.stderr.replace(&port.to_string(), "6443"),
            ..r
        },
    );
    // A context that does not exist; a kubeconfig that does not exist.
    let r = kubectl(k, &["network", "ls", "--context", "nope"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("context named \"nope\""), "{}", r.stderr);
    let r = kubectl(&dir.path().join("missing"), &["network", "ls"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("cannot read the kubeconfig"),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_help_and_completion() {
    if !kubectl_available() {
        return;
    }
    let c = cluster(true).await;
    let k = c.kubeconfig.as_path();
    let r = kubectl(k, &["version"]).await;
    r.ok();
    assert!(
        r.stdout
            .starts_with(&format!("kubectl-hybridnet {}", env!("CARGO_PKG_VERSION"))),
        "{}",
        r.stdout
    );
    capture("version", "kubectl hybridnet version", &r);
    let r = kubectl(k, &["version", "-o", "json"]).await;
    assert_eq!(r.ok().json()["version"], env!("CARGO_PKG_VERSION"));
    let r = kubectl(k, &["--help"]).await;
    r.ok();
    assert!(
        r.stdout
            .contains("Usage: kubectl hybridnet [OPTIONS] <COMMAND>"),
        "{}",
        r.stdout
    );
    capture("help", "kubectl hybridnet --help", &r);
    let r = kubectl(k, &["ip", "check", "--help"]).await;
    assert!(
        r.ok().stdout.contains("Usage: kubectl hybridnet ip check"),
        "{}",
        r.stdout
    );

    let r = kubectl(k, &["completion", "bash"]).await;
    assert!(
        r.ok().stdout.contains("complete -F") && r.stdout.contains("kubectl-hybridnet"),
        "{}",
        &r.stdout[..200.min(r.stdout.len())]
    );
    for sh in ["zsh", "fish"] {
        let r = kubectl(k, &["completion", sh]).await;
        assert!(!r.ok().stdout.is_empty());
    }

    // `kubectl hybridnet <TAB>`: kubectl >= 1.26 runs kubectl_complete-hybridnet from PATH.
    let helper = c.helper_dir.path();
    let r = kubectl(
        k,
        &["completion", "--kubectl-helper", helper.to_str().unwrap()],
    )
    .await;
    r.ok();
    let script = std::fs::read_to_string(helper.join("kubectl_complete-hybridnet")).unwrap();
    assert_eq!(script, kubectl_hybridnet::complete::KUBECTL_HELPER_SCRIPT);
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/kubectl_complete-hybridnet"
    ))
    .unwrap();
    assert_eq!(
        shipped, script,
        "the helper shipped in the repository is the one the command writes"
    );
    let kc = k.to_str().unwrap();
    let complete = |words: &'static [&'static str], env: Vec<(&'static str, String)>| {
        let helper = helper.to_path_buf();
        async move { complete_via_kubectl(words, &helper, env).await }
    };
    let r = complete(&[""], vec![]).await;
    r.ok();
    capture(
        "completion-kubectl",
        "kubectl __complete hybridnet \"\"",
        &r,
    );
    for want in ["network\t", "subnet\t", "ip\t", "trace\t", "status\t"] {
        assert!(r.stdout.contains(want), "{want} in {}", r.stdout);
    }
    assert!(r.stdout.contains(":4\n"), "{}", r.stdout);
    let r = complete(&["ip", "u"], vec![]).await;
    assert!(r.ok().stdout.starts_with("usage\t"), "{}", r.stdout);
    // Names come from the cluster (KUBECONFIG, since kubectl strips global flags).
    let r = kubectl(k, &["network", "create", "overlay", "--vni", "4"]).await;
    r.ok();
    let r = complete(
        &["network", "get", "o"],
        vec![("KUBECONFIG", kc.to_string())],
    )
    .await;
    assert!(r.ok().stdout.starts_with("overlay\n"), "{}", r.stdout);
    // The helper itself, as any kubectl >= 1.26 runs it (and the fallback above for older ones).
    let r = complete_direct(&["network", "get", ""], helper, &[("KUBECONFIG", kc)]).await;
    assert_eq!(r.ok().stdout, "overlay\n:4\n");
}

/// The krew manifest: the fields krew checks, one platform per OS and architecture, the version
/// of this crate, and sha256 values that are either real digests or the marked placeholder.
#[test]
fn krew_manifest() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/krew.yaml")).unwrap();
    let v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(
        v["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(v["kind"], "Plugin");
    assert_eq!(v["metadata"]["name"], "hybridnet");
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(v["spec"]["version"], version.as_str());
    for f in ["homepage", "shortDescription", "description", "caveats"] {
        assert!(v["spec"][f].as_str().is_some_and(|s| !s.is_empty()), "{f}");
    }
    let platforms = v["spec"]["platforms"].as_array().unwrap();
    let mut seen = Vec::new();
    for p in platforms {
        let os = p["selector"]["matchLabels"]["os"].as_str().unwrap();
        let arch = p["selector"]["matchLabels"]["arch"].as_str().unwrap();
        seen.push(format!("{os}/{arch}"));
        let uri = p["uri"].as_str().unwrap();
        assert!(uri.starts_with(&format!("https://github.com/hybridnet/hybridnet/releases/download/{version}/kubectl-hybridnet_{version}_{os}_{arch}.")), "{uri}");
        let sha = p["sha256"].as_str().unwrap();
        assert!(
            sha == format!("RELEASE-JOB-FILLS-SHA256-{os}-{arch}")
                || (sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit())),
            "{sha}"
        );
        let bin = p["bin"].as_str().unwrap();
        assert_eq!(
            bin,
            if os == "windows" {
                "kubectl-hybridnet.exe"
            } else {
                "kubectl-hybridnet"
            }
        );
        assert!(
            p["files"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["from"] == bin)
        );
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "darwin/amd64",
            "darwin/arm64",
            "linux/amd64",
            "linux/arm64",
            "windows/amd64",
            "windows/arm64"
        ]
    );
}

/// kubectl's minor version, e.g. 32 for v1.32.4.
async fn kubectl_minor() -> u32 {
    let r = kubectl_raw(&["version", "--client", "-o", "json"], None, &[]).await;
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_default();
    v["clientVersion"]["minor"]
        .as_str()
        .map(|m| m.trim_end_matches('+'))
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// `kubectl __complete hybridnet WORDS...`: kubectl >= 1.26 runs kubectl_complete-hybridnet from
/// PATH. Older kubectl (Debian's 1.20 fallback) cannot complete plugins, so the helper is run the
/// way kubectl would run it, with the same words.
async fn complete_via_kubectl(
    words: &[&str],
    helper: &std::path::Path,
    env: Vec<(&str, String)>,
) -> Run {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if kubectl_minor().await >= 26 {
        let mut args = vec!["__complete", "hybridnet"];
        args.extend_from_slice(words);
        return kubectl_raw(&args, Some(helper), &env).await;
    }
    eprintln!(
        "kubectl < 1.26 does not complete plugins: running kubectl_complete-hybridnet directly"
    );
    complete_direct(words, helper, &env).await
}

/// Runs kubectl_complete-hybridnet as kubectl runs it: the words after the plugin name.
async fn complete_direct(words: &[&str], helper: &std::path::Path, env: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(helper.join("kubectl_complete-hybridnet"));
    cmd.args(words).env("PATH", path_env(Some(helper)));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    Run::of(cmd.spawn().expect("run the helper")).await
}

/// `kubectl hybridnet install` refuses an API server older than the floor
/// (`hybridnet_api::platform`) before writing anything, naming the missing feature; at the floor
/// it goes on (here to the missing CRD, the next thing it checks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_refuses_a_kubernetes_older_than_the_floor() {
    if !kubectl_available() {
        return;
    }
    for (version, too_old) in [("v1.31.9", true), ("v1.32.0", false)] {
        let server = kube_lite::Server::start(kube_lite::Config {
            git_version: version.into(),
            ..Default::default()
        })
        .await
        .expect("start kube-lite");
        let r = kubectl(server.kubeconfig_path(), &["install"]).await;
        assert_eq!(r.code, 1, "{version}: {r:?}");
        if too_old {
            assert!(
                r.stderr.contains(
                    "install: Kubernetes \"v1.31.9\" is older than 1.32.0, the oldest hybridnet supports"
                ) && r.stderr.contains("ServiceAccountTokenPodNodeInfo"),
                "{}",
                r.stderr
            );
        } else {
            assert!(
                r.stderr
                    .contains("hybridnetclusters.operator.hybridnet.io CRD is not installed"),
                "{version}: {}",
                r.stderr
            );
        }
    }
}
