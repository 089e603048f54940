//! The policy model of one node as an nftables table (`inet hybridnet_policy`), replaced in one
//! transaction, so a failed update leaves the previous policy in force.
//!
//! Layout (docs/networkpolicy.md, "Data plane"):
//!
//! - base chains `forward` (hook forward) and `egress_in` (hook input, traffic to the node itself):
//!   replies of tracked connections and related packets pass; so does a packet whose connection
//!   carries the table's generation in its conntrack mark (`ct mark G`: a connection this table
//!   already allowed). Every other packet is looked up in a verdict map keyed by the source
//!   address (`eg_4`, `eg_6`) that jumps to the local source pod's egress chain, then in one keyed
//!   by the destination (`in_4`, `in_6`) to the local destination pod's ingress chain; a rule that
//!   allows egress goes on to the ingress lookup (`egress_ok`), one that allows ingress, or the end
//!   of the lookups, to `allowed`, which sets `ct mark G` and accepts. One base chain decides
//!   both sides, so a connection carries `G` only if the rules of generation `G` allowed it on
//!   both. Every change of the table comes with a new `G` ([`set_generation`]), so the next packet
//!   of every connection is decided again by the new rules: one a change no longer allows stops.
//!   Traffic the node itself sends (kubelet probes) takes the output hook: not filtered.
//! - per isolated local pod and direction a chain that jumps to the chain of every policy that
//!   isolates it and ends with a counted `goto drop_<dir>` (the pod's drops; the drop chain's
//!   counter, one per direction, is the dropped-packets metric);
//! - per policy and direction a chain with one rule per (peer group, port group, family), each with
//!   a counter, accepting on match; peers are named address sets (one per distinct selector pair,
//!   shared by every rule and every pod), `ipBlock`s anonymous interval sets, named ports a set of
//!   `address . protocol . port` of the pods declaring them (resolved on the destination address).
//!
//! So rules grow with policies (and the pods they isolate here), not with pods squared, and a pod
//! joining a selector is one set element.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use hybridnet_api::v1::IpVersion;

use super::{Direction, IpBlock, ObjectKey, Peer, PolicyModel, PortSpec, Protocol, Rule, SetKey};
use crate::plan::nftables::{
    Chain, ChainType, CmpOp, CtState, Field, Hook, Key, KeyType, L4Proto, Map, MarkOp, Match,
    Policy, Rhs, Rule as NftRule, Set, Stmt, Table, Value, Verdict, priority,
};

/// The table the agent owns for NetworkPolicy.
pub const POLICY_TABLE: &str = "hybridnet_policy";
/// Chains whose counters are the dropped-packets metric.
pub const DROP_INGRESS: &str = "drop_ingress";
pub const DROP_EGRESS: &str = "drop_egress";
/// The chain that marks a connection allowed (`ct mark set G`) and accepts.
pub const ALLOWED: &str = "allowed";
/// The chain an egress allow goes on to: the destination's ingress lookup, then [`ALLOWED`].
pub const EGRESS_OK: &str = "egress_ok";
/// The base chains that check the generation (`ct mark G accept`).
const BASE_CHAINS: [&str; 2] = ["forward", "egress_in"];
const CACHED_COMMENT: &str = "connections allowed by this generation";

fn l4(p: Protocol) -> L4Proto {
    match p {
        Protocol::Tcp => L4Proto::Tcp,
        Protocol::Udp => L4Proto::Udp,
        Protocol::Sctp => L4Proto::Sctp,
    }
}

fn fam(v: IpVersion) -> &'static str {
    match v {
        IpVersion::V4 => "4",
        IpVersion::V6 => "6",
    }
}

const FAMILIES: [IpVersion; 2] = [IpVersion::V4, IpVersion::V6];

fn dir_tag(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "in",
        Direction::Egress => "eg",
    }
}

/// The comment of the nftables rules of one policy rule (one rule of a policy may be several
/// nftables rules: per family, peer group and port group), each with a counter: `trace --live`
/// finds them by it.
pub fn rule_comment(policy: &ObjectKey, dir: Direction, index: usize) -> String {
    format!("{policy} {dir} rule {index}")
}

/// The comment of an isolated pod's last rule (nothing allowed the packet: to the drop chain),
/// which counts that pod's dropped packets of the direction.
pub fn isolation_comment(pod: &ObjectKey, dir: Direction) -> String {
    format!("{pod}: isolated for {dir}")
}

/// FNV-1a (64 bit): a hash that is the same in every build and process, so a name derived from
/// an object's key is the same in every render and a change touches only its own chains and sets.
fn fnv64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Stable names for `keys`: `prefix` and the hash of the key's debug form (injective: strings
/// are quoted and escaped). Keys whose hashes collide get `_1`, `_2`, ... in key order, so names
/// stay unique whatever the keys.
fn stable_names<K: std::fmt::Debug + Ord + Clone>(
    keys: impl IntoIterator<Item = K>,
    prefix: &str,
) -> BTreeMap<K, String> {
    let keys: BTreeSet<K> = keys.into_iter().collect();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut out = BTreeMap::new();
    for k in keys {
        let base = format!("{prefix}{:016x}", fnv64(&format!("{k:?}")));
        let mut name = base.clone();
        let mut n = 0;
        while !taken.insert(name.clone()) {
            n += 1;
            name = format!("{base}_{n}");
        }
        out.insert(k, name);
    }
    out
}

/// The chain of a pod or a policy (named by [`stable_names`]) for a direction.
fn dir_chain(base: &str, dir: Direction) -> String {
    format!("{base}_{}", dir_tag(dir))
}

struct Names {
    sets: BTreeMap<SetKey, String>,
    named: BTreeMap<(Protocol, String), String>,
}

/// The other end of the flow as seen from `dir`'s chain.
fn peer_field(dir: Direction, v: IpVersion) -> Field {
    match dir {
        Direction::Ingress => Field::Saddr(v),
        Direction::Egress => Field::Daddr(v),
    }
}

/// One port group of a rule: the matches that select it.
fn port_groups(rule: &Rule, v: IpVersion, names: &Names) -> Option<Vec<Vec<Match>>> {
    let ports = rule.ports.as_ref()?;
    let mut out = vec![];
    let mut singles: BTreeSet<Key> = BTreeSet::new();
    let mut protos: BTreeSet<Key> = BTreeSet::new();
    for p in ports {
        let proto = Value::Proto(l4(p.protocol));
        match &p.port {
            PortSpec::All => {
                protos.insert(Key(vec![proto]));
            }
            PortSpec::Range(a, b) if a == b => {
                singles.insert(Key(vec![proto, Value::Port(*a)]));
            }
            PortSpec::Range(a, b) => out.push(vec![
                Match::eq(Field::L4Proto, Rhs::Value(proto)),
                Match::eq(Field::Dport, Rhs::Value(Value::PortRange(*a, *b))),
            ]),
            PortSpec::Named(n) => {
                if let Some(base) = names.named.get(&(p.protocol, n.clone())) {
                    out.push(vec![Match::in_set(
                        Field::Concat(vec![Field::Daddr(v), Field::L4Proto, Field::Dport]),
                        format!("{base}_{}", fam(v)),
                    )]);
                }
            }
            PortSpec::Nothing => {}
        }
    }
    if !protos.is_empty() {
        out.push(vec![Match::eq(
            Field::L4Proto,
            Rhs::Set(protos.into_iter().collect()),
        )]);
    }
    if !singles.is_empty() {
        out.push(vec![Match::eq(
            Field::Concat(vec![Field::L4Proto, Field::Dport]),
            Rhs::Set(singles.into_iter().collect()),
        )]);
    }
    Some(out)
}

/// Peer groups of a rule for family `v`: `None` = any peer.
fn peer_groups(
    rule: &Rule,
    dir: Direction,
    v: IpVersion,
    names: &Names,
) -> Option<Vec<Vec<Match>>> {
    let peers = rule.peers.as_ref()?;
    let f = || peer_field(dir, v);
    let mut out = vec![];
    let mut plain: Vec<Key> = vec![];
    for p in peers {
        match p {
            Peer::Pods(k) => {
                if let Some(base) = names.sets.get(k) {
                    out.push(vec![Match::in_set(f(), format!("{base}_{}", fam(v)))]);
                }
            }
            Peer::Block(IpBlock { cidr, except }) if cidr.version == v => {
                if except.is_empty() {
                    plain.push(Key(vec![Value::Prefix(*cidr)]));
                } else {
                    out.push(vec![
                        Match::eq(f(), Rhs::Set(vec![Key(vec![Value::Prefix(*cidr)])])),
                        Match::ne(
                            f(),
                            Rhs::Set(
                                except
                                    .iter()
                                    .map(|e| Key(vec![Value::Prefix(*e)]))
                                    .collect(),
                            ),
                        ),
                    ]);
                }
            }
            Peer::Block(_) | Peer::Nothing => {}
        }
    }
    if !plain.is_empty() {
        plain.sort();
        plain.dedup();
        out.push(vec![Match::eq(f(), Rhs::Set(plain))]);
    }
    Some(out)
}

fn policy_rules(key: &ObjectKey, rules: &[Rule], dir: Direction, names: &Names) -> Vec<NftRule> {
    let mut out = vec![];
    for rule in rules {
        for v in FAMILIES {
            let peers = peer_groups(rule, dir, v, names);
            let ports = port_groups(rule, v, names);
            let (peers, ports) = (
                peers.unwrap_or_else(|| vec![vec![]]),
                ports.unwrap_or_else(|| vec![vec![]]),
            );
            // "any peer, any port" of one family must still be of that family
            for pe in &peers {
                for po in &ports {
                    let mut m = vec![];
                    if pe.is_empty() {
                        m.push(Match::eq(
                            peer_field(dir, v),
                            Rhs::Value(Value::Prefix(any(v))),
                        ));
                    }
                    m.extend(pe.iter().cloned());
                    m.extend(po.iter().cloned());
                    // an allowed egress still needs the destination's ingress
                    let next = match dir {
                        Direction::Egress => EGRESS_OK,
                        Direction::Ingress => ALLOWED,
                    };
                    out.push(
                        NftRule::new(m)
                            .stmt(Stmt::Counter)
                            .verdict(Verdict::Goto(next.into()))
                            .comment(rule_comment(key, dir, rule.index)),
                    );
                }
            }
        }
    }
    out
}

fn any(v: IpVersion) -> hybridnet_api::ipmath::Cidr {
    hybridnet_api::ipmath::Cidr {
        version: v,
        network: 0,
        prefix: 0,
    }
}

/// Looks the packet's address up in the verdict maps of `dir` (the local pod's chain, if any).
fn lookups(dir: Direction) -> Vec<NftRule> {
    FAMILIES
        .into_iter()
        .map(|v| {
            let field = match dir {
                Direction::Ingress => Field::Daddr(v),
                Direction::Egress => Field::Saddr(v),
            };
            NftRule::default().vmap(field, format!("{}_{}", dir_tag(dir), fam(v)))
        })
        .collect()
}

/// `ct mark G accept`: a later packet of a connection this generation allowed.
fn cached(generation: u32) -> NftRule {
    NftRule::new(vec![Match::eq(
        Field::CtMark,
        Rhs::Value(Value::Mark(generation)),
    )])
    .verdict(Verdict::Accept)
    .comment(CACHED_COMMENT)
}

fn dispatch_chain(name: &str, hook: Hook, generation: u32) -> Chain {
    let mut c = Chain::base(
        name,
        ChainType::Filter,
        hook,
        priority::FILTER,
        Policy::Accept,
    );
    c.rules.push(
        NftRule::new(vec![
            Match::CtDirectionReply { op: CmpOp::Eq },
            Match::CtState {
                op: CmpOp::Eq,
                states: BTreeSet::from([CtState::Established, CtState::Related]),
            },
        ])
        .verdict(Verdict::Accept)
        .comment("replies of tracked connections"),
    );
    c.rules.push(
        NftRule::new(vec![Match::CtState {
            op: CmpOp::Eq,
            states: BTreeSet::from([CtState::Related]),
        }])
        .verdict(Verdict::Accept),
    );
    c.rules.push(cached(generation));
    c.rules.extend(lookups(Direction::Egress));
    c.rules.extend(lookups(Direction::Ingress));
    c.rules
        .push(NftRule::default().verdict(Verdict::Goto(ALLOWED.into())));
    c
}

/// Gives the table generation `g` (not 0, which every new connection carries): the conntrack
/// mark that [`ALLOWED`] sets and the base chains accept without policy lookups. The caller
/// changes it with every change of the table, so no connection skips the new rules.
pub fn set_generation(t: &mut Table, g: u32) {
    for c in t.chains.iter_mut() {
        if BASE_CHAINS.contains(&c.name.as_str()) {
            for r in c.rules.iter_mut() {
                if r.comment.as_deref() == Some(CACHED_COMMENT) {
                    *r = cached(g);
                }
            }
        } else if c.name == ALLOWED {
            c.rules = vec![allowed_rule(g)];
        }
    }
}

fn allowed_rule(g: u32) -> NftRule {
    NftRule::default()
        .stmt(Stmt::CtMark(MarkOp::Set(g)))
        .verdict(Verdict::Accept)
        .comment("allowed: later packets of the connection pass by its mark")
}

/// The generation of a table (what [`set_generation`] gave it).
pub fn generation(t: &Table) -> Option<u32> {
    t.chain(ALLOWED)?.rules.iter().find_map(|r| {
        r.stmts.iter().find_map(|s| match s {
            Stmt::CtMark(MarkOp::Set(g)) => Some(*g),
            _ => None,
        })
    })
}

/// The generation in a kernel listing of the table (`ct mark set 0x...` in chain `allowed`), so
/// a restarted agent continues after it instead of reusing a generation that connections
/// allowed by older rules may carry.
pub fn generation_in_listing(listing: &str) -> Option<u32> {
    let chain = listing.split("chain ").find(|c| {
        c.split_whitespace()
            .next()
            .is_some_and(|name| name == ALLOWED)
    })?;
    let mut words = chain.split_whitespace();
    while let Some(w) = words.next() {
        if w == "set" {
            let v = words.next()?;
            return match v.strip_prefix("0x") {
                Some(h) => u32::from_str_radix(h, 16).ok(),
                None => v.parse().ok(),
            };
        }
    }
    None
}

/// The generation after `g`: never 0 (the mark of a connection nothing marked yet).
pub fn next_generation(g: u32) -> u32 {
    match g.wrapping_add(1) {
        0 => 1,
        n => n,
    }
}

/// The policy table of node `node` (only its pods are dispatched; only what they use is defined).
/// Chains and sets are named after the pod, policy or selector they stand for, so the table of a
/// changed model differs from the previous one only where the change is
/// ([`crate::plan::nftables::diff`] turns that into an update of those parts).
///
/// The table has generation 1; the agent gives it its own with [`set_generation`].
pub fn render_policy_table(model: &PolicyModel, node: &str) -> Table {
    let mut t = Table::new(POLICY_TABLE);
    let local: Vec<(&ObjectKey, &super::ModelPod)> =
        model.pods.iter().filter(|(_, p)| p.node == node).collect();
    // policies that isolate a local pod, per direction
    let mut used: BTreeSet<(&ObjectKey, Direction)> = BTreeSet::new();
    for (_, p) in &local {
        for (dir, list) in [
            (Direction::Ingress, &p.ingress),
            (Direction::Egress, &p.egress),
        ] {
            for k in list {
                if model.policies.contains_key(k) {
                    used.insert((k, dir));
                }
            }
        }
    }
    let policy_names = stable_names(used.iter().map(|(k, _)| *k), "pol_");
    let pod_names = stable_names(
        local
            .iter()
            .filter(|(_, p)| !p.ingress.is_empty() || !p.egress.is_empty())
            .map(|(k, _)| *k),
        "pod_",
    );
    // the sets and named ports those policies use
    let mut set_keys: BTreeSet<&SetKey> = BTreeSet::new();
    let mut named_keys: BTreeSet<(Protocol, String)> = BTreeSet::new();
    for (k, dir) in &used {
        let Some(pol) = model.policies.get(*k) else {
            continue;
        };
        for r in &pol.rules(*dir).rules {
            for p in r.peers.iter().flatten() {
                if let Peer::Pods(k) = p {
                    set_keys.insert(k);
                }
            }
            for p in r.ports.iter().flatten() {
                if let PortSpec::Named(n) = &p.port {
                    named_keys.insert((p.protocol, n.clone()));
                }
            }
        }
    }
    let names = Names {
        sets: stable_names(set_keys.into_iter().cloned(), "s_"),
        named: stable_names(named_keys, "np_"),
    };
    for (k, base) in &names.sets {
        let members = model.sets.get(k).cloned().unwrap_or_default();
        for v in FAMILIES {
            let s = Set::addresses(v, false).with(
                members
                    .iter()
                    .filter(|a| IpVersion::of(a) == v)
                    .map(|a| Key(vec![Value::Addr(*a)])),
            );
            t.sets.insert(format!("{base}_{}", fam(v)), s);
        }
    }
    for ((proto, name), base) in &names.named {
        let elems = model
            .named_ports
            .get(&(*proto, name.clone()))
            .cloned()
            .unwrap_or_default();
        for v in FAMILIES {
            let s = Set::of(
                vec![KeyType::addr(v), KeyType::InetProto, KeyType::InetService],
                false,
            )
            .with(elems.iter().filter(|(a, _)| IpVersion::of(a) == v).map(
                |(a, port): &(IpAddr, u16)| {
                    Key(vec![
                        Value::Addr(*a),
                        Value::Proto(l4(*proto)),
                        Value::Port(*port),
                    ])
                },
            ));
            t.sets.insert(format!("{base}_{}", fam(v)), s);
        }
    }

    t.chains
        .push(dispatch_chain(BASE_CHAINS[0], Hook::Forward, 1));
    t.chains
        .push(dispatch_chain(BASE_CHAINS[1], Hook::Input, 1));
    let mut ok = Chain::regular(EGRESS_OK);
    ok.rules = lookups(Direction::Ingress);
    ok.rules
        .push(NftRule::default().verdict(Verdict::Goto(ALLOWED.into())));
    t.chains.push(ok);
    let mut allowed = Chain::regular(ALLOWED);
    allowed.rules.push(allowed_rule(1));
    t.chains.push(allowed);
    for dir in [Direction::Ingress, Direction::Egress] {
        for v in FAMILIES {
            t.maps.insert(
                format!("{}_{}", dir_tag(dir), fam(v)),
                Map::of(vec![KeyType::addr(v)], false),
            );
        }
        let drop = match dir {
            Direction::Ingress => DROP_INGRESS,
            Direction::Egress => DROP_EGRESS,
        };
        let mut d = Chain::regular(drop);
        d.rules.push(
            NftRule::default()
                .stmt(Stmt::Counter)
                .verdict(Verdict::Drop)
                .comment(format!("isolated for {dir}, no rule allows it")),
        );
        t.chains.push(d);
    }
    for (key, pod) in &local {
        let Some(pod_name) = pod_names.get(*key) else {
            continue;
        };
        for (dir, list) in [
            (Direction::Ingress, &pod.ingress),
            (Direction::Egress, &pod.egress),
        ] {
            if list.is_empty() {
                continue;
            }
            let mut c = Chain::regular(dir_chain(pod_name, dir));
            for k in list {
                if let Some(base) = policy_names.get(k) {
                    c.rules.push(
                        NftRule::default()
                            .verdict(Verdict::Jump(dir_chain(base, dir)))
                            .comment(k.to_string()),
                    );
                }
            }
            let drop = match dir {
                Direction::Ingress => DROP_INGRESS,
                Direction::Egress => DROP_EGRESS,
            };
            c.rules.push(
                NftRule::default()
                    .stmt(Stmt::Counter)
                    .verdict(Verdict::Goto(drop.into()))
                    .comment(isolation_comment(key, dir)),
            );
            t.chains.push(c);
            for a in &pod.ips {
                if let Some(m) =
                    t.maps
                        .get_mut(&format!("{}_{}", dir_tag(dir), fam(IpVersion::of(a))))
                {
                    m.elements.insert(
                        Key(vec![Value::Addr(*a)]),
                        Verdict::Jump(dir_chain(pod_name, dir)),
                    );
                }
            }
        }
    }
    for (key, dir) in &used {
        let (Some(pol), Some(base)) = (model.policies.get(*key), policy_names.get(*key)) else {
            continue;
        };
        let mut c = Chain::regular(dir_chain(base, *dir));
        c.rules = policy_rules(key, &pol.rules(*dir).rules, *dir, &names);
        t.chains.push(c);
    }
    t
}
