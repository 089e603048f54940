//! The node agent's removal of upstream's leftovers, in network namespaces with the real tools:
//! upstream's iptables and ipset state is written exactly as its daemon writes it
//! (`hybridnet_node::migrate::fixture`), next to foreign state (kube-proxy-like chains, a user's
//! rules and chains, foreign ipsets), for each iptables backend and both families. The cleanup
//! must leave the foreign state byte-identical, remove all of upstream's, and change nothing on a
//! second run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use common::*;
use hybridnet_api::migration::{NODE_LEFTOVERS_ANNOTATION, NodeLeftovers};
use hybridnet_api::v1::{NetworkType, NodeInfo};
use hybridnet_node::dataplane::netns::run_in_netns;
use hybridnet_node::migrate::fixture::{Step, UpstreamNode, upstream_steps};
use hybridnet_node::migrate::{Scope, host};

fn exec(ns: &Netns, s: &Step) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, &s.program])
        .args(&s.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = &s.stdin {
        stdin.write_all(input.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{} {:?} failed: {}\nstdin:\n{}",
        s.program,
        s.args,
        String::from_utf8_lossy(&out.stderr),
        s.stdin.as_deref().unwrap_or("")
    );
}

fn run(ns: &Netns, program: &str, args: &[&str], stdin: Option<&str>) {
    exec(
        ns,
        &Step {
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            stdin: stdin.map(str::to_string),
        },
    );
}

/// Foreign state: what kube-proxy, another CNI and the user keep on a node.
fn foreign_state(ns: &Netns, backend: &str) {
    run(
        ns,
        "ipset",
        &["create", "-exist", "KUBE-CLUSTER-IP", "hash:ip,port"],
        None,
    );
    run(
        ns,
        "ipset",
        &["create", "-exist", "HYBR-MINE", "hash:net"],
        None,
    );
    run(
        ns,
        "ipset",
        &["add", "-exist", "HYBR-MINE", "10.99.0.0/16"],
        None,
    );
    run(
        ns,
        "ipset",
        &[
            "create",
            "-exist",
            "inet6:users",
            "hash:net",
            "family",
            "inet6",
        ],
        None,
    );
    for (fam, net) in [("iptables", "10.9.0.0/16"), ("ip6tables", "fd00:9::/64")] {
        let restore = format!("{fam}-{backend}-restore");
        let script = format!(
            "*nat\n:KUBE-POSTROUTING - [0:0]\n:USER-NAT - [0:0]\n\
             -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
             -A POSTROUTING -s {net} -j USER-NAT\n\
             -A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE\n\
             -A USER-NAT -m set --match-set {set} src -j MASQUERADE\nCOMMIT\n\
             *filter\n:HYBRIDNET-USER - [0:0]\n:KUBE-FORWARD - [0:0]\n\
             -A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
             -A FORWARD -j HYBRIDNET-USER\n-A FORWARD -i eth9 -j DROP\n\
             -A HYBRIDNET-USER -d {net} -j ACCEPT\nCOMMIT\n\
             *mangle\n:MINE - [0:0]\n-A PREROUTING -j MINE\n-A MINE -j MARK --set-xmark 0x1/0x1\nCOMMIT\n\
             *raw\n-A PREROUTING -d {net} -j NOTRACK\nCOMMIT\n",
            set = if fam == "iptables" {
                "HYBR-MINE"
            } else {
                "inet6:users"
            },
        );
        run(ns, &restore, &["-w", "--noflush"], Some(&script));
    }
}

fn upstream_state(ns: &Netns, backend: &str) {
    for ipv6 in [false, true] {
        let node = if ipv6 {
            UpstreamNode {
                backend,
                ipv6,
                vxlan_if: "eth0.vxlan4",
                vlan_if: Some("eth0.10"),
                overlay_cidrs: &["fd00:64::/64"],
                underlay_cidrs: &["fd00:18::/64"],
                node_ips: &["fd00:18::11", "fd00:18::12"],
                local_pod_ips: &["fd00:64::5", "fd00:18::100"],
            }
        } else {
            UpstreamNode {
                backend,
                ipv6,
                vxlan_if: "eth0.vxlan4",
                vlan_if: Some("eth0.10"),
                overlay_cidrs: &["198.18.64.0/20"],
                underlay_cidrs: &["198.18.0.0/24"],
                node_ips: &["198.18.0.11", "198.18.0.12"],
                local_pod_ips: &["198.18.64.5", "198.18.0.100"],
            }
        };
        for s in upstream_steps(&node) {
            exec(ns, &s);
        }
    }
}

/// Everything the tools print, comments and counters left out.
fn dump(ns: &Netns, backend: &str) -> String {
    let mut out = String::new();
    for fam in ["iptables", "ip6tables"] {
        let save = ns.exec(&[&format!("{fam}-{backend}-save")]).unwrap();
        out.push_str(&format!("== {fam}\n"));
        for l in save.lines().filter(|l| !l.starts_with('#')) {
            // Built-in chain declarations carry counters.
            let l = match l.find(" [") {
                Some(i) if l.starts_with(':') => &l[..i],
                _ => l,
            };
            out.push_str(l);
            out.push('\n');
        }
    }
    out.push_str("== ipset\n");
    out.push_str(&ns.exec(&["ipset", "save"]).unwrap());
    out
}

/// The dump without upstream's lines: what must be left, byte for byte.
fn without_upstream(dump: &str) -> String {
    let upstream = |l: &str| {
        l.contains("HYBRIDNET-PREROUTING")
            || l.contains("HYBRIDNET-POSTROUTING")
            || l.contains("HYBRIDNET-FORWARD")
            || l.contains("HYBRIDNET-FROM-RULE-SKIP")
            || l.contains("HYBRIDNET-POD-TO-NODE-MARK")
            || l.split_whitespace().nth(1).is_some_and(|s| {
                let s = s.strip_prefix("inet6:").unwrap_or(s);
                s.starts_with("HYBR-") && s != "HYBR-MINE"
            })
    };
    dump.lines()
        .filter(|l| !upstream(l))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn clean_in(ns: &Netns) -> host::CleanReport {
    run_in_netns(&ns.name, |_| async {
        Ok(host::clean(Scope::default(), true))
    })
    .unwrap()
}

#[test]
fn removes_upstream_state_of_both_backends_and_families_and_only_that() {
    let test = "removes_upstream_state_of_both_backends_and_families_and_only_that";
    if !may_run(
        test,
        &[
            "ipset",
            "iptables-legacy-restore",
            "ip6tables-legacy-restore",
            "iptables-nft-restore",
            "ip6tables-nft-restore",
        ],
    ) {
        return;
    }
    for backend in ["legacy", "nft"] {
        let ns = Netns::new(&format!("up-{backend}"));
        foreign_state(&ns, backend);
        let foreign_only = dump(&ns, backend);
        upstream_state(&ns, backend);
        let before = dump(&ns, backend);
        // The fixture wrote what the test expects (so the assertions below can fail).
        for must in [
            ":HYBRIDNET-POD-TO-NODE-MARK",
            "-j HYBRIDNET-FORWARD",
            "create HYBR-LOCAL-UNDERLAY-NET hash:net",
            "create inet6:HYBR-ALL hash:net family inet6",
            "add inet6:HYBR-NODE-IP fd00:18::12",
        ] {
            assert!(
                before.contains(must),
                "{backend}: fixture lacks {must}:\n{before}"
            );
        }
        assert_eq!(without_upstream(&before), foreign_only, "{backend}: filter");

        let scan = run_in_netns(&ns.name, |_| async {
            Ok(host::clean(Scope::default(), false))
        })
        .unwrap();
        assert!(scan.removed.is_empty(), "{scan:?}");
        assert!(
            scan.remaining.contains(&format!(
                "iptables-{backend} IPv6 mangle chain HYBRIDNET-POD-TO-NODE-MARK"
            )),
            "{scan:?}"
        );
        assert!(
            scan.remaining.contains(&"ipset inet6:HYBR-ALL".to_string()),
            "{scan:?}"
        );
        assert_eq!(
            dump(&ns, backend),
            before,
            "{backend}: a scan changed something"
        );

        let first = clean_in(&ns);
        assert!(first.errors.is_empty(), "{backend}: {first:?}");
        assert!(first.remaining.is_empty(), "{backend}: {first:?}");
        // 6 chains x 2 families, 4 jumps x 2 families, 5 sets x 2 families.
        let chains = first
            .removed
            .iter()
            .filter(|r| r.contains(" chain "))
            .count();
        let sets = first
            .removed
            .iter()
            .filter(|r| r.starts_with("ipset "))
            .count();
        assert_eq!((chains, sets), (12, 10), "{backend}: {:#?}", first.removed);
        let after = dump(&ns, backend);
        assert_eq!(after, foreign_only, "{backend}: foreign state changed");

        let second = clean_in(&ns);
        assert_eq!(
            second,
            host::CleanReport::default(),
            "{backend}: not idempotent"
        );
        assert_eq!(
            dump(&ns, backend),
            foreign_only,
            "{backend}: second run changed state"
        );
    }
}

#[test]
fn a_set_a_foreign_rule_still_uses_is_kept_and_reported() {
    let test = "a_set_a_foreign_rule_still_uses_is_kept_and_reported";
    if !may_run(test, &["ipset", "iptables-nft-restore"]) {
        return;
    }
    let ns = Netns::new("up-inuse");
    run(
        &ns,
        "ipset",
        &["create", "HYBR-ALL", "hash:net", "timeout", "0"],
        None,
    );
    run(
        &ns,
        "iptables-nft-restore",
        &["-w", "--noflush"],
        Some(
            "*filter\n:MINE - [0:0]\n-A FORWARD -j MINE\n-A MINE -m set --match-set HYBR-ALL dst -j ACCEPT\nCOMMIT\n",
        ),
    );
    let before = dump(&ns, "nft");
    let rep = clean_in(&ns);
    assert_eq!(rep.remaining, ["ipset HYBR-ALL"], "{rep:?}");
    assert_eq!(rep.errors.len(), 1, "{rep:?}");
    assert!(rep.errors[0].contains("HYBR-ALL"), "{rep:?}");
    assert_eq!(dump(&ns, "nft"), before);
}

/// The agent started on a node upstream's daemon ran on (its iptables and ipset state, its policy
/// rules at the priorities it picked) leaves only its own state and publishes `[]`.
#[test]
fn the_agent_removes_upstream_state_and_publishes_what_is_left() {
    let test = "the_agent_removes_upstream_state_and_publishes_what_is_left";
    if !may_run(
        test,
        &[
            "ipset",
            "iptables-legacy-restore",
            "ip6tables-legacy-restore",
        ],
    ) {
        return;
    }
    let (_sw, cpns, n1) = l2_segment();

    foreign_state(&n1, "legacy");
    let foreign_only = dump(&n1, "legacy");
    upstream_state(&n1, "legacy");
    // Upstream's rules at the priorities it took ("first free after lookup local").
    n1.ip("rule add pref 1 lookup 39999");
    n1.ip("rule add pref 2 lookup 40000");
    n1.ip("rule add pref 3 fwmark 0x20/0x20 lookup 40001");
    n1.ip("rule add pref 4 from 198.19.0.0/24 fwmark 0/0x4040 lookup 10000");
    n1.ip("route add default dev eth0 table 10000");
    assert!(dump(&n1, "legacy").contains(":HYBRIDNET-FORWARD"));

    let cp = ControlPlane::start(&cpns, "198.18.0.250");
    cp.create(&node_object("n1", &["198.18.0.11"]));
    cp.create_network(&network(
        "overlay",
        NetworkType::Overlay,
        None,
        Some(4),
        &["n1"],
    ));
    cp.create(&subnet("ov4", "overlay", "198.19.0.0/24", None, None, None));
    let _agent = start_agent(&n1, "n1", &cp.kubeconfig, 11021, &[]);

    let published: String = wait_for("the leftovers annotation", 60, || {
        cp.run(|c| async move {
            kube::Api::<NodeInfo>::all(c)
                .get_opt("n1")
                .await
                .ok()
                .flatten()
                .and_then(|ni| ni.metadata.annotations)
                .and_then(|a| a.get(NODE_LEFTOVERS_ANNOTATION).cloned())
        })
    });
    assert_eq!(
        NodeLeftovers::parse_annotation(&published).unwrap(),
        NodeLeftovers::default()
    );
    assert_eq!(
        dump(&n1, "legacy"),
        foreign_only,
        "iptables/ipset state after the agent"
    );
    let rules = n1.ip("rule show");
    for gone in ["1:", "2:", "3:", "4:"] {
        assert!(
            !rules.lines().any(|l| l.starts_with(gone)),
            "upstream rule {gone} still there:\n{rules}"
        );
    }
    assert!(rules.contains("1000:\tfrom all lookup 39999"), "{rules}");
    assert!(
        rules.contains("from 198.19.0.0/24 fwmark 0/0x4040 lookup 10000"),
        "the subnet table is adopted:\n{rules}"
    );
}
