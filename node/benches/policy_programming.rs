//! The node agent's work per NetworkPolicy change at 1,000 pods and 200 policies (the sizes and
//! policy shapes of the lab bench lab/benches/netpol.rs): building the model from all objects,
//! rendering one node's table (250 local pods), its transaction text, and (as root) loading it
//! with `nft -f` in a network namespace this benchmark creates. Median and max of 10 runs each.
//!
//! Run: `cargo bench -p hybridnet-node --bench policy_programming` (`--profile dev` for a debug
//! build, as the lab runs).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is the failure report

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use hybridnet_node::plan::policy::{
    ContainerPort, PolicyInput, PolicyNamespace, PolicyPod, Protocol, build_policy_model,
    render_policy_table,
};
use serde_json::json;

const RUNS: usize = 10;

fn input() -> PolicyInput {
    let pods = (0..1000usize)
        .map(|i| PolicyPod {
            namespace: format!("b{}", i % 10),
            name: format!("p{i}"),
            labels: BTreeMap::from([("app".to_string(), format!("a{}", (i / 10) % 20))]),
            node: format!("node{}", i % 4 + 1),
            ips: vec![
                format!("198.18.{}.{}", 64 + i / 250, i % 250 + 1)
                    .parse()
                    .unwrap(),
            ],
            ports: vec![ContainerPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
            }],
            host_network: false,
        })
        .collect();
    let policies = (0..200usize)
        .map(|j| {
            let (ns, l) = (j % 10, (j / 10) % 20);
            serde_json::from_value(json!({
                "metadata": {"namespace": format!("b{ns}"), "name": format!("p{j}")},
                "spec": {"podSelector": {"matchLabels": {"app": format!("a{l}")}}, "ingress": [
                    {"from": [{"podSelector": {"matchLabels": {"app": format!("a{}", (l + 1) % 20)}}},
                              {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": format!("b{}", (ns + 3) % 10)}},
                               "podSelector": {"matchLabels": {"app": format!("a{l}")}}},
                              {"ipBlock": {"cidr": "198.18.64.0/20", "except": [format!("198.18.{}.0/24", 64 + l)]}}],
                     "ports": [{"port": 80}, {"port": "http"}, {"port": 8000, "endPort": 8100}, {"port": 53, "protocol": "UDP"}]}]}
            }))
            .unwrap()
        })
        .collect();
    PolicyInput {
        policies,
        pods,
        namespaces: (0..10)
            .map(|i| PolicyNamespace {
                name: format!("b{i}"),
                labels: BTreeMap::new(),
            })
            .collect(),
        nodes: BTreeMap::new(),
    }
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "median {:.1} ms, max {:.1} ms",
        v[v.len() / 2].as_secs_f64() * 1000.0,
        v[v.len() - 1].as_secs_f64() * 1000.0
    )
}

fn main() {
    let input = input();
    let (mut build, mut render, mut text, mut load) = (vec![], vec![], vec![], vec![]);
    let mut script = String::new();
    let mut rules = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        let m = build_policy_model(&input);
        build.push(t.elapsed());
        let t = Instant::now();
        let table = render_policy_table(&m, "node1");
        render.push(t.elapsed());
        rules = table.chains.iter().map(|c| c.rules.len()).sum();
        let t = Instant::now();
        script = table.transaction();
        text.push(t.elapsed());
    }
    let root = nix::unistd::Uid::effective().is_root();
    if root {
        let ns = format!("hnpolbench{}", std::process::id());
        let file = std::env::temp_dir().join(format!("{ns}.nft"));
        std::fs::write(&file, &script).unwrap();
        assert!(
            Command::new("ip")
                .args(["netns", "add", &ns])
                .status()
                .unwrap()
                .success()
        );
        for _ in 0..RUNS {
            let t = Instant::now();
            let ok = Command::new("ip")
                .args(["netns", "exec", &ns, "nft", "-f"])
                .arg(&file)
                .status()
                .is_ok_and(|s| s.success());
            load.push(t.elapsed());
            if !ok {
                eprintln!("nft -f failed");
                break;
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        let _ = std::fs::remove_file(&file);
    }
    println!(
        "policy programming, 1,000 pods / 200 policies, node1 (250 pods): {rules} rules, {} bytes of transaction",
        script.len()
    );
    println!("  build_policy_model:   {}", stats(build));
    println!("  render_policy_table:  {}", stats(render));
    println!("  transaction text:     {}", stats(text));
    if root && !load.is_empty() {
        println!("  nft -f (replace):     {}", stats(load));
    } else {
        println!("  nft -f: skipped (needs root)");
    }
}
