//! Malformed and hostile CNI input: every case gets the right CNI error code, and nothing
//! changes in the node or pod namespaces (no veth, address, route, rule, proxy entry or nftables
//! rule); a valid ADD of the same pod does change them (the control).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod cni_common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use cni_common::*;
use hybridnet_api::v1::IpVersion;
use hybridnet_node::cniserver::{CniServer, CniServerConfig, CniServerError, IpInstanceLookup};

/// (what, environment, stdin, expected CNI code)
type Case = (&'static str, HashMap<&'static str, String>, Vec<u8>, u64);

/// Everything a hostile call could have touched: links, addresses, routes of every table, policy
/// rules, proxy ARP/NDP entries and the nftables ruleset, in the node and the pod namespace.
fn snapshot(agent: &Agent, pod: &Netns) -> Vec<String> {
    let nft = |ns: &Netns| {
        ns.exec(&["nft", "list", "ruleset"])
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let mut v = Vec::new();
    for ns in [&agent.node, pod] {
        v.extend([
            ns.ip(&["-o", "link", "show"]),
            ns.ip(&["-o", "addr", "show"]),
            ns.ip(&["route", "show", "table", "all"]),
            ns.ip(&["-6", "route", "show", "table", "all"]),
            ns.ip(&["rule", "show"]),
            ns.ip(&["-6", "rule", "show"]),
            ns.ip(&["neigh", "show", "proxy"]),
            ns.ip(&["-6", "neigh", "show", "proxy"]),
            nft(ns),
        ]);
    }
    v
}

#[test]
fn hostile_plugin_input_gets_the_right_code_and_changes_nothing() {
    let test = "hostile_plugin_input_gets_the_right_code_and_changes_nothing";
    if !prerequisites(test) || !may_run(test, &["nft"]) {
        return;
    }
    let agent = Agent::start(Duration::from_millis(200));
    // The pod exists, so a call that slipped through validation would really build something.
    agent.add_instances(vec![ipinstance(
        "default",
        "web-0",
        "198.18.9.9/24",
        IpVersion::V4,
        "02:00:c6:12:09:09",
    )]);
    let pod = Netns::new("pod");
    let good_conf = agent.conf("1.0.0");
    let good_env = plugin_env("ADD", &pod.path(), "c1", "default", "web-0");
    let before = snapshot(&agent, &pod);

    let with = |k: &'static str, v: &str| {
        let mut e = good_env.clone();
        e.insert(k, v.to_string());
        e
    };
    let without = |k: &str| {
        let mut e = good_env.clone();
        e.remove(k);
        e
    };
    let regular_file = agent.dir.path().join("not-a-netns");
    std::fs::write(&regular_file, b"x").unwrap();
    let huge = {
        let mut v = br#"{"cniVersion":"1.0.0","name":"hnt","pad":""#.to_vec();
        v.extend(std::iter::repeat_n(b'a', 2 * 1024 * 1024));
        v.extend_from_slice(br#""}"#);
        v
    };
    let conf_with = |extra: serde_json::Value| {
        let mut c: serde_json::Value = serde_json::from_slice(&good_conf).unwrap();
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        serde_json::to_vec(&c).unwrap()
    };

    let cases: Vec<Case> = vec![
        (
            "bad JSON",
            good_env.clone(),
            b"{\"cniVersion\": ".to_vec(),
            6,
        ),
        ("not an object", good_env.clone(), b"[1,2,3]".to_vec(), 7),
        ("empty stdin", good_env.clone(), Vec::new(), 6),
        ("huge stdin", good_env.clone(), huge, 6),
        (
            "unknown cniVersion",
            good_env.clone(),
            conf_with(serde_json::json!({"cniVersion": "9.9.9"})),
            1,
        ),
        (
            "no cniVersion",
            good_env.clone(),
            br#"{"name":"hnt","type":"hybridnet"}"#.to_vec(),
            1,
        ),
        (
            "socket path trick",
            good_env.clone(),
            conf_with(serde_json::json!({"server_socket": "/run/../tmp/x.sock"})),
            7,
        ),
        (
            "wrong plugin type",
            good_env.clone(),
            conf_with(serde_json::json!({"type": "bridge"})),
            7,
        ),
        (
            "missing CNI_COMMAND",
            without("CNI_COMMAND"),
            good_conf.clone(),
            4,
        ),
        (
            "unknown CNI_COMMAND",
            with("CNI_COMMAND", "DESTROY"),
            good_conf.clone(),
            4,
        ),
        (
            "missing CNI_NETNS",
            without("CNI_NETNS"),
            good_conf.clone(),
            4,
        ),
        (
            "missing CNI_CONTAINERID",
            without("CNI_CONTAINERID"),
            good_conf.clone(),
            4,
        ),
        (
            "missing CNI_IFNAME",
            without("CNI_IFNAME"),
            good_conf.clone(),
            4,
        ),
        (
            "missing K8S args",
            with("CNI_ARGS", "IgnoreUnknown=1"),
            good_conf.clone(),
            4,
        ),
        (
            "pod name path trick",
            with("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=../../x"),
            good_conf.clone(),
            4,
        ),
        (
            "namespace path trick",
            with("CNI_ARGS", "K8S_POD_NAMESPACE=../..;K8S_POD_NAME=web-0"),
            good_conf.clone(),
            4,
        ),
        (
            "uid path trick",
            with(
                "CNI_ARGS",
                "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=../x",
            ),
            good_conf.clone(),
            4,
        ),
        (
            "CNI_ARGS garbage",
            with("CNI_ARGS", "K8S_POD_NAMESPACE"),
            good_conf.clone(),
            4,
        ),
        (
            "container id path trick",
            with("CNI_CONTAINERID", "../../x"),
            good_conf.clone(),
            4,
        ),
        (
            "ifname too long",
            with("CNI_IFNAME", "eth0123456789abc"),
            good_conf.clone(),
            4,
        ),
        (
            "ifname with slash",
            with("CNI_IFNAME", "../eth0"),
            good_conf.clone(),
            4,
        ),
        (
            "netns path trick",
            with(
                "CNI_NETNS",
                &format!("{}/../../../proc/1/ns/net", pod.path()),
            ),
            good_conf.clone(),
            4,
        ),
        (
            "relative netns",
            with("CNI_NETNS", "run/netns/x"),
            good_conf.clone(),
            4,
        ),
        (
            "netns is a regular file",
            with("CNI_NETNS", regular_file.to_str().unwrap()),
            good_conf.clone(),
            4,
        ),
        (
            "netns is another namespace type",
            with("CNI_NETNS", "/proc/self/ns/uts"),
            good_conf.clone(),
            4,
        ),
        (
            "netns is the node's own",
            with("CNI_NETNS", &agent.node.path()),
            good_conf.clone(),
            4,
        ),
        (
            "netns does not exist",
            with("CNI_NETNS", "/run/netns/hnt-does-not-exist"),
            good_conf.clone(),
            3,
        ),
        (
            "CHECK needs 0.4.0",
            with("CNI_COMMAND", "CHECK"),
            agent.conf("0.3.1"),
            1,
        ),
        (
            "STATUS needs 1.1.0",
            with("CNI_COMMAND", "STATUS"),
            agent.conf("1.0.0"),
            1,
        ),
        (
            "GC without the valid list",
            with("CNI_COMMAND", "GC"),
            agent.conf("1.1.0"),
            7,
        ),
        (
            "agent socket missing",
            good_env.clone(),
            conf_with(serde_json::json!({"server_socket": "/run/hnt-no-such.sock"})),
            11,
        ),
    ];
    for (what, env, stdin, code) in cases {
        let (rc, v, out) = agent.plugin(&env, &stdin);
        assert_eq!(rc, 1, "{what}: exit code (stdout {out})");
        assert_eq!(v["code"].as_u64(), Some(code), "{what}: {out}");
        let msg = v["msg"].as_str().unwrap_or("");
        assert!(
            msg.len() >= 15,
            "{what}: the message should say what is wrong: {out}"
        );
        assert!(
            v["cniVersion"].is_string(),
            "{what}: error object without cniVersion: {out}"
        );
        assert_eq!(
            snapshot(&agent, &pod),
            before,
            "{what} changed the namespaces"
        );
    }
    // The node's own namespace named as CNI_NETNS on DEL: the agent deletes by attachment, so
    // the node's interfaces stay.
    let (rc, _, out) = agent.plugin(
        &with("CNI_COMMAND", "DEL")
            .into_iter()
            .chain([("CNI_NETNS", agent.node.path())])
            .collect(),
        &good_conf,
    );
    assert_eq!(rc, 0, "{out}");
    assert_eq!(snapshot(&agent, &pod), before);

    // Control: the same pod with valid input does change the snapshot (the checks above would
    // see a call that slipped through).
    let (rc, _, out) = agent.plugin(&good_env, &good_conf);
    assert_eq!(rc, 0, "a valid ADD succeeds: {out}");
    let after = snapshot(&agent, &pod);
    let changed: Vec<usize> = (0..before.len())
        .filter(|i| after[*i] != before[*i])
        .collect();
    assert!(
        !changed.is_empty(),
        "a valid ADD changes the namespaces: {after:#?}"
    );
    let (rc, _, out) = agent.plugin(&with("CNI_COMMAND", "DEL"), &good_conf);
    assert_eq!(rc, 0, "DEL after the control ADD: {out}");

    // VERSION works without a config and lists every supported version.
    let (rc, v, out) = agent.plugin(
        &HashMap::from([("CNI_COMMAND", "VERSION".to_string())]),
        b"",
    );
    assert_eq!(rc, 0, "{out}");
    assert_eq!(
        v["supportedVersions"],
        serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn raw_call(socket: &std::path::Path, bytes: &[u8]) -> serde_json::Value {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(bytes).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut header = [0u8; 4];
    s.read_exact(&mut header).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
    s.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn agent_socket_is_private_and_refuses_bad_frames() {
    if !prerequisites("agent_socket_is_private_and_refuses_bad_frames") {
        return;
    }
    let agent = Agent::start(Duration::from_millis(200));
    let meta = std::fs::metadata(&agent.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 0);

    let v = raw_call(&agent.socket, &frame(b"not json"));
    assert_eq!(v["error"]["code"], 6, "{v}");
    let v = raw_call(&agent.socket, &frame(br#"{"version":7,"command":"ADD"}"#));
    assert_eq!(v["error"]["code"], 1, "{v}");
    assert!(
        v["error"]["msg"]
            .as_str()
            .unwrap()
            .contains("protocol version 7"),
        "{v}"
    );
    let v = raw_call(&agent.socket, &((64u32 << 20).to_be_bytes()));
    assert_eq!(v["error"]["code"], 6, "oversized frame: {v}");
    let v = raw_call(
        &agent.socket,
        &frame(br#"{"version":1,"command":"STATUS"}"#),
    );
    assert!(v.get("error").is_none(), "{v}");
    // The agent validates on its own: a request that bypasses the plugin gets code 4.
    let v = raw_call(
        &agent.socket,
        &frame(br#"{"version":1,"command":"ADD","containerId":"c","netns":"/run/netns/../../proc/1/ns/net","ifname":"eth0","pod":{"namespace":"default","name":"x"}}"#),
    );
    assert_eq!(v["error"]["code"], 4, "{v}");
}

#[test]
fn stale_socket_is_replaced_other_files_are_not() {
    if !prerequisites("stale_socket_is_replaced_other_files_are_not") {
        return;
    }
    let node = Netns::new("node");
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _g = rt.enter();
    let config = CniServerConfig {
        host_netns: Some(node.path().into()),
        ..Default::default()
    };
    let lookup: Arc<dyn IpInstanceLookup> = Arc::new(StaticLookup::default());

    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let srv =
        CniServer::bind(&stale, lookup.clone(), config.clone()).expect("stale socket replaced");
    assert_eq!(
        std::fs::metadata(&stale).unwrap().permissions().mode() & 0o777,
        0o600
    );
    drop(srv);

    let precious = dir.path().join("precious");
    std::fs::write(&precious, b"keep me").unwrap();
    let err = CniServer::bind(&precious, lookup, config)
        .err()
        .expect("must refuse");
    assert!(matches!(err, CniServerError::NotASocket(_)), "{err}");
    assert_eq!(std::fs::read(&precious).unwrap(), b"keep me");
}
