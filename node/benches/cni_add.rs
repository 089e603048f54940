//! CNI ADD latency: 50 pods added 10 at a time through Debian's libcni (cnitool), hybridnet
//! (alone, and chained with Debian's portmap + bandwidth as shipped) against Debian's
//! bridge + host-local as the baseline, in one run on one machine.
//!
//! Run as root: `cargo bench -p hybridnet-node --bench cni_add` (needs `make tools`).
//! Each ADD is timed from starting `ip netns exec <node> cnitool add` to its exit, so every
//! configuration pays the same process and namespace overhead.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

#[path = "../tests/cni_common/mod.rs"]
mod cni_common;

use std::time::{Duration, Instant};

use cni_common::*;
use hybridnet_api::v1::IpVersion;

const PODS: usize = 50;
const AT_A_TIME: usize = 10;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Adds all pods in waves of AT_A_TIME, then deletes them; returns (ADD latencies, DEL latencies).
fn run(agent: &Agent, net: &str, pods: &[Netns], label: &str) -> (Vec<Duration>, Vec<Duration>) {
    let mut adds = Vec::with_capacity(pods.len());
    for (w, chunk) in pods.chunks(AT_A_TIME).enumerate() {
        let lat: Vec<Duration> = std::thread::scope(|s| {
            let hs: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, ns)| {
                    let n = w * AT_A_TIME + i;
                    s.spawn(move || {
                        let cid = format!("{label}{n}");
                        let pod = format!("bench-{n}");
                        let t = Instant::now();
                        let o =
                            agent.cnitool("add", net, &ns.path(), &cid, ("default", &pod), None);
                        let d = t.elapsed();
                        assert!(
                            o.status.success(),
                            "{label} ADD {n}: {}",
                            String::from_utf8_lossy(&o.stderr)
                        );
                        d
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        adds.extend(lat);
    }
    let mut dels = Vec::with_capacity(pods.len());
    for (w, chunk) in pods.chunks(AT_A_TIME).enumerate() {
        let lat: Vec<Duration> = std::thread::scope(|s| {
            let hs: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, ns)| {
                    let n = w * AT_A_TIME + i;
                    s.spawn(move || {
                        let t = Instant::now();
                        let o = agent.cnitool(
                            "del",
                            net,
                            &ns.path(),
                            &format!("{label}{n}"),
                            ("default", &format!("bench-{n}")),
                            None,
                        );
                        let d = t.elapsed();
                        assert!(
                            o.status.success(),
                            "{label} DEL {n}: {}",
                            String::from_utf8_lossy(&o.stderr)
                        );
                        d
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        dels.extend(lat);
    }
    adds.sort();
    dels.sort();
    (adds, dels)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !prerequisites("cni_add") {
        return;
    }
    let agent = Agent::start(Duration::from_secs(10));
    let instances = (0..PODS)
        .map(|n| {
            ipinstance(
                "default",
                &format!("bench-{n}"),
                &format!("198.18.10.{}/24", n + 10),
                IpVersion::V4,
                &format!("02:00:c6:12:0a:{:02x}", n + 10),
            )
        })
        .collect();
    agent.add_instances(instances);
    agent.write_plugins(
        "hyb",
        "1.0.0",
        serde_json::json!([{"type": "hybridnet", "server_socket": agent.socket}]),
    );
    agent.write_conflist("hybchain", "1.0.0");
    let bridge = format!("hntbr{}", std::process::id() % 100000);
    agent.write_plugins(
        "bridge",
        "1.0.0",
        serde_json::json!([{
            "type": "bridge", "bridge": bridge, "isGateway": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.20.0/24"}]],
                     "dataDir": agent.dir.path().join("host-local")}
        }]),
    );
    let pods: Vec<Netns> = (0..PODS).map(|_| Netns::new("bp")).collect();

    let configs = [
        ("bridge + host-local (Debian, baseline)", "bridge", "br"),
        ("hybridnet", "hyb", "hy"),
        ("hybridnet + portmap + bandwidth", "hybchain", "hc"),
    ];
    println!(
        "CNI ADD/DEL latency, {PODS} pods, {AT_A_TIME} at a time, through cnitool (libcni 1.1.2)"
    );
    println!();
    println!("| plugin chain | ADD p50 ms | ADD p99 ms | ADD max ms | DEL p50 ms | DEL p99 ms |");
    println!("|---|---|---|---|---|---|");
    // One warm-up ADD/DEL per chain so the first sample does not pay for cold page caches.
    for (_, net, label) in configs {
        let warm = Netns::new("bw");
        let cid = format!("{label}warm");
        let o = agent.cnitool("add", net, &warm.path(), &cid, ("default", "bench-0"), None);
        assert!(
            o.status.success(),
            "warm-up {net}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = agent.cnitool("del", net, &warm.path(), &cid, ("default", "bench-0"), None);
        assert!(
            o.status.success(),
            "warm-up {net}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    for (name, net, label) in configs {
        let (adds, dels) = run(&agent, net, &pods, label);
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            ms(percentile(&adds, 0.5)),
            ms(percentile(&adds, 0.99)),
            ms(*adds.last().unwrap()),
            ms(percentile(&dels, 0.5)),
            ms(percentile(&dels, 0.99)),
        );
    }
    let _ = std::process::Command::new("ip")
        .args(["-n", &agent.node.name, "link", "del", &bridge])
        .status();
}
