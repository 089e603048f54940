//! hybridnet-operator: cluster lifecycle, network control plane (IPAM) and admission webhooks in
//! one leader-elected binary. Flags and environment mirror the original manager and webhook
//! where that makes sense (upstream `cmd/manager/main.go`).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use hybridnet_api::constants::env;
use hybridnet_api::migration::FeatureGates;
use hybridnet_api::operator::IpFamily;
use hybridnet_api::selector::{self as podselector, PodSelector};
use hybridnet_api::v1::NetworkType;
use hybridnet_operator::controlplane::rules::defaults::PodDefaults;
use hybridnet_operator::controlplane::runtime::config::ControlPlaneConfig;
use hybridnet_operator::controlplane::runtime::replica::{Replica, ReplicaConfig};
use hybridnet_operator::controlplane::runtime::run::TermTask;
use hybridnet_operator::lifecycle;
use hybridnet_operator::webhook::server::CertSource;
use tracing::{info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "hybridnet-operator",
    version,
    about = "hybridnet operator: cluster lifecycle, network control plane (IPAM) and admission webhooks"
)]
struct Cli {
    /// Network type of pods that name none: Underlay, Overlay or GlobalBGP. Used only when
    /// HybridnetCluster/default does not exist; its spec.defaults win otherwise.
    #[arg(long, env = env::DEFAULT_NETWORK_TYPE, default_value = "Overlay", value_parser = parse_network_type)]
    default_network_type: NetworkType,
    /// IP family of pods that name none: IPv4, IPv6 or DualStack (fallback, like
    /// --default-network-type).
    #[arg(long, env = env::DEFAULT_IP_FAMILY, default_value = "IPv4", value_parser = parse_ip_family)]
    default_ip_family: IpFamily,
    /// Stateful pods keep their addresses across re-creation unless annotated otherwise
    /// (fallback, like --default-network-type).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    default_ip_retain: bool,
    /// Owner kinds whose pods are stateful, comma separated (fallback, like
    /// --default-network-type).
    #[arg(long, default_value = "StatefulSet", value_delimiter = ',')]
    stateful_workload_kinds: Vec<String>,
    /// Only pods whose labels match this selector are allocated and released (upstream
    /// v0.8.9), e.g. `hybridnet in (yes),!legacy`; empty = every pod. The webhook is not
    /// filtered (as upstream); exclude pods from it with the `webhook.hybridnet.io/ignore` label.
    #[arg(long, default_value = "", value_parser = parse_pod_selector)]
    pod_label_selector: PodSelector,
    /// Parallel reconciles per controller, e.g. `Pod=8,IPInstance=8,Default=2` (1..100).
    #[arg(long, default_value = "Pod=8,Default=2", value_parser = parse_concurrency)]
    controller_concurrency: BTreeMap<String, u16>,
    /// Requests per second to the API server (client-side limit; 0 = unlimited).
    #[arg(long, default_value_t = 300.0)]
    kube_client_qps: f64,
    /// Burst above the QPS limit.
    #[arg(long, default_value_t = 600)]
    kube_client_burst: u32,
    /// Port of `/metrics` (0 = off).
    #[arg(long, default_value_t = 9899)]
    metrics_port: u16,
    /// Port of the admission webhook (0 = no webhook).
    #[arg(long, default_value_t = 9898)]
    webhook_port: u16,
    /// Directory with the webhook's tls.crt and tls.key (reloaded when they change).
    #[arg(long, default_value = "/tmp/k8s-webhook-server/serving-certs")]
    webhook_cert_dir: PathBuf,
    /// Take the webhook certificate from this kubernetes.io/tls Secret (name, in --namespace)
    /// instead of --webhook-cert-dir.
    #[arg(long)]
    webhook_cert_secret: Option<String>,
    /// Namespace of the leader-election Lease and the operator's objects.
    #[arg(long, env = env::NAMESPACE, default_value = "kube-system")]
    namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "hybridnet-manager-election")]
    leader_election_id: String,
    /// Identity in the Lease (default: the pod name, else the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Namespace of upstream hybridnet's manager Lease (see --upstream-leader-election-id).
    #[arg(long, default_value = hybridnet_api::migration::UPSTREAM_NAMESPACE)]
    upstream_leader_election_namespace: String,
    /// Upstream hybridnet's manager Lease: while it is held by a live upstream manager this
    /// operator does not allocate; while leading, it holds that Lease too, so upstream's manager
    /// cannot lead (docs/migration.md). Empty: no such guard.
    #[arg(long, default_value = hybridnet_api::migration::UPSTREAM_LEADER_LEASE)]
    upstream_leader_election_id: String,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Seconds between leak detection passes.
    #[arg(long, default_value_t = 60)]
    leak_check_interval_seconds: u64,
    /// Seconds between RemoteCluster check passes with the MultiCluster feature on (status and
    /// mirrors; upstream's 30 s by default, docs/multicluster.md).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    remote_cluster_check_interval_seconds: u64,
    /// A node agent rollout (DaemonSet updated/ready/available counts) without progress for
    /// longer than this makes HybridnetCluster Degraded=True/RolloutStuck (1 s .. 7 days).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    rollout_progress_deadline_seconds: u64,
    /// Upstream's `--feature-gates` (its chart passes `MultiCluster=<b>,VMIPRetain=<b>`).
    /// `VMIPRetain=true`: KubeVirt VM pods keep their addresses (docs/api.md, "KubeVirt VMs"),
    /// unless HybridnetCluster/default sets `spec.features.vmIPRetain`. `MultiCluster=true`:
    /// RemoteClusters are checked and mirrored (docs/multicluster.md), unless HybridnetCluster/
    /// default sets `spec.features.multiCluster`.
    #[arg(long, default_value = "", value_parser = parse_feature_gates)]
    feature_gates: FeatureGates,
    /// Do not run the HybridnetCluster lifecycle reconciler.
    #[arg(long)]
    disable_lifecycle: bool,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn parse_network_type(s: &str) -> Result<NetworkType, String> {
    // Empty means "not set", as in upstream; the default when not set is the documented one,
    // Overlay (upstream's chart value), not upstream's bare-binary Underlay.
    if s.trim().is_empty() {
        return Ok(PodDefaults::default().network_type);
    }
    NetworkType::parse_case_insensitive(s)
        .ok_or_else(|| format!("{s:?} is not a network type (Underlay, Overlay or GlobalBGP)"))
}

fn parse_feature_gates(s: &str) -> Result<FeatureGates, String> {
    hybridnet_api::migration::parse_feature_gates(s)
}

fn parse_pod_selector(s: &str) -> Result<PodSelector, String> {
    podselector::parse(s).map_err(|e| e.to_string())
}

fn parse_ip_family(s: &str) -> Result<IpFamily, String> {
    if s.trim().is_empty() {
        return Ok(IpFamily::IPv4);
    }
    IpFamily::parse_case_insensitive(s)
        .ok_or_else(|| format!("{s:?} is not an IP family (IPv4, IPv6 or DualStack)"))
}

fn parse_concurrency(s: &str) -> Result<BTreeMap<String, u16>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: want Name=number"))?;
        let n: u16 = v
            .trim()
            .parse()
            .map_err(|_| format!("{part:?}: {v:?} is not a number"))?;
        if !(1..=100).contains(&n) {
            return Err(format!("{part:?}: concurrency must be 1..100"));
        }
        out.insert(k.trim().to_string(), n);
    }
    Ok(out)
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "hybridnet-operator".into());
    let mut b = [0u8; 4];
    let suffix = match std::fs::read("/proc/sys/kernel/random/uuid") {
        Ok(u) => String::from_utf8_lossy(&u[..8.min(u.len())]).to_string(),
        Err(_) => {
            b.copy_from_slice(&std::process::id().to_be_bytes());
            format!("{:02x}{:02x}{:02x}{:02x}", b[0], b[1], b[2], b[3])
        }
    };
    format!("{host}_{suffix}")
}

impl Cli {
    fn control_plane_config(&self) -> anyhow::Result<ControlPlaneConfig> {
        if self
            .stateful_workload_kinds
            .iter()
            .any(|k| k.trim().is_empty())
        {
            bail!(
                "--stateful-workload-kinds: empty kind in {:?}",
                self.stateful_workload_kinds
            );
        }
        if self.lease_duration_seconds < 2 {
            bail!("--lease-duration-seconds must be at least 2");
        }
        let pick = |name: &str| {
            self.controller_concurrency
                .get(name)
                .or_else(|| self.controller_concurrency.get("Default"))
                .copied()
        };
        let lease = Duration::from_secs(self.lease_duration_seconds);
        Ok(ControlPlaneConfig {
            defaults: PodDefaults {
                network_type: self.default_network_type,
                ip_family: self.default_ip_family,
                ip_retain: self.default_ip_retain,
                stateful_workload_kinds: self
                    .stateful_workload_kinds
                    .iter()
                    .map(|k| k.trim().to_string())
                    .collect(),
                vm_ip_retain: self.feature_gates.vm_ip_retain,
                multi_cluster: self.feature_gates.multi_cluster,
            },
            pod_selector: self.pod_label_selector.clone(),
            pod_concurrency: pick("Pod").unwrap_or(8),
            concurrency: pick("Default").unwrap_or(2),
            namespace: self.namespace.clone(),
            leader_election_id: self.leader_election_id.clone(),
            identity: self
                .identity
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(default_identity),
            lease_duration: lease,
            lease_retry: (lease / 5).max(Duration::from_millis(500)),
            leak_check_interval: Duration::from_secs(self.leak_check_interval_seconds.max(1)),
            remote_cluster_check_interval: Duration::from_secs(
                self.remote_cluster_check_interval_seconds,
            ),
            upstream_lease: (!self.upstream_leader_election_id.is_empty()).then(|| {
                (
                    self.upstream_leader_election_namespace.clone(),
                    self.upstream_leader_election_id.clone(),
                )
            }),
        })
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube_runtime=warn".into());
    if cli.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    hybridnet_operator::webhook::server::install_crypto_provider();
    let control = cli.control_plane_config()?;
    let mut kube_config = kube::Config::infer()
        .await
        .context("finding the cluster (in-cluster service account or kubeconfig)")?;
    kube_config.read_timeout = Some(Duration::from_secs(295));
    let client = hybridnet_operator::controlplane::runtime::ratelimit::client(
        kube_config,
        cli.kube_client_qps,
        cli.kube_client_burst,
    )
    .context("building the Kubernetes client")?;

    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let webhook = (cli.webhook_port != 0).then(|| {
        let source = match &cli.webhook_cert_secret {
            Some(name) => CertSource::Secret {
                namespace: cli.namespace.clone(),
                name: name.clone(),
            },
            None => CertSource::Dir(cli.webhook_cert_dir.clone()),
        };
        (SocketAddr::new(any, cli.webhook_port), source)
    });
    let cfg = ReplicaConfig {
        control: control.clone(),
        webhook,
        cert_reload: Duration::from_secs(10),
        metrics_addr: (cli.metrics_port != 0).then(|| SocketAddr::new(any, cli.metrics_port)),
        control_plane: true,
    };
    let lifecycle_task: Option<TermTask> = (!cli.disable_lifecycle).then(|| {
        let ns = cli.namespace.clone();
        let deadline = Duration::from_secs(cli.rollout_progress_deadline_seconds);
        let task: TermTask = Arc::new(move |client: kube::Client, metrics| {
            let mut lc = lifecycle::reconcile::LifecycleConfig::from_env();
            lc.namespace = ns.clone();
            lc.progress_deadline = deadline;
            Box::pin(async move {
                if let Err(e) = lifecycle::reconcile::run(client, lc, metrics).await {
                    warn!(error = %e, "lifecycle reconciler stopped");
                }
            })
        });
        task
    });
    info!(identity = %control.identity, namespace = %control.namespace, "starting hybridnet-operator");
    let replica = Replica::start(client, cfg, lifecycle_task)
        .await
        .context("starting the operator")?;
    shutdown_signal().await;
    info!("shutting down");
    replica.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_manager_command_line_is_accepted() {
        // As upstream's chart renders it (charts/hybridnet/templates/deployments.yaml).
        let c = Cli::try_parse_from([
            "x",
            "--default-ip-retain=true",
            "--feature-gates=MultiCluster=false,VMIPRetain=false",
            "--controller-concurrency=Pod=1,IPAM=1,IPInstance=1",
            "--kube-client-qps=300",
            "--kube-client-burst=600",
            "--metrics-port=9899",
        ]);
        assert!(c.is_ok(), "{c:?}");
        assert!(!c.unwrap().feature_gates.vm_ip_retain);
        let c = Cli::try_parse_from(["x", "--feature-gates=MultiCluster=false,VMIPRetain=true"])
            .unwrap();
        assert!(c.feature_gates.vm_ip_retain);
        let c = Cli::try_parse_from(["x", "--feature-gates=MultiCluster=true,VMIPRetain=true"])
            .unwrap();
        assert!(c.feature_gates.multi_cluster && c.feature_gates.vm_ip_retain);
    }

    #[test]
    fn flag_defaults_are_the_documented_ones() {
        // Only meaningful when the environment does not set them (it never does under cargo test).
        if std::env::var_os(env::DEFAULT_NETWORK_TYPE).is_some()
            || std::env::var_os(env::DEFAULT_IP_FAMILY).is_some()
        {
            panic!("unset DEFAULT_NETWORK_TYPE / DEFAULT_IP_FAMILY to run this test");
        }
        let c = Cli::try_parse_from(["x", "--identity", "i"])
            .unwrap()
            .control_plane_config()
            .unwrap();
        assert_eq!(c.defaults, PodDefaults::default());
        assert_eq!(c.defaults.network_type, NetworkType::Overlay);
        for (value, want) in [
            ("", NetworkType::Overlay),
            (" ", NetworkType::Overlay),
            ("UNDERLAY", NetworkType::Underlay),
            ("globalbgp", NetworkType::GlobalBgp),
        ] {
            let c = Cli::try_parse_from(["x", "--default-network-type", value])
                .unwrap()
                .control_plane_config()
                .unwrap();
            assert_eq!(c.defaults.network_type, want, "{value:?}");
        }
    }

    #[test]
    fn remote_cluster_check_interval_defaults_to_upstreams_and_is_bounded() {
        let period = |args: &[&str]| {
            let mut argv = vec!["x", "--identity", "i"];
            argv.extend(args);
            Cli::try_parse_from(argv).map(|c| {
                c.control_plane_config()
                    .unwrap()
                    .remote_cluster_check_interval
            })
        };
        assert_eq!(
            period(&[]).unwrap(),
            hybridnet_operator::controlplane::controllers::remotecluster::CHECK_PERIOD
        );
        assert_eq!(
            period(&["--remote-cluster-check-interval-seconds=5"]).unwrap(),
            Duration::from_secs(5)
        );
        for bad in ["0", "3601", "-1", "5s", ""] {
            let arg = format!("--remote-cluster-check-interval-seconds={bad}");
            assert!(period(&[&arg]).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn flags_parse_and_reject_hostile_values() {
        let cli = Cli::try_parse_from([
            "hybridnet-operator",
            "--default-network-type",
            "overlay",
            "--default-ip-family",
            "dualstack",
            "--default-ip-retain",
            "false",
            "--stateful-workload-kinds",
            "StatefulSet,AdvancedStatefulSet",
            "--controller-concurrency",
            "Pod=20,Default=3",
            "--identity",
            "me",
        ])
        .unwrap();
        let c = cli.control_plane_config().unwrap();
        assert_eq!(c.defaults.network_type, NetworkType::Overlay);
        assert_eq!(c.defaults.ip_family, IpFamily::DualStack);
        assert!(!c.defaults.ip_retain);
        assert!(c.defaults.is_stateful_kind("AdvancedStatefulSet"));
        assert_eq!((c.pod_concurrency, c.concurrency), (20, 3));
        assert!(c.pod_selector.is_everything());
        assert_eq!(cli.rollout_progress_deadline_seconds, 600);
        let c = Cli::try_parse_from([
            "x",
            "--pod-label-selector",
            "hybridnet in (yes, true), !legacy",
            "--identity",
            "i",
        ])
        .unwrap()
        .control_plane_config()
        .unwrap();
        assert_eq!(
            c.pod_selector.to_string(),
            "hybridnet in (true,yes),!legacy"
        );
        let e = Cli::try_parse_from(["x", "--pod-label-selector", "app=web;rm"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("label selector") && e.contains("not allowed"),
            "{e}"
        );
        for bad in [
            vec!["--default-network-type", "Bridge"],
            vec!["--default-ip-family", "IPv5"],
            vec!["--controller-concurrency", "Pod=0"],
            vec!["--controller-concurrency", "Pod=abc"],
            vec!["--controller-concurrency", "Pod"],
            vec!["--default-ip-retain", "maybe"],
            vec!["--metrics-port", "70000"],
            vec!["--rollout-progress-deadline-seconds", "0"],
            vec!["--rollout-progress-deadline-seconds", "604801"],
            vec!["--rollout-progress-deadline-seconds", "-5"],
            vec!["--rollout-progress-deadline-seconds", "10m"],
            vec!["--pod-label-selector", "a in ("],
            vec!["--pod-label-selector", "a>1"],
            vec!["--pod-label-selector", "a=b,"],
            vec!["--pod-label-selector", "A_/b=c"],
        ] {
            let mut args = vec!["hybridnet-operator"];
            args.extend(bad.iter().copied());
            assert!(Cli::try_parse_from(&args).is_err(), "{bad:?} accepted");
        }
        let cli = Cli::try_parse_from([
            "x",
            "--stateful-workload-kinds",
            "StatefulSet,,X",
            "--identity",
            "i",
        ])
        .unwrap();
        assert!(cli.control_plane_config().is_err());
    }
}
