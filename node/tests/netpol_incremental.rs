//! Incremental policy updates in the real kernel: a sequence of object changes is applied to one
//! network namespace as the incremental transactions of `plan::nftables::diff` and to another as
//! whole-table replacements of the full render; after every step both kernels hold the same
//! ruleset (`nft -j list table`, handles and element order left out). A refused incremental
//! transaction leaves the previous table in force.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::BTreeMap;

use hybridnet_node::plan::nftables::{Table, diff};
use hybridnet_node::plan::policy::{
    ContainerPort, ObjectKey, POLICY_TABLE, PolicyNamespace, PolicyPod, PolicyState, Protocol,
    render_policy_table,
};
use hybridnet_test_support::{Netns, may_run, require_root};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};

fn load(node: &Netns, script: &str) -> Result<String, String> {
    let f = std::env::temp_dir().join(hybridnet_test_support::unique_name("netpol-inc"));
    std::fs::write(&f, script).map_err(|e| e.to_string())?;
    let r = node.exec(&["nft", "-f", f.to_str().unwrap_or_default()]);
    let _ = std::fs::remove_file(&f);
    r
}

fn strip_handles(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("handle");
            for x in m.values_mut() {
                strip_handles(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_handles),
        _ => {}
    }
}

/// The table as sorted definitions plus each chain's rules in order.
fn ruleset(node: &Netns) -> (Vec<String>, BTreeMap<String, Vec<String>>) {
    let out = node
        .exec(&["nft", "-j", "list", "table", "inet", POLICY_TABLE])
        .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    let mut defs = vec![];
    let mut rules: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in v["nftables"].as_array().unwrap() {
        let mut item = item.clone();
        strip_handles(&mut item);
        if let Some(r) = item.get("rule") {
            rules
                .entry(r["chain"].as_str().unwrap().to_string())
                .or_default()
                .push(r.to_string());
        } else if item.get("metainfo").is_none() {
            for kind in ["set", "map"] {
                if let Some(elems) = item
                    .get_mut(kind)
                    .and_then(|s| s.get_mut("elem"))
                    .and_then(|e| e.as_array_mut())
                {
                    elems.sort_by_key(|e| e.to_string());
                }
            }
            defs.push(item.to_string());
        }
    }
    defs.sort();
    (defs, rules)
}

fn np(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
        .unwrap()
}

fn pod(ns: &str, name: &str, app: &str, node: &str, n: u8) -> PolicyPod {
    PolicyPod {
        namespace: ns.into(),
        name: name.into(),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        node: node.into(),
        ips: vec![
            format!("198.18.7.{n}").parse().unwrap(),
            format!("fd00:7::{n:x}").parse().unwrap(),
        ],
        ports: vec![ContainerPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80 + u16::from(n % 3),
        }],
        host_network: false,
    }
}

type Step = Box<dyn Fn(&mut PolicyState)>;

#[test]
fn incremental_updates_leave_the_same_ruleset_as_full_replacements() {
    let t = "incremental_updates_leave_the_same_ruleset_as_full_replacements";
    if !require_root(t) || !may_run(t, &["nft", "ip"]) {
        return;
    }
    let inc = Netns::new("polinc");
    let full = Netns::new("polfull");
    let web = |ns: &str, name: &str, from_app: &str| {
        np(
            ns,
            name,
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress", "Egress"],
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": from_app}}},
                                         {"namespaceSelector": {"matchLabels": {"team": "blue"}}},
                                         {"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.8/29"]}}],
                                "ports": [{"port": "http"}, {"port": 8000, "endPort": 8100}, {"port": 53, "protocol": "UDP"}]}],
                   "egress": [{"to": [{"podSelector": {}}]}]}),
        )
    };
    let steps: Vec<(&str, Step)> = vec![
        (
            "pods and a namespace",
            Box::new(|s: &mut PolicyState| {
                for (i, (ns, app)) in [("x", "web"), ("x", "db"), ("y", "web"), ("y", "db")]
                    .iter()
                    .enumerate()
                {
                    let i = u8::try_from(i).unwrap();
                    s.set_pod(pod(ns, &format!("p{i}"), app, "n1", i + 1));
                }
                s.set_namespace(PolicyNamespace {
                    name: "y".into(),
                    labels: BTreeMap::new(),
                });
            }),
        ),
        (
            "a policy",
            Box::new(move |s: &mut PolicyState| {
                s.set_policy(&web("x", "web", "db"));
            }),
        ),
        (
            "a pod joins the peer set",
            Box::new(|s: &mut PolicyState| {
                s.set_pod(pod("x", "p9", "db", "n2", 9));
            }),
        ),
        (
            "a pod the policy selects",
            Box::new(|s: &mut PolicyState| {
                s.set_pod(pod("x", "p10", "web", "n1", 10));
            }),
        ),
        (
            "the policy changes its peer",
            Box::new(move |s: &mut PolicyState| {
                s.set_policy(&web("x", "web", "cache"));
            }),
        ),
        (
            "a namespace joins the namespace selector",
            Box::new(|s: &mut PolicyState| {
                s.set_namespace(PolicyNamespace {
                    name: "y".into(),
                    labels: BTreeMap::from([("team".to_string(), "blue".to_string())]),
                });
            }),
        ),
        (
            "a second policy in the other namespace",
            Box::new(move |s: &mut PolicyState| {
                s.set_policy(&web("y", "web", "db"));
            }),
        ),
        (
            "a selected pod goes and its address is reused by another selected pod",
            Box::new(|s: &mut PolicyState| {
                s.remove_pod(&ObjectKey::new("x", "p10"));
                s.set_pod(pod("y", "p11", "web", "n1", 10));
            }),
        ),
        (
            "a pod's address moves to a pod of another namespace",
            Box::new(|s: &mut PolicyState| {
                s.remove_pod(&ObjectKey::new("y", "p11"));
                s.set_pod(pod("x", "p12", "web", "n1", 10));
            }),
        ),
        (
            "the first policy goes",
            Box::new(|s: &mut PolicyState| {
                s.remove_policy(&ObjectKey::new("x", "web"));
            }),
        ),
        (
            "everything goes",
            Box::new(|s: &mut PolicyState| {
                s.remove_policy(&ObjectKey::new("y", "web"));
                for k in s.pod_keys().cloned().collect::<Vec<_>>() {
                    s.remove_pod(&k);
                }
            }),
        ),
    ];
    let mut state = PolicyState::new(BTreeMap::new());
    let mut written: Table = render_policy_table(state.model(), "n1");
    load(&inc, &written.transaction()).unwrap();
    let mut incremental_steps = 0;
    for (what, step) in &steps {
        step(&mut state);
        let new = render_policy_table(state.model(), "n1");
        new.validate().unwrap();
        let ops = diff::diff(&written, &new).unwrap();
        if !ops.is_empty() {
            incremental_steps += 1;
            let script = diff::transaction(&new, &ops);
            assert!(!script.contains("delete table"), "{what}: {script}");
            load(&inc, &script).unwrap_or_else(|e| panic!("{what}: {e}\n{script}"));
        }
        load(&full, &new.transaction()).unwrap();
        assert_eq!(ruleset(&inc), ruleset(&full), "{what}");
        written = new;
    }
    // every step but the first (pods without a policy are not in the table) changes it
    assert_eq!(incremental_steps, steps.len() - 1);

    // an incremental transaction nft refuses changes nothing
    state.set_policy(&web("x", "web", "db"));
    state.set_pod(pod("x", "p20", "web", "n1", 20));
    let new = render_policy_table(state.model(), "n1");
    let ops = diff::diff(&written, &new).unwrap();
    let before = ruleset(&inc);
    let bad = format!(
        "{}delete element inet {POLICY_TABLE} in_4 {{ 198.18.7.99 }}\n",
        diff::transaction(&new, &ops)
    );
    assert!(load(&inc, &bad).is_err());
    assert_eq!(ruleset(&inc), before);
}
