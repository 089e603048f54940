//! Cost of the routing half of CNI ADD readiness for a BGP pod (`hybridnet_node::bgp::routing`):
//! one netlink dump of the family's rules and routes in the node namespace plus the pure
//! decision, as each readiness check of a waiting ADD does. Run as root (it builds a network
//! namespace with the agent's rule/table layout at two sizes); without root it says why and
//! stops.
//!
//! Run: `cargo bench -p hybridnet-node --bench bgp_readiness`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::hint::black_box;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hybridnet_api::v1::IpVersion;
use hybridnet_node::bgp::routing::{read_kernel, routing_problem};
use hybridnet_node::dataplane::netns::run_in_netns;

const ROUNDS: usize = 50;

struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip_batch(ns: &str, lines: &[String]) {
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("ip -batch");
    {
        let stdin = child.stdin.as_mut().expect("stdin");
        for l in lines {
            writeln!(stdin, "{l}").expect("write batch");
        }
    }
    assert!(
        child.wait().expect("ip -batch").success(),
        "ip -batch failed"
    );
}

/// A node namespace like the agent leaves it: `subnets` BGP subnet rules and tables (default via
/// the peer plus 8 throw routes each), `pods` local pod /32s in table 39999, and `overlay`
/// remote-subnet routes in table 40000.
fn build(tag: &str, subnets: u32, pods: u32, overlay: u32) -> Ns {
    let ns = Ns(format!("hnb-{}-{tag}", std::process::id()));
    let status = Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .expect("ip netns add");
    assert!(status.success());
    let mut lines = vec![
        "link add eth0 type veth peer name eth1".to_string(),
        "link set eth1 up".to_string(),
        "link set eth0 up".to_string(),
        "link set lo up".to_string(),
        "addr add 198.18.1.1/31 dev eth0".to_string(),
        "route add 198.18.0.1/32 dev eth0 scope link".to_string(),
        "route add default via 198.18.1.0 dev eth0".to_string(),
        "rule add priority 1000 lookup 39999".to_string(),
        "rule add priority 1001 lookup 40000".to_string(),
    ];
    for s in 0..subnets {
        let table = 10_000 + s;
        let (a, b) = (s / 256, s % 256);
        lines.push(format!(
            "rule add priority 1003 from 10.{a}.{b}.0/24 lookup {table}"
        ));
        lines.push(format!(
            "route add default via 198.18.0.1 dev eth0 table {table}"
        ));
        for t in 0..8 {
            lines.push(format!(
                "route add throw 10.{a}.{b}.{}/30 table {table}",
                200 + t * 4
            ));
        }
    }
    for p in 0..pods {
        lines.push(format!(
            "route add 10.0.{}.{}/32 dev eth0 table 39999",
            p / 250,
            1 + p % 250
        ));
    }
    for o in 0..overlay {
        lines.push(format!(
            "route add 172.{}.{}.0/24 dev eth0 table 40000",
            16 + o / 256,
            o % 256
        ));
    }
    ip_batch(&ns.0, &lines);
    ns
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn measure(ns: &Ns) -> (Duration, Duration, usize) {
    let name = ns.0.clone();
    run_in_netns(&name, |handle| async move {
        let pod: IpAddr = "10.0.5.10".parse()?;
        let peer: IpAddr = "198.18.0.1".parse()?;
        let mut reads = Vec::with_capacity(ROUNDS);
        let mut decides = Vec::with_capacity(ROUNDS);
        let mut routes = 0;
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let (rules, defaults) = read_kernel(&handle, IpVersion::V4).await?;
            reads.push(t.elapsed());
            routes = defaults.len();
            let t = Instant::now();
            let problem = routing_problem(pod, &rules, &defaults, Some(peer));
            decides.push(t.elapsed());
            assert!(black_box(problem).is_none(), "the pod's table is in place");
        }
        Ok((median(reads), median(decides), routes))
    })
    .expect("measure in the namespace")
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bgp_readiness: needs root (it builds a network namespace); not run");
        return;
    }
    println!("rounds per case: {ROUNDS} (median)");
    for (tag, subnets, pods, overlay) in [
        ("small", 20u32, 110u32, 100u32),
        ("large", 500, 250, 20_000),
    ] {
        let ns = build(tag, subnets, pods, overlay);
        let total = subnets * 9 + pods + overlay + 3;
        let (read, decide, defaults) = measure(&ns);
        println!(
            "{tag}: {subnets} BGP subnets, {pods} pod routes, {overlay} overlay routes ({total} IPv4 routes): \
             netlink read {read:?}, decision {decide:?} ({defaults} default routes seen)"
        );
    }
}
