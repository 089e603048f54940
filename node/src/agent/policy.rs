//! NetworkPolicy enforcement (docs/networkpolicy.md): watches NetworkPolicies, Pods and
//! Namespaces, builds the policy model with the pure `plan::policy`, renders this node's table and
//! replaces it in one `nft` transaction when it changed (a refused transaction leaves the previous
//! policy in force). Posts an Event on a policy whose problems changed; records the programming
//! latency and the packets dropped per direction. The table stays in the kernel when the agent
//! stops, and a restarted agent replaces it only after its watches synced, so a restart never
//! opens an isolated pod.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hybridnet_api::ipmath::Cidr;
use hybridnet_api::ipmath::u128_to_ip;
use hybridnet_api::v1::IPInstance;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::Shared;
use crate::dataplane::NftRunner;
use crate::plan::policy::render::{DROP_EGRESS, DROP_INGRESS};
use crate::plan::policy::{
    ObjectKey, POLICY_TABLE, PolicyInput, PolicyModel, build_policy_model, namespace_from_object,
    pod_from_object, render_policy_table,
};

/// Re-check at least this often (a lost watch event, a table changed behind our back).
const RESYNC: Duration = Duration::from_secs(30);

fn reflect<K>(api: Api<K>, notify: Arc<Notify>, what: &'static str) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => notify.notify_one(),
                Err(e) => warn!(resource = what, error = %e, "watch error (retrying)"),
            }
        }
    });
    reader
}

/// Pod addresses from the IPInstances bound to them: known before the kubelet reports the pod's
/// IPs, so a new pod is isolated from its first packet.
pub fn instance_addresses(instances: &[Arc<IPInstance>]) -> BTreeMap<ObjectKey, BTreeSet<IpAddr>> {
    let mut out: BTreeMap<ObjectKey, BTreeSet<IpAddr>> = BTreeMap::new();
    for i in instances {
        let (Some(ns), Some(pod)) = (
            i.metadata.namespace.as_deref(),
            i.spec.binding.pod_name.as_deref(),
        ) else {
            continue;
        };
        if let Ok(c) = Cidr::parse_any(&i.spec.address.ip) {
            out.entry(ObjectKey::new(ns, pod))
                .or_default()
                .insert(u128_to_ip(c.version, c.network));
        }
    }
    out
}

/// The model input from the watched objects.
pub fn policy_input(
    policies: &[Arc<NetworkPolicy>],
    pods: &[Arc<Pod>],
    namespaces: &[Arc<Namespace>],
    instances: &[Arc<IPInstance>],
) -> PolicyInput {
    let by_instance = instance_addresses(instances);
    PolicyInput {
        policies: policies.iter().map(|p| (**p).clone()).collect(),
        pods: pods
            .iter()
            .filter_map(|p| pod_from_object(p))
            .map(|mut p| {
                for ip in by_instance.get(&p.key()).into_iter().flatten() {
                    if !p.ips.contains(ip) {
                        p.ips.push(*ip);
                    }
                }
                p
            })
            .collect(),
        namespaces: namespaces
            .iter()
            .map(|n| namespace_from_object(n))
            .collect(),
        nodes: BTreeMap::new(),
    }
}

/// `counter packets N` of a chain listing.
pub fn counter_packets(listing: &str) -> Option<u64> {
    listing
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
}

async fn chain_packets(binary: &str, chain: &str) -> Option<u64> {
    let out = tokio::process::Command::new(binary)
        .args(["list", "chain", "inet", POLICY_TABLE, chain])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| counter_packets(&String::from_utf8_lossy(&out.stdout)))
        .flatten()
}

/// Runs the policy loop until the process ends. `instances` is the agent's IPInstance cache.
pub async fn run(
    client: Client,
    node: String,
    nft_binary: String,
    instances: Store<IPInstance>,
    shared: Arc<Shared>,
) {
    let notify = Arc::new(Notify::new());
    let policies = reflect(
        Api::<NetworkPolicy>::all(client.clone()),
        notify.clone(),
        "NetworkPolicy",
    );
    let pods = reflect(Api::<Pod>::all(client.clone()), notify.clone(), "Pod");
    let namespaces = reflect(
        Api::<Namespace>::all(client.clone()),
        notify.clone(),
        "Namespace",
    );
    for (what, r) in [
        ("NetworkPolicy", policies.wait_until_ready().await),
        ("Pod", pods.wait_until_ready().await),
        ("Namespace", namespaces.wait_until_ready().await),
        ("IPInstance", instances.wait_until_ready().await),
    ] {
        if let Err(e) = r {
            warn!(resource = what, error = %e, "policy watch cache did not sync; policy not programmed");
            return;
        }
    }
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "hybridnet-node".into(),
            instance: Some(node.clone()),
        },
    );
    let mut runner = NftRunner::for_table(nft_binary.clone(), POLICY_TABLE);
    let mut reported: BTreeMap<ObjectKey, Vec<String>> = BTreeMap::new();
    // kernel counters restart with every new table: keep what the replaced ones counted
    let mut dropped_base = [0u64; 2];
    let mut pending_since: Option<Instant> = Some(Instant::now());
    loop {
        let model = build_policy_model(&policy_input(
            &policies.state(),
            &pods.state(),
            &namespaces.state(),
            &instances.state(),
        ));
        let table = render_policy_table(&model, &node);
        let script = table.transaction();
        let now_dropped = [
            chain_packets(&nft_binary, DROP_INGRESS).await.unwrap_or(0),
            chain_packets(&nft_binary, DROP_EGRESS).await.unwrap_or(0),
        ];
        let changed = match runner.apply(&script).await {
            Ok(changed) => {
                if changed {
                    info!(
                        rules = table.chains.iter().map(|c| c.rules.len()).sum::<usize>(),
                        set_elements = table.sets.values().map(|s| s.elements.len()).sum::<usize>(),
                        "network policy programmed"
                    );
                    if let Some(t) = pending_since.take() {
                        shared.metrics.observe_policy_programmed(t.elapsed());
                    }
                } else {
                    pending_since = None;
                }
                changed
            }
            Err(e) => {
                warn!(error = %e, "network policy not programmed; the previous policy stays in force");
                shared.metrics.observe_policy_error();
                false
            }
        };
        let current = if changed {
            for (b, n) in dropped_base.iter_mut().zip(now_dropped) {
                *b += n;
            }
            [
                chain_packets(&nft_binary, DROP_INGRESS).await.unwrap_or(0),
                chain_packets(&nft_binary, DROP_EGRESS).await.unwrap_or(0),
            ]
        } else {
            now_dropped
        };
        shared
            .metrics
            .record_policy_dropped(dropped_base[0] + current[0], dropped_base[1] + current[1]);
        report_problems(&recorder, &model, &policies.state(), &mut reported).await;
        tokio::select! {
            _ = notify.notified() => {
                pending_since.get_or_insert_with(Instant::now);
                // coalesce a burst of events into one transaction
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

/// An Event on every policy whose problems changed (a Warning listing them, or Normal once fixed).
async fn report_problems(
    recorder: &Recorder,
    model: &PolicyModel,
    policies: &[Arc<NetworkPolicy>],
    reported: &mut BTreeMap<ObjectKey, Vec<String>>,
) {
    for np in policies {
        let key = ObjectKey::new(&np.namespace().unwrap_or_default(), &np.name_any());
        let now = model.problems.get(&key).cloned().unwrap_or_default();
        let before = reported.get(&key).cloned().unwrap_or_default();
        if now == before {
            continue;
        }
        let ev = if now.is_empty() {
            Event {
                type_: EventType::Normal,
                reason: "PolicyProgrammed".into(),
                note: Some("every rule of the policy is programmed".into()),
                action: "Program".into(),
                secondary: None,
            }
        } else {
            for p in &now {
                warn!(policy = %key, problem = %p, "network policy problem");
            }
            let mut note = now.join("; ");
            note.truncate(1000);
            Event {
                type_: EventType::Warning,
                reason: "InvalidPolicy".into(),
                note: Some(note),
                action: "Program".into(),
                secondary: None,
            }
        };
        match recorder.publish(&ev, &np.object_ref(&())).await {
            Ok(()) => {
                reported.insert(key, now);
            }
            Err(e) => debug!(policy = %key, error = %e, "could not publish event"),
        }
    }
    let live: BTreeSet<ObjectKey> = policies
        .iter()
        .map(|np| ObjectKey::new(&np.namespace().unwrap_or_default(), &np.name_any()))
        .collect();
    reported.retain(|k, _| live.contains(k));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counters_and_instance_addresses() {
        assert_eq!(
            counter_packets(
                "chain drop_ingress {\n counter packets 17 bytes 1020 drop comment \"x\"\n}"
            ),
            Some(17)
        );
        assert_eq!(counter_packets("chain x {\n}"), None);
        let i: IPInstance = serde_json::from_value(json!({
            "apiVersion": "networking.alibaba.com/v1", "kind": "IPInstance",
            "metadata": {"name": "198-18-0-5", "namespace": "x"},
            "spec": {"network": "n", "subnet": "s", "address": {"version": "4", "ip": "198.18.0.5/24", "mac": "02:00:00:00:00:05"},
                     "binding": {"podName": "a", "nodeName": "n1"}}
        }))
        .unwrap();
        let m = instance_addresses(&[Arc::new(i)]);
        assert_eq!(
            m[&ObjectKey::new("x", "a")],
            BTreeSet::from(["198.18.0.5".parse::<IpAddr>().unwrap()])
        );
    }
}
