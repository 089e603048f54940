//! What belongs to an upstream (Go) hybridnet install, and the wire form in which node agents
//! publish the upstream leftovers of their node. One place for the names the node agent, the
//! operator and `kubectl hybridnet migrate check` share (docs/migration.md explains the switch).
//!
//! Names come from upstream's chart `charts/hybridnet/templates/` (workloads, webhook
//! configurations) and `cmd/manager/main.go` (leader election) at v0.8.x.

/// Namespace of upstream's Helm install.
pub const UPSTREAM_NAMESPACE: &str = "kube-system";
/// Upstream's IPAM manager Deployment.
pub const UPSTREAM_MANAGER: &str = "hybridnet-manager";
/// Upstream's webhook Deployment.
pub const UPSTREAM_WEBHOOK: &str = "hybridnet-webhook";
/// Upstream's node DaemonSet (daemon + optional felix container).
pub const UPSTREAM_DAEMON: &str = "hybridnet-daemon";
/// Upstream's admission configurations (cluster-scoped; ours take the same names).
pub const UPSTREAM_WEBHOOK_CONFIGS: [&str; 2] =
    ["hybridnet-validating-webhook", "hybridnet-mutating-webhook"];
/// The Service upstream's webhook configurations call (in [`UPSTREAM_NAMESPACE`]).
pub const UPSTREAM_WEBHOOK_SERVICE: &str = "hybridnet-webhook";
/// Upstream's leader-election lock (`LeaderElectionID`; a Lease, plus a ConfigMap of the same
/// name with controller-runtime's `configmapsleases` lock), in [`UPSTREAM_NAMESPACE`].
pub const UPSTREAM_LEADER_LEASE: &str = "hybridnet-manager-election";
/// The conflist upstream's `install-cni` writes into `/etc/cni/net.d` (it sorts before ours).
pub const UPSTREAM_CONFLIST: &str = "00-hybridnet.conflist";

/// Upstream's feature gates, as its chart passes them (`--feature-gates=MultiCluster=<b>,VMIPRetain=<b>`
/// to the manager and the webhook, `--feature-gates=MultiCluster=<b>` to the daemon; see
/// charts/hybridnet/templates/deployments.yaml and daemonsets.yaml; the gates are defined in
/// upstream's `pkg/feature/feature.go`). Both are off upstream by default.
pub const UPSTREAM_FEATURE_GATES: [&str; 2] = ["MultiCluster", "VMIPRetain"];

/// The feature gates a `--feature-gates` value switches on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeatureGates {
    /// `MultiCluster`: RemoteCluster checks, mirrors and their data plane
    /// (docs/multicluster.md). Only the control plane acts on it: the node agent programs the
    /// mirrors there are, and there are none while it is off.
    pub multi_cluster: bool,
    /// `VMIPRetain`: pods of a KubeVirt VirtualMachine keep their addresses across VM restarts
    /// (docs/api.md, "KubeVirt VMs"). Only the control plane acts on it.
    pub vm_ip_retain: bool,
}

/// Parses `--feature-gates` as upstream's binaries take it (`Name=bool` pairs, comma separated,
/// Go's `strconv.ParseBool` spellings; a later pair for the same gate wins, as upstream's
/// `featuregate.Set`) and refuses a gate that is unknown, naming it.
pub fn parse_feature_gates(v: &str) -> Result<FeatureGates, String> {
    let mut gates = FeatureGates::default();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let shown: String = part.chars().take(64).collect();
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{shown:?}: want Name=true|false"))?;
        let on = match value.trim() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
            "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
            _ => {
                return Err(format!(
                    "{shown:?}: {:?} is not a boolean",
                    value.chars().take(32).collect::<String>()
                ));
            }
        };
        match name.trim() {
            "VMIPRetain" => gates.vm_ip_retain = on,
            "MultiCluster" => gates.multi_cluster = on,
            name => {
                return Err(format!(
                    "unrecognized feature gate {:?} (known: {})",
                    name.chars().take(64).collect::<String>(),
                    UPSTREAM_FEATURE_GATES.join(", ")
                ));
            }
        }
    }
    Ok(gates)
}

/// NodeInfo annotation in which a node agent publishes what of upstream's daemon is still on its
/// node: a JSON array of strings, `[]` once nothing is left. Absent: no agent of ours has looked
/// at the node yet.
pub const NODE_LEFTOVERS_ANNOTATION: &str = crate::constants::annotation::NODE_UPSTREAM_LEFTOVERS;

/// At most this many entries are published (the rest is summarised in one last entry).
pub const MAX_LEFTOVERS: usize = 200;
/// Longest entry accepted.
const MAX_ENTRY_CHARS: usize = 512;

/// A malformed leftovers annotation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {NODE_LEFTOVERS_ANNOTATION}: {0}")]
pub struct LeftoversError(String);

/// The upstream leftovers one node agent found on its node, one human-readable entry each (for
/// example `iptables-legacy IPv4 nat chain HYBRIDNET-POSTROUTING`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeLeftovers(pub Vec<String>);

impl NodeLeftovers {
    /// The annotation value; more than [`MAX_LEFTOVERS`] entries are cut with a count.
    pub fn to_annotation(&self) -> String {
        let mut v: Vec<String> = self
            .0
            .iter()
            .map(|s| s.chars().take(MAX_ENTRY_CHARS).collect())
            .collect();
        if v.len() > MAX_LEFTOVERS {
            let rest = v.len() - (MAX_LEFTOVERS - 1);
            v.truncate(MAX_LEFTOVERS - 1);
            v.push(format!("... and {rest} more"));
        }
        // A list of strings always serializes.
        serde_json::to_string(&v).unwrap_or_else(|_| "[]".to_string())
    }

    pub fn parse_annotation(value: &str) -> Result<Self, LeftoversError> {
        let v: Vec<String> = serde_json::from_str(value)
            .map_err(|e| LeftoversError(format!("not a JSON array of strings: {e}")))?;
        if v.len() > MAX_LEFTOVERS {
            return Err(LeftoversError(format!(
                "{} entries (at most {MAX_LEFTOVERS})",
                v.len()
            )));
        }
        if let Some(long) = v.iter().find(|s| s.chars().count() > MAX_ENTRY_CHARS) {
            return Err(LeftoversError(format!(
                "an entry is longer than {MAX_ENTRY_CHARS} characters: {:?}...",
                long.chars().take(40).collect::<String>()
            )));
        }
        Ok(Self(v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_feature_gates() {
        let off = FeatureGates::default();
        let vm = FeatureGates {
            vm_ip_retain: true,
            ..off
        };
        let mc = FeatureGates {
            multi_cluster: true,
            ..off
        };
        for (ok, want) in [
            ("", off),
            ("MultiCluster=false", off),
            ("MultiCluster=false,VMIPRetain=false", off),
            (" VMIPRetain = F , MultiCluster=0 ", off),
            ("MultiCluster=false,VMIPRetain=true", vm),
            ("VMIPRetain=1", vm),
            ("VMIPRetain=true,VMIPRetain=false", off),
            ("MultiCluster=true", mc),
            ("MultiCluster=true,MultiCluster=false", off),
            (
                "VMIPRetain=true,MultiCluster=true",
                FeatureGates {
                    multi_cluster: true,
                    vm_ip_retain: true,
                },
            ),
        ] {
            assert_eq!(parse_feature_gates(ok), Ok(want), "{ok:?}");
        }
        for (bad, said) in [
            ("DualStack=false", "unrecognized feature gate \"DualStack\""),
            ("MultiCluster", "want Name=true|false"),
            ("VMIPRetain=yes", "is not a boolean"),
            ("multicluster=false", "unrecognized feature gate"),
            ("vmipretain=true", "unrecognized feature gate"),
        ] {
            let e = parse_feature_gates(bad).unwrap_err();
            assert!(e.contains(said), "{bad:?}: {e}");
        }
        let e = parse_feature_gates(&format!("{}=false", "A".repeat(100_000))).unwrap_err();
        assert!(e.len() < 300, "{}", e.len());
    }

    #[test]
    fn round_trips_and_is_an_array() {
        let l = NodeLeftovers(vec![
            "iptables-nft IPv6 mangle chain HYBRIDNET-PREROUTING".into(),
            "ipset inet6:HYBR-ALL".into(),
        ]);
        let a = l.to_annotation();
        assert!(a.starts_with("[\"iptables-nft"), "{a}");
        assert_eq!(NodeLeftovers::parse_annotation(&a).unwrap(), l);
        assert_eq!(NodeLeftovers::default().to_annotation(), "[]");
        assert!(NodeLeftovers::parse_annotation("[]").unwrap().is_empty());
    }

    #[test]
    fn too_many_entries_are_summarised_and_still_parse() {
        let l = NodeLeftovers((0..500).map(|i| format!("ipset X{i}")).collect());
        let back = NodeLeftovers::parse_annotation(&l.to_annotation()).unwrap();
        assert_eq!(back.0.len(), MAX_LEFTOVERS);
        assert_eq!(back.0.last().unwrap(), "... and 301 more");
        assert_eq!(back.0[0], "ipset X0");
    }

    #[test]
    fn malformed_and_hostile_values_are_rejected_naming_the_annotation() {
        let huge = format!("[\"{}\"]", "x".repeat(MAX_ENTRY_CHARS + 1));
        let many = serde_json::to_string(&vec!["a"; MAX_LEFTOVERS + 1]).unwrap();
        for (value, why) in [
            ("", "not a JSON array"),
            ("{}", "not a JSON array"),
            ("[1]", "not a JSON array"),
            ("[null]", "not a JSON array"),
            ("\"x\"", "not a JSON array"),
            (huge.as_str(), "longer than"),
            (many.as_str(), "entries (at most"),
        ] {
            let e = NodeLeftovers::parse_annotation(value)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("annotation {NODE_LEFTOVERS_ANNOTATION}: ")),
                "{e}"
            );
            assert!(e.contains(why), "{value}: {e}");
        }
    }
}
