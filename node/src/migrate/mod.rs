//! Removing what the upstream (Go) hybridnet daemon left on a node, and only that.
//!
//! Pure decisions over the text of `iptables-save` and `ipset list -n`; [`host`] runs the tools
//! (both iptables backends, both families) and feeds the result back. What is upstream's comes
//! from its source (alibaba/hybridnet v0.8.x):
//!
//! * iptables chains, `pkg/daemon/iptables/iptables.go`: nat `HYBRIDNET-POSTROUTING`; filter
//!   `HYBRIDNET-FORWARD`; mangle `HYBRIDNET-PREROUTING`, `HYBRIDNET-POSTROUTING`,
//!   `HYBRIDNET-FROM-RULE-SKIP`, `HYBRIDNET-POD-TO-NODE-MARK`; and the `RAMA-*` chains of its
//!   former name (`pkg/daemon/iptables/compatible.go`). Upstream jumps to them from the built-in
//!   chains (nat POSTROUTING, filter FORWARD, mangle PREROUTING and POSTROUTING).
//! * ipsets, same file and `pkg/daemon/ipset/ipset.go`: `HYBR-` + `OVERLAY-NET`, `ALL`,
//!   `NODE-IP`, `LOCAL-POD-IP`, `LOCAL-UNDERLAY-NET` (before v0.8.4 `HYBRIDNET-…`, before that
//!   `…-V4`/`…-V6` and `RAMA-…`), IPv6 ones named with an `inet6:` prefix, and the `<name>-`
//!   temporary set of an interrupted refresh.
//! * felix (the optional policy container, `cali-*` chains, rules commented `cali:…`, ipsets
//!   `cali40…`/`cali60…`, as `policy/uninstall-policy.sh` removes them) only when asked: felix
//!   is gone only when the migration says so.
//!
//! Upstream's policy rules, route tables, VXLAN and VLAN devices use the same tables and names as
//! ours: the data plane adopts them (see the `dataplane` module docs), nothing to remove here.
//!
//! A chain is removed with every rule that jumps to it from a built-in chain or another removed
//! chain, in one `iptables-restore --noflush` transaction per table. A chain still referenced by
//! a foreign chain is left whole and reported, as is an ipset still in use.

pub mod fixture;
#[cfg(all(target_os = "linux", feature = "dataplane"))]
pub mod host;

use std::collections::{BTreeMap, BTreeSet};

/// Upstream's chains, per table.
pub const UPSTREAM_CHAINS: [(&str, &[&str]); 3] = [
    ("nat", &["HYBRIDNET-POSTROUTING", "RAMA-POSTROUTING"]),
    ("filter", &["HYBRIDNET-FORWARD", "RAMA-FORWARD"]),
    (
        "mangle",
        &[
            "HYBRIDNET-PREROUTING",
            "HYBRIDNET-POSTROUTING",
            "HYBRIDNET-FROM-RULE-SKIP",
            "HYBRIDNET-POD-TO-NODE-MARK",
            "RAMA-PREROUTING",
            "RAMA-POSTROUTING",
        ],
    ),
];

const BUILTIN_CHAINS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
const SET_PREFIXES: [&str; 3] = ["HYBR-", "HYBRIDNET-", "RAMA-"];
const SET_BASES: [&str; 5] = [
    "OVERLAY-NET",
    "ALL",
    "NODE-IP",
    "LOCAL-POD-IP",
    "LOCAL-UNDERLAY-NET",
];

/// What counts as leftover state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scope {
    /// Felix's `cali-*` chains, `cali:` rules and `cali40`/`cali60` ipsets too.
    pub felix: bool,
}

/// One table of an `iptables-save` dump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedTable {
    pub name: String,
    /// Declared chains in order (built-in ones included).
    pub chains: Vec<String>,
    /// `-A` lines as printed (chain, full line).
    pub rules: Vec<(String, String)>,
}

/// Parses `iptables-save` output (comments and counters ignored).
pub fn parse_save(text: &str) -> Vec<SavedTable> {
    let mut out: Vec<SavedTable> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(name) = line.strip_prefix('*') {
            out.push(SavedTable {
                name: name.trim().to_string(),
                ..Default::default()
            });
            continue;
        }
        let Some(t) = out.last_mut() else { continue };
        if let Some(decl) = line.strip_prefix(':') {
            if let Some(name) = decl.split_whitespace().next() {
                t.chains.push(name.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("-A ")
            && let Some(chain) = rest.split_whitespace().next()
        {
            t.rules.push((chain.to_string(), line.to_string()));
        }
    }
    out
}

/// Splits a rule line into words, honouring the double quotes `iptables-save` prints.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut started = false;
    for c in line.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            c => {
                cur.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(cur);
    }
    out
}

/// The jump (`-j`) or goto (`-g`) target of a rule line.
fn target(line: &str) -> Option<String> {
    let w = words(line);
    w.windows(2)
        .find(|p| p[0] == "-j" || p[0] == "-g" || p[0] == "--jump" || p[0] == "--goto")
        .map(|p| p[1].clone())
}

fn comments(line: &str) -> Vec<String> {
    let w = words(line);
    w.windows(2)
        .filter(|p| p[0] == "--comment")
        .map(|p| p[1].clone())
        .collect()
}

fn is_felix_chain(name: &str) -> bool {
    name.starts_with("cali-")
}

fn is_upstream_chain(table: &str, chain: &str, scope: Scope) -> bool {
    UPSTREAM_CHAINS
        .iter()
        .any(|(t, cs)| *t == table && cs.contains(&chain))
        || (scope.felix && is_felix_chain(chain))
}

/// The removal of one table's leftovers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableCleanup {
    pub table: String,
    /// Input for `iptables-restore --noflush` (empty: nothing to do).
    pub script: String,
    /// What the script removes, one entry per chain or rule.
    pub removed: Vec<String>,
    /// Upstream state left in place, with the reason.
    pub kept: Vec<String>,
}

/// Decides what to remove from one table.
pub fn plan_table(t: &SavedTable, scope: Scope) -> TableCleanup {
    let mut out = TableCleanup {
        table: t.name.clone(),
        ..Default::default()
    };
    let upstream: BTreeSet<&str> = t
        .chains
        .iter()
        .map(String::as_str)
        .filter(|c| is_upstream_chain(&t.name, c, scope))
        .collect();
    // A chain referenced from a foreign, non-built-in chain stays whole.
    let mut keep: BTreeMap<&str, &str> = BTreeMap::new();
    for (chain, line) in &t.rules {
        let c = chain.as_str();
        if upstream.contains(c) || BUILTIN_CHAINS.contains(&c) {
            continue;
        }
        if let Some(tg) = target(line)
            && let Some(u) = upstream.get(tg.as_str())
        {
            keep.entry(u).or_insert(c);
        }
    }
    let removing: BTreeSet<&str> = upstream
        .iter()
        .copied()
        .filter(|c| !keep.contains_key(c))
        .collect();
    for (c, by) in &keep {
        out.kept.push(format!(
            "{} chain {c} (referenced by foreign chain {by})",
            t.name
        ));
    }
    let mut deletes = Vec::new();
    for (chain, line) in &t.rules {
        if !BUILTIN_CHAINS.contains(&chain.as_str()) {
            continue;
        }
        let jumps_to_removed = target(line).is_some_and(|tg| removing.contains(tg.as_str()));
        let felix_rule = scope.felix && comments(line).iter().any(|c| c.starts_with("cali:"));
        if jumps_to_removed || felix_rule {
            // `-A CHAIN spec` -> `-D CHAIN spec`: the same rule, deleted.
            deletes.push(format!("-D {}", &line[3..]));
            out.removed.push(format!("{} rule {}", t.name, &line[3..]));
        }
    }
    if deletes.is_empty() && removing.is_empty() {
        return out;
    }
    let mut s = format!("*{}\n", t.name);
    for d in &deletes {
        s.push_str(d);
        s.push('\n');
    }
    for c in &removing {
        s.push_str(&format!("-F {c}\n"));
    }
    for c in &removing {
        s.push_str(&format!("-X {c}\n"));
        out.removed.push(format!("{} chain {c}", t.name));
    }
    s.push_str("COMMIT\n");
    out.script = s;
    out
}

/// The leftovers of a whole dump, as [`plan_table`] per table (tables with nothing are left out).
pub fn plan_save(text: &str, scope: Scope) -> Vec<TableCleanup> {
    parse_save(text)
        .iter()
        .map(|t| plan_table(t, scope))
        .filter(|c| !c.script.is_empty() || !c.kept.is_empty())
        .collect()
}

/// Whether an ipset (as `ipset list -n` prints it) is upstream's.
pub fn is_upstream_ipset(name: &str, scope: Scope) -> bool {
    if scope.felix && (name.starts_with("cali40") || name.starts_with("cali60")) {
        return true;
    }
    let n = name.strip_prefix("inet6:").unwrap_or(name);
    // The temporary set of an interrupted refresh is the name plus `-`.
    let n = n.strip_suffix('-').unwrap_or(n);
    let n = n
        .strip_suffix("-V4")
        .or_else(|| n.strip_suffix("-V6"))
        .unwrap_or(n);
    SET_PREFIXES.iter().any(|p| {
        n.strip_prefix(p)
            .is_some_and(|base| SET_BASES.contains(&base))
    })
}

/// Upstream's ipsets among `ipset list -n` output, in the order listed.
pub fn upstream_ipsets(list: &str, scope: Scope) -> Vec<String> {
    list.lines()
        .map(str::trim)
        .filter(|n| !n.is_empty() && is_upstream_ipset(n, scope))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests;
