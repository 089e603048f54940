//! The real `hybridnet-node` binary in BGP mode against kube-lite and Debian's bird2 as the ToR:
//! the agent's own reconcile loop starts the speaker from the Network, announces the subnet and
//! the local pod, renders the subnet table via the peer, exposes the session in /metrics and
//! /readyz, and withdraws the pod when its IPInstance is deleted. The node reaches the control
//! plane through the ToR over its /31 link (no shared L2).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report
#![cfg(all(target_os = "linux", feature = "dataplane"))]

mod common;

use common::*;
use hybridnet_api::v1::{BgpPeer, IPInstance, NetworkConfig, NetworkMode, NetworkType, NodeInfo};
use hybridnet_node::bgp::sessions::{
    BGP_SESSIONS_ANNOTATION, BgpSession, SessionState, parse_annotation,
};

const PORT: u16 = 11041;

/// The single BGP session node n1's agent published on its NodeInfo, once `want` holds for it.
fn published_session(
    cp: &ControlPlane,
    what: &str,
    want: impl Fn(&BgpSession) -> bool,
) -> BgpSession {
    wait_for(what, 30, || {
        let info = cp.run(|c| async move {
            kube::Api::<NodeInfo>::all(c)
                .get_opt("n1")
                .await
                .ok()
                .flatten()
        })?;
        let value = info
            .metadata
            .annotations?
            .get(BGP_SESSIONS_ANNOTATION)?
            .clone();
        let parsed = parse_annotation(&value);
        assert!(parsed.problems.is_empty(), "{value}: {parsed:?}");
        match parsed.sessions.as_slice() {
            [s] if want(s) => Some(s.clone()),
            _ => None,
        }
    })
}

struct Bird {
    ns: String,
    socket: String,
    pid_file: String,
}

impl Bird {
    fn birdc(&self, args: &[&str]) -> String {
        let mut v = vec!["birdc", "-s", self.socket.as_str()];
        v.extend(args);
        try_sh(&v).unwrap_or_default()
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = &self.ns;
    }
}

#[test]
fn agent_binary_speaks_bgp_to_bird() {
    if !may_run("agent_binary_speaks_bgp_to_bird", &["bird", "birdc"]) {
        return;
    }
    let tor = Netns::new("tor");
    let cpns = Netns::new("cp");
    let n1 = Netns::new("n1");
    veth(&tor, "tn1", &n1, "eth0");
    veth(&tor, "tcp", &cpns, "eth0");
    tor.ip("addr add 198.18.1.0/31 dev tn1");
    tor.ip("addr add 198.18.0.1/32 dev tn1");
    tor.ip("addr add 198.18.3.0/31 dev tcp");
    tor.set_sysctl("net/ipv4/ip_forward", "1");
    cpns.ip("addr add 198.18.3.1/31 dev eth0");
    cpns.ip("route add default via 198.18.3.0 dev eth0");
    n1.ip("addr add 198.18.1.1/31 dev eth0");
    n1.ip("route add default via 198.18.1.0 dev eth0");
    n1.ip("route add 198.18.0.1/32 dev eth0 scope link");

    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bird.conf");
    std::fs::write(
        &conf,
        "router id 198.18.0.1;\nprotocol device { }\n\
         protocol kernel { ipv4 { export all; }; }\n\
         protocol bgp node1 {\n  local 198.18.0.1 as 65000;\n  neighbor 198.18.1.1 as 65001;\n  \
         passive on;\n  error wait time 1, 2;\n  ipv4 { import all; export none; };\n}\n",
    )
    .unwrap();
    let bird = Bird {
        ns: tor.name.clone(),
        socket: dir.path().join("bird.ctl").display().to_string(),
        pid_file: dir.path().join("bird.pid").display().to_string(),
    };
    tor.exec(&[
        "bird",
        "-c",
        conf.to_str().unwrap(),
        "-s",
        &bird.socket,
        "-P",
        &bird.pid_file,
    ])
    .expect("bird starts");

    let cp = ControlPlane::start(&cpns, "198.18.3.1");
    cp.create(&node_object("n1", &["198.18.1.1"]));
    let mut net = network(
        "bgp-net",
        NetworkType::Underlay,
        Some(NetworkMode::Bgp),
        Some(65001),
        &["n1"],
    );
    net.spec.config = Some(NetworkConfig {
        bgp_peers: Some(vec![BgpPeer {
            asn: 65000,
            address: "198.18.0.1".into(),
            ..Default::default()
        }]),
    });
    cp.create_network(&net);
    cp.create(&subnet(
        "bgp-v4",
        "bgp-net",
        "198.19.1.0/24",
        None,
        None,
        None,
    ));
    let pod = cp.create_ns(
        "default",
        &ipinstance(
            "default",
            "a",
            "198.19.1.10",
            "bgp-net",
            "bgp-v4",
            "n1",
            "02:aa:00:00:00:0a",
        ),
    );

    let _agent = start_agent(
        &n1,
        "n1",
        &cp.kubeconfig,
        PORT,
        &["--prefer-bgp-interfaces", "eth0"],
    );
    let addr = format!("198.18.1.1:{PORT}");
    wait_for("pod and subnet routes at the ToR", 60, || {
        let r = bird.birdc(&["show", "route", "protocol", "node1"]);
        (r.contains("198.19.1.10/32") && r.contains("198.19.1.0/24")).then_some(())
    });
    let all = bird.birdc(&["show", "route", "all", "198.19.1.10/32"]);
    assert!(
        all.contains("BGP.as_path: 65001") && all.contains("BGP.community: (65535,65281)"),
        "{all}"
    );
    // The subnet's table routes via the peer.
    let tables = n1.ip("route show table all");
    assert!(
        tables.contains("default via 198.18.0.1 dev eth0 table 1"),
        "{tables}"
    );
    let (code, body) = wait_for("/readyz 200", 30, || {
        http_get(&n1, &addr, "/readyz").filter(|(c, _)| *c == 200)
    });
    assert_eq!(code, 200, "{body}");
    let (_, metrics) = http_get(&n1, &addr, "/metrics").expect("/metrics");
    for want in [
        "hybridnet_node_bgp_session_state{peer=\"198.18.0.1\",asn=\"65000\",state=\"Established\"} 1",
        "hybridnet_node_bgp_prefixes_announced{peer=\"198.18.0.1\"} 2",
        "hybridnet_node_bgp_required_peers_established 1",
    ] {
        assert!(metrics.contains(want), "missing {want:?} in\n{metrics}");
    }
    // The agent published the session on its NodeInfo (a node without a VTEP: spec is empty).
    let up = published_session(&cp, "Established on the NodeInfo", |s| {
        s.state == SessionState::Established && (s.prefixes_v4, s.prefixes_v6) == (2, 0)
    });
    assert_eq!(up.peer_address.to_string(), "198.18.0.1");
    assert_eq!(
        (up.peer_asn, up.local_asn, up.required),
        (65000, 65001, true)
    );

    // The pod goes: its IPInstance is deleted and the ToR loses the route.
    let name = pod.metadata.name.clone().unwrap();
    cp.run(move |c| async move {
        kube::Api::<IPInstance>::namespaced(c, "default")
            .delete(&name, &Default::default())
            .await
            .expect("delete IPInstance")
    });
    wait_for("pod route withdrawn at the ToR", 30, || {
        let r = bird.birdc(&["show", "route", "protocol", "node1"]);
        (!r.contains("198.19.1.10/32") && r.contains("198.19.1.0/24")).then_some(())
    });
    published_session(&cp, "one prefix fewer on the NodeInfo", |s| {
        s.state == SessionState::Established && (s.prefixes_v4, s.prefixes_v6) == (1, 0)
    });

    // The ToR goes away: the required session is down and /readyz says so.
    drop(bird);
    let (_, body) = wait_for("/readyz 503", 30, || {
        http_get(&n1, &addr, "/readyz").filter(|(c, _)| *c == 503)
    });
    assert!(body.contains("198.18.0.1"), "{body}");
    let down = published_session(&cp, "the session down on the NodeInfo", |s| {
        s.state != SessionState::Established && s.flaps == 1
    });
    assert_eq!((down.prefixes_v4, down.prefixes_v6), (0, 0), "{down:?}");
    assert!(down.since >= up.since, "{down:?} after {up:?}");
}
