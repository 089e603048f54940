//! Command-line flags of `hybridnet-node` (names follow the original daemon where they exist).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use hybridnet_api::constants::agent_shutdown;
use hybridnet_api::ipmath::Cidr;

use crate::plan::{PlanConfig, TableConfig};

/// Default of `--resync-seconds`: a reconcile at least this often without any event.
pub const DEFAULT_RESYNC_SECONDS: u64 = 30;

/// Every this many periodic resyncs (5 minutes with the default interval) the reconcile is a full
/// one: the safety net for a missed watch event or netlink notification.
pub const FULL_RESYNC_EVERY: u32 = 10;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "hybridnet-node",
    version,
    about = "hybridnet node agent: programs the node data plane and serves the CNI plugin"
)]
pub struct AgentConfig {
    /// This node's name.
    #[arg(long, env = "KUBE_NODE_NAME")]
    pub node_name: String,

    /// kubeconfig file (default: in-cluster config or $KUBECONFIG).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// VLAN parent interfaces, first existing wins (default: interface of the default route).
    #[arg(long, value_delimiter = ',')]
    pub prefer_vlan_interfaces: Vec<String>,
    /// Deprecated fallback for --prefer-vlan-interfaces.
    #[arg(long, value_delimiter = ',', hide = true)]
    pub prefer_interfaces: Vec<String>,
    /// VXLAN parent interfaces, first existing wins.
    #[arg(long, value_delimiter = ',')]
    pub prefer_vxlan_interfaces: Vec<String>,
    /// BGP peering interfaces, first existing wins.
    #[arg(long, value_delimiter = ',')]
    pub prefer_bgp_interfaces: Vec<String>,

    /// UDP port of the VXLAN device.
    #[arg(long, default_value_t = 8472, value_parser = clap::value_parser!(u16).range(1..))]
    pub vxlan_udp_port: u16,
    /// The VTEP address must be inside one of these CIDRs.
    #[arg(long, value_delimiter = ',', default_value = "0.0.0.0/0,::/0")]
    pub vtep_address_cidrs: Vec<String>,
    /// Node addresses inside these CIDRs are published as node-local VXLAN IPs too.
    #[arg(long, value_delimiter = ',')]
    pub extra_node_local_vxlan_ip_cidrs: Vec<String>,

    /// Table of the routes to local pods.
    #[arg(long, default_value_t = 39999)]
    pub local_direct_table: u32,
    /// Table of the routes to overlay subnets.
    #[arg(long, default_value_t = 40000)]
    pub to_overlay_table: u32,
    /// Table of marked pod -> node replies.
    #[arg(long, default_value_t = 40001)]
    pub overlay_mark_table: u32,
    /// Priority of the first hybridnet rule; the others follow at +1, +2, +3.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..32000))]
    pub rule_priority_base: u32,

    /// Unix socket the CNI plugin talks to.
    #[arg(long, default_value = "/run/cni/hybridnet.sock")]
    pub bind_socket: PathBuf,
    /// Port of /healthz and /readyz (0 disables).
    #[arg(long, default_value_t = 11021)]
    pub health_port: u16,
    /// Port of /metrics (0 disables; equal to --health-port serves both on one listener).
    #[arg(long, default_value_t = 8091)]
    pub metrics_port: u16,
    /// Address the health and metrics listeners bind to.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: std::net::IpAddr,

    /// Seconds between periodic resyncs (events trigger earlier reconciles); every
    /// [`FULL_RESYNC_EVERY`]th is a full one that reads the host, plans from scratch and dumps and
    /// diffs all kernel state (docs/operations.md, "Resync").
    #[arg(long, default_value_t = DEFAULT_RESYNC_SECONDS, value_parser = clap::value_parser!(u64).range(1..86400))]
    pub resync_seconds: u64,
    /// The nft binary.
    #[arg(long, default_value = "nft")]
    pub nft_binary: String,

    /// Directory the CNI plugin binary is installed into.
    #[arg(long, default_value = "/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// Directory the conflist is written to.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// File name of the conflist.
    #[arg(long, default_value = "06-hybridnet.conflist")]
    pub cni_conflist_name: String,
    /// The plugin binary to install (e.g. /hybridnet/bin/hybridnet); unset: do not install the
    /// binary (the conflist is still written unless --skip-cni-install).
    #[arg(long)]
    pub cni_source_binary: Option<PathBuf>,
    /// Do not install anything into the CNI directories.
    #[arg(long)]
    pub skip_cni_install: bool,

    /// How long CNI ADD waits for the gateway of a VLAN pod's subnet to answer ARP/NDP (Go-style
    /// duration: `3s`, `500ms`, `1m`; `0` disables the VLAN checks).
    #[arg(long, default_value = "3s", value_parser = parse_vlan_check_timeout)]
    pub vlan_check_timeout: Duration,
    /// Keep one local pod address (noprefixroute, scope link, no local routes) on each VLAN
    /// interface per IPv4 subnet with local pods, so ARP from the node has a sender inside the
    /// subnet (`--enable-vlan-arp-enhancement=false` removes them).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_vlan_arp_enhancement: bool,
    /// After ADD, ping the pod from the node (each family the node has a global address of) and
    /// fail the ADD when it does not answer within 5 s.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub check_pod_connectivity_from_host: bool,
    /// After ADD, write the pod's IPInstances' status (node, pod, namespace, sandbox id, time) as
    /// upstream's daemon does (its flag of the same name); `false` leaves the status alone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub update_ipinstance_status: bool,

    /// Log as JSON lines (one object per event: timestamp, level, target, fields), as the
    /// operator's `--log-json`.
    #[arg(long)]
    pub log_json: bool,

    /// On SIGTERM: how long CNI requests in flight may take to finish (new ones are refused with
    /// CNI code 11, "try again later"); at most 25, so the DaemonSet's
    /// terminationGracePeriodSeconds (30) leaves room to exit.
    #[arg(long, default_value_t = agent_shutdown::DRAIN_GRACE_SECONDS, value_parser = parse_shutdown_grace)]
    pub shutdown_grace_seconds: u64,

    /// Remove what the upstream (Go) hybridnet daemon left on this node (its iptables chains and
    /// ipsets, see docs/migration.md) once the data plane is programmed; the rest is published
    /// in the NodeInfo either way. `false` only reports.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub remove_upstream_leftovers: bool,
    /// Upstream's `--feature-gates` (its chart passes `MultiCluster=<b>` to the daemon): accepted
    /// so upstream's command lines work. Both gates are the control plane's: the agent programs
    /// the RemoteSubnets and RemoteVteps there are (none while `MultiCluster` is off), and
    /// `VMIPRetain` changes nothing on a node.
    #[arg(long, default_value = "", value_parser = parse_feature_gates)]
    pub feature_gates: String,
    /// At start, check in a throwaway network namespace that the kernel has VXLAN, policy
    /// routing and nftables inet NAT, and refuse to run naming what is missing.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub check_kernel: bool,
    /// Also remove the state of upstream's felix policy container (`cali-*` chains and
    /// `cali40`/`cali60` ipsets): only once felix no longer runs anywhere on the node.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub remove_felix_leftovers: bool,
}

/// `--shutdown-grace-seconds`: 1 to the DaemonSet's termination grace period minus 5 s.
fn parse_shutdown_grace(s: &str) -> Result<u64, String> {
    let max = agent_shutdown::TERMINATION_GRACE_PERIOD_SECONDS - 5;
    match s.trim().parse::<i64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n.unsigned_abs()),
        _ => Err(format!(
            "{s:?}: want whole seconds from 1 to {max} (the DaemonSet's terminationGracePeriodSeconds is {} and the agent needs time to exit after the drain)",
            agent_shutdown::TERMINATION_GRACE_PERIOD_SECONDS
        )),
    }
}

/// `--feature-gates`: upstream's gates, checked by `hybridnet_api::migration::parse_feature_gates`.
fn parse_feature_gates(s: &str) -> Result<String, String> {
    hybridnet_api::migration::parse_feature_gates(s).map(|_| s.to_string())
}

/// `--vlan-check-timeout`: a duration of at most 30 s. ADD waits that long for a silent gateway,
/// and the plugin gives the whole ADD 60 s by default (IPInstance wait and ping included).
fn parse_vlan_check_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > Duration::from_secs(30) {
        return Err(format!(
            "{s:?} is longer than 30s (the CNI plugin waits 60 s for the whole ADD)"
        ));
    }
    Ok(d)
}

/// Parses a Go-style duration as upstream's flags take them: a sequence of `<number><unit>` with
/// units `ms`, `s`, `m`, `h` (`1m30s`, `1.5s`), or a bare `0`. At most one hour.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err("empty duration (e.g. 3s, 500ms)".into());
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{s:?}: number without unit (e.g. 3s, 500ms)"))?;
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("{s:?}: {num:?} is not a number"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("{s:?}: unknown unit {other:?} (ms, s, m, h)")),
        };
        total += value * scale;
        rest = next;
    }
    if !total.is_finite() || total > 3600.0 {
        return Err(format!("{s:?}: longer than 1h"));
    }
    Ok(Duration::from_secs_f64(total))
}

impl AgentConfig {
    pub fn resync(&self) -> Duration {
        Duration::from_secs(self.resync_seconds)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }

    pub fn tables(&self) -> Result<TableConfig, String> {
        let t = TableConfig {
            local_direct: self.local_direct_table,
            to_overlay: self.to_overlay_table,
            overlay_mark: self.overlay_mark_table,
            priority_base: self.rule_priority_base,
            ..TableConfig::default()
        };
        let fixed = [t.local_direct, t.to_overlay, t.overlay_mark];
        if fixed[0] == fixed[1] || fixed[1] == fixed[2] || fixed[0] == fixed[2] {
            return Err(format!(
                "--local-direct-table, --to-overlay-table and --overlay-mark-table must differ (got {fixed:?})"
            ));
        }
        for (flag, v) in [
            ("--local-direct-table", t.local_direct),
            ("--to-overlay-table", t.to_overlay),
            ("--overlay-mark-table", t.overlay_mark),
        ] {
            // 0 unspec, 253 default, 254 main, 255 local belong to the kernel.
            if v == 0 || (253..=255).contains(&v) {
                return Err(format!("{flag}={v} is a kernel table"));
            }
        }
        Ok(t)
    }

    pub fn plan_config(&self) -> Result<PlanConfig, String> {
        let cidrs = |flag: &str, v: &[String]| -> Result<Vec<Cidr>, String> {
            v.iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| Cidr::parse_canonical(s.trim()).map_err(|e| format!("{flag}: {e}")))
                .collect()
        };
        let names = |flag: &str, v: &[String]| -> Result<Vec<String>, String> {
            v.iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(|s| {
                    if s.len() > 15 || s.contains(['/', ' ', '\0']) || s == "." || s == ".." {
                        Err(format!("{flag}: {s:?} is not an interface name"))
                    } else {
                        Ok(s.to_string())
                    }
                })
                .collect()
        };
        let mut vlan = names("--prefer-vlan-interfaces", &self.prefer_vlan_interfaces)?;
        if vlan.is_empty() {
            vlan = names("--prefer-interfaces", &self.prefer_interfaces)?;
        }
        if self.node_name.trim().is_empty() {
            return Err("--node-name (KUBE_NODE_NAME) is empty".into());
        }
        Ok(PlanConfig {
            prefer_vlan_interfaces: vlan,
            prefer_vxlan_interfaces: names(
                "--prefer-vxlan-interfaces",
                &self.prefer_vxlan_interfaces,
            )?,
            prefer_bgp_interfaces: names("--prefer-bgp-interfaces", &self.prefer_bgp_interfaces)?,
            vxlan_udp_port: self.vxlan_udp_port,
            vtep_address_cidrs: cidrs("--vtep-address-cidrs", &self.vtep_address_cidrs)?,
            extra_node_local_vxlan_ip_cidrs: cidrs(
                "--extra-node-local-vxlan-ip-cidrs",
                &self.extra_node_local_vxlan_ip_cidrs,
            )?,
            tables: self.tables()?,
            vlan_arp_enhancement: self.enable_vlan_arp_enhancement,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<AgentConfig, clap::Error> {
        let mut v = vec!["hybridnet-node", "--node-name", "n1"];
        v.extend_from_slice(args);
        AgentConfig::try_parse_from(v)
    }

    #[test]
    fn defaults_mirror_upstream() {
        let c = parse(&[]).unwrap();
        let p = c.plan_config().unwrap();
        assert_eq!(p.vxlan_udp_port, 8472);
        assert_eq!(p.tables, TableConfig::default());
        assert_eq!(p.vtep_address_cidrs.len(), 2);
        assert_eq!(c.cni_conflist_name, "06-hybridnet.conflist");
        assert_eq!(c.health_port, 11021);
        assert_eq!(c.vlan_check_timeout, Duration::from_secs(3));
        assert!(c.enable_vlan_arp_enhancement && p.vlan_arp_enhancement);
        let off = parse(&["--enable-vlan-arp-enhancement=false"]).unwrap();
        assert!(!off.plan_config().unwrap().vlan_arp_enhancement);
        assert!(parse(&["--enable-vlan-arp-enhancement=maybe"]).is_err());
        assert!(c.check_pod_connectivity_from_host);
        assert!(
            !parse(&["--check-pod-connectivity-from-host", "false"])
                .unwrap()
                .check_pod_connectivity_from_host
        );
    }

    #[test]
    fn upstream_feature_gates_flag() {
        assert!(parse(&["--feature-gates=MultiCluster=false"]).is_ok());
        assert!(parse(&["--feature-gates=MultiCluster=true"]).is_ok());
        assert!(parse(&["--feature-gates=Bogus=false"]).is_err());
        assert!(parse(&["--feature-gates=MultiCluster=false,VMIPRetain=true"]).is_ok());
    }

    /// The flags the operator renders from HybridnetCluster's upstream Helm settings
    /// (operator/src/lifecycle/render.rs, `node_agent_args`), exactly as it spells them.
    #[test]
    fn operator_rendered_upstream_settings_parse() {
        let c = parse(&[
            "--update-ipinstance-status=false",
            "--remove-upstream-leftovers=false",
            "--remove-felix-leftovers=true",
            "--vtep-address-cidrs=192.168.0.0/16,fd00::/8",
        ])
        .unwrap();
        assert!(!c.update_ipinstance_status && !c.remove_upstream_leftovers);
        assert!(c.remove_felix_leftovers);
        let p = c.plan_config().unwrap();
        assert_eq!(
            p.vtep_address_cidrs,
            vec![
                Cidr::parse_canonical("192.168.0.0/16").unwrap(),
                Cidr::parse_canonical("fd00::/8").unwrap()
            ]
        );
        let d = parse(&[]).unwrap();
        assert!(d.update_ipinstance_status && d.remove_upstream_leftovers);
        assert!(!d.remove_felix_leftovers);
        assert!(
            parse(&["--vtep-address-cidrs=10.0.0.1/8"])
                .unwrap()
                .plan_config()
                .is_err()
        );
    }

    #[test]
    fn shutdown_grace_fits_the_daemonsets_termination_grace() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.shutdown_grace(), Duration::from_secs(20));
        assert_eq!(
            parse(&["--shutdown-grace-seconds", "25"])
                .unwrap()
                .shutdown_grace_seconds,
            25
        );
        for bad in ["0", "26", "-1", "1e3", "", "20s", "99999999999999999999"] {
            let e = parse(&[&format!("--shutdown-grace-seconds={bad}")])
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"))
                .to_string();
            assert!(e.contains("terminationGracePeriodSeconds is 30"), "{e}");
        }
    }

    #[test]
    fn durations_parse_like_go() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("3s"), Duration::from_secs(3));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        for bad in [
            "", "3", "s", "3x", "-1s", "1..2s", "2h", "1e3s", "3 s", "NaNs",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse(&["--vlan-check-timeout", "soon"]).is_err());
        let e = parse(&["--vlan-check-timeout", "31s"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("longer than 30s"), "{e}");
        assert!(parse(&["--vlan-check-timeout", "30s"]).is_ok());
        assert!(parse(&["--vlan-check-timeout", "0"]).is_ok());
        let c = parse(&["--vlan-check-timeout", "250ms"]).unwrap();
        assert_eq!(c.vlan_check_timeout, Duration::from_millis(250));
    }

    #[test]
    fn lists_and_fallbacks() {
        let c = parse(&[
            "--prefer-interfaces",
            "eth1,eth2",
            "--prefer-vxlan-interfaces",
            " eth3 ,",
        ])
        .unwrap();
        let p = c.plan_config().unwrap();
        assert_eq!(p.prefer_vlan_interfaces, ["eth1", "eth2"]);
        assert_eq!(p.prefer_vxlan_interfaces, ["eth3"]);
    }

    #[test]
    fn hostile_flags_are_refused_with_the_flag_named() {
        assert!(parse(&["--vxlan-udp-port", "0"]).is_err());
        assert!(parse(&["--vxlan-udp-port", "70000"]).is_err());
        assert!(parse(&["--rule-priority-base", "40000"]).is_err());
        assert!(parse(&["--resync-seconds", "0"]).is_err());
        let e = parse(&["--vtep-address-cidrs", "10.0.0.1/8"])
            .unwrap()
            .plan_config()
            .unwrap_err();
        assert!(
            e.contains("--vtep-address-cidrs") && e.contains("canonical"),
            "{e}"
        );
        let e = parse(&["--prefer-vlan-interfaces", "../../etc"])
            .unwrap()
            .plan_config()
            .unwrap_err();
        assert!(e.contains("not an interface name"), "{e}");
        let e = parse(&["--prefer-bgp-interfaces", "averyveryverylongname"])
            .unwrap()
            .plan_config()
            .unwrap_err();
        assert!(e.contains("--prefer-bgp-interfaces"), "{e}");
        let e = parse(&["--to-overlay-table", "39999"])
            .unwrap()
            .plan_config()
            .unwrap_err();
        assert!(e.contains("must differ"), "{e}");
        let e = parse(&["--local-direct-table", "254"])
            .unwrap()
            .plan_config()
            .unwrap_err();
        assert!(e.contains("kernel table"), "{e}");
        assert!(
            AgentConfig::try_parse_from(["hybridnet-node"]).is_err()
                || std::env::var("KUBE_NODE_NAME").is_ok()
        );
        let e = parse(&[]).map(|mut c| {
            c.node_name = " ".into();
            c.plan_config().unwrap_err()
        });
        assert!(e.unwrap().contains("--node-name"));
    }
}
