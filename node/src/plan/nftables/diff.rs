//! The change from one [`Table`] to another as an incremental nft transaction: only changed set
//! and map elements are added or deleted, only chains whose rules changed are flushed and
//! refilled, and only what appeared or disappeared is defined or deleted. [`diff`] decides (pure),
//! [`apply`] is the same change on the model (what the kernel holds after it), and
//! [`transaction`] renders it for `nft -f`. All of it is one transaction: a refused one leaves the
//! previous table in force.

use std::collections::{BTreeMap, BTreeSet};

use super::{Chain, Key, Map, Rule, Set, Table, Verdict, render};

/// One command of an incremental update, in the order [`diff`] emits them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Declares a new regular chain (its rules come with [`Op::AddRule`]).
    AddChain(String),
    /// Defines a new set with its elements.
    AddSet(String, Set),
    /// Defines a new verdict map with its elements.
    AddMap(String, Map),
    DeleteElements(String, Vec<Key>),
    AddElements(String, Vec<Key>),
    /// Empties an interval set (refilled by [`Op::AddElements`]: nft merges interval elements,
    /// so they are replaced as a whole).
    FlushSet(String),
    DeleteMapElements(String, Vec<Key>),
    AddMapElements(String, Vec<(Key, Verdict)>),
    FlushChain(String),
    AddRule(String, Rule),
    DeleteSet(String),
    DeleteMap(String),
    DeleteChain(String),
}

/// Why a change cannot be incremental (the caller replaces the whole table instead).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotIncremental {
    #[error("the table's family or name differs")]
    OtherTable,
    #[error("base chains differ (hooks, priorities, policies or order)")]
    BaseChains,
    #[error("set or map {0} changed its type")]
    SetType(String),
}

fn base_chains(t: &Table) -> Vec<(&str, &super::BaseChain)> {
    t.chains
        .iter()
        .filter_map(|c| c.base.as_ref().map(|b| (c.name.as_str(), b)))
        .collect()
}

/// The commands that turn `old` into `new`, or why that must be a whole-table replacement. No
/// commands when the tables are equal.
pub fn diff(old: &Table, new: &Table) -> Result<Vec<Op>, NotIncremental> {
    if old.family != new.family || old.name != new.name {
        return Err(NotIncremental::OtherTable);
    }
    if base_chains(old) != base_chains(new) {
        return Err(NotIncremental::BaseChains);
    }
    let old_chains: BTreeMap<&str, &Chain> =
        old.chains.iter().map(|c| (c.name.as_str(), c)).collect();
    let new_chains: BTreeMap<&str, &Chain> =
        new.chains.iter().map(|c| (c.name.as_str(), c)).collect();
    for (n, s) in &new.sets {
        if let Some(o) = old.sets.get(n)
            && (o.key != s.key || o.interval != s.interval)
        {
            return Err(NotIncremental::SetType(n.clone()));
        }
    }
    for (n, m) in &new.maps {
        if let Some(o) = old.maps.get(n)
            && (o.key != m.key || o.interval != m.interval)
        {
            return Err(NotIncremental::SetType(n.clone()));
        }
    }
    if old.sets.keys().any(|n| new.maps.contains_key(n))
        || old.maps.keys().any(|n| new.sets.contains_key(n))
    {
        return Err(NotIncremental::SetType("a set became a map or back".into()));
    }

    let mut ops = vec![];
    // 1. new chains first: new rules and map elements may name them
    for c in &new.chains {
        if !old_chains.contains_key(c.name.as_str()) {
            ops.push(Op::AddChain(c.name.clone()));
        }
    }
    for (n, s) in &new.sets {
        if !old.sets.contains_key(n) {
            ops.push(Op::AddSet(n.clone(), s.clone()));
        }
    }
    for (n, m) in &new.maps {
        if !old.maps.contains_key(n) {
            ops.push(Op::AddMap(n.clone(), m.clone()));
        }
    }
    // 2. elements of sets and maps that stay
    for (n, s) in &new.sets {
        let Some(o) = old.sets.get(n) else { continue };
        if o.elements == s.elements {
            continue;
        }
        if s.interval {
            ops.push(Op::FlushSet(n.clone()));
            if !s.elements.is_empty() {
                ops.push(Op::AddElements(
                    n.clone(),
                    s.elements.iter().cloned().collect(),
                ));
            }
            continue;
        }
        let gone: Vec<Key> = o.elements.difference(&s.elements).cloned().collect();
        let added: Vec<Key> = s.elements.difference(&o.elements).cloned().collect();
        if !gone.is_empty() {
            ops.push(Op::DeleteElements(n.clone(), gone));
        }
        if !added.is_empty() {
            ops.push(Op::AddElements(n.clone(), added));
        }
    }
    for (n, m) in &new.maps {
        let Some(o) = old.maps.get(n) else { continue };
        // a key whose verdict changed is deleted and added again
        let gone: Vec<Key> = o
            .elements
            .iter()
            .filter(|(k, v)| m.elements.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        let added: Vec<(Key, Verdict)> = m
            .elements
            .iter()
            .filter(|(k, v)| o.elements.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !gone.is_empty() {
            ops.push(Op::DeleteMapElements(n.clone(), gone));
        }
        if !added.is_empty() {
            ops.push(Op::AddMapElements(n.clone(), added));
        }
    }
    // 3. chains whose rules changed are flushed and refilled; new chains filled; chains that go
    //    are emptied first, so no rule of theirs holds a reference when they are deleted
    for c in &new.chains {
        match old_chains.get(c.name.as_str()) {
            Some(o) if o.rules == c.rules => {}
            Some(_) => {
                ops.push(Op::FlushChain(c.name.clone()));
                ops.extend(
                    c.rules
                        .iter()
                        .map(|r| Op::AddRule(c.name.clone(), r.clone())),
                );
            }
            None => ops.extend(
                c.rules
                    .iter()
                    .map(|r| Op::AddRule(c.name.clone(), r.clone())),
            ),
        }
    }
    let gone_chains: Vec<&str> = old
        .chains
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| !new_chains.contains_key(n))
        .collect();
    for n in &gone_chains {
        if old_chains.get(n).is_some_and(|c| !c.rules.is_empty()) {
            ops.push(Op::FlushChain(n.to_string()));
        }
    }
    // 4. what went: sets and maps (no rule names them any more), then chains (no rule or map
    //    element jumps to them any more)
    for n in old.sets.keys() {
        if !new.sets.contains_key(n) {
            ops.push(Op::DeleteSet(n.clone()));
        }
    }
    for n in old.maps.keys() {
        if !new.maps.contains_key(n) {
            ops.push(Op::DeleteMap(n.clone()));
        }
    }
    for n in gone_chains {
        ops.push(Op::DeleteChain(n.to_string()));
    }
    Ok(ops)
}

/// A command the kernel would refuse on this table.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ApplyError(pub String);

/// `ops` applied to `t` as the kernel applies them (new chains are appended; a command on
/// something missing, or defining something that exists, is refused).
pub fn apply(t: &Table, ops: &[Op]) -> Result<Table, ApplyError> {
    let mut t = t.clone();
    let err = |what: &str, n: &str| ApplyError(format!("{what} {n}"));
    for op in ops {
        match op {
            Op::AddChain(n) => {
                if t.chain(n).is_some() {
                    return Err(err("chain exists:", n));
                }
                t.chains.push(Chain::regular(n.clone()));
            }
            Op::AddSet(n, s) => {
                if t.sets.insert(n.clone(), s.clone()).is_some() {
                    return Err(err("set exists:", n));
                }
            }
            Op::AddMap(n, m) => {
                if t.maps.insert(n.clone(), m.clone()).is_some() {
                    return Err(err("map exists:", n));
                }
            }
            Op::DeleteElements(n, keys) => {
                let s = t.sets.get_mut(n).ok_or_else(|| err("no set", n))?;
                for k in keys {
                    if !s.elements.remove(k) {
                        return Err(err("no element in set", n));
                    }
                }
            }
            Op::AddElements(n, keys) => {
                let s = t.sets.get_mut(n).ok_or_else(|| err("no set", n))?;
                s.elements.extend(keys.iter().cloned());
            }
            Op::FlushSet(n) => {
                t.sets
                    .get_mut(n)
                    .ok_or_else(|| err("no set", n))?
                    .elements
                    .clear();
            }
            Op::DeleteMapElements(n, keys) => {
                let m = t.maps.get_mut(n).ok_or_else(|| err("no map", n))?;
                for k in keys {
                    if m.elements.remove(k).is_none() {
                        return Err(err("no element in map", n));
                    }
                }
            }
            Op::AddMapElements(n, elems) => {
                let m = t.maps.get_mut(n).ok_or_else(|| err("no map", n))?;
                for (k, v) in elems {
                    if m.elements.get(k).is_some_and(|old| old != v) {
                        return Err(err("map element exists with another verdict:", n));
                    }
                    m.elements.insert(k.clone(), v.clone());
                }
            }
            Op::FlushChain(n) => {
                t.chains
                    .iter_mut()
                    .find(|c| &c.name == n)
                    .ok_or_else(|| err("no chain", n))?
                    .rules
                    .clear();
            }
            Op::AddRule(n, r) => {
                t.chains
                    .iter_mut()
                    .find(|c| &c.name == n)
                    .ok_or_else(|| err("no chain", n))?
                    .rules
                    .push(r.clone());
            }
            Op::DeleteSet(n) => {
                t.sets.remove(n).ok_or_else(|| err("no set", n))?;
            }
            Op::DeleteMap(n) => {
                t.maps.remove(n).ok_or_else(|| err("no map", n))?;
            }
            Op::DeleteChain(n) => {
                let i = t
                    .chains
                    .iter()
                    .position(|c| &c.name == n)
                    .ok_or_else(|| err("no chain", n))?;
                if !t.chains[i].rules.is_empty() {
                    return Err(err("chain not empty:", n));
                }
                t.chains.remove(i);
            }
        }
    }
    Ok(t)
}

/// `t` with its regular chains in name order (base chains keep their order, which decides the
/// order of base chains of one hook and priority): two tables are the same ruleset when their
/// canonical forms are equal, since regular chains run only when a rule or element names them.
pub fn canonical(t: &Table) -> Table {
    let mut t = t.clone();
    let (mut base, mut regular): (Vec<Chain>, Vec<Chain>) =
        t.chains.drain(..).partition(|c| c.base.is_some());
    regular.sort_by(|a, b| a.name.cmp(&b.name));
    base.extend(regular);
    t.chains = base;
    t
}

/// The names of the chains, sets and maps the commands touch (for logs).
pub fn touched(ops: &[Op]) -> BTreeSet<&str> {
    ops.iter()
        .map(|op| match op {
            Op::AddChain(n)
            | Op::AddSet(n, _)
            | Op::AddMap(n, _)
            | Op::DeleteElements(n, _)
            | Op::AddElements(n, _)
            | Op::FlushSet(n)
            | Op::DeleteMapElements(n, _)
            | Op::AddMapElements(n, _)
            | Op::FlushChain(n)
            | Op::AddRule(n, _)
            | Op::DeleteSet(n)
            | Op::DeleteMap(n)
            | Op::DeleteChain(n) => n.as_str(),
        })
        .collect()
}

/// The `nft -f` text of `ops` on table `t` (its family and name).
pub fn transaction(t: &Table, ops: &[Op]) -> String {
    render::ops(t.family, &t.name, ops)
}
