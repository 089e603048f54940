//! Prometheus metrics of the control plane and the webhook, served on `/metrics`.

use std::sync::Arc;

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
    /// Pod reconciles skipped because the pod does not match `--pod-label-selector`.
    pub pods_not_selected: Counter,
    pub leader: Gauge,
    pub ipam_rebuild_seconds: Histogram,
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
            pods_not_selected,
            leader,
            ipam_rebuild_seconds,
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn record_reconcile(&self, controller: &str, ok: bool) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                controller: controller.to_string(),
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
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
