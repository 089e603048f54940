//! The node agent's work per NetworkPolicy change at 1,000 pods and 200 policies (the sizes and
//! policy shapes of the lab bench lab/benches/netpol.rs), for node1 (250 local pods), both ways in
//! the same run:
//!
//! - full (the baseline, the agent before incremental programming): build the model from all
//!   objects, render the node's table, its whole-table transaction, `nft -f` replacing the table;
//! - incremental (the agent now): update the kept model with the one changed object
//!   (`PolicyState`), render the node's table, diff it against the previous one, the diff's
//!   transaction text, `nft -f` of that transaction.
//!
//! Changes: a policy created that opens port 80 of one pod per node to a probe pod (as the lab
//! bench), the same policy updated (another port), and a pod created that joins selectors. Each
//! change is undone before the next run. `nft -f` runs (as root) in a network namespace this
//! benchmark creates, on the table the previous step left. Median and max of 20 runs each.
//!
//! Run: `cargo bench -p hybridnet-node --bench policy_programming` (`--profile dev` for a debug
//! build, as the lab runs).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is the failure report

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use hybridnet_node::plan::nftables::{Table, diff};
use hybridnet_node::plan::policy::{
    ContainerPort, ObjectKey, PolicyInput, PolicyNamespace, PolicyPod, PolicyState, Protocol,
    build_policy_model, render_policy_table,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;

const RUNS: usize = 20;

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
        "median {:>7.2} ms, max {:>7.2} ms",
        v[v.len() / 2].as_secs_f64() * 1000.0,
        v[v.len() - 1].as_secs_f64() * 1000.0
    )
}

/// The lab bench's latency policy: port 80 of the targets (app=target) opened to the probe.
fn open_policy(port: u16) -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"namespace": "b0", "name": "bench-open"},
        "spec": {"podSelector": {"matchLabels": {"app": "target"}}, "ingress": [
            {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "probe"}}}],
             "ports": [{"port": port}]}]}
    }))
    .unwrap()
}

fn new_pod() -> PolicyPod {
    PolicyPod {
        namespace: "b1".into(),
        name: "joiner".into(),
        labels: BTreeMap::from([("app".to_string(), "a1".to_string())]),
        node: "node1".into(),
        ips: vec!["198.18.80.1".parse().unwrap()],
        ports: vec![ContainerPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
        }],
        host_network: false,
    }
}

#[derive(Clone, Copy)]
enum Change {
    CreatePolicy,
    UpdatePolicy,
    CreatePod,
}

impl Change {
    fn name(self) -> &'static str {
        match self {
            Change::CreatePolicy => "policy created",
            Change::UpdatePolicy => "policy updated",
            Change::CreatePod => "pod created (joins selectors)",
        }
    }
    /// Applies the change to the objects and the kept state.
    fn apply(self, input: &mut PolicyInput, state: &mut PolicyState) {
        match self {
            Change::CreatePolicy => {
                input.policies.push(open_policy(80));
                state.set_policy(&open_policy(80));
            }
            Change::UpdatePolicy => {
                if let Some(p) = input
                    .policies
                    .iter_mut()
                    .find(|p| p.metadata.name.as_deref() == Some("bench-open"))
                {
                    *p = open_policy(81);
                }
                state.set_policy(&open_policy(81));
            }
            Change::CreatePod => {
                input.pods.push(new_pod());
                state.set_pod(new_pod());
            }
        }
    }
    /// Undoes it (to the state before `apply`).
    fn undo(self, input: &mut PolicyInput, state: &mut PolicyState) {
        match self {
            Change::CreatePolicy => {
                input
                    .policies
                    .retain(|p| p.metadata.name.as_deref() != Some("bench-open"));
                state.remove_policy(&ObjectKey::new("b0", "bench-open"));
            }
            Change::UpdatePolicy => {
                if let Some(p) = input
                    .policies
                    .iter_mut()
                    .find(|p| p.metadata.name.as_deref() == Some("bench-open"))
                {
                    *p = open_policy(80);
                }
                state.set_policy(&open_policy(80));
            }
            Change::CreatePod => {
                input.pods.retain(|p| p.name != "joiner");
                state.remove_pod(&ObjectKey::new("b1", "joiner"));
            }
        }
    }
}

struct Netns(Option<String>);

impl Netns {
    fn new() -> Self {
        if !nix::unistd::Uid::effective().is_root() {
            return Self(None);
        }
        let ns = format!("hnpolbench{}", std::process::id());
        assert!(
            Command::new("ip")
                .args(["netns", "add", &ns])
                .status()
                .unwrap()
                .success()
        );
        Self(Some(ns))
    }
    /// `nft -f` of `script` in the namespace; its duration (`None` without root).
    fn load(&self, script: &str) -> Option<Duration> {
        let ns = self.0.as_ref()?;
        let file = std::env::temp_dir().join(format!("{ns}.nft"));
        std::fs::write(&file, script).unwrap();
        let t = Instant::now();
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f"])
            .arg(&file)
            .output()
            .unwrap();
        let d = t.elapsed();
        assert!(
            out.status.success(),
            "nft -f: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(d)
    }
    fn list(&self) -> Option<Duration> {
        let ns = self.0.as_ref()?;
        let t = Instant::now();
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "nft",
                "list",
                "table",
                "inet",
                "hybridnet_policy",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        Some(t.elapsed())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(ns) = &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
            let _ = std::fs::remove_file(std::env::temp_dir().join(format!("{ns}.nft")));
        }
    }
}

#[derive(Default)]
struct Steps {
    model: Vec<Duration>,
    render: Vec<Duration>,
    diff: Vec<Duration>,
    text: Vec<Duration>,
    nft: Vec<Duration>,
    total: Vec<Duration>,
}

impl Steps {
    fn print(self, title: &str, incremental: bool) {
        println!("  {title}");
        println!(
            "    {}  {}",
            if incremental {
                "model update (PolicyState)"
            } else {
                "build_policy_model (all)  "
            },
            stats(self.model)
        );
        println!("    render_policy_table         {}", stats(self.render));
        if incremental {
            println!("    diff                        {}", stats(self.diff));
        }
        println!("    transaction text            {}", stats(self.text));
        if !self.nft.is_empty() {
            println!("    nft -f                      {}", stats(self.nft));
        }
        println!("    total                       {}", stats(self.total));
    }
}

fn main() {
    let mut input = input();
    // the lab bench's latency targets (one per node, app=target) and its probe
    for (i, node) in ["node1", "node2", "node3", "node4"].iter().enumerate() {
        input.pods.push(PolicyPod {
            namespace: "b0".into(),
            name: format!("target{i}"),
            labels: BTreeMap::from([("app".to_string(), "target".to_string())]),
            node: node.to_string(),
            ips: vec![format!("198.18.90.{}", i + 1).parse().unwrap()],
            ports: vec![],
            host_network: false,
        });
    }
    input.pods.push(PolicyPod {
        namespace: "b9".into(),
        name: "probe".into(),
        labels: BTreeMap::from([("app".to_string(), "probe".to_string())]),
        node: "node2".into(),
        ips: vec!["198.18.90.10".parse().unwrap()],
        ports: vec![],
        host_network: false,
    });
    let mut state = PolicyState::new(BTreeMap::new());
    for n in &input.namespaces {
        state.set_namespace(n.clone());
    }
    for p in &input.pods {
        state.set_pod(p.clone());
    }
    for p in &input.policies {
        state.set_policy(p);
    }
    assert_eq!(state.model(), &build_policy_model(&input));
    let base = render_policy_table(state.model(), "node1");
    let rules: usize = base.chains.iter().map(|c| c.rules.len()).sum();
    let elements: usize = base.sets.values().map(|s| s.elements.len()).sum::<usize>()
        + base.maps.values().map(|m| m.elements.len()).sum::<usize>();
    let base_text = base.transaction();
    println!(
        "policy programming, 1,000 pods / 200 policies, node1 (250 pods): {rules} rules, {elements} set and map elements, {} bytes of whole-table transaction; {RUNS} runs per change",
        base_text.len()
    );
    let ns = Netns::new();
    if ns.0.is_none() {
        println!("  (not root: nft -f skipped)");
    }
    let mut list = vec![];
    for change in [
        Change::CreatePolicy,
        Change::UpdatePolicy,
        Change::CreatePod,
    ] {
        if let Change::UpdatePolicy = change {
            // the policy to update exists for these runs
            Change::CreatePolicy.apply(&mut input, &mut state);
        }
        let before = render_policy_table(state.model(), "node1");
        ns.load(&before.transaction());
        let (mut full, mut inc) = (Steps::default(), Steps::default());
        let mut inc_bytes = 0;
        let mut touched = 0;
        for _ in 0..RUNS {
            // full: everything from all objects, the whole table replaced
            change.apply(&mut input, &mut state);
            let t0 = Instant::now();
            let m = build_policy_model(&input);
            full.model.push(t0.elapsed());
            let t = Instant::now();
            let table = render_policy_table(&m, "node1");
            full.render.push(t.elapsed());
            let t = Instant::now();
            let script = table.transaction();
            full.text.push(t.elapsed());
            let cpu = t0.elapsed();
            let load = ns.load(&script);
            full.nft.extend(load);
            full.total.push(cpu + load.unwrap_or_default());
            change.undo(&mut input, &mut state);
            ns.load(&before.transaction());
            list.extend(ns.list());

            // incremental: the kept model, the diff against the table in the kernel
            let t0 = Instant::now();
            change.apply(&mut input, &mut state);
            inc.model.push(t0.elapsed());
            let t = Instant::now();
            let table: Table = render_policy_table(state.model(), "node1");
            inc.render.push(t.elapsed());
            let t = Instant::now();
            let ops = diff::diff(&before, &table).unwrap();
            inc.diff.push(t.elapsed());
            let t = Instant::now();
            let script = diff::transaction(&table, &ops);
            inc.text.push(t.elapsed());
            let cpu = t0.elapsed();
            let load = ns.load(&script);
            inc.nft.extend(load);
            inc.total.push(cpu + load.unwrap_or_default());
            inc_bytes = script.len();
            touched = diff::touched(&ops).len();
            // back, incrementally too
            change.undo(&mut input, &mut state);
            let back = diff::diff(&table, &before).unwrap();
            ns.load(&diff::transaction(&before, &back));
        }
        assert_eq!(state.model(), &build_policy_model(&input));
        if let Change::UpdatePolicy = change {
            Change::CreatePolicy.undo(&mut input, &mut state);
        }
        println!(
            "{} (incremental: {inc_bytes} bytes, {touched} sets/maps/chains touched)",
            change.name()
        );
        full.print("full (baseline)", false);
        inc.print("incremental", true);
    }
    if !list.is_empty() {
        println!(
            "nft list table (the baseline agent listed the table before and after every change): {}",
            stats(list)
        );
    }
}
