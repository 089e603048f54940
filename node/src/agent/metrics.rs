//! Prometheus metrics of the agent. The registry is shared: the CNI server records its request
//! latency and errors through [`Metrics::observe_cni`].

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::dataplane::ApplyReport;
use crate::plan::DataPlanePlan;

type Labels = Vec<(String, String)>;

fn new_histogram() -> Histogram {
    // 1 ms .. ~33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// All metrics of the agent.
pub struct Metrics {
    registry: Registry,
    reconcile_duration: Histogram,
    reconciles: Counter,
    reconcile_errors: Counter,
    programmed: Family<Labels, Gauge>,
    changes: Family<Labels, Counter>,
    plan_problems: Gauge,
    cni_duration: Family<Labels, Histogram>,
    cni_errors: Family<Labels, Counter>,
    cni_in_flight: Gauge,
    policy_programming: Histogram,
    policy_errors: Counter,
    policy_dropped: Family<Labels, Counter>,
    /// Totals already added to `policy_dropped` (ingress, egress).
    policy_dropped_seen: std::sync::Mutex<[u64; 2]>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hybridnet_node");
        let reconcile_duration = new_histogram();
        let reconciles = Counter::default();
        let reconcile_errors = Counter::default();
        let programmed = Family::<Labels, Gauge>::default();
        let changes = Family::<Labels, Counter>::default();
        let plan_problems = Gauge::default();
        let cni_duration =
            Family::<Labels, Histogram>::new_with_constructor(new_histogram as fn() -> Histogram);
        let cni_errors = Family::<Labels, Counter>::default();
        let cni_in_flight = Gauge::default();
        let policy_programming = new_histogram();
        let policy_errors = Counter::default();
        let policy_dropped = Family::<Labels, Counter>::default();
        registry.register(
            "policy_programming_duration_seconds",
            "Time from a NetworkPolicy, Pod or Namespace change until this node's policy table enforces it",
            policy_programming.clone(),
        );
        registry.register(
            "policy_programming_errors",
            "Policy transactions nft refused (the previous policy stays in force)",
            policy_errors.clone(),
        );
        registry.register(
            "policy_dropped_packets",
            "Packets dropped by NetworkPolicy on this node, by direction",
            policy_dropped.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time of one reconcile (read host, plan, apply)",
            reconcile_duration.clone(),
        );
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed or left objects unapplied",
            reconcile_errors.clone(),
        );
        registry.register(
            "programmed_objects",
            "Data-plane objects in the current plan, by kind",
            programmed.clone(),
        );
        registry.register(
            "kernel_changes",
            "Kernel objects added/replaced or removed, by kind and op",
            changes.clone(),
        );
        registry.register(
            "plan_problems",
            "API objects the last plan could not use",
            plan_problems.clone(),
        );
        registry.register(
            "cni_request_duration_seconds",
            "CNI requests served, by command",
            cni_duration.clone(),
        );
        registry.register(
            "cni_request_errors",
            "CNI requests that failed, by command and CNI error code",
            cni_errors.clone(),
        );
        registry.register(
            "cni_requests_in_flight",
            "CNI requests being handled (a shutdown waits for them)",
            cni_in_flight.clone(),
        );
        Self {
            registry,
            reconcile_duration,
            reconciles,
            reconcile_errors,
            programmed,
            changes,
            plan_problems,
            cni_duration,
            cni_errors,
            cni_in_flight,
            policy_programming,
            policy_errors,
            policy_dropped,
            policy_dropped_seen: std::sync::Mutex::new([0, 0]),
        }
    }

    /// A policy change enforced `elapsed` after it was seen.
    pub fn observe_policy_programmed(&self, elapsed: Duration) {
        self.policy_programming.observe(elapsed.as_secs_f64());
    }

    pub fn observe_policy_error(&self) {
        self.policy_errors.inc();
    }

    /// The packets dropped by policy so far (ingress, egress totals); adds what is new.
    pub fn record_policy_dropped(&self, ingress: u64, egress: u64) {
        let Ok(mut seen) = self.policy_dropped_seen.lock() else {
            return;
        };
        for (i, (dir, total)) in [("ingress", ingress), ("egress", egress)]
            .into_iter()
            .enumerate()
        {
            let c = self
                .policy_dropped
                .get_or_create(&vec![("direction".to_string(), dir.to_string())]);
            if total > seen[i] {
                c.inc_by(total - seen[i]);
                seen[i] = total;
            }
        }
    }

    pub fn observe_reconcile(
        &self,
        elapsed: Duration,
        plan: &DataPlanePlan,
        report: Option<&ApplyReport>,
    ) {
        self.reconcile_duration.observe(elapsed.as_secs_f64());
        self.reconciles.inc();
        let failed = report.is_none_or(|r| !r.errors.is_empty());
        if failed {
            self.reconcile_errors.inc();
        }
        let set = |kind: &str, n: usize| {
            self.programmed
                .get_or_create(&vec![("kind".to_string(), kind.to_string())])
                .set(n as i64);
        };
        set("rule", plan.rules.len());
        set("route", plan.routes.len());
        set("fdb", plan.fdb.len());
        set("neighbour", plan.vxlan_neighbours.len());
        set("proxy", plan.proxy_neighbours.len());
        set("local_pod", plan.local_pods.len());
        set("vlan_link", plan.vlan_links.len());
        self.plan_problems.set(plan.problems.len() as i64);
        if let Some(r) = report {
            for (kind, (added, removed)) in &r.changes {
                for (op, n) in [("add", added), ("remove", removed)] {
                    if *n > 0 {
                        self.changes
                            .get_or_create(&vec![
                                ("kind".into(), kind.to_string()),
                                ("op".into(), op.into()),
                            ])
                            .inc_by(*n as u64);
                    }
                }
            }
        }
    }

    /// One CNI request (called by the CNI server's observer).
    /// A CNI request began; [`Metrics::observe_cni`] ends it.
    pub fn cni_started(&self) {
        self.cni_in_flight.inc();
    }

    pub fn observe_cni(&self, command: &str, elapsed: Duration, error_code: Option<u32>) {
        self.cni_in_flight.dec();
        let cmd = vec![("command".to_string(), command.to_string())];
        self.cni_duration
            .get_or_create(&cmd)
            .observe(elapsed.as_secs_f64());
        if let Some(code) = error_code {
            self.cni_errors
                .get_or_create(&vec![
                    ("command".into(), command.into()),
                    ("code".into(), code.to_string()),
                ])
                .inc();
        }
    }

    /// Adds metrics read at scrape time (the BGP speaker's sessions, `crate::bgp::BgpCollector`).
    pub fn register_collector(
        &mut self,
        collector: Box<dyn prometheus_client::collector::Collector>,
    ) {
        self.registry.register_collector(collector);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        if encode(&mut s, &self.registry).is_err() {
            s.clear();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_contains_the_metrics() {
        let m = Metrics::new();
        m.observe_reconcile(
            Duration::from_millis(12),
            &DataPlanePlan::default(),
            Some(&ApplyReport::default()),
        );
        for _ in 0..3 {
            m.cni_started();
        }
        m.observe_cni("ADD", Duration::from_millis(30), None);
        m.observe_cni("ADD", Duration::from_millis(30), Some(11));
        m.observe_policy_programmed(Duration::from_millis(40));
        m.record_policy_dropped(5, 0);
        m.record_policy_dropped(7, 2);
        let t = m.encode();
        for want in [
            "hybridnet_node_reconcile_duration_seconds_count 1",
            "hybridnet_node_reconciles_total 1",
            "hybridnet_node_programmed_objects{kind=\"rule\"} 0",
            "hybridnet_node_cni_request_duration_seconds_count{command=\"ADD\"} 2",
            "hybridnet_node_cni_request_errors_total{command=\"ADD\",code=\"11\"} 1",
            "hybridnet_node_cni_requests_in_flight 1",
            "hybridnet_node_policy_programming_duration_seconds_count 1",
            "hybridnet_node_policy_dropped_packets_total{direction=\"ingress\"} 7",
            "hybridnet_node_policy_dropped_packets_total{direction=\"egress\"} 2",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
    }
}
