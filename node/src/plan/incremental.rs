//! The plan kept up to date per changed object ([`PlanState`]).
//!
//! What the IPInstances contribute to a plan (VXLAN neighbours and their owners, local pods,
//! their routes and proxy entries, and problems) is decided per address: only the IPInstances
//! claiming that address, in (namespace, name) order, and the NodeInfo `localIPs` entry for it
//! matter ([`resolve`]). So a changed IPInstance re-resolves its old and new address; a changed
//! NodeInfo re-resolves the addresses of the pods on the nodes whose VTEP changed and the
//! `localIPs` that changed; everything else stays. [`build_plan`](super::build_plan) is
//! [`PlanState::new`]: one set of rules for both paths, and a property test checks that any
//! sequence of updates gives the plan a rebuild from the final objects gives.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use hybridnet_api::constants::label;
use hybridnet_api::ipmath::{Cidr, parse_ip};
use hybridnet_api::naming::host_veth_name;
use hybridnet_api::v1::{IPInstance, IpVersion, NodeInfo};

use super::build::{IpContext, build_base, finish, host_cidr, plan_remote_cluster_vteps};
use super::model::*;

/// (namespace, name) of an IPInstance.
type Key = (String, String);

/// What one IPInstance says for the plan, apart from its node and pod.
#[derive(Clone, Debug, PartialEq)]
enum Claim {
    /// Reserved (no node) or of a family this node does not run: nothing.
    Nothing,
    /// `spec.address.ip` does not parse.
    Invalid(PlanProblem),
    /// A pod uses this address.
    At(IpAddr),
}

struct Entry {
    obj: Arc<IPInstance>,
    claim: Claim,
}

fn names(ipi: &IPInstance) -> (&str, &str) {
    (
        ipi.metadata.namespace.as_deref().unwrap_or_default(),
        ipi.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// The node of an IPInstance: the node label, else `spec.binding.nodeName` ("" when reserved).
fn node_of(ipi: &IPInstance) -> &str {
    ipi.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(label::NODE))
        .or(ipi.spec.binding.node_name.as_ref())
        .map(String::as_str)
        .unwrap_or_default()
}

fn claim_of(ipi: &IPInstance, families: &[IpVersion]) -> Claim {
    if node_of(ipi).is_empty() {
        return Claim::Nothing; // reserved: no pod uses it
    }
    let ip = match parse_ip(&ipi.spec.address.ip) {
        Ok(ip) => ip,
        Err(_) => match Cidr::parse_any(&ipi.spec.address.ip) {
            Ok(c) => hybridnet_api::ipmath::u128_to_ip(c.version, c.network),
            Err(e) => {
                let (ns, name) = names(ipi);
                return Claim::Invalid(PlanProblem {
                    object: format!("IPInstance/{ns}/{name}"),
                    message: format!("spec.address.ip: {e}"),
                });
            }
        },
    };
    if families.contains(&IpVersion::of(&ip)) {
        Claim::At(ip)
    } else {
        Claim::Nothing
    }
}

/// What one address contributes to the plan.
#[derive(Clone, Debug, Default, PartialEq)]
struct Resolved {
    /// A remote address: the VTEP MAC it is behind and the node that owns it.
    neighbour: Option<(MacAddr, Arc<str>)>,
    /// A pod of another node holds it (and none of this node).
    remote: bool,
    local: Option<LocalPod>,
    /// The local pod's local-direct route (when its veth exists).
    route: Option<PlannedRoute>,
    proxies: Vec<ProxyNeighbour>,
    problems: Vec<PlanProblem>,
}

/// The contribution of one address from its claims (in (namespace, name, `spec.address.ip`)
/// order) and the NodeInfo `localIPs` entry for it. The first local claim wins and shadows any
/// remote one; a remote claim counts when its node has a VTEP and no other node owns the address.
fn resolve(
    ctx: &IpContext,
    ip: IpAddr,
    seed: Option<&(MacAddr, Arc<str>)>,
    claims: &[Arc<IPInstance>],
) -> Resolved {
    let fixed = &ctx.fixed;
    let mut r = Resolved {
        neighbour: seed.cloned(),
        ..Default::default()
    };
    for ipi in claims {
        let (ns, name) = names(ipi);
        let problem = |message: String| PlanProblem {
            object: format!("IPInstance/{ns}/{name}"),
            message,
        };
        let node = node_of(ipi);
        if node != fixed.node_name {
            r.remote = r.local.is_none();
            if r.local.is_some() {
                r.problems
                    .push(problem(format!("{ip} is also a pod of this node; ignored")));
                continue;
            }
            if let Some((key, mac)) = ctx.vteps.get_key_value(node) {
                match &r.neighbour {
                    Some((_, owner)) if **owner != *node => {
                        let msg = format!("{ip} is also claimed by node {owner}; ignored");
                        r.problems.push(problem(msg));
                    }
                    Some((_, owner)) => r.neighbour = Some((*mac, owner.clone())),
                    None => r.neighbour = Some((*mac, key.clone())),
                }
            }
            continue;
        }
        if r.local.is_some() {
            r.problems
                .push(problem(format!("{ip} is used by two IPInstances; ignored")));
            continue;
        }
        let pod = ipi
            .spec
            .binding
            .pod_name
            .clone()
            .or_else(|| {
                ipi.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(label::POD))
                    .cloned()
            })
            .unwrap_or_default();
        let veth = host_veth_name(ns, &pod);
        // A local pod IP shadows any remote claim of the same address.
        r.neighbour = None;
        r.remote = false;
        if fixed.interfaces.contains(&veth) {
            r.route = Some(PlannedRoute {
                table: fixed.local_direct,
                dst: host_cidr(ip),
                kind: RouteKind::Unicast,
                dev: Some(veth.clone()),
                via: None,
                src: None,
                scope_link: true,
            });
        }
        // Proxy entries (5.4): the VXLAN device for every local pod (its "overlay identity"),
        // and the forward interface of a VLAN subnet.
        if let Some(vx) = &fixed.vxlan {
            r.proxies.push(ProxyNeighbour {
                dev: vx.clone(),
                ip,
            });
        }
        if let Some((_, Some(dev))) = fixed.subnet_proxy.iter().find(|(c, _)| c.contains(ip)) {
            r.proxies.push(ProxyNeighbour {
                dev: dev.clone(),
                ip,
            });
        }
        r.local = Some(LocalPod {
            namespace: ns.to_string(),
            pod,
            veth,
            network: ipi.spec.network.clone(),
            subnet: ipi.spec.subnet.clone(),
            terminating: ipi.metadata.deletion_timestamp.is_some(),
        });
    }
    r
}

fn add(plan: &mut DataPlanePlan, ip: IpAddr, r: &Resolved) {
    if let Some((mac, owner)) = &r.neighbour {
        plan.vxlan_neighbours.insert(ip, *mac);
        plan.remote_owner.insert(ip, owner.clone());
    }
    if let Some(pod) = &r.local {
        plan.local_pods.insert(ip, pod.clone());
    }
    if r.remote {
        plan.remote_pod_ips.insert(ip);
    }
    if let Some(route) = &r.route {
        plan.routes.insert(route.clone());
    }
    plan.proxy_neighbours.extend(r.proxies.iter().cloned());
}

fn remove(plan: &mut DataPlanePlan, ip: IpAddr, r: &Resolved) {
    if r.neighbour.is_some() {
        plan.vxlan_neighbours.remove(&ip);
        plan.remote_owner.remove(&ip);
    }
    if r.local.is_some() {
        plan.local_pods.remove(&ip);
    }
    if r.remote {
        plan.remote_pod_ips.remove(&ip);
    }
    if let Some(route) = &r.route {
        plan.routes.remove(route);
    }
    for p in &r.proxies {
        plan.proxy_neighbours.remove(p);
    }
}

/// A plan and what it was built from, updated per changed IPInstance or NodeInfo.
pub struct PlanState {
    cfg: PlanConfig,
    host: HostState,
    /// The API input without IPInstances (those are in `entries`); `node_infos` follows
    /// `node_infos_by_name`.
    api: ApiState,
    node_infos_by_name: BTreeMap<String, Arc<NodeInfo>>,
    ctx: IpContext,
    base_problems: Vec<PlanProblem>,
    entries: HashMap<Key, Entry>,
    /// Claims per address (any order; [`resolve`] sorts them).
    by_ip: HashMap<IpAddr, Vec<Arc<IPInstance>>>,
    /// Node -> addresses its pods claim (with the number of claims).
    by_node: HashMap<String, HashMap<IpAddr, u32>>,
    /// IPInstances whose address does not parse.
    invalid: BTreeMap<Key, PlanProblem>,
    resolved: HashMap<IpAddr, Resolved>,
    /// Addresses whose resolution reported problems.
    problem_ips: BTreeSet<IpAddr>,
    plan: DataPlanePlan,
}

impl std::fmt::Debug for PlanState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanState")
            .field("ip_instances", &self.entries.len())
            .field("node_infos", &self.node_infos_by_name.len())
            .finish_non_exhaustive()
    }
}

/// What an update changed in the plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanUpdate {
    /// Addresses resolved again.
    pub resolved: usize,
    /// Addresses whose contribution to the plan changed.
    pub changed: usize,
}

impl PlanState {
    /// Plans from scratch.
    pub fn new(api: &ApiState, host: &HostState, cfg: &PlanConfig) -> Self {
        let node_infos_by_name: BTreeMap<String, Arc<NodeInfo>> = api
            .node_infos
            .iter()
            .map(|n| (n.metadata.name.clone().unwrap_or_default(), n.clone()))
            .collect();
        let api_base = ApiState {
            node_name: api.node_name.clone(),
            node_addresses: api.node_addresses.clone(),
            networks: api.networks.clone(),
            subnets: api.subnets.clone(),
            ip_instances: Vec::new(),
            node_infos: api.node_infos.clone(),
            remote_subnets: api.remote_subnets.clone(),
            remote_vteps: api.remote_vteps.clone(),
        };
        let (base, ctx) = build_base(&api_base, host, cfg);
        let mut s = Self {
            cfg: cfg.clone(),
            host: host.clone(),
            api: api_base,
            node_infos_by_name,
            ctx,
            base_problems: Vec::new(),
            entries: HashMap::with_capacity(api.ip_instances.len()),
            by_ip: HashMap::with_capacity(api.ip_instances.len()),
            by_node: HashMap::new(),
            invalid: BTreeMap::new(),
            resolved: HashMap::with_capacity(api.ip_instances.len()),
            problem_ips: BTreeSet::new(),
            plan: DataPlanePlan::default(),
        };
        for ipi in &api.ip_instances {
            let (ns, name) = names(ipi);
            s.set_entry((ns.to_string(), name.to_string()), Some(ipi.clone()));
        }
        s.resolve_all(base);
        s
    }

    /// The current plan.
    pub fn plan(&self) -> &DataPlanePlan {
        &self.plan
    }

    pub fn into_plan(self) -> DataPlanePlan {
        self.plan
    }

    /// The host facts the plan was built from.
    pub fn host(&self) -> &HostState {
        &self.host
    }

    /// Resolves every address onto `base`.
    fn resolve_all(&mut self, mut base: DataPlanePlan) {
        self.base_problems = std::mem::take(&mut base.problems);
        self.resolved.clear();
        self.problem_ips.clear();
        // Every claimed address, then the NodeInfo addresses nobody claims (the order does not
        // matter: each address is resolved on its own).
        let mut ips: Vec<IpAddr> = self.by_ip.keys().copied().collect();
        ips.extend(
            self.ctx
                .seeds
                .keys()
                .filter(|ip| !self.by_ip.contains_key(ip)),
        );
        for ip in ips {
            let r = self.resolve_ip(ip);
            add(&mut base, ip, &r);
            if !r.problems.is_empty() {
                self.problem_ips.insert(ip);
            }
            self.resolved.insert(ip, r);
        }
        // Other clusters' VTEPs come after this cluster's claims (an address claimed here stays
        // this cluster's), so with RemoteVteps every update re-runs this whole step.
        plan_remote_cluster_vteps(&mut base, &self.api, &self.ctx.fixed.families);
        self.base_problems.append(&mut base.problems);
        finish(&mut base, &self.host, &self.cfg, &self.ctx.fixed);
        self.plan = base;
        self.collect_problems();
    }

    fn resolve_ip(&mut self, ip: IpAddr) -> Resolved {
        let claims: &[Arc<IPInstance>] = match self.by_ip.get_mut(&ip) {
            Some(v) => {
                if v.len() > 1 {
                    v.sort_by(|a, b| {
                        let (an, bn) = (names(a), names(b));
                        (an.0, an.1, &a.spec.address.ip).cmp(&(bn.0, bn.1, &b.spec.address.ip))
                    });
                }
                v
            }
            None => &[],
        };
        resolve(&self.ctx, ip, self.ctx.seeds.get(&ip), claims)
    }

    fn collect_problems(&mut self) {
        let mut all = self.base_problems.clone();
        all.extend(self.invalid.values().cloned());
        for ip in &self.problem_ips {
            if let Some(r) = self.resolved.get(ip) {
                all.extend(r.problems.iter().cloned());
            }
        }
        all.sort();
        all.dedup();
        self.plan.problems = all;
    }

    /// Replaces (or with `None` removes) the IPInstance `key`; returns the addresses it
    /// claimed before and claims now.
    fn set_entry(&mut self, key: Key, obj: Option<Arc<IPInstance>>) -> [Option<IpAddr>; 2] {
        let mut out = [None, None];
        if let Some(old) = self.entries.remove(&key) {
            match old.claim {
                Claim::At(ip) => {
                    if let Some(v) = self.by_ip.get_mut(&ip) {
                        v.retain(|o| names(o) != (key.0.as_str(), key.1.as_str()));
                        if v.is_empty() {
                            self.by_ip.remove(&ip);
                        }
                    }
                    let node = node_of(&old.obj);
                    if let Some(m) = self.by_node.get_mut(node) {
                        if let Some(n) = m.get_mut(&ip) {
                            *n -= 1;
                            if *n == 0 {
                                m.remove(&ip);
                            }
                        }
                        if m.is_empty() {
                            self.by_node.remove(node);
                        }
                    }
                    out[0] = Some(ip);
                }
                Claim::Invalid(_) => {
                    self.invalid.remove(&key);
                }
                Claim::Nothing => {}
            }
        }
        if let Some(obj) = obj {
            let claim = claim_of(&obj, &self.ctx.fixed.families);
            match &claim {
                Claim::At(ip) => {
                    self.by_ip.entry(*ip).or_default().push(obj.clone());
                    let node = node_of(&obj);
                    // The node's name is allocated once per node, not per claim.
                    let m = match self.by_node.get_mut(node) {
                        Some(m) => m,
                        None => self.by_node.entry(node.to_string()).or_default(),
                    };
                    *m.entry(*ip).or_default() += 1;
                    out[1] = Some(*ip);
                }
                Claim::Invalid(p) => {
                    self.invalid.insert(key.clone(), p.clone());
                }
                Claim::Nothing => {}
            }
            self.entries.insert(key, Entry { obj, claim });
        }
        out
    }

    /// Resolves `ips` again and applies the differences; `finish_anyway` re-runs the steps that
    /// read the whole plan even when no local pod changed.
    fn update_addresses(&mut self, ips: BTreeSet<IpAddr>, finish_anyway: bool) -> PlanUpdate {
        let mut up = PlanUpdate::default();
        let mut local_changed = false;
        let mut problems_changed = false;
        for ip in ips {
            up.resolved += 1;
            let new = self.resolve_ip(ip);
            let old = self.resolved.remove(&ip).unwrap_or_default();
            if old != new {
                up.changed += 1;
                remove(&mut self.plan, ip, &old);
                add(&mut self.plan, ip, &new);
                local_changed |= old.local != new.local || old.proxies != new.proxies;
                problems_changed |= old.problems != new.problems;
            }
            if new.problems.is_empty() {
                self.problem_ips.remove(&ip);
            } else {
                self.problem_ips.insert(ip);
            }
            if new != Resolved::default() {
                self.resolved.insert(ip, new);
            }
        }
        if local_changed || finish_anyway {
            finish(&mut self.plan, &self.host, &self.cfg, &self.ctx.fixed);
        }
        if problems_changed || finish_anyway {
            self.collect_problems();
        }
        up
    }

    /// Plans from the kept objects again (with other clusters' VTEPs, whose claims are decided
    /// after all of this cluster's).
    fn rebuild_all(&mut self) -> PlanUpdate {
        let (base, ctx) = build_base(&self.api, &self.host, &self.cfg);
        self.ctx = ctx;
        self.resolve_all(base);
        let n = self.resolved.len();
        PlanUpdate {
            resolved: n,
            changed: n,
        }
    }

    /// Applies changed IPInstances: `(namespace, name, the object now or None when deleted)`.
    pub fn update_ip_instances(
        &mut self,
        changes: impl IntoIterator<Item = (String, String, Option<Arc<IPInstance>>)>,
    ) -> PlanUpdate {
        let mut ips = BTreeSet::new();
        let mut invalid_changed = false;
        for (ns, name, obj) in changes {
            let key = (ns, name);
            let before = self.invalid.get(&key).cloned();
            let [old, new] = self.set_entry(key.clone(), obj);
            invalid_changed |= self.invalid.get(&key) != before.as_ref();
            ips.extend(old);
            ips.extend(new);
        }
        if !self.api.remote_vteps.is_empty() {
            return self.rebuild_all();
        }
        let mut up = self.update_addresses(ips, false);
        if invalid_changed {
            self.collect_problems();
            up.changed += 1;
        }
        up
    }

    /// Applies changed NodeInfos: `(name, the object now or None when deleted)`. The VTEP table
    /// (one entry per NodeInfo) is rebuilt; addresses are resolved again only where a node's VTEP
    /// or a `localIPs` entry changed.
    pub fn update_node_infos(
        &mut self,
        changes: impl IntoIterator<Item = (String, Option<Arc<NodeInfo>>)>,
    ) -> PlanUpdate {
        for (name, obj) in changes {
            match obj {
                Some(o) => self.node_infos_by_name.insert(name, o),
                None => self.node_infos_by_name.remove(&name),
            };
        }
        self.api.node_infos = self.node_infos_by_name.values().cloned().collect();
        if !self.api.remote_vteps.is_empty() {
            return self.rebuild_all();
        }
        let (mut base, ctx) = build_base(&self.api, &self.host, &self.cfg);
        if ctx.fixed != self.ctx.fixed {
            // Families or devices changed: every claim is read again.
            let objs: Vec<Arc<IPInstance>> = self.entries.values().map(|e| e.obj.clone()).collect();
            let api = ApiState {
                ip_instances: objs,
                ..self.api.clone()
            };
            let (host, cfg) = (self.host.clone(), self.cfg.clone());
            *self = Self::new(&api, &host, &cfg);
            let n = self.resolved.len();
            return PlanUpdate {
                resolved: n,
                changed: n,
            };
        }
        let mut ips: BTreeSet<IpAddr> = BTreeSet::new();
        let nodes: BTreeSet<&Arc<str>> = self.ctx.vteps.keys().chain(ctx.vteps.keys()).collect();
        for node in nodes {
            if self.ctx.vteps.get(node) != ctx.vteps.get(node)
                && let Some(m) = self.by_node.get(&**node)
            {
                ips.extend(m.keys().copied());
            }
        }
        for ip in self.ctx.seeds.keys().chain(ctx.seeds.keys()) {
            if self.ctx.seeds.get(ip) != ctx.seeds.get(ip) {
                ips.insert(*ip);
            }
        }
        // The new base with this plan's per-address parts moved over.
        let old = std::mem::take(&mut self.plan);
        let local_direct = self.ctx.fixed.local_direct;
        base.vxlan_neighbours = old.vxlan_neighbours;
        base.remote_owner = old.remote_owner;
        base.local_pods = old.local_pods;
        base.remote_pod_ips = old.remote_pod_ips;
        base.proxy_neighbours = old.proxy_neighbours;
        base.routes
            .extend(old.routes.into_iter().filter(|r| r.table == local_direct));
        self.base_problems = std::mem::take(&mut base.problems);
        self.plan = base;
        self.ctx = ctx;
        self.update_addresses(ips, true)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::super::build_plan;
    use super::super::tests::{Fixture, fixture, ipinstance, nodeinfo};
    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// Create or replace IPInstance `i{key}`.
        Ipi {
            key: u8,
            ns: u8,
            pod: u8,
            addr: u8,
            node: u8,
            terminating: bool,
        },
        DelIpi(u8),
        /// Create or replace the NodeInfo of node `node`.
        Ni {
            node: u8,
            mac: u8,
            local: u8,
        },
        DelNi(u8),
    }

    /// Addresses in the fixture's overlay (IPv4, IPv6), its VLAN underlay, NodeInfo VTEPs and
    /// one that does not parse, so claims collide with each other and with NodeInfo `localIPs`.
    const ADDRS: [&str; 9] = [
        "198.19.0.5",
        "198.19.0.6",
        "fd00:19::5",
        "198.18.0.100",
        "198.18.0.12",
        "198.19.1.7",
        "198.19.0.40",
        "fd00:18::12",
        "not-an-ip",
    ];
    const NODES: [&str; 5] = ["n1", "n2", "n3", "m4", ""];

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..8, 0u8..2, 0u8..4, 0u8..9, 0u8..5, any::<bool>()).prop_map(
                |(key, ns, pod, addr, node, terminating)| Op::Ipi { key, ns, pod, addr, node, terminating }
            ),
            1 => (0u8..8).prop_map(Op::DelIpi),
            2 => (0u8..4, 0u8..3, 0u8..9).prop_map(|(node, mac, local)| Op::Ni { node, mac, local }),
            1 => (0u8..4).prop_map(Op::DelNi),
        ]
    }

    fn ipi(key: u8, ns: u8, pod: u8, addr: u8, node: u8, terminating: bool) -> Arc<IPInstance> {
        let a = ADDRS[addr as usize];
        let ns = ["default", "other"][ns as usize];
        let mut i = ipinstance(
            ns,
            ["a", "b", "c", "x"][pod as usize],
            if a == "not-an-ip" { "198.19.0.99" } else { a },
            "overlay",
            "ov4",
            NODES[node as usize],
        );
        i.spec.address.ip = a.to_string();
        i.metadata.name = Some(format!("i{key}"));
        if NODES[node as usize].is_empty() {
            i.metadata.labels = None;
            i.spec.binding.node_name = None;
        }
        if terminating {
            i.metadata.deletion_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
            );
        }
        Arc::new(i)
    }

    fn ni(node: u8, mac: u8, local: u8) -> Arc<NodeInfo> {
        let name = NODES[node as usize];
        let vtep = format!("198.18.0.{}", 11 + node);
        let mut locals = vec![vtep.clone()];
        if ADDRS[local as usize] != "not-an-ip" {
            locals.push(ADDRS[local as usize].to_string());
        }
        let locals: Vec<&str> = locals.iter().map(String::as_str).collect();
        // MACs 0 and 1 are shared by several nodes; 2 is the node's own.
        let m = match mac {
            0 => "02:00:00:00:00:20".to_string(),
            1 => "02:00:00:00:00:21".to_string(),
            _ => format!("02:00:00:00:00:{:02x}", 0x11 + node),
        };
        Arc::new(nodeinfo(name, &vtep, &m, &locals))
    }

    fn api_of(
        f: &Fixture,
        ipis: &BTreeMap<u8, Arc<IPInstance>>,
        nis: &BTreeMap<u8, Arc<NodeInfo>>,
    ) -> ApiState {
        ApiState {
            ip_instances: ipis.values().cloned().collect(),
            node_infos: nis.values().cloned().collect(),
            ..f.api.clone()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Any sequence of IPInstance and NodeInfo changes applied one by one gives the plan a
        /// full rebuild from the resulting objects gives.
        #[test]
        fn updates_match_a_rebuild(ops in proptest::collection::vec(arb_op(), 1..40)) {
            let f = fixture();
            let mut ipis: BTreeMap<u8, Arc<IPInstance>> = BTreeMap::new();
            let mut nis: BTreeMap<u8, Arc<NodeInfo>> = (0u8..3).map(|n| (n, ni(n, 2, 8))).collect();
            let mut state = PlanState::new(&api_of(&f, &ipis, &nis), &f.host, &f.cfg);
            for op in ops {
                match op {
                    Op::Ipi { key, ns, pod, addr, node, terminating } => {
                        // A changed object keeps its key (namespace and name) only when the
                        // namespace is the same: remove the old one under its own key first.
                        let o = ipi(key, ns, pod, addr, node, terminating);
                        let mut changes = Vec::new();
                        if let Some(old) = ipis.insert(key, o.clone()) {
                            let (ons, oname) = names(&old);
                            if ons != names(&o).0 {
                                changes.push((ons.to_string(), oname.to_string(), None));
                            }
                        }
                        let (ns, name) = names(&o);
                        changes.push((ns.to_string(), name.to_string(), Some(o.clone())));
                        state.update_ip_instances(changes);
                    }
                    Op::DelIpi(key) => {
                        if let Some(old) = ipis.remove(&key) {
                            let (ns, name) = names(&old);
                            state.update_ip_instances([(ns.to_string(), name.to_string(), None)]);
                        }
                    }
                    Op::Ni { node, mac, local } => {
                        let o = ni(node, mac, local);
                        nis.insert(node, o.clone());
                        state.update_node_infos([(NODES[node as usize].to_string(), Some(o))]);
                    }
                    Op::DelNi(node) => {
                        nis.remove(&node);
                        state.update_node_infos([(NODES[node as usize].to_string(), None)]);
                    }
                }
                let want = build_plan(&api_of(&f, &ipis, &nis), &f.host, &f.cfg);
                prop_assert_eq!(state.plan(), &want);
            }
        }
    }

    #[test]
    fn one_remote_pod_resolves_one_address() {
        let f = fixture();
        let mut state = PlanState::new(&f.api, &f.host, &f.cfg);
        let o = Arc::new(ipinstance(
            "default",
            "new",
            "198.19.0.77",
            "overlay",
            "ov4",
            "n2",
        ));
        let up = state.update_ip_instances([(
            "default".into(),
            names(&o).1.to_string(),
            Some(o.clone()),
        )]);
        assert_eq!(
            up,
            PlanUpdate {
                resolved: 1,
                changed: 1
            }
        );
        assert_eq!(
            state
                .plan()
                .vxlan_neighbours
                .get(&"198.19.0.77".parse().unwrap()),
            Some(&"02:00:00:00:00:12".parse().unwrap())
        );
        // The same object again (a resync event): nothing changes.
        let up = state.update_ip_instances([("default".into(), names(&o).1.to_string(), Some(o))]);
        assert_eq!(
            up,
            PlanUpdate {
                resolved: 1,
                changed: 0
            }
        );
        let mut api = f.api.clone();
        api.ip_instances.push(Arc::new(ipinstance(
            "default",
            "new",
            "198.19.0.77",
            "overlay",
            "ov4",
            "n2",
        )));
        assert_eq!(state.plan(), &build_plan(&api, &f.host, &f.cfg));
    }
}
