//! nftables rules as typed data: the one description of the ruleset that the agent renders to an
//! `nft -f` transaction ([`Table::transaction`]) and that `trace` interprets ([`eval`]).
//!
//! A [`Table`] holds named sets and verdict maps with typed elements and chains (base chains with
//! hook, priority and policy, or regular chains reached by `jump`/`goto`). A [`Rule`] is a list of
//! [`Match`]es (all must hold), then statements ([`Stmt`]: counter, mark, masquerade), then an
//! optional [`Verdict`]. Only what the model can express can be rendered, so what the kernel runs
//! and what `trace` explains cannot drift apart. How to add rules: docs/architecture.md, "The
//! nftables model".

pub mod diff;
mod eval;
mod render;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use hybridnet_api::ipmath::Cidr;
use hybridnet_api::v1::IpVersion;

pub use eval::{ChainOutcome, Final, Hit, HookOutcome, Packet};

/// Standard hook priorities (nft's names for family `inet`).
pub mod priority {
    pub const RAW: i32 = -300;
    pub const MANGLE: i32 = -150;
    pub const DSTNAT: i32 = -100;
    pub const FILTER: i32 = 0;
    pub const SECURITY: i32 = 50;
    pub const SRCNAT: i32 = 100;
}

/// Address family of a table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// IPv4 and IPv6 in one table.
    #[default]
    Inet,
}

/// One nftables table: the unit the agent replaces atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub family: Family,
    pub name: String,
    pub sets: BTreeMap<String, Set>,
    pub maps: BTreeMap<String, Map>,
    /// In definition order (base chains of one hook run by priority, then this order).
    pub chains: Vec<Chain>,
}

/// The type of one component of a set or map key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyType {
    Ipv4Addr,
    Ipv6Addr,
    IfName,
    InetProto,
    InetService,
    Mark,
}

/// A named set. `key` has more than one component for concatenations (`inet_proto .
/// inet_service`); `interval` sets may hold prefixes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    pub key: Vec<KeyType>,
    pub interval: bool,
    pub elements: BTreeSet<Key>,
}

/// A named verdict map (`type <key> : verdict`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Map {
    pub key: Vec<KeyType>,
    pub interval: bool,
    pub elements: BTreeMap<Key, Verdict>,
}

/// Layer-4 protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4Proto {
    Tcp,
    Udp,
    Sctp,
}

/// One typed value: an element component or the right-hand side of a comparison.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    Addr(IpAddr),
    Prefix(Cidr),
    /// An interface name; a trailing `*` matches every name with that prefix.
    IfName(String),
    Proto(L4Proto),
    Port(u16),
    /// Ports `first..=last` (interval sets and comparisons, e.g. a NetworkPolicy `endPort`).
    PortRange(u16, u16),
    Mark(u32),
}

/// A set or map element: one value, or several for a concatenated key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(pub Vec<Value>);

impl From<Value> for Key {
    fn from(v: Value) -> Self {
        Key(vec![v])
    }
}

/// A packet field (the left-hand side of a comparison).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    IifName,
    OifName,
    Saddr(IpVersion),
    Daddr(IpVersion),
    /// `ct original ip daddr`: the destination of the connection's first packet.
    CtOriginalDaddr(IpVersion),
    /// `ct reply ip saddr`: the source of the connection's replies (after NAT).
    CtReplySaddr(IpVersion),
    /// `meta l4proto`
    L4Proto,
    /// `th dport`
    Dport,
    /// `meta mark`, masked with `& mask` when given.
    Mark {
        mask: Option<u32>,
    },
    /// `ct mark`: the mark of the packet's connection.
    CtMark,
    /// `a . b`: compared with concatenated keys.
    Concat(Vec<Field>),
}

/// `==` or `!=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
}

/// What a field is compared with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rhs {
    Value(Value),
    /// An anonymous set `{ a, b }`.
    Set(Vec<Key>),
    /// A named set `@name`.
    Named(String),
}

/// Connection tracking state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CtState {
    New,
    Established,
    Related,
    Invalid,
    Untracked,
}

/// Connection tracking status bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CtStatus {
    Snat,
    Dnat,
}

/// One condition of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    Cmp {
        field: Field,
        op: CmpOp,
        rhs: Rhs,
    },
    /// `Eq`: the state is one of `states`; `Ne`: it is none of them.
    CtState {
        op: CmpOp,
        states: BTreeSet<CtState>,
    },
    /// `Eq`: one of the bits is set (`ct status snat`); `Ne`: none is (`ct status & (..) == 0`).
    CtStatus {
        op: CmpOp,
        bits: BTreeSet<CtStatus>,
    },
    /// `fib daddr type local` (`Eq`) or `!= local` (`Ne`).
    FibDaddrLocal {
        op: CmpOp,
    },
    /// `ct direction reply` (`Eq`) or `ct direction original` (`Ne`).
    CtDirectionReply {
        op: CmpOp,
    },
}

/// A change of the packet mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkOp {
    Set(u32),
    Or(u32),
    And(u32),
}

impl MarkOp {
    pub fn apply(self, mark: u32) -> u32 {
        match self {
            MarkOp::Set(v) => v,
            MarkOp::Or(v) => mark | v,
            MarkOp::And(v) => mark & v,
        }
    }
}

/// A non-terminal statement (masquerade ends evaluation like `accept`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stmt {
    Counter,
    Mark(MarkOp),
    /// Changes the connection's mark (`ct mark set ...`), which later packets of the connection
    /// carry.
    CtMark(MarkOp),
    Masquerade,
}

/// How a `reject` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reject {
    /// ICMP host unreachable (IPv4 rules).
    IcmpHostUnreachable,
    /// ICMPv6 address unreachable (IPv6 rules).
    Icmpv6AddrUnreachable,
    /// ICMP or ICMPv6 administratively prohibited (either family).
    IcmpxAdminProhibited,
    TcpReset,
}

/// What happens to the packet after a rule matched.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Accept,
    Drop,
    Reject(Reject),
    Return,
    Jump(String),
    Goto(String),
}

/// A rule's verdict part: a fixed verdict or a lookup in a verdict map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerdictExpr {
    Verdict(Verdict),
    /// `<field> vmap @map`: the verdict of the element the field matches, if any.
    Vmap {
        field: Field,
        map: String,
    },
}

/// One rule.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub stmts: Vec<Stmt>,
    pub verdict: Option<VerdictExpr>,
    /// Shown by `nft list` and by `trace` as the reason of the rule.
    pub comment: Option<String>,
}

/// The hook of a base chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

/// The type of a base chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    /// Consulted for the first packet of a connection only.
    Nat,
    Route,
}

/// `accept` or `drop` at the end of a base chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

/// Hook, type, priority and policy of a base chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: ChainType,
    pub hook: Hook,
    pub priority: i32,
    pub policy: Policy,
}

/// A chain: a base chain when `base` is set, otherwise reached by `jump`/`goto`/vmap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

/// A reference in the table that cannot be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("chain {chain} rule {index}: set or map @{name} is not defined")]
    UnknownSet {
        chain: String,
        index: usize,
        name: String,
    },
    #[error("chain {chain} rule {index}: chain {target} is not defined")]
    UnknownChain {
        chain: String,
        index: usize,
        target: String,
    },
    #[error("map {map}: element verdict names chain {target}, which is not defined")]
    UnknownMapChain { map: String, target: String },
    #[error("{kind} {name}: element {element} does not have type {expected}")]
    ElementType {
        kind: &'static str,
        name: String,
        element: String,
        expected: String,
    },
    #[error("chain {name} is defined twice")]
    DuplicateChain { name: String },
    #[error("{kind} {name}: name is not [A-Za-z][A-Za-z0-9_]*")]
    BadName { kind: &'static str, name: String },
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
        && n.len() <= 64
}

impl KeyType {
    /// Whether `v` is an element component of this type (prefixes only in interval sets).
    pub fn admits(self, v: &Value, interval: bool) -> bool {
        match (self, v) {
            (KeyType::Ipv4Addr, Value::Addr(IpAddr::V4(_)))
            | (KeyType::Ipv6Addr, Value::Addr(IpAddr::V6(_))) => true,
            (KeyType::Ipv4Addr, Value::Prefix(c)) => interval && c.version == IpVersion::V4,
            (KeyType::Ipv6Addr, Value::Prefix(c)) => interval && c.version == IpVersion::V6,
            (KeyType::InetService, Value::PortRange(a, b)) => interval && a <= b,
            (KeyType::IfName, Value::IfName(_))
            | (KeyType::InetProto, Value::Proto(_))
            | (KeyType::InetService, Value::Port(_))
            | (KeyType::Mark, Value::Mark(_)) => true,
            _ => false,
        }
    }

    /// The address key type of a family.
    pub fn addr(v: IpVersion) -> Self {
        match v {
            IpVersion::V4 => KeyType::Ipv4Addr,
            IpVersion::V6 => KeyType::Ipv6Addr,
        }
    }
}

fn key_admitted(ty: &[KeyType], k: &Key, interval: bool) -> bool {
    ty.len() == k.0.len() && ty.iter().zip(&k.0).all(|(t, v)| t.admits(v, interval))
}

impl Set {
    /// A set of addresses of one family; `interval` allows prefixes.
    pub fn addresses(v: IpVersion, interval: bool) -> Self {
        Self {
            key: vec![KeyType::addr(v)],
            interval,
            elements: BTreeSet::new(),
        }
    }

    pub fn of(key: Vec<KeyType>, interval: bool) -> Self {
        Self {
            key,
            interval,
            elements: BTreeSet::new(),
        }
    }

    pub fn with(mut self, elements: impl IntoIterator<Item = Key>) -> Self {
        self.elements.extend(elements);
        self
    }
}

impl Map {
    pub fn of(key: Vec<KeyType>, interval: bool) -> Self {
        Self {
            key,
            interval,
            elements: BTreeMap::new(),
        }
    }
}

impl Rule {
    /// A rule with these matches and no verdict (statements and verdict added with the builders).
    pub fn new(matches: Vec<Match>) -> Self {
        Self {
            matches,
            ..Default::default()
        }
    }

    pub fn stmt(mut self, s: Stmt) -> Self {
        self.stmts.push(s);
        self
    }

    pub fn verdict(mut self, v: Verdict) -> Self {
        self.verdict = Some(VerdictExpr::Verdict(v));
        self
    }

    pub fn vmap(mut self, field: Field, map: impl Into<String>) -> Self {
        self.verdict = Some(VerdictExpr::Vmap {
            field,
            map: map.into(),
        });
        self
    }

    pub fn comment(mut self, c: impl Into<String>) -> Self {
        self.comment = Some(c.into());
        self
    }
}

impl Match {
    /// `field == rhs`.
    pub fn eq(field: Field, rhs: Rhs) -> Self {
        Match::Cmp {
            field,
            op: CmpOp::Eq,
            rhs,
        }
    }

    /// `field != rhs`.
    pub fn ne(field: Field, rhs: Rhs) -> Self {
        Match::Cmp {
            field,
            op: CmpOp::Ne,
            rhs,
        }
    }

    /// `field @set`.
    pub fn in_set(field: Field, set: impl Into<String>) -> Self {
        Self::eq(field, Rhs::Named(set.into()))
    }

    /// `field != @set`.
    pub fn not_in_set(field: Field, set: impl Into<String>) -> Self {
        Self::ne(field, Rhs::Named(set.into()))
    }
}

impl Chain {
    pub fn regular(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            base: None,
            rules: Vec::new(),
        }
    }

    pub fn base(
        name: impl Into<String>,
        kind: ChainType,
        hook: Hook,
        priority: i32,
        policy: Policy,
    ) -> Self {
        Self {
            name: name.into(),
            base: Some(BaseChain {
                kind,
                hook,
                priority,
                policy,
            }),
            rules: Vec::new(),
        }
    }
}

impl Table {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            family: Family::Inet,
            name: name.into(),
            ..Default::default()
        }
    }

    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// The elements of a named set as `nft` prints them (for tests and diagnostics).
    pub fn set_elements(&self, name: &str) -> Vec<String> {
        self.sets
            .get(name)
            .map(|s| s.elements.iter().map(render::key).collect())
            .unwrap_or_default()
    }

    /// The `nft -f` transaction that replaces the table atomically: create (so the delete cannot
    /// fail), delete, define. Packets see either the old or the new table.
    pub fn transaction(&self) -> String {
        render::transaction(self)
    }

    /// Every rule as it is rendered, without comments, `(chain, index, text)`.
    pub fn rule_texts(&self) -> Vec<(String, usize, String)> {
        self.chains
            .iter()
            .flat_map(|c| {
                c.rules
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (c.name.clone(), i, render::rule_body(r)))
            })
            .collect()
    }

    /// Checks what `nft` would refuse: undefined sets, maps and chains, elements of the wrong
    /// type, duplicate chains, names `nft` cannot parse.
    pub fn validate(&self) -> Result<(), Vec<ModelError>> {
        let mut errs = Vec::new();
        let mut seen = BTreeSet::new();
        for c in &self.chains {
            if !seen.insert(c.name.as_str()) {
                errs.push(ModelError::DuplicateChain {
                    name: c.name.clone(),
                });
            }
            if !valid_name(&c.name) {
                errs.push(ModelError::BadName {
                    kind: "chain",
                    name: c.name.clone(),
                });
            }
        }
        for (kind, name, ty, interval, elems) in self
            .sets
            .iter()
            .map(|(n, s)| ("set", n, &s.key, s.interval, s.elements.iter().collect()))
            .chain(self.maps.iter().map(|(n, m)| {
                (
                    "map",
                    n,
                    &m.key,
                    m.interval,
                    m.elements.keys().collect::<Vec<_>>(),
                )
            }))
        {
            if !valid_name(name) {
                errs.push(ModelError::BadName {
                    kind,
                    name: name.clone(),
                });
            }
            for e in elems {
                if !key_admitted(ty, e, interval) {
                    errs.push(ModelError::ElementType {
                        kind,
                        name: name.clone(),
                        element: render::key(e),
                        expected: render::key_type(ty),
                    });
                }
            }
        }
        let chain_ok = |t: &str| self.chain(t).is_some();
        for (m, map) in &self.maps {
            for v in map.elements.values() {
                if let Verdict::Jump(t) | Verdict::Goto(t) = v
                    && !chain_ok(t)
                {
                    errs.push(ModelError::UnknownMapChain {
                        map: m.clone(),
                        target: t.clone(),
                    });
                }
            }
        }
        for c in &self.chains {
            for (i, r) in c.rules.iter().enumerate() {
                for m in &r.matches {
                    if let Match::Cmp {
                        rhs: Rhs::Named(n), ..
                    } = m
                        && !self.sets.contains_key(n)
                    {
                        errs.push(ModelError::UnknownSet {
                            chain: c.name.clone(),
                            index: i,
                            name: n.clone(),
                        });
                    }
                }
                match &r.verdict {
                    Some(VerdictExpr::Verdict(Verdict::Jump(t) | Verdict::Goto(t)))
                        if !chain_ok(t) =>
                    {
                        errs.push(ModelError::UnknownChain {
                            chain: c.name.clone(),
                            index: i,
                            target: t.clone(),
                        });
                    }
                    Some(VerdictExpr::Vmap { map, .. }) if !self.maps.contains_key(map) => {
                        errs.push(ModelError::UnknownSet {
                            chain: c.name.clone(),
                            index: i,
                            name: map.clone(),
                        });
                    }
                    _ => {}
                }
            }
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// Runs the base chains of `hook` for `pkt` (see [`eval`]).
    pub fn eval_hook(&self, hook: Hook, pkt: &Packet) -> HookOutcome {
        eval::hook(self, hook, pkt)
    }
}
