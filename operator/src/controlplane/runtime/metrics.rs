//! Prometheus metrics of the control plane and the webhook, served on `/metrics`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AllocationLabels {
    /// `normal` or `stateful`.
    pub allocate_type: String,
    pub success: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NetworkUsageLabels {
    pub network_name: String,
    /// `ipv4`, `ipv6` or `dualstack`.
    pub ip_family: String,
    /// `total`, `used` or `available`.
    pub usage_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubnetUsageLabels {
    pub subnet_name: String,
    pub network_name: String,
    pub usage_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeakLabels {
    /// `ipinstance-without-pod` or `pod-without-ipinstance`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// `validate` or `mutate`.
    pub webhook: String,
    /// Kind of the object under review.
    pub kind: String,
    pub operation: String,
    /// `allowed`, `denied` or `error`.
    pub decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLatencyLabels {
    pub webhook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: String,
    /// `ok` or `error`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric the operator exports. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub allocation_seconds: Family<AllocationLabels, Histogram>,
    pub network_usage: Family<NetworkUsageLabels, Gauge>,
    pub subnet_usage: Family<SubnetUsageLabels, Gauge>,
    pub leaks_found: Family<LeakLabels, Counter>,
    pub leaks_repaired: Family<LeakLabels, Counter>,
    pub webhook_decisions: Family<WebhookLabels, Counter>,
    pub webhook_seconds: Family<WebhookLatencyLabels, Histogram>,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_seconds: Family<ControllerLabels, Histogram>,
    /// Pod reconciles skipped because the pod does not match `--pod-label-selector`.
    pub pods_not_selected: Counter,
    pub leader: Gauge,
    pub ipam_rebuild_seconds: Histogram,
    /// The same numbers under upstream's names and labels (no prefix, camelCase labels).
    upstream: Arc<Mutex<Upstream>>,
}

/// Observations kept per `ip_allocation_period` series for its quantiles.
const SUMMARY_WINDOW: usize = 1024;

/// Upstream hybridnet's manager metrics (pkg/metrics/metrics.go in alibaba/hybridnet):
/// `ip_usage{networkName,ipFamily,usageType}`, `subnet_ip_usage{subnetName,networkName,usageType}`
/// and the summary `ip_allocation_period{allocateType,success}` in nanoseconds (quantiles 0.5, 0.9,
/// 0.99 over the last [`SUMMARY_WINDOW`] allocations). Served next to ours so upstream dashboards
/// and alerts keep working (docs/operations.md maps one to the other).
#[derive(Default, Debug)]
struct Upstream {
    ip_usage: BTreeMap<(String, String, String), i64>,
    subnet_ip_usage: BTreeMap<(String, String, String), i64>,
    allocation: BTreeMap<(String, String), Summary>,
    /// `remote_cluster_status_check_duration{clusterName}` (seconds).
    remote_check: BTreeMap<String, BucketCounts>,
}

/// Upstream's buckets of `remote_cluster_status_check_duration` (pkg/metrics/metrics.go).
const REMOTE_CHECK_BUCKETS: [f64; 21] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0, 17.5, 20.0, 22.5, 25.0, 27.5, 30.0,
    50.0, 75.0, 100.0, 1000.0,
];

/// A histogram series: observations per bucket (not cumulative), sum and count.
#[derive(Default, Debug)]
struct BucketCounts {
    per_bucket: [u64; REMOTE_CHECK_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl BucketCounts {
    fn observe(&mut self, v: f64) {
        if let Some(i) = REMOTE_CHECK_BUCKETS.iter().position(|b| v <= *b) {
            self.per_bucket[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Default, Debug)]
struct Summary {
    count: u64,
    sum: f64,
    window: VecDeque<f64>,
}

impl Summary {
    fn observe(&mut self, v: f64) {
        self.count += 1;
        self.sum += v;
        if self.window.len() == SUMMARY_WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(v);
    }

    /// Nearest-rank quantile of the window (NaN when empty, as Go's client reports it).
    fn quantile(&self, q: f64) -> f64 {
        if self.window.is_empty() {
            return f64::NAN;
        }
        let mut v: Vec<f64> = self.window.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let rank = (q * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }
}

/// Escapes a label value for the text format.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Upstream {
    /// The upstream-named series in the text exposition format (pure).
    fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# HELP ip_usage the usage of IPs in different networks");
        let _ = writeln!(o, "# TYPE ip_usage gauge");
        for ((n, f, t), v) in &self.ip_usage {
            let _ = writeln!(
                o,
                "ip_usage{{networkName=\"{}\",ipFamily=\"{}\",usageType=\"{}\"}} {v}",
                esc(n),
                esc(f),
                esc(t)
            );
        }
        let _ = writeln!(
            o,
            "# HELP subnet_ip_usage the usage of IPs in different subnets"
        );
        let _ = writeln!(o, "# TYPE subnet_ip_usage gauge");
        for ((s, n, t), v) in &self.subnet_ip_usage {
            let _ = writeln!(
                o,
                "subnet_ip_usage{{subnetName=\"{}\",networkName=\"{}\",usageType=\"{}\"}} {v}",
                esc(s),
                esc(n),
                esc(t)
            );
        }
        let _ = writeln!(
            o,
            "# HELP ip_allocation_period the period summary of ip allocation for pod"
        );
        let _ = writeln!(o, "# TYPE ip_allocation_period summary");
        for ((a, ok), sm) in &self.allocation {
            let l = format!("allocateType=\"{}\",success=\"{}\"", esc(a), esc(ok));
            for q in [0.5, 0.9, 0.99] {
                let _ = writeln!(
                    o,
                    "ip_allocation_period{{{l},quantile=\"{q}\"}} {}",
                    sm.quantile(q)
                );
            }
            let _ = writeln!(o, "ip_allocation_period_sum{{{l}}} {}", sm.sum);
            let _ = writeln!(o, "ip_allocation_period_count{{{l}}} {}", sm.count);
        }
        let _ = writeln!(
            o,
            "# HELP remote_cluster_status_check_duration time taken for checking remote cluster status."
        );
        let _ = writeln!(o, "# TYPE remote_cluster_status_check_duration histogram");
        for (c, h) in &self.remote_check {
            let l = format!("clusterName=\"{}\"", esc(c));
            let mut cumulative = 0;
            for (b, n) in REMOTE_CHECK_BUCKETS.iter().zip(h.per_bucket) {
                cumulative += n;
                let _ = writeln!(
                    o,
                    "remote_cluster_status_check_duration_bucket{{{l},le=\"{b}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                o,
                "remote_cluster_status_check_duration_bucket{{{l},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                o,
                "remote_cluster_status_check_duration_sum{{{l}}} {}",
                h.sum
            );
            let _ = writeln!(
                o,
                "remote_cluster_status_check_duration_count{{{l}}} {}",
                h.count
            );
        }
        o
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hybridnet");
        let allocation_seconds = Family::<AllocationLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let webhook_seconds = Family::<WebhookLatencyLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let network_usage = Family::<NetworkUsageLabels, Gauge>::default();
        let subnet_usage = Family::<SubnetUsageLabels, Gauge>::default();
        let leaks_found = Family::<LeakLabels, Counter>::default();
        let leaks_repaired = Family::<LeakLabels, Counter>::default();
        let webhook_decisions = Family::<WebhookLabels, Counter>::default();
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let reconcile_seconds = Family::<ControllerLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let pods_not_selected = Counter::default();
        let leader = Gauge::default();
        let ipam_rebuild_seconds = latency_histogram();
        registry.register(
            "ip_allocation_seconds",
            "Time from seeing a scheduled pod to its IPInstances being written",
            allocation_seconds.clone(),
        );
        registry.register(
            "pods_not_selected",
            "Pod reconciles skipped because the pod does not match --pod-label-selector",
            pods_not_selected.clone(),
        );
        registry.register(
            "ip_usage",
            "Addresses of a network per family: total, used, available",
            network_usage.clone(),
        );
        registry.register(
            "subnet_ip_usage",
            "Addresses of a subnet: total, used, available",
            subnet_usage.clone(),
        );
        registry.register(
            "ip_leaks_found",
            "Leaked IPInstances and pods without addresses found by the leak detector",
            leaks_found.clone(),
        );
        registry.register(
            "ip_leaks_repaired",
            "Leaks the leak detector repaired",
            leaks_repaired.clone(),
        );
        registry.register(
            "webhook_decisions",
            "Admission decisions",
            webhook_decisions.clone(),
        );
        registry.register(
            "webhook_duration_seconds",
            "Time to answer an admission review",
            webhook_seconds.clone(),
        );
        registry.register(
            "controller_reconciles",
            "Reconciles per controller and result",
            reconciles.clone(),
        );
        registry.register(
            "controller_reconcile_duration_seconds",
            "Time one reconcile took, per controller",
            reconcile_seconds.clone(),
        );
        registry.register("leader", "1 while this replica leads", leader.clone());
        registry.register(
            "ipam_rebuild_seconds",
            "Time to rebuild the IPAM from the API after winning the leadership",
            ipam_rebuild_seconds.clone(),
        );
        Self {
            registry: Arc::new(registry),
            allocation_seconds,
            network_usage,
            subnet_usage,
            leaks_found,
            leaks_repaired,
            webhook_decisions,
            webhook_seconds,
            reconciles,
            reconcile_seconds,
            pods_not_selected,
            leader,
            ipam_rebuild_seconds,
            upstream: Arc::default(),
        }
    }

    fn upstream(&self) -> std::sync::MutexGuard<'_, Upstream> {
        self.upstream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One pod allocation took `seconds` (ours: `hybridnet_ip_allocation_seconds`; upstream's:
    /// `ip_allocation_period`, in nanoseconds).
    pub fn record_allocation(&self, allocate_type: &str, success: bool, seconds: f64) {
        self.allocation_seconds
            .get_or_create(&AllocationLabels {
                allocate_type: allocate_type.to_string(),
                success: success.to_string(),
            })
            .observe(seconds);
        self.upstream()
            .allocation
            .entry((allocate_type.to_string(), success.to_string()))
            .or_default()
            .observe(seconds * 1e9);
    }

    /// Drops every usage series of a deleted network and its subnets (as upstream does).
    pub fn forget_network(&self, network: &str) {
        for family in ["ipv4", "ipv6", "dualstack"] {
            for t in ["total", "used", "available"] {
                self.network_usage.remove(&NetworkUsageLabels {
                    network_name: network.to_string(),
                    ip_family: family.to_string(),
                    usage_type: t.to_string(),
                });
            }
        }
        let mut up = self.upstream();
        up.ip_usage.retain(|(n, _, _), _| n != network);
        let gone: Vec<(String, String, String)> = up
            .subnet_ip_usage
            .keys()
            .filter(|(_, n, _)| n == network)
            .cloned()
            .collect();
        for k in gone {
            up.subnet_ip_usage.remove(&k);
            self.subnet_usage.remove(&SubnetUsageLabels {
                subnet_name: k.0,
                network_name: k.1,
                usage_type: k.2,
            });
        }
    }

    /// The text exposition format (OpenMetrics): ours, then upstream's names before `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        let upstream = self.upstream().render();
        match out.rfind("# EOF") {
            Some(i) => out.insert_str(i, &upstream),
            None => out.push_str(&upstream),
        }
        out
    }

    /// One RemoteCluster was checked in `seconds` (upstream's
    /// `remote_cluster_status_check_duration{clusterName}`).
    pub fn record_remote_cluster_check(&self, cluster: &str, seconds: f64) {
        self.upstream()
            .remote_check
            .entry(cluster.to_string())
            .or_default()
            .observe(seconds);
    }

    /// Drops the check series of RemoteClusters not in `live`.
    pub fn retain_remote_clusters(&self, live: &std::collections::BTreeSet<String>) {
        self.upstream().remote_check.retain(|c, _| live.contains(c));
    }

    pub fn record_reconcile(&self, controller: &str, ok: bool, seconds: f64) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                controller: controller.to_string(),
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
        self.reconcile_seconds
            .get_or_create(&ControllerLabels {
                controller: controller.to_string(),
            })
            .observe(seconds);
    }

    /// Runs one reconcile of `controller` and records its result and duration (every controller
    /// of the operator, the lifecycle one included, goes through here).
    pub async fn measure_reconcile<T, E>(
        &self,
        controller: &str,
        reconcile: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = std::time::Instant::now();
        let res = reconcile.await;
        self.record_reconcile(controller, res.is_ok(), started.elapsed().as_secs_f64());
        res
    }

    pub fn set_subnet_usage(
        &self,
        network: &str,
        subnet: &str,
        total: i64,
        used: i64,
        available: i64,
    ) {
        for (t, v) in [("total", total), ("used", used), ("available", available)] {
            self.subnet_usage
                .get_or_create(&SubnetUsageLabels {
                    subnet_name: subnet.to_string(),
                    network_name: network.to_string(),
                    usage_type: t.to_string(),
                })
                .set(v);
            self.upstream()
                .subnet_ip_usage
                .insert((subnet.to_string(), network.to_string(), t.to_string()), v);
        }
    }

    pub fn set_network_usage(&self, network: &str, family: &str, usage_type: &str, v: i64) {
        self.network_usage
            .get_or_create(&NetworkUsageLabels {
                network_name: network.to_string(),
                ip_family: family.to_string(),
                usage_type: usage_type.to_string(),
            })
            .set(v);
        self.upstream().ip_usage.insert(
            (
                network.to_string(),
                family.to_string(),
                usage_type.to_string(),
            ),
            v,
        );
    }

    pub fn leak_found(&self, kind: &str) {
        self.leaks_found
            .get_or_create(&LeakLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn leak_repaired(&self, kind: &str) {
        self.leaks_repaired
            .get_or_create(&LeakLabels {
                kind: kind.to_string(),
            })
            .inc();
    }
}

/// A `/metrics` router serving `metrics`.
pub fn router(metrics: Metrics) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.encode(),
                )
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names_and_labels_are_served() {
        let m = Metrics::new();
        m.set_network_usage("net-a", "ipv4", "used", 3);
        m.set_subnet_usage("net-a", "sub-a", 10, 3, 7);
        for ms in 1..=100 {
            m.record_allocation("normal", true, f64::from(ms) / 1000.0);
        }
        let text = m.encode();
        for want in [
            "ip_usage{networkName=\"net-a\",ipFamily=\"ipv4\",usageType=\"used\"} 3",
            "subnet_ip_usage{subnetName=\"sub-a\",networkName=\"net-a\",usageType=\"available\"} 7",
            "# TYPE ip_allocation_period summary",
            "ip_allocation_period{allocateType=\"normal\",success=\"true\",quantile=\"0.5\"} 50000000",
            "ip_allocation_period{allocateType=\"normal\",success=\"true\",quantile=\"0.99\"} 99000000",
            "ip_allocation_period_count{allocateType=\"normal\",success=\"true\"} 100",
            "hybridnet_ip_usage{network_name=\"net-a\",ip_family=\"ipv4\",usage_type=\"used\"} 3",
        ] {
            assert!(text.contains(want), "missing {want}:\n{text}");
        }
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);

        m.forget_network("net-a");
        let text = m.encode();
        assert!(!text.contains("networkName=\"net-a\""), "{text}");
        assert!(!text.contains("network_name=\"net-a\""), "{text}");
    }

    #[test]
    fn label_values_are_escaped_and_empty_windows_are_nan() {
        let mut u = Upstream::default();
        u.ip_usage
            .insert(("a\"b\\c".into(), "ipv4".into(), "used".into()), 1);
        u.allocation
            .insert(("stateful".into(), "false".into()), Summary::default());
        let text = u.render();
        assert!(text.contains(r#"networkName="a\"b\\c""#), "{text}");
        assert!(text.contains("quantile=\"0.5\"} NaN"), "{text}");
    }

    #[test]
    fn remote_cluster_check_durations_use_upstreams_name_and_buckets() {
        let m = Metrics::new();
        m.record_remote_cluster_check("cluster-b", 0.03);
        m.record_remote_cluster_check("cluster-b", 12.0);
        m.record_remote_cluster_check("cluster-b", 5000.0);
        m.record_remote_cluster_check("gone", 1.0);
        m.retain_remote_clusters(&["cluster-b".to_string()].into());
        let text = m.encode();
        for want in [
            "# TYPE remote_cluster_status_check_duration histogram",
            "remote_cluster_status_check_duration_bucket{clusterName=\"cluster-b\",le=\"0.01\"} 0",
            "remote_cluster_status_check_duration_bucket{clusterName=\"cluster-b\",le=\"0.05\"} 1",
            "remote_cluster_status_check_duration_bucket{clusterName=\"cluster-b\",le=\"10\"} 1",
            "remote_cluster_status_check_duration_bucket{clusterName=\"cluster-b\",le=\"12.5\"} 2",
            "remote_cluster_status_check_duration_bucket{clusterName=\"cluster-b\",le=\"1000\"} 2",
            "remote_cluster_status_check_duration_bucket{clusterName=\"cluster-b\",le=\"+Inf\"} 3",
            "remote_cluster_status_check_duration_count{clusterName=\"cluster-b\"} 3",
            "remote_cluster_status_check_duration_sum{clusterName=\"cluster-b\"} 5012.03",
        ] {
            assert!(text.contains(want), "missing {want}:\n{text}");
        }
        assert!(!text.contains("clusterName=\"gone\""), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }

    #[test]
    fn the_window_keeps_the_latest_observations() {
        let mut s = Summary::default();
        for v in 0..(SUMMARY_WINDOW as u32 + 10) {
            s.observe(f64::from(v));
        }
        assert_eq!(s.window.len(), SUMMARY_WINDOW);
        assert_eq!(s.count, SUMMARY_WINDOW as u64 + 10);
        assert_eq!(s.quantile(0.0001), 10.0);
    }
}
