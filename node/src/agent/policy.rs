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
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::Shared;
use crate::dataplane::NftRunner;
use crate::plan::nftables::{Table, diff};
use crate::plan::policy::render::{DROP_EGRESS, DROP_INGRESS};
use crate::plan::policy::{
    ObjectKey, POLICY_TABLE, PolicyModel, PolicyState, generation_in_listing,
    namespace_from_object, next_generation, pod_from_object, render_policy_table, set_generation,
};

/// Re-check at least this often (a lost watch event, a table changed behind our back).
const RESYNC: Duration = Duration::from_secs(30);
/// Rewrite the whole table at least this often (the safety net under incremental updates).
const FULL_RESYNC: Duration = Duration::from_secs(300);
/// The periodic whole-table rewrite (right after a check, with that check's drop counters) is
/// skipped while a watch event came less than this long ago, so it does not hold up a burst of
/// changes; it is postponed by at most another [`FULL_RESYNC`].
const QUIET: Duration = Duration::from_secs(2);

/// Wakes the policy loop on a watch event and remembers when the first event since the loop last
/// looked arrived, so the programming latency counts from the event even when it waited behind a
/// running pass.
#[derive(Default)]
pub struct Wake {
    notify: Notify,
    first: std::sync::Mutex<Option<Instant>>,
}

impl Wake {
    fn event(&self) {
        if let Ok(mut f) = self.first.lock() {
            f.get_or_insert_with(Instant::now);
        }
        self.notify.notify_one();
    }

    /// The arrival of the first event not taken yet.
    fn take(&self) -> Option<Instant> {
        self.first.lock().ok().and_then(|mut f| f.take())
    }
}

fn reflect<K>(api: Api<K>, wake: Arc<Wake>, what: &'static str) -> Store<K>
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
                Ok(_) => wake.event(),
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

/// The watch caches as a [`PolicyState`]: each pass hands it only the objects that changed since
/// the last pass (a cache keeps the same `Arc` for an object that did not change; a relist hands
/// out new ones, which the state then finds equal), so a change costs the work of that object.
#[derive(Default)]
pub struct PolicyTracker {
    pub state: PolicyState,
    pods: BTreeMap<ObjectKey, (Arc<Pod>, Option<BTreeSet<IpAddr>>)>,
    namespaces: BTreeMap<String, Arc<Namespace>>,
    policies: BTreeMap<ObjectKey, Arc<NetworkPolicy>>,
}

fn key_of<K: ResourceExt>(o: &K) -> ObjectKey {
    ObjectKey::new(&o.namespace().unwrap_or_default(), &o.name_any())
}

impl PolicyTracker {
    /// Brings the state up to date with the caches. Returns whether the model changed.
    pub fn sync(
        &mut self,
        policies: &[Arc<NetworkPolicy>],
        pods: &[Arc<Pod>],
        namespaces: &[Arc<Namespace>],
        instances: &[Arc<IPInstance>],
    ) -> bool {
        let mut changed = false;
        let mut by_instance = instance_addresses(instances);
        let mut live = BTreeSet::new();
        for p in pods {
            let key = key_of(&**p);
            let inst = by_instance.remove(&key);
            live.insert(key.clone());
            if let Some((seen, seen_inst)) = self.pods.get(&key)
                && Arc::ptr_eq(seen, p)
                && *seen_inst == inst
            {
                continue;
            }
            changed |= match pod_from_object(p) {
                Some(mut pp) => {
                    for ip in inst.iter().flatten() {
                        if !pp.ips.contains(ip) {
                            pp.ips.push(*ip);
                        }
                    }
                    self.state.set_pod(pp)
                }
                None => self.state.remove_pod(&key),
            };
            self.pods.insert(key, (p.clone(), inst));
        }
        let gone: Vec<ObjectKey> = self
            .pods
            .keys()
            .filter(|k| !live.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            self.pods.remove(&k);
            changed |= self.state.remove_pod(&k);
        }

        let mut live = BTreeSet::new();
        for n in namespaces {
            let name = n.name_any();
            live.insert(name.clone());
            if self
                .namespaces
                .get(&name)
                .is_some_and(|s| Arc::ptr_eq(s, n))
            {
                continue;
            }
            changed |= self.state.set_namespace(namespace_from_object(n));
            self.namespaces.insert(name, n.clone());
        }
        let gone: Vec<String> = self
            .namespaces
            .keys()
            .filter(|k| !live.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            self.namespaces.remove(&k);
            changed |= self.state.remove_namespace(&k);
        }

        let mut live = BTreeSet::new();
        for np in policies {
            let key = key_of(&**np);
            live.insert(key.clone());
            if self.policies.get(&key).is_some_and(|s| Arc::ptr_eq(s, np)) {
                continue;
            }
            changed |= self.state.set_policy(np);
            self.policies.insert(key, np.clone());
        }
        let gone: Vec<ObjectKey> = self
            .policies
            .keys()
            .filter(|k| !live.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            self.policies.remove(&k);
            changed |= self.state.remove_policy(&k);
        }
        changed
    }
}

/// A table listing without its counter values (`counter packets N bytes M` -> `counter`), so
/// traffic does not make an unchanged table look changed.
pub fn without_counters(listing: &str) -> String {
    let mut out = Vec::new();
    let mut skip = false;
    for w in listing.split_whitespace() {
        if skip {
            skip = false;
            continue;
        }
        if w == "packets" || w == "bytes" {
            skip = true;
            continue;
        }
        out.push(w);
    }
    out.join(" ")
}

/// Runs the policy loop until the process ends. `instances` is the agent's IPInstance cache.
///
/// A change is applied first, as an incremental transaction ([`diff`]: the changed set and map
/// elements, the changed chains flushed and refilled) against the table the agent last wrote,
/// under a new generation ([`set_generation`]: connections allowed before are decided again). The
/// whole table is replaced at start, when a change cannot be incremental or nft refused it, when
/// the check finds the kernel's table gone or changed behind the agent's back, and every
/// [`FULL_RESYNC`]. The check lists the table every [`RESYNC`] in a background task, so no change
/// waits for a listing (docs/networkpolicy.md, "Data plane").
pub async fn run(
    client: Client,
    node: String,
    nft_binary: String,
    instances: Store<IPInstance>,
    shared: Arc<Shared>,
) {
    let wake = Arc::new(Wake::default());
    let policies = reflect(
        Api::<NetworkPolicy>::all(client.clone()),
        wake.clone(),
        "NetworkPolicy",
    );
    let pods = reflect(Api::<Pod>::all(client.clone()), wake.clone(), "Pod");
    let namespaces = reflect(
        Api::<Namespace>::all(client.clone()),
        wake.clone(),
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
    let recorder = Recorder::new(client.clone(), super::cni::event_reporter(&node));
    let runner = NftRunner::for_table(nft_binary.clone(), POLICY_TABLE);
    let mut reported: BTreeMap<ObjectKey, Vec<String>> = BTreeMap::new();
    let mut tracker = PolicyTracker::default();
    // the table as the agent last wrote it, and the kernel's listing (without counters) when the
    // agent last saw it equal to that (at the first check after a whole-table write, or at a
    // check with no write since the previous check); None after a write until the next check
    let mut written: Option<Table> = None;
    let mut verified: Option<String> = None;
    let mut last_full: Option<Instant> = None;
    // the check found the table gone or changed, or the periodic rewrite is due: rewrite now,
    // with the drop counters of that check
    let mut force_full = false;
    let mut last_event = Instant::now();
    // a generation the table in the kernel (left by an agent before this one) does not carry
    let mut generation = match runner.list().await {
        Ok(Some(l)) => generation_in_listing(&l).unwrap_or(0),
        _ => 0,
    };
    // kernel counters restart with every new table: keep what the replaced ones counted
    let mut dropped_base = [0u64; 2];
    let mut dropped_now = [0u64; 2];
    let mut pending_since: Option<Instant> = Some(Instant::now());
    let mut last_check = Instant::now();
    // writes so far, and the check running in the background (started after write number n)
    let mut writes = 0u64;
    let mut check: Option<(u64, tokio::task::JoinHandle<Option<String>>)> = None;
    loop {
        let pass = Instant::now();
        if let Some(t) = wake.take() {
            pending_since = Some(pending_since.map_or(t, |p| p.min(t)));
            last_event = Instant::now();
        }
        tracker.sync(
            &policies.state(),
            &pods.state(),
            &namespaces.state(),
            &instances.state(),
        );
        let synced = Instant::now();
        let model = tracker.state.model();
        let mut table = render_policy_table(model, &node);
        set_generation(&mut table, generation);
        let rendered = Instant::now();
        let mut full = written.is_none() || force_full;
        let mut applied = false;
        if !full && let Some(old) = &written {
            match diff::diff(old, &table) {
                Ok(ops) if ops.is_empty() => {}
                Ok(_) => {
                    // a new generation: every connection is decided again by the new rules
                    let next = next_generation(generation);
                    set_generation(&mut table, next);
                    match diff::diff(old, &table) {
                        Ok(ops) => match runner.run(&diff::transaction(&table, &ops)).await {
                            Ok(()) => {
                                info!(
                                    commands = ops.len(),
                                    touched = diff::touched(&ops).len(),
                                    generation = next,
                                    waited_ms = ms(pending_since.map(|t| pass - t)),
                                    sync_ms = ms(Some(synced - pass)),
                                    render_ms = ms(Some(rendered - synced)),
                                    nft_ms = ms(Some(rendered.elapsed())),
                                    since_event_ms = ms(pending_since.map(|t| t.elapsed())),
                                    "network policy updated"
                                );
                                generation = next;
                                written = Some(table.clone());
                                writes += 1;
                                verified = None;
                                applied = true;
                            }
                            Err(e) => {
                                warn!(error = %e, "incremental policy update refused; replacing the table");
                                full = true;
                            }
                        },
                        Err(e) => {
                            debug!(reason = %e, "policy change is not incremental; replacing the table");
                            full = true;
                        }
                    }
                }
                Err(e) => {
                    debug!(reason = %e, "policy change is not incremental; replacing the table");
                    full = true;
                }
            }
        }
        if full {
            // counters of the table about to be replaced: from the check that asked for the
            // rewrite, else read now
            let now_dropped = if force_full {
                dropped_now
            } else {
                drop_counters(&nft_binary).await
            };
            let next = next_generation(generation);
            set_generation(&mut table, next);
            let counted = Instant::now();
            match runner.run(&table.transaction()).await {
                Ok(()) => {
                    info!(
                        rules = table.chains.iter().map(|c| c.rules.len()).sum::<usize>(),
                        set_elements = table.sets.values().map(|s| s.elements.len()).sum::<usize>(),
                        generation = next,
                        waited_ms = ms(pending_since.map(|t| pass - t)),
                        sync_ms = ms(Some(synced - pass)),
                        render_ms = ms(Some(rendered - synced)),
                        counters_ms = ms(Some(counted - rendered)),
                        nft_ms = ms(Some(counted.elapsed())),
                        "network policy table replaced"
                    );
                    for (b, n) in dropped_base.iter_mut().zip(now_dropped) {
                        *b += n;
                    }
                    dropped_now = [0, 0];
                    shared
                        .metrics
                        .record_policy_dropped(dropped_base[0], dropped_base[1]);
                    generation = next;
                    written = Some(table.clone());
                    writes += 1;
                    last_full = Some(Instant::now());
                    // the next check records the new table's listing
                    verified = None;
                    force_full = false;
                    applied = true;
                }
                Err(e) => {
                    warn!(error = %e, "network policy not programmed; the previous policy stays in force");
                    shared.metrics.observe_policy_error();
                    written = None;
                    verified = None;
                }
            }
        }
        if applied {
            if let Some(t) = pending_since.take() {
                shared.metrics.observe_policy_programmed(t.elapsed());
            }
        } else if written.is_some() {
            pending_since = None;
        }
        report_problems(&recorder, model, &policies.state(), &mut reported).await;
        if pass.elapsed() >= Duration::from_millis(250) {
            info!(
                full,
                applied,
                sync_ms = ms(Some(synced - pass)),
                render_ms = ms(Some(rendered - synced)),
                pass_ms = ms(Some(pass.elapsed())),
                "slow policy pass"
            );
        }
        // The safety net lists the kernel's table in the background every RESYNC, so a change
        // never waits for it (nor for `nft list`, which takes longer than an update).
        if check.is_none() && last_check.elapsed() >= RESYNC && written.is_some() {
            last_check = Instant::now();
            let r = runner.clone();
            check = Some((
                writes,
                tokio::spawn(async move { r.list().await.ok().flatten() }),
            ));
        }
        let next_check = RESYNC.saturating_sub(last_check.elapsed());
        tokio::select! {
            _ = wake.notify.notified() => {
                // coalesce a burst of events into one transaction
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            listing = checked(&mut check) => {
                let (at, listing) = listing;
                dropped_now = listing.as_deref().map_or([0, 0], drop_counts_in_listing);
                shared.metrics.record_policy_dropped(
                    dropped_base[0] + dropped_now[0],
                    dropped_base[1] + dropped_now[1],
                );
                let current = listing.map(|l| without_counters(&l));
                match check_verdict(at == writes, verified.as_deref(), current.as_deref()) {
                    Check::Rewrite { tampered } => {
                        debug!(tampered, "policy check: replacing the whole table");
                        force_full = true;
                    }
                    Check::Record => verified = current,
                    Check::Keep => {}
                }
                if last_full.is_none_or(|t| {
                    t.elapsed() >= FULL_RESYNC
                        && (last_event.elapsed() >= QUIET || t.elapsed() >= 2 * FULL_RESYNC)
                }) {
                    force_full = true;
                }
            }
            _ = tokio::time::sleep(next_check) => {}
        }
    }
}

/// What a finished background check of the kernel's table means.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// The table is gone, or changed behind the agent's back since the listing it recorded.
    Rewrite { tampered: bool },
    /// No listing recorded since the last write: this one is what the writes left.
    Record,
    /// Nothing to do (the listing equals the recorded one, or the agent wrote while it ran).
    Keep,
}

/// Decides a check: `quiet` is whether the agent wrote nothing while the listing ran (else the
/// listing may show the table before or after that write and tells nothing, unless the table is
/// gone); `verified` the listing recorded since the last write; `current` the listing (without
/// counters), `None` when the table does not exist.
pub fn check_verdict(quiet: bool, verified: Option<&str>, current: Option<&str>) -> Check {
    match (current, verified) {
        (None, _) => Check::Rewrite { tampered: false },
        _ if !quiet => Check::Keep,
        (Some(c), Some(v)) if c != v => Check::Rewrite { tampered: true },
        (Some(_), Some(_)) => Check::Keep,
        (Some(_), None) => Check::Record,
    }
}

/// The result of the background check, when one runs (never ready otherwise).
async fn checked(
    check: &mut Option<(u64, tokio::task::JoinHandle<Option<String>>)>,
) -> (u64, Option<String>) {
    match check {
        Some((at, h)) => {
            let at = *at;
            let listing = h.await.ok().flatten();
            *check = None;
            (at, listing)
        }
        None => std::future::pending().await,
    }
}

/// The packets counted by the drop chains (ingress, egress) in a listing of the whole table.
pub fn drop_counts_in_listing(listing: &str) -> [u64; 2] {
    let of = |chain: &str| {
        listing
            .split("chain ")
            .find(|c| c.split_whitespace().next() == Some(chain))
            .and_then(counter_packets)
            .unwrap_or(0)
    };
    [of(DROP_INGRESS), of(DROP_EGRESS)]
}

/// Milliseconds for a log field.
fn ms(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| d.as_millis() as u64)
}

async fn drop_counters(binary: &str) -> [u64; 2] {
    [
        chain_packets(binary, DROP_INGRESS).await.unwrap_or(0),
        chain_packets(binary, DROP_EGRESS).await.unwrap_or(0),
    ]
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
    fn listings_compare_without_counters() {
        let a = "chain c {\n\tip saddr @s counter packets 3 bytes 180 accept\n}";
        let b = "chain c {\n\tip saddr @s counter packets 0 bytes 0 accept\n}";
        assert_eq!(without_counters(a), without_counters(b));
        assert_eq!(
            without_counters(a),
            "chain c { ip saddr @s counter accept }"
        );
        let other = "chain c {\n\tip saddr @t counter packets 3 bytes 180 accept\n}";
        assert_ne!(without_counters(a), without_counters(other));
    }

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

    #[test]
    fn checks_decide_from_the_listing_and_the_writes() {
        // gone: rewrite, whatever else
        assert_eq!(
            check_verdict(true, Some("a"), None),
            Check::Rewrite { tampered: false }
        );
        assert_eq!(
            check_verdict(false, None, None),
            Check::Rewrite { tampered: false }
        );
        // changed behind the agent's back since the recorded listing
        assert_eq!(
            check_verdict(true, Some("a"), Some("b")),
            Check::Rewrite { tampered: true }
        );
        assert_eq!(check_verdict(true, Some("a"), Some("a")), Check::Keep);
        // first check after a write: record what the write left
        assert_eq!(check_verdict(true, None, Some("b")), Check::Record);
        // the agent wrote while the listing ran: it may show either table, so it decides nothing
        assert_eq!(check_verdict(false, Some("a"), Some("b")), Check::Keep);
        assert_eq!(check_verdict(false, None, Some("b")), Check::Keep);
    }

    #[test]
    fn drop_counts_from_a_table_listing() {
        let listing = "table inet hybridnet_policy {\n\tchain drop_egress {\n\t\tcounter packets 4 bytes 240 drop comment \"isolated for egress, no rule allows it\"\n\t}\n\n\tchain drop_ingress {\n\t\tcounter packets 17 bytes 1020 drop\n\t}\n\n\tchain pod_1_in {\n\t\tcounter packets 99 bytes 1 goto drop_ingress\n\t}\n}\n";
        assert_eq!(drop_counts_in_listing(listing), [17, 4]);
        assert_eq!(drop_counts_in_listing(""), [0, 0]);
        assert_eq!(
            drop_counts_in_listing("chain drop_ingress {\n counter packets x\n}"),
            [0, 0]
        );
    }
}
