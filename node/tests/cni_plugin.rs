//! The `hybridnet` plugin driven by Debian's libcni (cnitool) in a chain with Debian's portmap
//! and bandwidth, against an in-process agent whose node is a test namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod cni_common;

use std::time::Duration;

use cni_common::*;
use hybridnet_api::naming::host_veth_name;
use hybridnet_api::v1::IpVersion;
use serde_json::Value;

const MAC: &str = "02:00:c6:12:00:05";
const CAPS: &str = r#"{"portMappings":[{"hostPort":18080,"containerPort":80,"protocol":"tcp"}],
  "bandwidth":{"ingressRate":8000000,"ingressBurst":800000,"egressRate":8000000,"egressBurst":800000}}"#;

fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "command failed: stdout={} stderr={}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ping(ns: &Netns, target: &str) {
    if let Err(e) = ns.exec(&["ping", "-c", "1", "-W", "3", target]) {
        panic!("ping {target} from {} failed: {e}", ns.name);
    }
}

#[test]
fn dual_stack_add_check_del_through_libcni_with_portmap_and_bandwidth() {
    if !prerequisites("dual_stack_add_check_del_through_libcni_with_portmap_and_bandwidth") {
        return;
    }
    let agent = Agent::start(Duration::from_secs(5));
    agent.write_conflist("hnt", "1.0.0");
    agent.add_instances(vec![
        ipinstance("default", "web-0", "198.18.0.5/24", IpVersion::V4, MAC),
        ipinstance("default", "web-0", "fd00::5/64", IpVersion::V6, MAC),
    ]);
    let pod = Netns::new("pod");
    let host_veth = host_veth_name("default", "web-0");
    let cid = "c0ffee01";

    let out = ok(&agent.cnitool(
        "add",
        "hnt",
        &pod.path(),
        cid,
        ("default", "web-0"),
        Some(CAPS),
    ));
    let r: Value = serde_json::from_str(&out).unwrap();
    // The result, field by field (after portmap and bandwidth passed it on).
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["interfaces"][0]["name"], host_veth.as_str());
    assert_eq!(r["interfaces"][0]["mac"], "ee:ee:ee:ee:ee:ee");
    assert!(r["interfaces"][0].get("sandbox").is_none());
    assert_eq!(r["interfaces"][1]["name"], "eth0");
    assert_eq!(r["interfaces"][1]["mac"], MAC);
    assert_eq!(r["interfaces"][1]["sandbox"], pod.path().as_str());
    assert_eq!(r["ips"][0]["address"], "198.18.0.5/32");
    assert_eq!(r["ips"][0]["gateway"], "169.254.1.1");
    assert_eq!(r["ips"][0]["interface"], 1);
    assert!(
        r["ips"][0].get("version").is_none(),
        "1.0.0 ips carry no version"
    );
    assert_eq!(r["ips"][1]["address"], "fd00::5/128");
    assert_eq!(r["ips"][1]["gateway"], "fe80::ecee:eeff:feee:eeee");
    assert_eq!(r["ips"][1]["interface"], 1);
    assert_eq!(
        r["routes"][0],
        serde_json::json!({"dst":"0.0.0.0/0","gw":"169.254.1.1"})
    );
    assert_eq!(
        r["routes"][1],
        serde_json::json!({"dst":"::/0","gw":"fe80::ecee:eeff:feee:eeee"})
    );
    assert_eq!(
        agent.lookup.attached.lock().unwrap().as_slice(),
        [cid.to_string()]
    );

    // Pod side: MAC, host-prefix addresses without prefix routes, link-local gateways.
    let link = pod.ip(&["link", "show", "eth0"]);
    assert!(
        link.contains(MAC) && link.contains("state UP") || link.contains("LOWER_UP"),
        "{link}"
    );
    let a4 = pod.ip(&["-4", "addr", "show", "eth0"]);
    assert!(
        a4.contains("inet 198.18.0.5/32") && a4.contains("noprefixroute"),
        "{a4}"
    );
    let a6 = pod.ip(&["-6", "addr", "show", "eth0"]);
    assert!(
        a6.contains("inet6 fd00::5/128") && a6.contains("noprefixroute"),
        "{a6}"
    );
    let r4 = pod.ip(&["-4", "route", "show"]);
    let r4_lines: Vec<&str> = r4.lines().map(str::trim).collect();
    assert_eq!(
        r4_lines,
        [
            "default via 169.254.1.1 dev eth0 proto static",
            "169.254.1.1 dev eth0 proto static scope link"
        ],
        "{r4}"
    );
    let r6 = pod.ip(&["-6", "route", "show", "default"]);
    assert!(
        r6.contains("default via fe80::ecee:eeff:feee:eeee dev eth0"),
        "{r6}"
    );

    // Node side: MAC, alias, table 39999, proxy entry, sysctls.
    let hl = agent.node.ip(&["-d", "link", "show", &host_veth]);
    assert!(
        hl.contains("ee:ee:ee:ee:ee:ee") && hl.contains(&format!("alias hybridnet/{cid}/eth0")),
        "{hl}"
    );
    let t4 = agent.node.ip(&["-4", "route", "show", "table", "39999"]);
    assert!(
        t4.contains(&format!(
            "198.18.0.5 dev {host_veth} proto static scope link"
        )),
        "{t4}"
    );
    let t6 = agent.node.ip(&["-6", "route", "show", "table", "39999"]);
    assert!(t6.contains(&format!("fd00::5 dev {host_veth}")), "{t6}");
    let proxy = agent.node.ip(&["-6", "neigh", "show", "proxy"]);
    assert!(
        proxy.contains(&format!("fe80::ecee:eeff:feee:eeee dev {host_veth}")),
        "{proxy}"
    );
    assert_eq!(
        agent
            .node
            .sysctl(&format!("ipv4/conf/{host_veth}/proxy_arp")),
        "1"
    );
    assert_eq!(
        agent
            .node
            .sysctl(&format!("ipv6/conf/{host_veth}/proxy_ndp")),
        "1"
    );
    assert_eq!(
        agent
            .node
            .sysctl(&format!("ipv4/neigh/{host_veth}/proxy_delay")),
        "0"
    );

    // Chained plugins worked on the host veth: portmap DNAT and bandwidth shaping.
    let nat = agent
        .node
        .exec(&["iptables-save", "-t", "nat"])
        .unwrap_or_default();
    assert!(
        nat.contains("--dport 18080") && nat.contains("198.18.0.5:80"),
        "{nat}"
    );
    let qdisc = sh(&[
        "tc",
        "-n",
        &agent.node.name,
        "qdisc",
        "show",
        "dev",
        &host_veth,
    ]);
    assert!(
        qdisc.contains("tbf") || qdisc.contains("ingress"),
        "{qdisc}"
    );

    // Traffic through the veth, both families, both directions.
    ping(&agent.node, "198.18.0.5");
    ping(&agent.node, "fd00::5");
    ping(&pod, "198.19.0.1");
    ping(&pod, "fd00:ff::1");

    // CHECK as libcni runs it for our plugin: the cached ADD result as prevResult. (Not through
    // cnitool here: Debian's portmap 1.1.1 CHECK looks for the IPv4 DNAT rules in the ip6tables
    // nat table and always fails; old_config_versions_through_libcni runs libcni CHECK without it.)
    let check_conf = |prev: &Value| {
        serde_json::to_vec(&serde_json::json!({
            "cniVersion": "1.0.0", "name": "hnt", "type": "hybridnet",
            "server_socket": agent.socket, "prevResult": prev
        }))
        .unwrap()
    };
    let check_env = plugin_env("CHECK", &pod.path(), cid, "default", "web-0");
    let (rc, _, out) = agent.plugin(&check_env, &check_conf(&r));
    assert_eq!(rc, 0, "CHECK failed: {out}");
    // A prevResult with other addresses than the live ones is a CHECK failure (code 102).
    let mut wrong = r.clone();
    wrong["ips"][0]["address"] = "198.18.0.99/32".into();
    let (rc, v, _) = agent.plugin(&check_env, &check_conf(&wrong));
    assert_eq!((rc, v["code"].as_u64()), (1, Some(102)), "{v}");

    // CHECK notices a broken attachment.
    pod.ip(&["-6", "route", "del", "default"]);
    let (rc, e, _) = agent.plugin(&check_env, &check_conf(&r));
    assert_eq!((rc, e["code"].as_u64()), (1, Some(102)), "{e}");
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("default route via fe80::ecee:eeff:feee:eeee"),
        "{e}"
    );

    ok(&agent.cnitool(
        "del",
        "hnt",
        &pod.path(),
        cid,
        ("default", "web-0"),
        Some(CAPS),
    ));
    assert!(
        !agent.node.ip_status(&["link", "show", &host_veth]),
        "host veth left behind"
    );
    assert!(
        !pod.ip_status(&["link", "show", "eth0"]),
        "eth0 left behind"
    );
    assert_eq!(
        agent
            .node
            .ip(&["-4", "route", "show", "table", "39999"])
            .trim(),
        ""
    );
    assert_eq!(
        agent
            .node
            .ip(&["-6", "route", "show", "table", "39999"])
            .trim(),
        ""
    );
    let nat = agent
        .node
        .exec(&["iptables-save", "-t", "nat"])
        .unwrap_or_default();
    assert!(
        !nat.contains("198.18.0.5:80"),
        "portmap rules left behind: {nat}"
    );
    // DEL again: still fine.
    ok(&agent.cnitool(
        "del",
        "hnt",
        &pod.path(),
        cid,
        ("default", "web-0"),
        Some(CAPS),
    ));
}

#[test]
fn old_config_versions_through_libcni() {
    if !prerequisites("old_config_versions_through_libcni") {
        return;
    }
    let agent = Agent::start(Duration::from_secs(5));
    // Dual stack: Debian's portmap 1.1.1 CHECK also looks for an IPv6 chain, which only
    // exists when the pod has an IPv6 address.
    agent.add_instances(vec![
        ipinstance(
            "default",
            "old-0",
            "198.18.1.7/24",
            IpVersion::V4,
            "02:00:c6:12:01:07",
        ),
        ipinstance(
            "default",
            "old-0",
            "fd00::1:7/64",
            IpVersion::V6,
            "02:00:c6:12:01:07",
        ),
    ]);
    for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
        let net = format!("hnt{}", version.replace('.', ""));
        agent.write_conflist_without_portmap(&net, version);
        let pod = Netns::new("pod");
        let cid = format!("old{}", version.replace('.', ""));
        // With CAP_ARGS: Debian's bandwidth 1.1.1 crashes on CHECK when it has no bandwidth to check.
        let out = ok(&agent.cnitool(
            "add",
            &net,
            &pod.path(),
            &cid,
            ("default", "old-0"),
            Some(CAPS),
        ));
        let r: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(r["cniVersion"], version);
        if version == "1.0.0" {
            assert!(r["ips"][0].get("version").is_none(), "{r}");
        } else {
            assert_eq!(r["ips"][0]["version"], "4", "{version}: {r}");
            assert_eq!(r["ips"][1]["version"], "6", "{version}: {r}");
        }
        assert_eq!(r["ips"][1]["address"], "fd00::1:7/128");
        assert_eq!(r["ips"][0]["address"], "198.18.1.7/32");
        assert_eq!(r["interfaces"][1]["sandbox"], pod.path().as_str());
        if version != "0.3.0" && version != "0.3.1" {
            ok(&agent.cnitool(
                "check",
                &net,
                &pod.path(),
                &cid,
                ("default", "old-0"),
                Some(CAPS),
            ));
        }
        ok(&agent.cnitool(
            "del",
            &net,
            &pod.path(),
            &cid,
            ("default", "old-0"),
            Some(CAPS),
        ));
        assert!(!pod.ip_status(&["link", "show", "eth0"]));
    }
}

#[test]
fn del_succeeds_after_the_netns_is_gone() {
    if !prerequisites("del_succeeds_after_the_netns_is_gone") {
        return;
    }
    let agent = Agent::start(Duration::from_secs(5));
    agent.write_conflist("hnt", "1.0.0");
    agent.add_instances(vec![ipinstance(
        "default",
        "gone-0",
        "198.18.2.9/24",
        IpVersion::V4,
        "02:00:c6:12:02:09",
    )]);
    let pod = Netns::new("pod");
    let path = pod.path();
    ok(&agent.cnitool(
        "add",
        "hnt",
        &path,
        "gone1",
        ("default", "gone-0"),
        Some(CAPS),
    ));
    drop(pod); // ip netns del: the sandbox is gone before the runtime's DEL
    ok(&agent.cnitool(
        "del",
        "hnt",
        &path,
        "gone1",
        ("default", "gone-0"),
        Some(CAPS),
    ));
    ok(&agent.cnitool(
        "del",
        "hnt",
        &path,
        "gone1",
        ("default", "gone-0"),
        Some(CAPS),
    ));
    assert!(
        !agent
            .node
            .ip_status(&["link", "show", &host_veth_name("default", "gone-0")])
    );
}

#[test]
fn missing_ipinstance_is_try_again_later_and_leaves_nothing() {
    if !prerequisites("missing_ipinstance_is_try_again_later_and_leaves_nothing") {
        return;
    }
    let agent = Agent::start(Duration::from_millis(300));
    agent.write_conflist("hnt", "1.0.0");
    let pod = Netns::new("pod");
    let before = (agent.node.links(), pod.links());
    let o = agent.cnitool(
        "add",
        "hnt",
        &pod.path(),
        "noip1",
        ("default", "noip-0"),
        None,
    );
    assert!(!o.status.success());
    let e = cnitool_error(&o);
    assert_eq!(e["code"], 11, "{e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("default/noip-0") && msg.contains("IPInstance"),
        "{msg}"
    );
    assert_eq!((agent.node.links(), pod.links()), before);
}

#[test]
fn concurrent_add_and_del_of_one_container_are_serialised() {
    if !prerequisites("concurrent_add_and_del_of_one_container_are_serialised") {
        return;
    }
    let agent = Agent::start(Duration::from_secs(5));
    agent.add_instances(vec![
        ipinstance(
            "default",
            "race-0",
            "198.18.3.3/24",
            IpVersion::V4,
            "02:00:c6:12:03:03",
        ),
        ipinstance(
            "default",
            "race-0",
            "fd00::3:3/64",
            IpVersion::V6,
            "02:00:c6:12:03:03",
        ),
    ]);
    let pod = Netns::new("pod");
    let conf = agent.conf("1.0.0");
    let results: Vec<(String, i32, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let cmd = if i % 3 == 2 { "DEL" } else { "ADD" };
                let env = plugin_env(cmd, &pod.path(), "race1", "default", "race-0");
                let (agent, conf) = (&agent, &conf);
                s.spawn(move || {
                    let (rc, _, out) = agent.plugin(&env, conf);
                    (cmd.to_string(), rc, out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (cmd, rc, out) in &results {
        assert_eq!(*rc, 0, "{cmd} failed under concurrency: {out}");
    }
    // Whatever ran last, the attachment is either complete (CHECK passes) or entirely absent.
    let host_veth = host_veth_name("default", "race-0");
    if agent.node.ip_status(&["link", "show", &host_veth]) {
        let (rc, _, out) = agent.plugin(
            &plugin_env("CHECK", &pod.path(), "race1", "default", "race-0"),
            &conf,
        );
        assert_eq!(
            rc, 0,
            "half-built attachment after concurrent ADD/DEL: {out}"
        );
    } else {
        assert!(!pod.ip_status(&["link", "show", "eth0"]));
        assert_eq!(
            agent.node.ip(&["route", "show", "table", "39999"]).trim(),
            ""
        );
    }
    let (rc, _, out) = agent.plugin(
        &plugin_env("DEL", &pod.path(), "race1", "default", "race-0"),
        &conf,
    );
    assert_eq!(rc, 0, "{out}");
    assert!(!agent.node.ip_status(&["link", "show", &host_veth]));
}

#[test]
fn status_and_gc_with_cni_1_1() {
    if !prerequisites("status_and_gc_with_cni_1_1") {
        return;
    }
    let agent = Agent::start(Duration::from_secs(5));
    let conf = agent.conf("1.1.0");
    let (rc, v, out) = agent.plugin(
        &std::collections::HashMap::from([("CNI_COMMAND", "STATUS".to_string())]),
        &conf,
    );
    assert_eq!((rc, v), (0, Value::Null), "{out}");

    agent.add_instances(vec![
        ipinstance(
            "default",
            "keep-0",
            "198.18.4.1/24",
            IpVersion::V4,
            "02:00:c6:12:04:01",
        ),
        ipinstance(
            "default",
            "stale-0",
            "198.18.4.2/24",
            IpVersion::V4,
            "02:00:c6:12:04:02",
        ),
    ]);
    let keep = Netns::new("pod");
    let stale = Netns::new("pod");
    for (ns, cid, pod) in [(&keep, "keep1", "keep-0"), (&stale, "stale1", "stale-0")] {
        let (rc, v, out) = agent.plugin(&plugin_env("ADD", &ns.path(), cid, "default", pod), &conf);
        assert_eq!(rc, 0, "{out}");
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(
            v["interfaces"][1]["mtu"], 1500,
            "1.1.0 results carry the MTU"
        );
    }
    let gc_conf = serde_json::to_vec(&serde_json::json!({
        "cniVersion": "1.1.0", "name": "hnt", "type": "hybridnet", "server_socket": agent.socket,
        "cni.dev/valid-attachments": [{"containerID": "keep1", "ifname": "eth0"}]
    }))
    .unwrap();
    let (rc, _, out) = agent.plugin(
        &std::collections::HashMap::from([("CNI_COMMAND", "GC".to_string())]),
        &gc_conf,
    );
    assert_eq!(rc, 0, "{out}");
    assert!(
        agent
            .node
            .ip_status(&["link", "show", &host_veth_name("default", "keep-0")])
    );
    assert!(
        !agent
            .node
            .ip_status(&["link", "show", &host_veth_name("default", "stale-0")])
    );
    assert!(!stale.ip_status(&["link", "show", "eth0"]));
    assert!(keep.ip_status(&["link", "show", "eth0"]));
}

#[test]
fn unreachable_pod_fails_add_and_leaves_nothing() {
    if !prerequisites("unreachable_pod_fails_add_and_leaves_nothing") {
        return;
    }
    let agent = Agent::start(Duration::from_secs(5));
    agent.add_instances(vec![
        ipinstance(
            "default",
            "bgp-0",
            "198.18.5.5/24",
            IpVersion::V4,
            "02:00:c6:12:05:05",
        ),
        ipinstance(
            "default",
            "bgp-0",
            "fd00::5:5/64",
            IpVersion::V6,
            "02:00:c6:12:05:05",
        ),
    ]);
    agent
        .lookup
        .unreachable
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let pod = Netns::new("pod");
    let before = (
        agent.node.links(),
        table(&agent.node, "-4"),
        table(&agent.node, "-6"),
        pod.links(),
    );
    let (rc, v, out) = agent.plugin(
        &plugin_env("ADD", &pod.path(), "bgp1", "default", "bgp-0"),
        &agent.conf("1.0.0"),
    );
    assert_eq!((rc, v["code"].as_u64()), (1, Some(11)), "{out}");
    assert_eq!(
        (
            agent.node.links(),
            table(&agent.node, "-4"),
            table(&agent.node, "-6"),
            pod.links()
        ),
        before,
        "a failed ADD left something behind"
    );
}

/// A KubeVirt live migration's target pod while the source pod (another node) holds its VM's
/// addresses: ADD wires it with the same addresses and MAC but routes nothing to it here and
/// does not wait for the address to be announced (it is the source's until the binding moves);
/// DEL removes only its own interface (docs/api.md, "KubeVirt VMs").
#[test]
fn a_migration_target_is_wired_with_its_vms_address_but_not_routed_here() {
    if !prerequisites("a_migration_target_is_wired_with_its_vms_address_but_not_routed_here") {
        return;
    }
    let agent = Agent::start(Duration::from_secs(5));
    agent.add_instances(vec![
        ipinstance("default", "vm-target", "198.18.7.7/24", IpVersion::V4, MAC),
        ipinstance("default", "vm-target", "fd00::7:7/64", IpVersion::V6, MAC),
    ]);
    let lookup = &agent.lookup;
    lookup
        .migration_peer
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // Not announced (the source node announces it): the ADD must not wait for that.
    lookup
        .unreachable
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let pod = Netns::new("pod");
    let (rc, v, out) = agent.plugin(
        &plugin_env("ADD", &pod.path(), "vmtarget1", "default", "vm-target"),
        &agent.conf("1.0.0"),
    );
    assert_eq!(rc, 0, "{out}");
    assert_eq!(v["interfaces"][1]["mac"], MAC, "{out}");
    let a4 = pod.ip(&["-4", "addr", "show", "eth0"]);
    assert!(a4.contains("inet 198.18.7.7/32"), "{a4}");
    let a6 = pod.ip(&["-6", "addr", "show", "eth0"]);
    assert!(a6.contains("inet6 fd00::7:7/128"), "{a6}");
    assert!(pod.ip(&["link", "show", "eth0"]).contains(MAC));
    let host_veth = host_veth_name("default", "vm-target");
    assert!(agent.node.ip_status(&["link", "show", &host_veth]));
    // No local-direct route here: the VM's address still goes to the source node.
    assert!(!table(&agent.node, "-4").contains("198.18.7.7"));
    assert!(!table(&agent.node, "-6").contains("fd00::7:7"));
    let (rc, _, out) = agent.plugin(
        &plugin_env("DEL", &pod.path(), "vmtarget1", "default", "vm-target"),
        &agent.conf("1.0.0"),
    );
    assert_eq!(rc, 0, "{out}");
    assert!(!agent.node.ip_status(&["link", "show", &host_veth]));
}

/// Table 39999 of a namespace ("" while the kernel has not created the table yet).
fn table(ns: &Netns, family: &str) -> String {
    ns.exec(&["ip", family, "route", "show", "table", "39999"])
        .unwrap_or_default()
}
