//! The one place that writes nft syntax.

use std::fmt::Write as _;

use hybridnet_api::v1::IpVersion;

use super::{
    ChainType, CmpOp, CtState, CtStatus, Family, Field, Hook, Key, KeyType, L4Proto, Map, MarkOp,
    Match, Policy, Reject, Rhs, Rule, Set, Stmt, Table, Value, Verdict, VerdictExpr, priority,
};

/// A string as an nft string literal. Interface names come from the host and the API (VLAN
/// parents) and comments from object names: nft strings cannot hold quotes or backslashes, so
/// those (and anything not printable ASCII) are dropped.
pub(super) fn quote(s: &str) -> String {
    let clean: String = s
        .chars()
        .filter(|c| (c.is_ascii_graphic() || *c == ' ') && *c != '"' && *c != '\\')
        .collect();
    format!("\"{clean}\"")
}

fn family(f: Family) -> &'static str {
    match f {
        Family::Inet => "inet",
    }
}

fn ipkw(v: IpVersion) -> &'static str {
    match v {
        IpVersion::V4 => "ip",
        IpVersion::V6 => "ip6",
    }
}

pub(super) fn proto(p: L4Proto) -> &'static str {
    match p {
        L4Proto::Tcp => "tcp",
        L4Proto::Udp => "udp",
        L4Proto::Sctp => "sctp",
    }
}

pub(super) fn value(v: &Value) -> String {
    match v {
        Value::Addr(a) => a.to_string(),
        Value::Prefix(c) => c.to_string(),
        Value::IfName(n) => quote(n),
        Value::Proto(p) => proto(*p).to_string(),
        Value::Port(p) => p.to_string(),
        Value::PortRange(a, b) => format!("{a}-{b}"),
        Value::Mark(m) => format!("{m:#x}"),
    }
}

pub(super) fn key(k: &Key) -> String {
    k.0.iter().map(value).collect::<Vec<_>>().join(" . ")
}

pub(super) fn key_type(ty: &[KeyType]) -> String {
    ty.iter()
        .map(|t| match t {
            KeyType::Ipv4Addr => "ipv4_addr",
            KeyType::Ipv6Addr => "ipv6_addr",
            KeyType::IfName => "ifname",
            KeyType::InetProto => "inet_proto",
            KeyType::InetService => "inet_service",
            KeyType::Mark => "mark",
        })
        .collect::<Vec<_>>()
        .join(" . ")
}

pub(super) fn field(f: &Field) -> String {
    match f {
        Field::IifName => "iifname".into(),
        Field::OifName => "oifname".into(),
        Field::Saddr(v) => format!("{} saddr", ipkw(*v)),
        Field::Daddr(v) => format!("{} daddr", ipkw(*v)),
        Field::CtOriginalDaddr(v) => format!("ct original {} daddr", ipkw(*v)),
        Field::CtReplySaddr(v) => format!("ct reply {} saddr", ipkw(*v)),
        Field::L4Proto => "meta l4proto".into(),
        Field::Dport => "th dport".into(),
        Field::Mark { mask: None } => "meta mark".into(),
        Field::Mark { mask: Some(m) } => format!("meta mark & {m:#x}"),
        Field::CtMark => "ct mark".into(),
        Field::Concat(fs) => fs.iter().map(field).collect::<Vec<_>>().join(" . "),
    }
}

fn rhs(r: &Rhs) -> String {
    match r {
        Rhs::Value(v) => value(v),
        Rhs::Set(keys) => format!(
            "{{ {} }}",
            keys.iter().map(key).collect::<Vec<_>>().join(", ")
        ),
        Rhs::Named(n) => format!("@{n}"),
    }
}

fn ct_state(s: CtState) -> &'static str {
    match s {
        CtState::New => "new",
        CtState::Established => "established",
        CtState::Related => "related",
        CtState::Invalid => "invalid",
        CtState::Untracked => "untracked",
    }
}

fn ct_status(s: CtStatus) -> &'static str {
    match s {
        CtStatus::Snat => "snat",
        CtStatus::Dnat => "dnat",
    }
}

pub(super) fn match_(m: &Match) -> String {
    match m {
        Match::Cmp {
            field: f,
            op,
            rhs: r,
        } => match op {
            CmpOp::Eq => format!("{} {}", field(f), rhs(r)),
            CmpOp::Ne => format!("{} != {}", field(f), rhs(r)),
        },
        Match::CtState { op, states } => {
            let names: Vec<&str> = states.iter().map(|s| ct_state(*s)).collect();
            match op {
                CmpOp::Eq => format!("ct state {}", names.join(",")),
                CmpOp::Ne => format!("ct state != {{ {} }}", names.join(", ")),
            }
        }
        Match::CtStatus { op, bits } => {
            let names: Vec<&str> = bits.iter().map(|s| ct_status(*s)).collect();
            match (op, names.len()) {
                (CmpOp::Eq, _) => format!("ct status {}", names.join(",")),
                (CmpOp::Ne, 1) => format!("ct status & {} == 0", names.join("")),
                (CmpOp::Ne, _) => format!("ct status & ({}) == 0", names.join(" | ")),
            }
        }
        Match::FibDaddrLocal { op } => match op {
            CmpOp::Eq => "fib daddr type local".into(),
            CmpOp::Ne => "fib daddr type != local".into(),
        },
        Match::CtDirectionReply { op } => match op {
            CmpOp::Eq => "ct direction reply".into(),
            CmpOp::Ne => "ct direction original".into(),
        },
    }
}

fn stmt(s: &Stmt) -> String {
    match s {
        Stmt::Counter => "counter".into(),
        Stmt::Mark(MarkOp::Set(v)) => format!("meta mark set {v:#x}"),
        Stmt::Mark(MarkOp::Or(v)) => format!("meta mark set meta mark | {v:#x}"),
        Stmt::Mark(MarkOp::And(v)) => format!("meta mark set meta mark & {v:#x}"),
        Stmt::CtMark(MarkOp::Set(v)) => format!("ct mark set {v:#x}"),
        Stmt::CtMark(MarkOp::Or(v)) => format!("ct mark set ct mark | {v:#x}"),
        Stmt::CtMark(MarkOp::And(v)) => format!("ct mark set ct mark & {v:#x}"),
        Stmt::Masquerade => "masquerade".into(),
    }
}

pub(super) fn verdict(v: &Verdict) -> String {
    match v {
        Verdict::Accept => "accept".into(),
        Verdict::Drop => "drop".into(),
        Verdict::Return => "return".into(),
        Verdict::Jump(c) => format!("jump {c}"),
        Verdict::Goto(c) => format!("goto {c}"),
        Verdict::Reject(r) => match r {
            Reject::IcmpHostUnreachable => "reject with icmp type host-unreachable".into(),
            Reject::Icmpv6AddrUnreachable => "reject with icmpv6 type addr-unreachable".into(),
            Reject::IcmpxAdminProhibited => "reject with icmpx type admin-prohibited".into(),
            Reject::TcpReset => "reject with tcp reset".into(),
        },
    }
}

/// One rule as it appears inside its chain.
pub(super) fn rule(r: &Rule) -> String {
    let mut s = rule_body(r);
    if let Some(c) = &r.comment {
        s.push_str(&format!(" comment {}", quote(c)));
    }
    s
}

/// A rule without its comment.
pub(super) fn rule_body(r: &Rule) -> String {
    let mut parts: Vec<String> = r.matches.iter().map(match_).collect();
    parts.extend(r.stmts.iter().map(stmt));
    match &r.verdict {
        Some(VerdictExpr::Verdict(v)) => parts.push(verdict(v)),
        Some(VerdictExpr::Vmap { field: f, map }) => {
            parts.push(format!("{} vmap @{map}", field(f)));
        }
        None => {}
    }
    if parts.is_empty() {
        // A rule must say something; `continue` is the no-op verdict.
        parts.push("continue".into());
    }
    parts.join(" ")
}

fn priority_name(p: i32) -> String {
    match p {
        priority::RAW => "raw".into(),
        priority::MANGLE => "mangle".into(),
        priority::DSTNAT => "dstnat".into(),
        priority::FILTER => "filter".into(),
        priority::SECURITY => "security".into(),
        priority::SRCNAT => "srcnat".into(),
        n => n.to_string(),
    }
}

fn hook(h: Hook) -> &'static str {
    match h {
        Hook::Prerouting => "prerouting",
        Hook::Input => "input",
        Hook::Forward => "forward",
        Hook::Output => "output",
        Hook::Postrouting => "postrouting",
    }
}

fn set_line(out: &mut String, name: &str, s: &Set) {
    let _ = write!(out, "\tset {name} {{ type {};", key_type(&s.key));
    if s.interval {
        let _ = write!(out, " flags interval;");
        // nft merges overlapping elements of single-field interval sets only.
        if s.key.len() == 1 {
            let _ = write!(out, " auto-merge;");
        }
    }
    if !s.elements.is_empty() {
        let list: Vec<String> = s.elements.iter().map(key).collect();
        let _ = write!(out, " elements = {{ {} }}", list.join(", "));
    }
    let _ = writeln!(out, " }}");
}

fn map_line(out: &mut String, name: &str, m: &Map) {
    let _ = write!(out, "\tmap {name} {{ type {} : verdict;", key_type(&m.key));
    if m.interval {
        let _ = write!(out, " flags interval;");
    }
    if !m.elements.is_empty() {
        let list: Vec<String> = m
            .elements
            .iter()
            .map(|(k, v)| format!("{} : {}", key(k), verdict(v)))
            .collect();
        let _ = write!(out, " elements = {{ {} }}", list.join(", "));
    }
    let _ = writeln!(out, " }}");
}

pub(super) fn transaction(t: &Table) -> String {
    let fam = family(t.family);
    let name = &t.name;
    let mut out = String::new();
    let _ = writeln!(out, "table {fam} {name}");
    let _ = writeln!(out, "delete table {fam} {name}");
    let _ = writeln!(out, "table {fam} {name} {{");
    for (n, s) in &t.sets {
        set_line(&mut out, n, s);
    }
    for (n, m) in &t.maps {
        map_line(&mut out, n, m);
    }
    for c in &t.chains {
        let _ = writeln!(out, "\tchain {} {{", c.name);
        if let Some(b) = &c.base {
            let kind = match b.kind {
                ChainType::Filter => "filter",
                ChainType::Nat => "nat",
                ChainType::Route => "route",
            };
            let policy = match b.policy {
                Policy::Accept => "accept",
                Policy::Drop => "drop",
            };
            let _ = writeln!(
                out,
                "\t\ttype {kind} hook {} priority {}; policy {policy};",
                hook(b.hook),
                priority_name(b.priority)
            );
        }
        for r in &c.rules {
            let _ = writeln!(out, "\t\t{}", rule(r));
        }
        let _ = writeln!(out, "\t}}");
    }
    let _ = writeln!(out, "}}");
    out
}

fn element_list(keys: impl Iterator<Item = String>) -> String {
    format!("{{ {} }}", keys.collect::<Vec<_>>().join(", "))
}

/// The incremental commands of [`super::diff`] on table `family name`.
pub(super) fn ops(f: Family, name: &str, ops: &[super::diff::Op]) -> String {
    use super::diff::Op;
    let t = format!("{} {name}", family(f));
    let mut out = String::new();
    for op in ops {
        match op {
            Op::AddChain(c) => {
                let _ = writeln!(out, "add chain {t} {c}");
            }
            Op::AddSet(n, s) => {
                let _ = writeln!(out, "table {t} {{");
                set_line(&mut out, n, s);
                let _ = writeln!(out, "}}");
            }
            Op::AddMap(n, m) => {
                let _ = writeln!(out, "table {t} {{");
                map_line(&mut out, n, m);
                let _ = writeln!(out, "}}");
            }
            Op::DeleteElements(n, keys) | Op::DeleteMapElements(n, keys) => {
                let _ = writeln!(
                    out,
                    "delete element {t} {n} {}",
                    element_list(keys.iter().map(key))
                );
            }
            Op::AddElements(n, keys) => {
                let _ = writeln!(
                    out,
                    "add element {t} {n} {}",
                    element_list(keys.iter().map(key))
                );
            }
            Op::AddMapElements(n, elems) => {
                let _ = writeln!(
                    out,
                    "add element {t} {n} {}",
                    element_list(
                        elems
                            .iter()
                            .map(|(k, v)| format!("{} : {}", key(k), verdict(v)))
                    )
                );
            }
            Op::FlushSet(n) => {
                let _ = writeln!(out, "flush set {t} {n}");
            }
            Op::FlushChain(c) => {
                let _ = writeln!(out, "flush chain {t} {c}");
            }
            Op::AddRule(c, r) => {
                let _ = writeln!(out, "add rule {t} {c} {}", rule(r));
            }
            Op::DeleteSet(n) => {
                let _ = writeln!(out, "delete set {t} {n}");
            }
            Op::DeleteMap(n) => {
                let _ = writeln!(out, "delete map {t} {n}");
            }
            Op::DeleteChain(c) => {
                let _ = writeln!(out, "delete chain {t} {c}");
            }
        }
    }
    out
}
