//! Rendering, validation and evaluation of the nftables model (the kernel side is
//! node/tests/nft_model.rs).

use std::collections::BTreeSet;
use std::net::IpAddr;

use hybridnet_api::ipmath::Cidr;
use hybridnet_api::v1::IpVersion::{V4, V6};
use proptest::prelude::*;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cidr(s: &str) -> Cidr {
    Cidr::parse_canonical(s).unwrap()
}

fn filter(name: &str, hook: Hook, policy: Policy) -> Chain {
    Chain::base(name, ChainType::Filter, hook, priority::FILTER, policy)
}

/// A table with one of everything NetworkPolicy needs: address sets, a (proto . port) set, a vmap
/// keyed by interface name and one keyed by address, per-pod chains, goto, counters, comments.
fn policy_table() -> Table {
    let mut t = Table::new("pol");
    t.sets.insert(
        "allowed4".into(),
        Set::addresses(V4, true).with([
            Value::Prefix(cidr("198.18.0.0/24")).into(),
            Value::Addr(ip("198.19.0.9")).into(),
        ]),
    );
    t.sets.insert(
        "ports".into(),
        Set::of(vec![KeyType::InetProto, KeyType::InetService], false).with([
            Key(vec![Value::Proto(L4Proto::Tcp), Value::Port(80)]),
            Key(vec![Value::Proto(L4Proto::Udp), Value::Port(53)]),
        ]),
    );
    t.sets.insert(
        "port_ranges".into(),
        Set::of(vec![KeyType::InetProto, KeyType::InetService], true).with([
            Key(vec![
                Value::Proto(L4Proto::Tcp),
                Value::PortRange(8000, 8080),
            ]),
            Key(vec![Value::Proto(L4Proto::Udp), Value::Port(53)]),
        ]),
    );
    let mut by_if = Map::of(vec![KeyType::IfName], false);
    by_if.elements.insert(
        Value::IfName("hybr1".into()).into(),
        Verdict::Jump("pod_a".into()),
    );
    by_if.elements.insert(
        Value::IfName("hybr2".into()).into(),
        Verdict::Goto("pod_b".into()),
    );
    t.maps.insert("pod_by_if".into(), by_if);
    let mut by_addr = Map::of(vec![KeyType::Ipv4Addr], true);
    by_addr
        .elements
        .insert(Value::Prefix(cidr("203.0.113.0/24")).into(), Verdict::Drop);
    t.maps.insert("blocked4".into(), by_addr);

    let mut fwd = filter("forward", Hook::Forward, Policy::Accept);
    fwd.rules.push(
        Rule::new(vec![])
            .vmap(Field::Daddr(V4), "blocked4")
            .comment("blocked networks"),
    );
    fwd.rules
        .push(Rule::new(vec![]).vmap(Field::OifName, "pod_by_if"));
    fwd.rules.push(
        Rule::new(vec![Match::eq(
            Field::Mark { mask: None },
            Rhs::Value(Value::Mark(7)),
        )])
        .stmt(Stmt::Mark(MarkOp::Set(8))),
    );
    let mut a = Chain::regular("pod_a");
    a.rules.push(
        Rule::new(vec![
            Match::in_set(Field::Saddr(V4), "allowed4"),
            Match::in_set(Field::Concat(vec![Field::L4Proto, Field::Dport]), "ports"),
        ])
        .stmt(Stmt::Counter)
        .verdict(Verdict::Accept)
        .comment("allow from allowed4 on tcp/80, udp/53"),
    );
    a.rules.push(
        Rule::new(vec![Match::in_set(
            Field::Concat(vec![Field::L4Proto, Field::Dport]),
            "port_ranges",
        )])
        .verdict(Verdict::Accept),
    );
    a.rules.push(
        Rule::new(vec![Match::eq(
            Field::Dport,
            Rhs::Value(Value::PortRange(9000, 9001)),
        )])
        .verdict(Verdict::Accept),
    );
    a.rules.push(
        Rule::new(vec![Match::eq(
            Field::L4Proto,
            Rhs::Value(Value::Proto(L4Proto::Tcp)),
        )])
        .verdict(Verdict::Reject(Reject::TcpReset)),
    );
    a.rules.push(
        Rule::new(vec![])
            .stmt(Stmt::Counter)
            .verdict(Verdict::Reject(Reject::IcmpxAdminProhibited))
            .comment("default deny"),
    );
    let mut b = Chain::regular("pod_b");
    b.rules.push(
        Rule::new(vec![Match::CtState {
            op: CmpOp::Eq,
            states: [CtState::Established, CtState::Related]
                .into_iter()
                .collect(),
        }])
        .verdict(Verdict::Accept),
    );
    b.rules.push(Rule::new(vec![]).verdict(Verdict::Drop));
    t.chains = vec![fwd, a, b];
    t
}

fn pkt(src: &str, dst: &str) -> Packet {
    Packet::new(ip(src), ip(dst))
}

#[test]
fn renders_every_construct() {
    let s = policy_table().transaction();
    for line in [
        "table inet pol\ndelete table inet pol\ntable inet pol {\n",
        "\tset allowed4 { type ipv4_addr; flags interval; auto-merge; elements = { 198.19.0.9, 198.18.0.0/24 } }\n",
        "\tset ports { type inet_proto . inet_service; elements = { tcp . 80, udp . 53 } }\n",
        "\tmap blocked4 { type ipv4_addr : verdict; flags interval; elements = { 203.0.113.0/24 : drop } }\n",
        "\tmap pod_by_if { type ifname : verdict; elements = { \"hybr1\" : jump pod_a, \"hybr2\" : goto pod_b } }\n",
        "\t\ttype filter hook forward priority filter; policy accept;\n",
        "\t\tip daddr vmap @blocked4 comment \"blocked networks\"\n",
        "\t\toifname vmap @pod_by_if\n",
        "\t\tmeta mark 0x7 meta mark set 0x8\n",
        "\t\tip saddr @allowed4 meta l4proto . th dport @ports counter accept comment \"allow from allowed4 on tcp/80, udp/53\"\n",
        "\tset port_ranges { type inet_proto . inet_service; flags interval; elements = { tcp . 8000-8080, udp . 53 } }\n",
        "\t\tmeta l4proto . th dport @port_ranges accept\n",
        "\t\tth dport 9000-9001 accept\n",
        "\t\tmeta l4proto tcp reject with tcp reset\n",
        "\t\tcounter reject with icmpx type admin-prohibited comment \"default deny\"\n",
        "\t\tct state established,related accept\n",
    ] {
        assert!(s.contains(line), "missing {line:?} in\n{s}");
    }
    assert!(s.ends_with("\t}\n}\n"));
}

#[test]
fn renders_matches_and_statements() {
    let cases: Vec<(Match, &str)> = vec![
        (
            Match::ne(
                Field::OifName,
                Rhs::Value(Value::IfName("eth0.vxlan4".into())),
            ),
            "oifname != \"eth0.vxlan4\"",
        ),
        (
            Match::eq(
                Field::IifName,
                Rhs::Set(vec![
                    Value::IfName("a".into()).into(),
                    Value::IfName("b".into()).into(),
                ]),
            ),
            "iifname { \"a\", \"b\" }",
        ),
        (
            Match::not_in_set(Field::Daddr(V6), "x6"),
            "ip6 daddr != @x6",
        ),
        (
            Match::in_set(Field::CtOriginalDaddr(V4), "n4"),
            "ct original ip daddr @n4",
        ),
        (
            Match::in_set(Field::CtReplySaddr(V6), "n6"),
            "ct reply ip6 saddr @n6",
        ),
        (
            Match::ne(
                Field::Mark { mask: Some(0x4000) },
                Rhs::Value(Value::Mark(0x4000)),
            ),
            "meta mark & 0x4000 != 0x4000",
        ),
        (
            Match::CtState {
                op: CmpOp::Ne,
                states: [CtState::Established, CtState::Related]
                    .into_iter()
                    .collect(),
            },
            "ct state != { established, related }",
        ),
        (
            Match::CtStatus {
                op: CmpOp::Ne,
                bits: [CtStatus::Snat, CtStatus::Dnat].into_iter().collect(),
            },
            "ct status & (snat | dnat) == 0",
        ),
        (
            Match::CtStatus {
                op: CmpOp::Ne,
                bits: [CtStatus::Dnat].into_iter().collect(),
            },
            "ct status & dnat == 0",
        ),
        (
            Match::CtStatus {
                op: CmpOp::Eq,
                bits: [CtStatus::Snat].into_iter().collect(),
            },
            "ct status snat",
        ),
        (
            Match::FibDaddrLocal { op: CmpOp::Ne },
            "fib daddr type != local",
        ),
        (
            Match::eq(Field::Dport, Rhs::Value(Value::Port(8080))),
            "th dport 8080",
        ),
    ];
    for (m, want) in cases {
        assert_eq!(render::match_(&m), want);
    }
    let r = Rule::new(vec![])
        .stmt(Stmt::Mark(MarkOp::And(!0x20)))
        .stmt(Stmt::Masquerade);
    assert_eq!(
        render::rule(&r),
        "meta mark set meta mark & 0xffffffdf masquerade"
    );
    assert_eq!(render::rule(&Rule::default()), "continue");
}

#[test]
fn hostile_strings_cannot_escape_the_quotes() {
    let r = Rule::new(vec![Match::eq(
        Field::IifName,
        Rhs::Value(Value::IfName("a\"; flush ruleset; \"\\\n".into())),
    )])
    .verdict(Verdict::Accept)
    .comment("x\" drop \"é\t");
    let s = render::rule(&r);
    assert_eq!(
        s,
        "iifname \"a; flush ruleset; \" accept comment \"x drop \""
    );
}

#[test]
fn validate_accepts_a_consistent_table_and_names_every_fault() {
    assert_eq!(policy_table().validate(), Ok(()));
    let mut t = policy_table();
    t.sets
        .get_mut("allowed4")
        .unwrap()
        .elements
        .insert(Value::Addr(ip("fd00::1")).into());
    t.sets.insert(
        "exact4".into(),
        Set::addresses(V4, false).with([Value::Prefix(cidr("198.18.0.0/24")).into()]),
    );
    t.sets.insert("bad-name".into(), Set::addresses(V4, false));
    t.chains[0]
        .rules
        .push(Rule::new(vec![Match::in_set(Field::Saddr(V4), "nope")]));
    t.chains[0]
        .rules
        .push(Rule::new(vec![]).verdict(Verdict::Jump("missing".into())));
    t.chains[0]
        .rules
        .push(Rule::new(vec![]).vmap(Field::IifName, "nomap"));
    t.maps.get_mut("pod_by_if").unwrap().elements.insert(
        Value::IfName("hybr3".into()).into(),
        Verdict::Jump("gone".into()),
    );
    t.chains.push(Chain::regular("pod_a"));
    let errs: Vec<String> = t
        .validate()
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    for want in [
        "chain pod_a is defined twice",
        "set allowed4: element fd00::1 does not have type ipv4_addr",
        "set exact4: element 198.18.0.0/24 does not have type ipv4_addr",
        "set bad-name: name is not [A-Za-z][A-Za-z0-9_]*",
        "chain forward rule 3: set or map @nope is not defined",
        "chain forward rule 4: chain missing is not defined",
        "chain forward rule 5: set or map @nomap is not defined",
        "map pod_by_if: element verdict names chain gone, which is not defined",
    ] {
        assert!(
            errs.iter().any(|e| e == want),
            "missing {want:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), 8, "{errs:#?}");
}

#[test]
fn vmap_jump_and_goto_reach_per_pod_chains() {
    let t = policy_table();
    let mut p = pkt("198.18.0.7", "198.19.0.5");
    p.oif = Some("hybr1".into());
    p.l4 = Some((L4Proto::Tcp, 80));
    let o = t.eval_hook(Hook::Forward, &p);
    assert_eq!(o.verdict, Final::Accept);
    let hit = o.decided_by.clone().map(|h| (h.chain, h.index));
    assert_eq!(hit, None, "accept is not a drop decision");
    assert_eq!(
        o.hits
            .iter()
            .map(|h| (h.chain.as_str(), h.index))
            .collect::<Vec<_>>(),
        [("forward", 1), ("pod_a", 0)]
    );
    // Wrong port: TCP reset from the pod chain.
    p.l4 = Some((L4Proto::Tcp, 81));
    let o = t.eval_hook(Hook::Forward, &p);
    assert_eq!(
        (o.verdict, o.reject),
        (Final::Reject, Some(Reject::TcpReset))
    );
    assert_eq!(o.decided_by.unwrap().index, 3);
    // Port ranges: in a concatenated interval set and as a constant.
    for (l4, v) in [
        ((L4Proto::Tcp, 8000), Final::Accept),
        ((L4Proto::Tcp, 8080), Final::Accept),
        ((L4Proto::Tcp, 8081), Final::Reject),
        ((L4Proto::Udp, 8000), Final::Reject),
        ((L4Proto::Tcp, 9001), Final::Accept),
    ] {
        p.l4 = Some(l4);
        assert_eq!(t.eval_hook(Hook::Forward, &p).verdict, v, "{l4:?}");
    }
    // Not from an allowed address, UDP: the default deny, which names itself.
    p.src = ip("198.20.0.1");
    p.l4 = Some((L4Proto::Udp, 54));
    let o = t.eval_hook(Hook::Forward, &p);
    let d = o.decided_by.unwrap();
    assert_eq!(d.comment.as_deref(), Some("default deny"));
    assert!(
        d.to_string().starts_with("nft pod_a: default deny ("),
        "{d}"
    );
    // goto: pod_b's end does not come back to forward (whose mark rule would run).
    let mut p = pkt("198.18.0.7", "198.19.0.6");
    p.oif = Some("hybr2".into());
    p.mark = 7;
    let o = t.eval_hook(Hook::Forward, &p);
    assert_eq!(o.verdict, Final::Drop);
    p.ct_state = CtState::Established;
    let o = t.eval_hook(Hook::Forward, &p);
    assert_eq!((o.verdict, o.mark), (Final::Accept, 7));
    // Neither pod: falls through the vmap, the mark rule runs, policy accept.
    p.oif = Some("eth0".into());
    let o = t.eval_hook(Hook::Forward, &p);
    assert_eq!((o.verdict, o.mark), (Final::Accept, 8));
    // Address vmap with a prefix key.
    let o = t.eval_hook(Hook::Forward, &pkt("198.18.0.7", "203.0.113.77"));
    assert_eq!(o.verdict, Final::Drop);
    assert_eq!(o.decided_by.unwrap().index, 0);
}

#[test]
fn jump_returns_and_regular_chain_end_returns() {
    let mut t = Table::new("t");
    let mut base = filter("in", Hook::Input, Policy::Drop);
    base.rules
        .push(Rule::new(vec![]).verdict(Verdict::Jump("sub".into())));
    base.rules
        .push(Rule::new(vec![]).stmt(Stmt::Mark(MarkOp::Or(1))));
    let mut sub = Chain::regular("sub");
    sub.rules.push(
        Rule::new(vec![Match::eq(
            Field::Mark { mask: None },
            Rhs::Value(Value::Mark(2)),
        )])
        .verdict(Verdict::Return),
    );
    sub.rules
        .push(Rule::new(vec![]).stmt(Stmt::Mark(MarkOp::Or(4))));
    t.chains = vec![base, sub];
    let o = t.eval_hook(Hook::Input, &pkt("198.18.0.1", "198.18.0.2"));
    // End of `sub` returns; the base chain's policy drop applies at its end.
    assert_eq!((o.verdict, o.mark), (Final::Drop, 5));
    assert_eq!(o.decided_by, None, "the policy decided");
    let mut p = pkt("198.18.0.1", "198.18.0.2");
    p.mark = 2;
    assert_eq!(t.eval_hook(Hook::Input, &p).mark, 3);
    // Other hooks see nothing.
    assert_eq!(t.eval_hook(Hook::Output, &p).verdict, Final::Accept);
}

#[test]
fn base_chains_run_by_priority_and_nat_only_for_new_connections() {
    let mut t = Table::new("t");
    let mut nat = Chain::base(
        "nat",
        ChainType::Nat,
        Hook::Postrouting,
        priority::SRCNAT,
        Policy::Accept,
    );
    nat.rules.push(Rule::new(vec![]).stmt(Stmt::Masquerade));
    let mut mangle = Chain::base(
        "mangle",
        ChainType::Filter,
        Hook::Postrouting,
        priority::MANGLE,
        Policy::Accept,
    );
    mangle
        .rules
        .push(Rule::new(vec![]).stmt(Stmt::Mark(MarkOp::Set(9))));
    t.chains = vec![nat, mangle];
    let o = t.eval_hook(Hook::Postrouting, &pkt("198.18.0.1", "198.18.0.2"));
    assert!(o.masquerade);
    assert_eq!(
        o.hits.iter().map(|h| h.chain.as_str()).collect::<Vec<_>>(),
        ["mangle", "nat"]
    );
    let o = t.eval_hook(
        Hook::Postrouting,
        &Packet::reply(ip("198.18.0.1"), ip("198.18.0.2")),
    );
    assert!(!o.masquerade);
    assert_eq!(o.mark, 9);
}

#[test]
fn fields_of_the_other_family_match_neither_eq_nor_ne() {
    let mut t = Table::new("t");
    let mut c = filter("f", Hook::Forward, Policy::Accept);
    c.rules.push(
        Rule::new(vec![Match::ne(
            Field::Saddr(V4),
            Rhs::Value(Value::Addr(ip("198.18.0.1"))),
        )])
        .verdict(Verdict::Drop),
    );
    c.rules.push(
        Rule::new(vec![Match::eq(Field::Dport, Rhs::Value(Value::Port(22)))])
            .verdict(Verdict::Drop),
    );
    t.chains = vec![c];
    assert_eq!(
        t.eval_hook(Hook::Forward, &pkt("fd00::1", "fd00::2"))
            .verdict,
        Final::Accept
    );
    assert_eq!(
        t.eval_hook(Hook::Forward, &pkt("198.18.0.9", "198.18.0.2"))
            .verdict,
        Final::Drop
    );
    // No transport header: `th dport` matches nothing.
    let mut p = pkt("198.18.0.1", "198.18.0.2");
    assert_eq!(t.eval_hook(Hook::Forward, &p).verdict, Final::Accept);
    p.l4 = Some((L4Proto::Tcp, 22));
    assert_eq!(t.eval_hook(Hook::Forward, &p).verdict, Final::Drop);
}

#[test]
fn interface_wildcards_match_prefixes() {
    let mut t = Table::new("t");
    let mut c = filter("f", Hook::Forward, Policy::Accept);
    c.rules.push(
        Rule::new(vec![Match::eq(
            Field::OifName,
            Rhs::Value(Value::IfName("hybr*".into())),
        )])
        .verdict(Verdict::Drop),
    );
    t.chains = vec![c];
    let mut p = pkt("198.18.0.1", "198.18.0.2");
    for (oif, v) in [
        ("hybr12ab", Final::Drop),
        ("hyb", Final::Accept),
        ("eth0", Final::Accept),
    ] {
        p.oif = Some(oif.into());
        assert_eq!(t.eval_hook(Hook::Forward, &p).verdict, v, "{oif}");
    }
}

#[test]
fn jump_loops_terminate() {
    let mut t = Table::new("t");
    let mut a = filter("a", Hook::Forward, Policy::Accept);
    a.rules
        .push(Rule::new(vec![]).verdict(Verdict::Jump("b".into())));
    let mut b = Chain::regular("b");
    b.rules
        .push(Rule::new(vec![]).verdict(Verdict::Goto("b".into())));
    t.chains = vec![a, b];
    let o = t.eval_hook(Hook::Forward, &pkt("198.18.0.1", "198.18.0.2"));
    assert_eq!(o.verdict, Final::Accept);
    let mut a = filter("a", Hook::Forward, Policy::Accept);
    a.rules
        .push(Rule::new(vec![]).verdict(Verdict::Jump("a".into())));
    t.chains = vec![a];
    let o = t.eval_hook(Hook::Forward, &pkt("198.18.0.1", "198.18.0.2"));
    assert_eq!(o.hits.len(), 17, "16 nested jumps, then evaluation stops");
}

fn arb_v4_prefix() -> impl Strategy<Value = Cidr> {
    (any::<u32>(), 8u8..=32).prop_map(|(a, len)| {
        let c = Cidr::parse_any(&format!("{}/{len}", std::net::Ipv4Addr::from(a))).unwrap();
        Cidr::parse_canonical(&c.to_string()).unwrap()
    })
}

proptest! {
    /// `daddr @set` holds exactly when an element contains the address, `!=` exactly when none
    /// does (same family), and the rendered set lists every element.
    #[test]
    fn set_membership_is_prefix_containment(
        prefixes in proptest::collection::vec(arb_v4_prefix(), 0..8),
        addrs in proptest::collection::vec(any::<u32>(), 0..4),
        probe in any::<u32>(),
    ) {
        let probe = IpAddr::V4(probe.into());
        let mut elems: BTreeSet<Key> = prefixes.iter().map(|c| Value::Prefix(*c).into()).collect();
        elems.extend(addrs.iter().map(|a| Key::from(Value::Addr(IpAddr::V4((*a).into())))));
        let mut t = Table::new("t");
        t.sets.insert("s".into(), Set { key: vec![KeyType::Ipv4Addr], interval: true, elements: elems.clone() });
        let mut c = filter("f", Hook::Forward, Policy::Accept);
        c.rules.push(Rule::new(vec![Match::in_set(Field::Daddr(V4), "s")]).verdict(Verdict::Drop));
        c.rules.push(Rule::new(vec![Match::not_in_set(Field::Daddr(V4), "s")]).verdict(Verdict::Reject(Reject::IcmpHostUnreachable)));
        t.chains = vec![c];
        prop_assert_eq!(t.validate(), Ok(()));
        let inside = prefixes.iter().any(|c| c.contains(probe))
            || addrs.iter().any(|a| IpAddr::V4((*a).into()) == probe);
        let o = t.eval_hook(Hook::Forward, &Packet::new(ip("198.18.0.1"), probe));
        prop_assert_eq!(o.verdict, if inside { Final::Drop } else { Final::Reject });
        let s = t.transaction();
        for e in &elems {
            prop_assert!(s.contains(&render::key(e)));
        }
    }

    /// Any packet against the policy table gets a verdict, and every hit names an existing rule
    /// whose rendering it carries.
    #[test]
    fn evaluation_is_total(
        src in any::<u32>(), dst in any::<u32>(), mark in any::<u32>(),
        oif in proptest::option::of("(hybr[0-9]|eth0|)"),
        l4 in proptest::option::of((0u8..3, any::<u16>())),
        est in any::<bool>(),
    ) {
        let t = policy_table();
        let mut p = Packet::new(IpAddr::V4(src.into()), IpAddr::V4(dst.into()));
        p.mark = mark;
        p.oif = oif;
        p.ct_state = if est { CtState::Established } else { CtState::New };
        p.l4 = l4.map(|(k, port)| ([L4Proto::Tcp, L4Proto::Udp, L4Proto::Sctp][k as usize], port));
        let o = t.eval_hook(Hook::Forward, &p);
        let texts = t.rule_texts();
        for h in &o.hits {
            prop_assert!(texts.iter().any(|(c, i, r)| *c == h.chain && *i == h.index && *r == h.rule));
        }
        if let Some(d) = &o.decided_by {
            prop_assert_ne!(o.verdict, Final::Accept);
            prop_assert_eq!(Some(d), o.hits.last());
        }
    }
}
