//! The pods of one network: an index from (namespace, name) to a slot, each slot with the pod's
//! held addresses and its MAC. Compact on purpose (the memory target is 200 bytes per address):
//! namespaces are interned, the name is stored once, and the index maps a 64-bit keyed hash to the
//! head of a short chain of slots, so no key is stored twice.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

use super::mac::MacAddr;
use super::types::PodKey;

/// Sentinel: no slot.
pub(crate) const NO_SLOT: u32 = u32::MAX;

/// An address of a pod: subnet id and offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct IpRef {
    pub subnet: u32,
    pub offset: u32,
}

/// The addresses of one pod: nearly always one or two, stored inline.
#[derive(Clone, Debug, Default)]
pub(crate) enum IpRefs {
    #[default]
    Zero,
    One(IpRef),
    Two(IpRef, IpRef),
    /// Boxed so the common cases keep the enum small (24 bytes).
    Many(Box<[IpRef]>),
}

impl IpRefs {
    pub(crate) fn push(&mut self, r: IpRef) {
        *self = match std::mem::take(self) {
            Self::Zero => Self::One(r),
            Self::One(a) => Self::Two(a, r),
            Self::Two(a, b) => Self::Many(Box::new([a, b, r])),
            Self::Many(v) => {
                let mut v = v.into_vec();
                v.push(r);
                Self::Many(v.into_boxed_slice())
            }
        };
    }

    /// Removes `r`; returns whether it was there.
    pub(crate) fn remove(&mut self, r: IpRef) -> bool {
        let (next, found) = match std::mem::take(self) {
            Self::Zero => (Self::Zero, false),
            Self::One(a) if a == r => (Self::Zero, true),
            Self::One(a) => (Self::One(a), false),
            Self::Two(a, b) if a == r => (Self::One(b), true),
            Self::Two(a, b) if b == r => (Self::One(a), true),
            Self::Two(a, b) => (Self::Two(a, b), false),
            Self::Many(v) => {
                let mut v = v.into_vec();
                let found = match v.iter().position(|x| *x == r) {
                    Some(i) => {
                        v.remove(i);
                        true
                    }
                    None => false,
                };
                let next = match v.as_slice() {
                    [] => Self::Zero,
                    [a] => Self::One(*a),
                    [a, b] => Self::Two(*a, *b),
                    _ => Self::Many(v.into_boxed_slice()),
                };
                (next, found)
            }
        };
        *self = next;
        found
    }

    pub(crate) fn to_vec(&self) -> Vec<IpRef> {
        match self {
            Self::Zero => vec![],
            Self::One(a) => vec![*a],
            Self::Two(a, b) => vec![*a, *b],
            Self::Many(v) => v.to_vec(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Self::Zero)
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Self::Many(v) => std::mem::size_of_val::<[IpRef]>(v),
            _ => 0,
        }
    }
}

#[derive(Debug)]
pub(crate) struct PodSlot {
    /// Interned namespace; `NO_SLOT` marks a free slot.
    pub ns: u32,
    /// Empty for an anonymous holder (a reserved address whose pod name was dropped); such slots
    /// hold exactly one address and are not in the index.
    pub name: Box<str>,
    pub mac: Option<MacAddr>,
    pub ips: IpRefs,
    /// Next slot with the same index hash.
    next: u32,
}

/// Hasher for `u32` keys that already are (keyed) hashes: the value is repeated in both halves so
/// the table's bucket index (low bits) and tag (high bits) are both well spread.
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (u64::from(n) << 32) | u64::from(n);
    }
}

type PassThroughMap<V> = HashMap<u32, V, BuildHasherDefault<PassThrough>>;

#[derive(Debug, Default)]
pub(crate) struct PodTable {
    slots: Vec<PodSlot>,
    free: Vec<u32>,
    /// Keyed hash (32 bits) of (namespace id, name) -> first slot of its chain. 32 bits keep the
    /// table small; colliding pods share a chain.
    index: PassThroughMap<u32>,
    namespaces: Vec<Box<str>>,
    ns_index: HashMap<Box<str>, u32>,
    /// MAC -> slot holding it (SipHash with random keys: MACs can come from users).
    macs: HashMap<[u8; 6], u32>,
    keys: RandomState,
    live: usize,
}

fn mac_key(m: MacAddr) -> [u8; 6] {
    m.0
}

impl PodTable {
    fn hash(&self, ns: u32, name: &str) -> u32 {
        self.keys.hash_one((ns, name)) as u32
    }

    fn ns_id(&self, namespace: &str) -> Option<u32> {
        self.ns_index.get(namespace).copied()
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

    /// The slot of a named pod.
    pub(crate) fn find(&self, pod: &PodKey) -> Option<u32> {
        if pod.name.is_empty() {
            return None;
        }
        let ns = self.ns_id(&pod.namespace)?;
        self.find_hashed(ns, &pod.name, self.hash(ns, &pod.name))
    }

    fn find_hashed(&self, ns: u32, name: &str, h: u32) -> Option<u32> {
        let mut cur = *self.index.get(&h)?;
        while cur != NO_SLOT {
            let s = &self.slots[cur as usize];
            if s.ns == ns && *s.name == *name {
                return Some(cur);
            }
            cur = s.next;
        }
        None
    }

    fn alloc_slot(&mut self, ns: u32, name: &str) -> u32 {
        let slot = PodSlot {
            ns,
            name: name.into(),
            mac: None,
            ips: IpRefs::Zero,
            next: NO_SLOT,
        };
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

    /// The slot of a named pod, created when missing.
    pub(crate) fn find_or_insert(&mut self, namespace: &str, name: &str) -> u32 {
        let ns = self.intern(namespace);
        let h = self.hash(ns, name);
        if let Some(s) = self.find_hashed(ns, name, h) {
            return s;
        }
        let id = self.alloc_slot(ns, name);
        let head = self.index.insert(h, id).unwrap_or(NO_SLOT);
        self.slots[id as usize].next = head;
        id
    }

    /// A fresh unindexed slot for an anonymous reserved address.
    pub(crate) fn insert_anonymous(&mut self, namespace: &str) -> u32 {
        let ns = self.intern(namespace);
        self.alloc_slot(ns, "")
    }

    pub(crate) fn slot(&self, id: u32) -> &PodSlot {
        &self.slots[id as usize]
    }

    pub(crate) fn namespace(&self, id: u32) -> &str {
        &self.namespaces[self.slots[id as usize].ns as usize]
    }

    /// The pod of a slot (`None` for anonymous slots).
    pub(crate) fn key(&self, id: u32) -> Option<PodKey> {
        let s = &self.slots[id as usize];
        if s.name.is_empty() {
            None
        } else {
            Some(PodKey::new(self.namespace(id), &*s.name))
        }
    }

    pub(crate) fn add_ip(&mut self, id: u32, r: IpRef) {
        self.slots[id as usize].ips.push(r);
    }

    /// Removes an address from a slot and frees the slot (and its MAC) when it holds none.
    pub(crate) fn remove_ip(&mut self, id: u32, r: IpRef) {
        let s = &mut self.slots[id as usize];
        s.ips.remove(r);
        if s.ips.is_empty() {
            self.free_slot(id);
        }
    }

    fn free_slot(&mut self, id: u32) {
        let (named, mac) = {
            let s = &self.slots[id as usize];
            (!s.name.is_empty(), s.mac)
        };
        if let Some(m) = mac {
            self.unindex_mac(id, m);
        }
        if named {
            let h = {
                let s = &self.slots[id as usize];
                self.hash(s.ns, &s.name)
            };
            let next = self.slots[id as usize].next;
            if let Some(head) = self.index.get(&h).copied() {
                if head == id {
                    if next == NO_SLOT {
                        self.index.remove(&h);
                    } else {
                        self.index.insert(h, next);
                    }
                } else {
                    let mut cur = head;
                    while cur != NO_SLOT {
                        let n = self.slots[cur as usize].next;
                        if n == id {
                            self.slots[cur as usize].next = next;
                            break;
                        }
                        cur = n;
                    }
                }
            }
        }
        let s = &mut self.slots[id as usize];
        s.ns = NO_SLOT;
        s.name = Box::default();
        s.mac = None;
        s.ips = IpRefs::Zero;
        s.next = NO_SLOT;
        self.free.push(id);
        self.live -= 1;
    }

    fn unindex_mac(&mut self, id: u32, mac: MacAddr) {
        let k = mac_key(mac);
        if self.macs.get(&k) == Some(&id) {
            self.macs.remove(&k);
        }
    }

    /// The slot holding a MAC.
    pub(crate) fn mac_holder(&self, mac: MacAddr) -> Option<u32> {
        self.macs.get(&mac_key(mac)).copied()
    }

    /// Sets a slot's MAC (the caller checked it is not held by another slot).
    pub(crate) fn set_mac(&mut self, id: u32, mac: MacAddr) {
        if let Some(old) = self.slots[id as usize].mac.replace(mac) {
            self.unindex_mac(id, old);
        }
        if !self.slots[id as usize].name.is_empty() {
            self.macs.insert(mac_key(mac), id);
        }
    }

    /// Live slots with their addresses.
    pub(crate) fn live_slots(&self) -> impl Iterator<Item = (u32, Vec<IpRef>)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.ns != NO_SLOT)
            .map(|(i, s)| (i as u32, s.ips.to_vec()))
    }

    /// Number of live slots.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Approximate bytes owned (capacities, not lengths).
    pub(crate) fn approx_bytes(&self) -> usize {
        let slots = self.slots.capacity() * std::mem::size_of::<PodSlot>()
            + self
                .slots
                .iter()
                .map(|s| s.name.len() + s.ips.heap_bytes())
                .sum::<usize>();
        // hashbrown: one control byte per bucket plus the entry.
        let index = self.index.capacity() * (8 + 1) + self.macs.capacity() * (12 + 1);
        slots + index + self.free.capacity() * 4
    }
}
