//! The pods of one network: an index from (namespace, name) to a slot, each slot with the pod's
//! held addresses and its MAC. Compact on purpose (the memory target is 100 bytes per address,
//! docs/benchmarks.md `## IPAM`):
//!
//! - a slot is 44 bytes: interned namespace, the position of the name in a shared name arena, the
//!   MAC, the first two addresses inline (a pod holds one or two; more go to a side table), the
//!   keyed hash of (namespace, name) and the links of two intrusive hash chains;
//! - names live once in one byte arena (length-prefixed), compacted when more than half of it is
//!   garbage, instead of one heap block per pod;
//! - the pod and MAC indexes are bucket arrays of 4-byte chain heads (the chains run through the
//!   slots), so no key is stored twice. The hashes are SipHash with per-table random keys: names
//!   and requested MACs come from users.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use super::mac::MacAddr;
use super::types::PodKey;

/// Sentinel: no slot.
pub(crate) const NO_SLOT: u32 = u32::MAX;
/// `Slot::name` of an anonymous holder (a reserved address whose pod name was dropped).
const ANONYMOUS: u32 = u32::MAX;
/// `Slot::name` of a name kept in [`PodTable::long_names`] (the arena's 4 GiB are used up).
const OUTSIDE: u32 = u32::MAX - 1;
/// The arena is compacted when its garbage exceeds its live bytes and this.
const COMPACT_MIN: usize = 64 * 1024;

/// An address of a pod: subnet id and offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct IpRef {
    pub subnet: u32,
    pub offset: u32,
}

const NO_REF: IpRef = IpRef {
    subnet: u32::MAX,
    offset: u32::MAX,
};

#[derive(Debug, Clone)]
struct Slot {
    /// Interned namespace; `NO_SLOT` marks a free slot.
    ns: u32,
    /// Keyed hash of (namespace, name) (named slots).
    hash: u32,
    /// Arena position of the length-prefixed name, [`ANONYMOUS`] or [`OUTSIDE`].
    name: u32,
    mac: [u8; 6],
    has_mac: bool,
    /// Addresses held: the first two are `ips`, the rest in [`PodTable::more_ips`] (0..=3; 3
    /// means "2 + the side table").
    n_ips: u8,
    ips: [IpRef; 2],
    /// Next slot in the pod index chain.
    next: u32,
    /// Next slot in the MAC index chain.
    mac_next: u32,
}

const FREE_SLOT: Slot = Slot {
    ns: NO_SLOT,
    hash: 0,
    name: ANONYMOUS,
    mac: [0; 6],
    has_mac: false,
    n_ips: 0,
    ips: [NO_REF; 2],
    next: NO_SLOT,
    mac_next: NO_SLOT,
};

/// Length-prefixed (LEB128) names, back to back.
#[derive(Debug, Default)]
struct Arena {
    bytes: Vec<u8>,
    garbage: usize,
}

fn prefix_len(n: usize) -> usize {
    let mut k = 1;
    let mut n = n >> 7;
    while n != 0 {
        k += 1;
        n >>= 7;
    }
    k
}

impl Arena {
    /// Appends a name; `None` when positions would not fit in `u32`.
    fn push(&mut self, name: &str, limit: usize) -> Option<u32> {
        let need = prefix_len(name.len()) + name.len();
        let pos = self.bytes.len();
        if pos + need > limit {
            return None;
        }
        if self.bytes.capacity() - pos < need {
            // Grow by an eighth (at least 64 KiB): little slack, amortised copies.
            let add = need.max(pos / 8).max(COMPACT_MIN);
            self.bytes.reserve_exact(add);
        }
        let mut n = name.len();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                self.bytes.push(b);
                break;
            }
            self.bytes.push(b | 0x80);
        }
        self.bytes.extend_from_slice(name.as_bytes());
        u32::try_from(pos).ok()
    }

    /// The bytes of the name at `pos` (and the size it takes, prefix included).
    fn get(&self, pos: u32) -> (&[u8], usize) {
        let mut i = pos as usize;
        let mut n = 0usize;
        let mut shift = 0;
        while let Some(&b) = self.bytes.get(i) {
            n |= usize::from(b & 0x7f) << shift;
            shift += 7;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let name = self.bytes.get(i..i + n).unwrap_or_default();
        (name, i + n - pos as usize)
    }
}

#[derive(Debug)]
pub(crate) struct PodTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    names: Arena,
    /// Largest arena size (`u32` positions; tests lower it).
    arena_limit: usize,
    /// Names that did not fit in the arena, by slot.
    long_names: HashMap<u32, Box<str>>,
    /// Addresses past the second of a slot, by slot.
    more_ips: HashMap<u32, Vec<IpRef>>,
    /// Pod index: chain heads by `hash & (len - 1)` (a power of two, or empty).
    heads: Vec<u32>,
    named: usize,
    /// MAC index: chain heads by the MAC's keyed hash.
    mac_heads: Vec<u32>,
    macs: usize,
    namespaces: Vec<Box<str>>,
    ns_index: HashMap<Box<str>, u32>,
    /// The namespace looked up last.
    last_ns: std::sync::atomic::AtomicU32,
    keys: RandomState,
    live: usize,
}

impl Default for PodTable {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            names: Arena::default(),
            arena_limit: OUTSIDE as usize,
            long_names: HashMap::new(),
            more_ips: HashMap::new(),
            heads: Vec::new(),
            named: 0,
            mac_heads: Vec::new(),
            macs: 0,
            namespaces: Vec::new(),
            ns_index: HashMap::new(),
            last_ns: std::sync::atomic::AtomicU32::new(0),
            keys: RandomState::new(),
            live: 0,
        }
    }
}

fn bucket(h: u32, len: usize) -> usize {
    h as usize & (len - 1)
}

impl PodTable {
    #[cfg(test)]
    fn with_arena_limit(limit: usize) -> Self {
        Self {
            arena_limit: limit,
            ..Self::default()
        }
    }

    fn hash(&self, ns: u32, name: &str) -> u32 {
        self.keys.hash_one((ns, name)) as u32
    }

    fn mac_hash(&self, mac: [u8; 6]) -> u32 {
        self.keys.hash_one(mac) as u32
    }

    fn ns_id(&self, namespace: &str) -> Option<u32> {
        // Consecutive requests are mostly from one namespace: compare before hashing.
        let last = self.last_ns.load(std::sync::atomic::Ordering::Relaxed);
        if self
            .namespaces
            .get(last as usize)
            .is_some_and(|n| **n == *namespace)
        {
            return Some(last);
        }
        let id = self.ns_index.get(namespace).copied()?;
        self.last_ns.store(id, std::sync::atomic::Ordering::Relaxed);
        Some(id)
    }

    fn intern(&mut self, namespace: &str) -> u32 {
        if let Some(id) = self.ns_id(namespace) {
            return id;
        }
        let id = self.namespaces.len() as u32;
        self.namespaces.push(namespace.into());
        self.ns_index.insert(namespace.into(), id);
        id
    }

    fn name_bytes(&self, id: u32) -> &[u8] {
        let s = &self.slots[id as usize];
        match s.name {
            ANONYMOUS => &[],
            OUTSIDE => self
                .long_names
                .get(&id)
                .map(|n| n.as_bytes())
                .unwrap_or_default(),
            pos => self.names.get(pos).0,
        }
    }

    /// The pod name of a slot ("" for an anonymous holder).
    pub(crate) fn name(&self, id: u32) -> &str {
        std::str::from_utf8(self.name_bytes(id)).unwrap_or_default()
    }

    /// Whether the slot belongs to a named pod (anonymous: a reserved address without one).
    pub(crate) fn is_named(&self, id: u32) -> bool {
        self.slots[id as usize].name != ANONYMOUS
    }

    /// The slot of a named pod.
    pub(crate) fn find(&self, pod: &PodKey) -> Option<u32> {
        if pod.name.is_empty() {
            return None;
        }
        let ns = self.ns_id(&pod.namespace)?;
        self.find_hashed(ns, &pod.name, self.hash(ns, &pod.name))
    }

    fn find_hashed(&self, ns: u32, name: &str, h: u32) -> Option<u32> {
        if self.heads.is_empty() {
            return None;
        }
        let mut cur = self.heads[bucket(h, self.heads.len())];
        while cur != NO_SLOT {
            let s = &self.slots[cur as usize];
            if s.hash == h && s.ns == ns && self.name_bytes(cur) == name.as_bytes() {
                return Some(cur);
            }
            cur = s.next;
        }
        None
    }

    fn alloc_slot(&mut self, ns: u32) -> u32 {
        let slot = Slot { ns, ..FREE_SLOT };
        self.live += 1;
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// Rebuilds the pod index with twice the buckets.
    fn grow_index(&mut self) {
        let len = (self.heads.len() * 2).max(16);
        let mut heads = vec![NO_SLOT; len];
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.ns != NO_SLOT && s.name != ANONYMOUS {
                let b = bucket(s.hash, len);
                s.next = heads[b];
                heads[b] = i as u32;
            }
        }
        self.heads = heads;
    }

    /// The slot of a named pod, created when missing.
    pub(crate) fn find_or_insert(&mut self, namespace: &str, name: &str) -> u32 {
        let ns = self.intern(namespace);
        let h = self.hash(ns, name);
        if let Some(s) = self.find_hashed(ns, name, h) {
            return s;
        }
        let id = self.alloc_slot(ns);
        let pos = match self.names.push(name, self.arena_limit) {
            Some(p) => p,
            None => {
                self.long_names.insert(id, name.into());
                OUTSIDE
            }
        };
        if self.named >= self.heads.len() {
            self.grow_index();
        }
        let b = bucket(h, self.heads.len());
        let s = &mut self.slots[id as usize];
        s.hash = h;
        s.name = pos;
        s.next = self.heads[b];
        self.heads[b] = id;
        self.named += 1;
        id
    }

    /// A fresh unindexed slot for an anonymous reserved address.
    pub(crate) fn insert_anonymous(&mut self, namespace: &str) -> u32 {
        let ns = self.intern(namespace);
        self.alloc_slot(ns)
    }

    pub(crate) fn namespace(&self, id: u32) -> &str {
        self.namespaces
            .get(self.slots[id as usize].ns as usize)
            .map(|n| &**n)
            .unwrap_or_default()
    }

    /// The pod of a slot (`None` for anonymous slots).
    pub(crate) fn key(&self, id: u32) -> Option<PodKey> {
        self.is_named(id)
            .then(|| PodKey::new(self.namespace(id), self.name(id)))
    }

    /// The MAC of a slot.
    pub(crate) fn mac(&self, id: u32) -> Option<MacAddr> {
        let s = &self.slots[id as usize];
        s.has_mac.then_some(MacAddr(s.mac))
    }

    /// The addresses of a slot, in the order they were added.
    pub(crate) fn ips(&self, id: u32) -> Vec<IpRef> {
        let s = &self.slots[id as usize];
        let mut v: Vec<IpRef> = s.ips[..usize::from(s.n_ips.min(2))].to_vec();
        if s.n_ips > 2
            && let Some(more) = self.more_ips.get(&id)
        {
            v.extend_from_slice(more);
        }
        v
    }

    fn set_ips(&mut self, id: u32, v: &[IpRef]) {
        let s = &mut self.slots[id as usize];
        s.ips = [NO_REF; 2];
        for (d, r) in s.ips.iter_mut().zip(v) {
            *d = *r;
        }
        if v.len() > 2 {
            s.n_ips = 3;
            self.more_ips.insert(id, v[2..].to_vec());
        } else {
            s.n_ips = v.len() as u8;
            self.more_ips.remove(&id);
        }
    }

    pub(crate) fn add_ip(&mut self, id: u32, r: IpRef) {
        let s = &mut self.slots[id as usize];
        match s.n_ips {
            0 | 1 => {
                s.ips[usize::from(s.n_ips)] = r;
                s.n_ips += 1;
            }
            2 => {
                s.n_ips = 3;
                self.more_ips.insert(id, vec![r]);
            }
            _ => self.more_ips.entry(id).or_default().push(r),
        }
    }

    /// Removes an address from a slot and frees the slot (and its MAC) when it holds none.
    pub(crate) fn remove_ip(&mut self, id: u32, r: IpRef) {
        let s = &mut self.slots[id as usize];
        match s.n_ips {
            1 if s.ips[0] == r => s.n_ips = 0,
            2 if s.ips[1] == r => s.n_ips = 1,
            2 if s.ips[0] == r => {
                s.ips[0] = s.ips[1];
                s.n_ips = 1;
            }
            0..=2 => {}
            _ => {
                let mut v = self.ips(id);
                if let Some(i) = v.iter().position(|x| *x == r) {
                    v.remove(i);
                    self.set_ips(id, &v);
                }
            }
        }
        if self.slots[id as usize].n_ips == 0 {
            self.free_slot(id);
        }
    }

    /// Unlinks `id` from the chain starting at `*head` (through `link`).
    fn unlink(slots: &mut [Slot], head: &mut u32, id: u32, link: fn(&mut Slot) -> &mut u32) {
        let next = *link(&mut slots[id as usize]);
        if *head == id {
            *head = next;
            return;
        }
        let mut cur = *head;
        while cur != NO_SLOT {
            let l = link(&mut slots[cur as usize]);
            if *l == id {
                *l = next;
                return;
            }
            cur = *l;
        }
    }

    fn free_slot(&mut self, id: u32) {
        self.unindex_mac(id);
        let (name, h) = {
            let s = &self.slots[id as usize];
            (s.name, s.hash)
        };
        if name != ANONYMOUS {
            if !self.heads.is_empty() {
                let b = bucket(h, self.heads.len());
                Self::unlink(&mut self.slots, &mut self.heads[b], id, |s| &mut s.next);
            }
            self.named -= 1;
            if name == OUTSIDE {
                self.long_names.remove(&id);
            } else {
                self.names.garbage += self.names.get(name).1;
            }
        }
        if self.slots[id as usize].n_ips > 2 {
            self.more_ips.remove(&id);
        }
        self.slots[id as usize] = FREE_SLOT;
        self.free.push(id);
        self.live -= 1;
        if self.names.garbage > COMPACT_MIN && self.names.garbage * 2 > self.names.bytes.len() {
            self.compact_names();
        }
    }

    /// Rewrites the arena with the live names only.
    fn compact_names(&mut self) {
        let live = self.names.bytes.len() - self.names.garbage;
        let mut fresh = Arena {
            bytes: Vec::with_capacity(live + live / 8),
            garbage: 0,
        };
        for i in 0..self.slots.len() {
            let pos = self.slots[i].name;
            if self.slots[i].ns == NO_SLOT || pos == ANONYMOUS || pos == OUTSIDE {
                continue;
            }
            let (name, _) = self.names.get(pos);
            let name = std::str::from_utf8(name).unwrap_or_default();
            // The fresh arena is smaller than the old one, so every name fits.
            if let Some(p) = fresh.push(name, self.arena_limit) {
                self.slots[i].name = p;
            }
        }
        self.names = fresh;
    }

    fn unindex_mac(&mut self, id: u32) {
        let s = &self.slots[id as usize];
        if !s.has_mac {
            return;
        }
        let mac = s.mac;
        let indexed = s.name != ANONYMOUS;
        self.slots[id as usize].has_mac = false;
        if indexed && !self.mac_heads.is_empty() {
            let b = bucket(self.mac_hash(mac), self.mac_heads.len());
            Self::unlink(&mut self.slots, &mut self.mac_heads[b], id, |s| {
                &mut s.mac_next
            });
            self.macs -= 1;
        }
        self.slots[id as usize].mac_next = NO_SLOT;
    }

    /// The slot holding a MAC.
    pub(crate) fn mac_holder(&self, mac: MacAddr) -> Option<u32> {
        if self.mac_heads.is_empty() {
            return None;
        }
        let mut cur = self.mac_heads[bucket(self.mac_hash(mac.0), self.mac_heads.len())];
        while cur != NO_SLOT {
            let s = &self.slots[cur as usize];
            if s.has_mac && s.mac == mac.0 {
                return Some(cur);
            }
            cur = s.mac_next;
        }
        None
    }

    fn grow_mac_index(&mut self) {
        let len = (self.mac_heads.len() * 2).max(16);
        let mut heads = vec![NO_SLOT; len];
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            if s.ns != NO_SLOT && s.has_mac && s.name != ANONYMOUS {
                let b = bucket(self.mac_hash(s.mac), len);
                self.slots[i].mac_next = heads[b];
                heads[b] = i as u32;
            }
        }
        self.mac_heads = heads;
    }

    /// Sets a slot's MAC (the caller checked it is not held by another slot). Anonymous slots
    /// keep it unindexed.
    pub(crate) fn set_mac(&mut self, id: u32, mac: MacAddr) {
        self.unindex_mac(id);
        let named = self.slots[id as usize].name != ANONYMOUS;
        // Grown before the slot has its MAC, so the rebuild does not chain it already.
        if named && self.macs >= self.mac_heads.len() {
            self.grow_mac_index();
        }
        let s = &mut self.slots[id as usize];
        s.mac = mac.0;
        s.has_mac = true;
        if !named {
            return;
        }
        let b = bucket(self.mac_hash(mac.0), self.mac_heads.len());
        self.slots[id as usize].mac_next = self.mac_heads[b];
        self.mac_heads[b] = id;
        self.macs += 1;
    }

    /// Live slots with their addresses.
    pub(crate) fn live_slots(&self) -> impl Iterator<Item = (u32, Vec<IpRef>)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.ns != NO_SLOT)
            .map(|(i, _)| (i as u32, self.ips(i as u32)))
    }

    /// Number of live slots.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Approximate bytes owned (capacities, not lengths).
    pub(crate) fn approx_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.free.capacity() * 4
            + self.names.bytes.capacity()
            + (self.heads.capacity() + self.mac_heads.capacity()) * 4
            + self.more_ips.len() * 48
            + self
                .long_names
                .values()
                .map(|n| n.len() + 24)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(subnet: u32, offset: u32) -> IpRef {
        IpRef { subnet, offset }
    }

    #[test]
    fn slot_stays_small() {
        assert!(std::mem::size_of::<Slot>() <= 44);
    }

    #[test]
    fn names_ips_and_macs_survive_churn_and_compaction() {
        let mut t = PodTable::default();
        let mut live: Vec<(String, u32)> = Vec::new();
        for round in 0..6u32 {
            for i in 0..3000u32 {
                let name = format!("pod-{round}-{i}-{}", "x".repeat((i % 200) as usize));
                let id = t.find_or_insert(&format!("ns{}", i % 3), &name);
                t.add_ip(id, r(round, i));
                t.set_mac(id, MacAddr([2, 0, round as u8, (i >> 8) as u8, i as u8, 1]));
                live.push((name, id));
            }
            // Free two thirds: the arena becomes mostly garbage and is compacted.
            let mut keep = Vec::new();
            for (k, (name, id)) in live.drain(..).enumerate() {
                if k % 3 == 0 {
                    keep.push((name, id));
                } else {
                    let ips = t.ips(id);
                    for x in ips {
                        t.remove_ip(id, x);
                    }
                }
            }
            live = keep;
            for (name, id) in &live {
                assert_eq!(t.name(*id), name);
                let ns = t.namespace(*id).to_string();
                assert_eq!(t.find(&PodKey::new(ns, name.clone())), Some(*id));
                let mac = t.mac(*id).unwrap();
                assert_eq!(t.mac_holder(mac), Some(*id));
            }
            assert_eq!(t.len(), live.len());
        }
        assert!(
            t.names.bytes.len() < 2 * (t.names.bytes.len() - t.names.garbage) + COMPACT_MIN + 512,
            "compacted"
        );
    }

    #[test]
    fn more_than_two_addresses_keep_their_order() {
        let mut t = PodTable::default();
        let id = t.find_or_insert("ns", "p");
        for k in 0..5 {
            t.add_ip(id, r(0, k));
        }
        assert_eq!(t.ips(id), (0..5).map(|k| r(0, k)).collect::<Vec<_>>());
        t.remove_ip(id, r(0, 1));
        t.remove_ip(id, r(0, 3));
        assert_eq!(t.ips(id), vec![r(0, 0), r(0, 2), r(0, 4)]);
        t.remove_ip(id, r(0, 0));
        assert_eq!(t.ips(id), vec![r(0, 2), r(0, 4)]);
        assert!(t.more_ips.is_empty());
        t.remove_ip(id, r(9, 9));
        assert_eq!(t.ips(id).len(), 2);
        t.remove_ip(id, r(0, 2));
        t.remove_ip(id, r(0, 4));
        assert_eq!(t.len(), 0);
        assert_eq!(t.find(&PodKey::new("ns", "p")), None);
    }

    #[test]
    fn names_past_the_arena_limit_are_kept_outside() {
        let mut t = PodTable::with_arena_limit(40);
        let a = t.find_or_insert("ns", "a-name-of-twenty-chars");
        let b = t.find_or_insert("ns", "another-name-of-twenty");
        t.add_ip(a, r(0, 1));
        t.add_ip(b, r(0, 2));
        assert_eq!(t.slots[b as usize].name, OUTSIDE);
        assert_eq!(t.name(b), "another-name-of-twenty");
        assert_eq!(
            t.find(&PodKey::new("ns", "another-name-of-twenty")),
            Some(b)
        );
        assert_eq!(
            t.find(&PodKey::new("ns", "a-name-of-twenty-chars")),
            Some(a)
        );
        t.remove_ip(b, r(0, 2));
        assert!(t.long_names.is_empty());
        assert_eq!(t.find(&PodKey::new("ns", "another-name-of-twenty")), None);
    }

    #[test]
    fn anonymous_slots_are_not_indexed() {
        let mut t = PodTable::default();
        let a = t.insert_anonymous("ns");
        t.add_ip(a, r(0, 1));
        t.set_mac(a, MacAddr([2, 0, 0, 0, 0, 1]));
        assert!(!t.is_named(a));
        assert_eq!(t.name(a), "");
        assert_eq!(t.key(a), None);
        assert_eq!(t.mac(a), Some(MacAddr([2, 0, 0, 0, 0, 1])));
        assert_eq!(t.mac_holder(MacAddr([2, 0, 0, 0, 0, 1])), None);
        let p = t.find_or_insert("ns", "p");
        t.add_ip(p, r(0, 2));
        t.set_mac(p, MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(t.mac_holder(MacAddr([2, 0, 0, 0, 0, 1])), Some(p));
        t.remove_ip(a, r(0, 1));
        assert_eq!(t.mac_holder(MacAddr([2, 0, 0, 0, 0, 1])), Some(p));
    }
}
