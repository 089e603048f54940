//! `ip check`: consistency of addresses, pods and subnets, over plain lists.
//!
//! Findings:
//! - leaked IPInstance: as `hybridnet_api::leak::classify` judges, the rule the operator's leak
//!   repair applies too (pod gone or recreated and not retained for a stateful workload that still
//!   exists; reserved without a stateful owner; reserved for a workload that is gone);
//! - pod without address: a Running pod, not hostNetwork, with no IPInstance bound to it or
//!   naming it as a KubeVirt live migration's target (`hybridnet_api::leak::serves_pod`);
//! - duplicate: one IP claimed by IPInstances or pods of different owners;
//! - outside subnet: an IPInstance whose subnet is missing, whose address is outside the subnet's
//!   range (or is its gateway / an excluded address), or whose name or network disagree.
//!
//! Only leaked IPInstances are repaired (deleted: the operator then frees the address).
//! IPInstances already being deleted are being released and are not judged.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hybridnet_api::ipmath::ip_to_u128;
use hybridnet_api::leak::{
    BindingFacts, Leak, OwnerState, PodLookup, Verdict, classify, serves_pod,
};
use hybridnet_api::naming::ip_to_instance_name;
use hybridnet_api::range::{ParsedRange, parse_address_range};
use hybridnet_api::v1::Subnet;
use serde::Serialize;

use crate::inventory::{InstanceFacts, PodFacts};
use crate::output::TextCell;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    Leaked,
    PodWithoutAddress,
    Duplicate,
    OutsideSubnet,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Leaked => "leaked",
            Self::PodWithoutAddress => "pod-without-address",
            Self::Duplicate => "duplicate",
            Self::OutsideSubnet => "outside-subnet",
        }
    }
}

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub kind: FindingKind,
    /// `ipinstance/<ns>/<name>` or `pod/<ns>/<name>`.
    pub object: String,
    pub ip: Option<String>,
    pub detail: String,
    /// `--fix` repairs it (deletes the IPInstance).
    pub fixable: bool,
}

/// A subnet as the check needs it.
#[derive(Debug, Clone)]
pub struct SubnetFacts {
    pub network: String,
    /// The parsed range, or why it does not parse.
    pub range: Result<ParsedRange, String>,
}

impl SubnetFacts {
    /// The facts of each subnet, by name; a range that does not parse is kept as its error.
    pub fn by_name(subnets: &[Subnet]) -> BTreeMap<String, SubnetFacts> {
        subnets
            .iter()
            .map(|s| {
                (
                    s.metadata.name.clone().unwrap_or_default(),
                    SubnetFacts {
                        network: s.spec.network.clone(),
                        range: parse_address_range(&s.spec.range, "spec.range")
                            .map_err(|e| e.to_string()),
                    },
                )
            })
            .collect()
    }
}

/// Everything the check looks at.
#[derive(Debug, Clone, Default)]
pub struct CheckInput {
    pub instances: Vec<InstanceFacts>,
    pub pods: Vec<PodFacts>,
    /// StatefulSets that exist: (namespace, name) -> uid.
    pub statefulsets: BTreeMap<(String, String), Option<String>>,
    pub subnets: BTreeMap<String, SubnetFacts>,
    /// Owner kinds whose addresses are retained (normally just `StatefulSet`).
    pub stateful_kinds: Vec<String>,
}

/// The report: findings sorted by kind then object, and the IPInstances `--fix` deletes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub findings: Vec<Finding>,
    /// (namespace, name) of the leaked IPInstances.
    #[serde(skip)]
    pub fixes: Vec<(String, String)>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    pub fn count(&self, kind: FindingKind) -> usize {
        self.findings.iter().filter(|f| f.kind == kind).count()
    }
}

fn stateful_owner_state(input: &CheckInput, f: &InstanceFacts) -> Option<OwnerState> {
    let o = f.owner.as_ref()?;
    if !input.stateful_kinds.contains(&o.kind) {
        return None;
    }
    // Only StatefulSets are listed.
    if o.kind != "StatefulSet" {
        return Some(OwnerState::Unknown);
    }
    Some(
        match input
            .statefulsets
            .get(&(f.namespace.clone(), o.name.clone()))
        {
            Some(uid) if o.uid.is_none() || uid.is_none() || *uid == o.uid => OwnerState::Exists,
            _ => OwnerState::Gone,
        },
    )
}

/// The rule's view of an IPInstance's binding.
fn binding(f: &InstanceFacts) -> BindingFacts<'_> {
    BindingFacts {
        reserved: f.is_reserved(),
        pod_name: f.pod.as_deref(),
        pod_uid: f.pod_uid.as_deref(),
        owner_kind: f
            .owner
            .as_ref()
            .map(|o| o.kind.as_str())
            .filter(|k| !k.is_empty()),
    }
}

/// Why an IPInstance is leaked (`hybridnet_api::leak::classify`), in words.
fn leak_reason(
    input: &CheckInput,
    pods: &BTreeMap<(&str, &str), &PodFacts>,
    f: &InstanceFacts,
) -> Option<String> {
    let pod = f
        .pod
        .as_deref()
        .and_then(|name| pods.get(&(f.namespace.as_str(), name)));
    let lookup = match pod {
        Some(p) => PodLookup::Exists {
            uid: p.uid.as_deref(),
        },
        None => PodLookup::Gone,
    };
    let Verdict::Leaked(leak) = classify(&binding(f), lookup, stateful_owner_state(input, f))
    else {
        return None;
    };
    let owner_text = f
        .owner
        .as_ref()
        .map(|o| format!("{} {}", o.kind, o.name))
        .unwrap_or_default();
    let pod_name = f.pod.as_deref().unwrap_or("");
    Some(match leak {
        Leak::StatefulOwnerGone if f.is_reserved() => {
            format!("reserved for {owner_text}, which is gone")
        }
        Leak::StatefulOwnerGone if f.pod.is_none() => {
            format!("bound to no pod; {owner_text} is gone")
        }
        Leak::StatefulOwnerGone => {
            format!("pod {pod_name} and its {owner_text} no longer exist")
        }
        Leak::ReservedWithoutStatefulOwner { pod_exists: false } => {
            "reserved, but owned by no stateful workload and its pod is gone".to_string()
        }
        Leak::ReservedWithoutStatefulOwner { pod_exists: true } => format!(
            "reserved, but owned by no stateful workload: nothing binds it to pod {pod_name} again"
        ),
        Leak::NoPod => "bound to node but to no pod".to_string(),
        Leak::PodGone => format!("pod {pod_name} no longer exists"),
        Leak::PodRecreated => format!(
            "pod {pod_name} was recreated (uid {} now, {} here): the address belonged to the old pod",
            pod.and_then(|p| p.uid.as_deref()).unwrap_or(""),
            f.pod_uid.as_deref().unwrap_or("")
        ),
    })
}

fn subnet_problem(input: &CheckInput, f: &InstanceFacts) -> Option<String> {
    let Some(ip) = f.ip else {
        return Some(format!("spec.address.ip {:?} is not an address", f.raw_ip));
    };
    if !f.name.is_empty() && f.name != ip_to_instance_name(ip) {
        return Some(format!(
            "name {} does not match its address {ip} (expected {})",
            f.name,
            ip_to_instance_name(ip)
        ));
    }
    let Some(s) = input.subnets.get(&f.subnet) else {
        return Some(format!("subnet {} does not exist", f.subnet));
    };
    if s.network != f.network {
        return Some(format!(
            "network {} differs from the network {} of subnet {}",
            f.network, s.network, f.subnet
        ));
    }
    let r = match &s.range {
        Ok(r) => r,
        Err(e) => return Some(format!("subnet {} has an invalid range: {e}", f.subnet)),
    };
    if !r.cidr.contains(ip) {
        return Some(format!("{ip} is outside {} of subnet {}", r.cidr, f.subnet));
    }
    if let Some(p) = f.prefix_length
        && p != r.cidr.prefix
    {
        return Some(format!(
            "{} has prefix /{p}, subnet {} is {}",
            f.raw_ip, f.subnet, r.cidr
        ));
    }
    let n = ip_to_u128(ip);
    if r.gateway == Some(n) {
        return Some(format!("{ip} is the gateway of subnet {}", f.subnet));
    }
    if r.excluded.contains(&n) {
        return Some(format!("{ip} is excluded in subnet {}", f.subnet));
    }
    if n < r.start || n > r.end {
        return Some(format!(
            "{ip} is outside {}-{} of subnet {}",
            r.ip(r.start),
            r.ip(r.end),
            f.subnet
        ));
    }
    None
}

/// Runs every check.
pub fn check(input: &CheckInput) -> CheckReport {
    let pods: BTreeMap<(&str, &str), &PodFacts> = input
        .pods
        .iter()
        .map(|p| ((p.namespace.as_str(), p.name.as_str()), p))
        .collect();
    let live: Vec<&InstanceFacts> = input.instances.iter().filter(|f| !f.terminating).collect();
    let mut findings = Vec::new();
    let mut fixes = Vec::new();

    for f in &live {
        if let Some(reason) = leak_reason(input, &pods, f) {
            findings.push(Finding {
                kind: FindingKind::Leaked,
                object: f.object_ref(),
                ip: Some(f.ip_text()),
                detail: reason,
                fixable: true,
            });
            fixes.push((f.namespace.clone(), f.name.clone()));
        }
        if let Some(problem) = subnet_problem(input, f) {
            findings.push(Finding {
                kind: FindingKind::OutsideSubnet,
                object: f.object_ref(),
                ip: Some(f.ip_text()),
                detail: problem,
                fixable: false,
            });
        }
    }

    // Pods bound through an IPInstance (by namespace and pod name, on a node), or named by one
    // as a live migration's target.
    let mut bound: BTreeMap<(&str, &str), Vec<&InstanceFacts>> = BTreeMap::new();
    for f in &live {
        let target = f.migration_peer.as_ref().map(|t| t.pod.as_str());
        for p in f.pod.as_deref().into_iter().chain(target) {
            bound.entry((f.namespace.as_str(), p)).or_default().push(*f);
        }
    }
    for p in &input.pods {
        let has_address = bound
            .get(&(p.namespace.as_str(), p.name.as_str()))
            .is_some_and(|fs| {
                fs.iter().any(|f| {
                    serves_pod(
                        &binding(f),
                        f.migration_peer.as_ref(),
                        &p.name,
                        p.uid.as_deref(),
                    )
                })
            });
        if p.phase == "Running" && !p.host_network && !p.terminating && !has_address {
            findings.push(Finding {
                kind: FindingKind::PodWithoutAddress,
                object: format!("pod/{}/{}", p.namespace, p.name),
                ip: p.ips.first().map(|i| i.to_string()),
                detail: format!(
                    "Running on {} without an IPInstance",
                    p.node.as_deref().unwrap_or("no node")
                ),
                fixable: false,
            });
        }
    }

    // One address, several owners. An IPInstance's owner is its pod (or itself when reserved).
    let mut claims: BTreeMap<IpAddr, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for f in &live {
        let Some(ip) = f.ip else { continue };
        let owner = match (&f.pod, f.is_reserved()) {
            (Some(p), false) => format!("{}/{p}", f.namespace),
            _ => format!("reserved {}", f.object_ref()),
        };
        claims
            .entry(ip)
            .or_default()
            .entry(owner)
            .or_default()
            .push(f.object_ref());
    }
    // A live migration's target pod shares its VM's address with the source pod: that address
    // is the IPInstance's, one owner.
    let shared: std::collections::BTreeSet<(&str, &str, IpAddr)> = live
        .iter()
        .filter_map(|f| Some((f.namespace.as_str(), f.migration_peer.as_ref()?, f.ip?)))
        .map(|(ns, t, ip)| (ns, t.pod.as_str(), ip))
        .collect();
    for p in input
        .pods
        .iter()
        .filter(|p| p.phase == "Running" && !p.host_network && !p.terminating)
    {
        for ip in &p.ips {
            if shared.contains(&(p.namespace.as_str(), p.name.as_str(), *ip)) {
                continue;
            }
            claims
                .entry(*ip)
                .or_default()
                .entry(format!("{}/{}", p.namespace, p.name))
                .or_default()
                .push(format!("pod/{}/{}", p.namespace, p.name));
        }
    }
    for (ip, owners) in claims {
        if owners.len() > 1 {
            let objects: Vec<String> = owners.values().flatten().cloned().collect();
            findings.push(Finding {
                kind: FindingKind::Duplicate,
                object: objects.join(", "),
                ip: Some(ip.to_string()),
                detail: format!("{ip} is claimed by {} owners", owners.len()),
                fixable: false,
            });
        }
    }

    findings.sort_by(|a, b| (a.kind, &a.object).cmp(&(b.kind, &b.object)));
    fixes.sort();
    fixes.dedup();
    CheckReport { findings, fixes }
}

/// The table of `ip check`.
pub fn findings_table(r: &CheckReport) -> (Vec<&'static str>, Vec<Vec<TextCell>>) {
    let header = vec!["PROBLEM", "OBJECT", "IP", "DETAIL", "FIX"];
    let cells = r
        .findings
        .iter()
        .map(|f| {
            vec![
                TextCell::plain(f.kind.as_str()).warned(true),
                f.object.as_str().into(),
                f.ip.as_deref().unwrap_or("-").into(),
                f.detail.as_str().into(),
                (if f.fixable {
                    "--fix deletes it"
                } else {
                    "manual"
                })
                .into(),
            ]
        })
        .collect();
    (header, cells)
}

/// One-line summary, e.g. `2 leaked, 1 duplicate`.
pub fn summary(r: &CheckReport) -> String {
    if r.is_clean() {
        return "no problems found".into();
    }
    [
        FindingKind::Leaked,
        FindingKind::PodWithoutAddress,
        FindingKind::Duplicate,
        FindingKind::OutsideSubnet,
    ]
    .iter()
    .filter_map(|k| {
        let n = r.count(*k);
        (n > 0).then(|| format!("{n} {}", k.as_str()))
    })
    .collect::<Vec<_>>()
    .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::OwnerRef;
    use crate::inventory::testdata::inst;
    use hybridnet_api::v1::{AddressRange, IpVersion};
    use proptest::prelude::*;

    fn pod(ns: &str, name: &str, ip: &str) -> PodFacts {
        PodFacts {
            namespace: ns.into(),
            name: name.into(),
            uid: Some(format!("uid-{name}")),
            phase: "Running".into(),
            host_network: false,
            node: Some("n1".into()),
            ips: vec![ip.parse().unwrap()],
            terminating: false,
            controller: None,
        }
    }

    fn input() -> CheckInput {
        let range = parse_address_range(
            &AddressRange {
                version: IpVersion::V4,
                cidr: "10.0.0.0/24".into(),
                gateway: Some("10.0.0.1".into()),
                exclude_ips: Some(vec!["10.0.0.2".into()]),
                end: Some("10.0.0.200".into()),
                ..Default::default()
            },
            "spec.range",
        );
        CheckInput {
            subnets: [(
                "s1".to_string(),
                SubnetFacts {
                    network: "net".into(),
                    range: range.map_err(|e| e.to_string()),
                },
            )]
            .into(),
            stateful_kinds: vec!["StatefulSet".into()],
            ..Default::default()
        }
    }

    fn sts(mut f: InstanceFacts, name: &str) -> InstanceFacts {
        f.owner = Some(OwnerRef {
            kind: "StatefulSet".into(),
            name: name.into(),
            uid: Some(format!("uid-{name}")),
        });
        f
    }

    #[test]
    fn a_consistent_cluster_is_clean() {
        let mut i = input();
        i.instances = vec![inst("a", "10.0.0.10", "s1", Some("p1"), Some("n1"))];
        i.pods = vec![pod("a", "p1", "10.0.0.10")];
        let r = check(&i);
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(summary(&r), "no problems found");
    }

    #[test]
    fn a_live_migrations_target_pod_shares_the_vms_address_cleanly() {
        let mut i = input();
        let mut f = inst("a", "10.0.0.10", "s1", Some("src"), Some("n1"));
        f.owner = Some(OwnerRef {
            kind: "VirtualMachine".into(),
            name: "vm1".into(),
            uid: Some("uid-vm1".into()),
        });
        f.migration_peer = Some(hybridnet_api::kubevirt::MigrationPeer {
            pod: "dst".into(),
            uid: "uid-dst".into(),
            node: "n2".into(),
        });
        i.instances = vec![f.clone()];
        i.pods = vec![pod("a", "src", "10.0.0.10"), pod("a", "dst", "10.0.0.10")];
        let r = check(&i);
        assert!(r.is_clean(), "{r:#?}");
        // Without the annotation the second pod has no address of its own and a duplicate.
        f.migration_peer = None;
        i.instances = vec![f.clone()];
        let r = check(&i);
        assert_eq!(r.count(FindingKind::PodWithoutAddress), 1, "{r:#?}");
        assert_eq!(r.count(FindingKind::Duplicate), 1, "{r:#?}");
        // The annotation names another incarnation of the pod: not served.
        f.migration_peer = Some(hybridnet_api::kubevirt::MigrationPeer {
            pod: "dst".into(),
            uid: "uid-old".into(),
            node: "n2".into(),
        });
        i.instances = vec![f];
        let r = check(&i);
        assert_eq!(r.count(FindingKind::PodWithoutAddress), 1, "{r:#?}");
    }

    #[test]
    fn leaks() {
        let mut i = input();
        i.statefulsets
            .insert(("a".into(), "web".into()), Some("uid-web".into()));
        let mut recreated = inst("a", "10.0.0.13", "s1", Some("p3"), Some("n1"));
        recreated.pod_uid = Some("old".into());
        let mut releasing = inst("a", "10.0.0.15", "s1", Some("gone2"), Some("n1"));
        releasing.terminating = true;
        i.instances = vec![
            inst("a", "10.0.0.10", "s1", Some("gone"), Some("n1")), // leaked: pod gone
            sts(inst("a", "10.0.0.11", "s1", Some("web-0"), None), "web"), // retained
            sts(inst("a", "10.0.0.12", "s1", Some("db-0"), None), "db"), // leaked: sts gone
            recreated,                                              // leaked: old uid
            sts(
                inst("a", "10.0.0.14", "s1", Some("web-1"), Some("n1")),
                "web",
            ), // pod gone, sts exists: retained
            releasing,                                              // being released
        ];
        i.pods = vec![pod("a", "p3", "10.0.0.99")];
        let r = check(&i);
        let leaked: Vec<&str> = r
            .findings
            .iter()
            .filter(|f| f.kind == FindingKind::Leaked)
            .map(|f| f.ip.as_deref().unwrap())
            .collect();
        assert_eq!(leaked.len(), 3, "{r:#?}");
        for ip in ["10.0.0.10", "10.0.0.12", "10.0.0.13"] {
            assert!(leaked.contains(&ip), "{ip} in {leaked:?}");
        }
        assert_eq!(
            r.fixes,
            vec![
                ("a".into(), "10-0-0-10".into()),
                ("a".into(), "10-0-0-12".into()),
                ("a".into(), "10-0-0-13".into())
            ]
        );
        // p3 is Running but its only IPInstance is the stale one bound to the old uid: it has no
        // address (as the operator's leak repair judges).
        assert_eq!(r.count(FindingKind::PodWithoutAddress), 1);
    }

    #[test]
    fn pods_without_addresses() {
        let mut i = input();
        let mut host = pod("kube-system", "agent", "192.0.2.10");
        host.host_network = true;
        let mut pending = pod("a", "pending", "10.0.0.30");
        pending.phase = "Pending".into();
        i.pods = vec![pod("a", "lonely", "10.0.0.20"), host, pending];
        let r = check(&i);
        assert_eq!(r.count(FindingKind::PodWithoutAddress), 1);
        assert_eq!(r.findings[0].object, "pod/a/lonely");
        assert!(!r.findings[0].fixable);
        assert!(r.fixes.is_empty());
    }

    #[test]
    fn duplicates() {
        let mut i = input();
        i.instances = vec![
            inst("a", "10.0.0.10", "s1", Some("p1"), Some("n1")),
            inst("b", "10.0.0.10", "s1", Some("p2"), Some("n1")),
            inst("a", "10.0.0.11", "s1", Some("p3"), Some("n1")),
        ];
        i.pods = vec![
            pod("a", "p1", "10.0.0.10"),
            pod("b", "p2", "10.0.0.10"),
            pod("a", "p3", "10.0.0.11"),
        ];
        let r = check(&i);
        assert_eq!(r.count(FindingKind::Duplicate), 1, "{r:#?}");
        let d = r
            .findings
            .iter()
            .find(|f| f.kind == FindingKind::Duplicate)
            .unwrap();
        assert_eq!(d.ip.as_deref(), Some("10.0.0.10"));
        assert!(
            d.object.contains("ipinstance/a/10-0-0-10")
                && d.object.contains("ipinstance/b/10-0-0-10"),
            "{}",
            d.object
        );
    }

    #[test]
    fn outside_subnet() {
        let mut i = input();
        let mut wrong_net = inst("a", "10.0.0.16", "s1", Some("p6"), Some("n1"));
        wrong_net.network = "other".into();
        let mut wrong_name = inst("a", "10.0.0.17", "s1", Some("p7"), Some("n1"));
        wrong_name.name = "10-0-0-18".into();
        i.instances = vec![
            inst("a", "10.0.1.5", "s1", Some("p1"), Some("n1")),
            inst("a", "10.0.0.1", "s1", Some("p2"), Some("n1")),
            inst("a", "10.0.0.2", "s1", Some("p3"), Some("n1")),
            inst("a", "10.0.0.250", "s1", Some("p4"), Some("n1")),
            inst("a", "10.0.0.15", "nope", Some("p5"), Some("n1")),
            wrong_net,
            wrong_name,
        ];
        i.pods = (1..=7)
            .map(|n| pod("a", &format!("p{n}"), &format!("10.0.9.{n}")))
            .collect();
        let r = check(&i);
        let details: Vec<&str> = r
            .findings
            .iter()
            .filter(|f| f.kind == FindingKind::OutsideSubnet)
            .map(|f| f.detail.as_str())
            .collect();
        assert_eq!(details.len(), 7, "{details:#?}");
        for want in [
            "outside 10.0.0.0/24",
            "is the gateway",
            "is excluded",
            "outside 10.0.0.1-10.0.0.200",
            "subnet nope does not exist",
            "differs from the network net",
            "does not match its address",
        ] {
            assert!(
                details.iter().any(|d| d.contains(want)),
                "{want} in {details:#?}"
            );
        }
        assert!(r.fixes.is_empty());
    }

    proptest! {
        /// A bound IPInstance whose pod exists is never reported leaked, and only leaked
        /// instances are ever fixed.
        #[test]
        fn live_pods_keep_their_addresses(pods in proptest::collection::btree_set(0u8..50, 0..20), insts in proptest::collection::btree_map(1u8..=200, (0u8..50, any::<bool>()), 0..30)) {
            let mut i = input();
            i.pods = pods.iter().map(|p| pod("a", &format!("p{p}"), &format!("10.0.5.{p}"))).collect();
            i.instances = insts.iter().map(|(host, (p, reserved))| {
                let node = if *reserved { None } else { Some("n1") };
                inst("a", &format!("10.0.0.{host}"), "s1", Some(&format!("p{p}")), node)
            }).collect();
            let r = check(&i);
            for (ns, name) in &r.fixes {
                let f = i.instances.iter().find(|f| &f.namespace == ns && &f.name == name).unwrap();
                let pod_exists = pods.iter().any(|p| Some(format!("p{p}")) == f.pod);
                prop_assert!(!pod_exists || f.is_reserved(), "fixing {name} although its pod exists");
            }
            let leaked = r.count(FindingKind::Leaked);
            prop_assert_eq!(leaked, r.fixes.len());
            // A reserved address of a plain pod is never bound again: leaked even while the pod exists.
            let expected = insts.values().filter(|(p, reserved)| *reserved || !pods.contains(p)).count();
            prop_assert_eq!(leaked, expected);
        }
    }
}
