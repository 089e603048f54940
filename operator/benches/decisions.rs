//! Per-decision costs of the settings read on every pod reconcile and webhook call: the live pod
//! defaults, `--pod-label-selector` matching (and parsing, once at start), and the stuck-rollout
//! status decision. `cargo bench -p hybridnet-operator --bench decisions`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use hybridnet_api::operator::{
    ClusterDefaults, HybridnetCluster, HybridnetClusterSpec, HybridnetClusterStatus, RolloutCounts,
};
use hybridnet_api::selector as podselector;
use hybridnet_api::v1::NetworkType;
use hybridnet_operator::controlplane::rules::defaults::{PodDefaults, effective_defaults};
use hybridnet_operator::controlplane::runtime::live_defaults::LiveDefaults;
use hybridnet_operator::lifecycle::status::{self, RolloutObservation, StatusInput};
use k8s_openapi::api::core::v1::Pod;

fn time<T>(name: &str, iterations: u32, mut f: impl FnMut() -> T) {
    for _ in 0..iterations.min(1000) {
        black_box(f());
    }
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(f());
    }
    let per = start.elapsed() / iterations;
    println!("{name:<56} {iterations:>9} iterations  {per:>10.2?} each");
}

fn main() {
    let text = "hybridnet in (yes,true),!legacy,example.com/team=net,tier notin (batch)";
    time("podselector::parse (4 requirements)", 200_000, || {
        podselector::parse(black_box(text)).expect("valid")
    });
    let selector = podselector::parse(text).expect("valid");
    let mut labels: BTreeMap<String, String> = (0..10)
        .map(|i| (format!("label-{i}"), format!("value-{i}")))
        .collect();
    labels.insert("hybridnet".into(), "yes".into());
    labels.insert("example.com/team".into(), "net".into());
    let mut pod = Pod::default();
    pod.metadata.labels = Some(labels);
    time(
        "PodSelector::matches_pod (12 labels, selected)",
        2_000_000,
        || selector.matches_pod(black_box(&pod)),
    );
    let everything = podselector::PodSelector::everything();
    time(
        "PodSelector::matches_pod (empty selector)",
        2_000_000,
        || everything.matches_pod(black_box(&pod)),
    );

    let cluster = HybridnetCluster::new(
        "default",
        HybridnetClusterSpec {
            defaults: Some(ClusterDefaults {
                network_type: Some(NetworkType::Underlay),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let flags = PodDefaults::default();
    time(
        "effective_defaults (flags + HybridnetCluster)",
        1_000_000,
        || effective_defaults(black_box(&flags), Some(black_box(&cluster))),
    );
    let live = LiveDefaults::fixed(flags.clone());
    time(
        "LiveDefaults::current (read per decision)",
        2_000_000,
        || live.current(),
    );

    let previous = HybridnetClusterStatus {
        node_agents: Some(RolloutCounts {
            desired: 100,
            updated: 40,
            ready: 40,
            available: 40,
        }),
        ..Default::default()
    };
    let previous = status::compute(&StatusInput {
        generation: Some(1),
        target_version: "0.1.0",
        rollout: None,
        failure: None,
        previous: &previous,
        now: 1_000,
        progress_deadline: 600,
        daemonset: "kube-system/hybridnet-node",
    });
    let mut rollout = RolloutObservation {
        generation: 1,
        observed_generation: 1,
        template_version: Some("0.1.0".into()),
        ..Default::default()
    };
    rollout.counts = RolloutCounts {
        desired: 100,
        updated: 40,
        ready: 40,
        available: 40,
    };
    time("status::compute (rolling out, stuck)", 500_000, || {
        status::compute(&StatusInput {
            generation: Some(1),
            target_version: "0.1.0",
            rollout: Some(&rollout),
            failure: None,
            previous: black_box(&previous),
            now: 10_000,
            progress_deadline: 600,
            daemonset: "kube-system/hybridnet-node",
        })
    });
}
