//! Who holds which address of one subnet: a paged array indexed by offset. A page covers 256
//! offsets (1 KiB) and exists only while one of its addresses is held; the page table itself is
//! allocated with the first holding. Dense subnets (what the round-robin cursor produces) cost
//! about 4 bytes per held address, and a lookup is two array reads, no hashing and no tree walk.
//! The worst case (one holding per page) is bounded by 4 bytes per address of the span.

use super::types::HoldState;

/// Who holds an address: a slot of the network's pod table and the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Holder {
    pub slot: u32,
    pub state: HoldState,
}

const PAGE_BITS: u32 = 8;
const PAGE: usize = 1 << PAGE_BITS;
/// A free entry. Packed holders are `slot << 1 | reserved`; pod table slots stay far below
/// 2^31 - 1 (each is a pod holding at least one address), so no holder packs to this value.
const EMPTY: u32 = u32::MAX;

fn pack(h: Holder) -> u32 {
    debug_assert!(h.slot < (1 << 31) - 1, "pod slot {} out of range", h.slot);
    (h.slot << 1) | u32::from(h.state == HoldState::Reserved)
}

fn unpack(v: u32) -> Option<Holder> {
    (v != EMPTY).then_some(Holder {
        slot: v >> 1,
        state: if v & 1 == 1 {
            HoldState::Reserved
        } else {
            HoldState::Allocated
        },
    })
}

#[derive(Debug)]
struct Page {
    held: u32,
    entries: [u32; PAGE],
}

#[derive(Debug)]
pub(crate) struct Holders {
    span: u32,
    /// `span / 256` rounded up, or empty while nothing was ever held.
    pages: Vec<Option<Box<Page>>>,
    len: usize,
}

fn split(off: u32) -> (usize, usize) {
    ((off >> PAGE_BITS) as usize, off as usize & (PAGE - 1))
}

impl Holders {
    pub(crate) fn new(span: u32) -> Self {
        Self {
            span,
            pages: Vec::new(),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get(&self, off: u32) -> Option<Holder> {
        let (p, i) = split(off);
        let page = self.pages.get(p)?.as_ref()?;
        unpack(page.entries[i])
    }

    /// Records a holder; returns the previous one. Offsets past the span are ignored.
    pub(crate) fn insert(&mut self, off: u32, h: Holder) -> Option<Holder> {
        if off >= self.span {
            return None;
        }
        if self.pages.is_empty() {
            self.pages
                .resize_with((self.span as usize).div_ceil(PAGE), || None);
        }
        let (p, i) = split(off);
        let page = self.pages[p].get_or_insert_with(|| {
            Box::new(Page {
                held: 0,
                entries: [EMPTY; PAGE],
            })
        });
        let prev = unpack(std::mem::replace(&mut page.entries[i], pack(h)));
        if prev.is_none() {
            page.held += 1;
            self.len += 1;
        }
        prev
    }

    /// Replaces the holder of a held offset; returns the previous one (`None`: not held,
    /// nothing changed).
    pub(crate) fn replace(&mut self, off: u32, h: Holder) -> Option<Holder> {
        let (p, i) = split(off);
        let page = self.pages.get_mut(p)?.as_mut()?;
        let prev = unpack(page.entries[i])?;
        page.entries[i] = pack(h);
        Some(prev)
    }

    pub(crate) fn remove(&mut self, off: u32) -> Option<Holder> {
        let (p, i) = split(off);
        let slot = self.pages.get_mut(p)?;
        let page = slot.as_mut()?;
        let prev = unpack(std::mem::replace(&mut page.entries[i], EMPTY))?;
        page.held -= 1;
        self.len -= 1;
        if page.held == 0 {
            *slot = None;
        }
        Some(prev)
    }

    /// Held offsets in ascending order with their holders.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, Holder)> + '_ {
        self.pages.iter().enumerate().flat_map(|(p, page)| {
            page.iter().flat_map(move |page| {
                page.entries.iter().enumerate().filter_map(move |(i, v)| {
                    Some(((p << PAGE_BITS) as u32 + i as u32, unpack(*v)?))
                })
            })
        })
    }

    /// Bytes held on the heap.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.pages.capacity() * std::mem::size_of::<Option<Box<Page>>>()
            + self.pages.iter().flatten().count() * std::mem::size_of::<Page>()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn h(slot: u32, reserved: bool) -> Holder {
        Holder {
            slot,
            state: if reserved {
                HoldState::Reserved
            } else {
                HoldState::Allocated
            },
        }
    }

    #[test]
    fn pages_come_and_go() {
        let mut x = Holders::new(1000);
        assert_eq!(x.heap_bytes(), 0);
        assert_eq!(x.insert(999, h(7, true)), None);
        assert_eq!(x.get(999), Some(h(7, true)));
        assert_eq!(x.insert(1000, h(1, false)), None, "past the span");
        assert_eq!(x.get(1000), None);
        assert_eq!(x.len(), 1);
        let with_page = x.heap_bytes();
        assert!(with_page > 0);
        assert_eq!(x.replace(999, h(8, false)), Some(h(7, true)));
        assert_eq!(x.replace(5, h(8, false)), None);
        assert_eq!(x.get(5), None);
        assert_eq!(x.remove(999), Some(h(8, false)));
        assert_eq!(x.remove(999), None);
        assert!(x.heap_bytes() < with_page, "the empty page is freed");
        assert_eq!(x.len(), 0);
        let big = (1u32 << 31) - 2;
        x.insert(0, h(big, true));
        assert_eq!(x.get(0), Some(h(big, true)));
    }

    proptest::proptest! {
        #[test]
        fn matches_a_btreemap(span in 1u32..3000, ops in proptest::collection::vec((0u32..3000, 0u32..50, 0u8..4), 0..400)) {
            let mut x = Holders::new(span);
            let mut m: BTreeMap<u32, Holder> = BTreeMap::new();
            for (off, slot, op) in ops {
                let off = off % span;
                let hh = h(slot, op & 1 == 1);
                match op {
                    0 | 1 => {
                        proptest::prop_assert_eq!(x.insert(off, hh), m.insert(off, hh));
                    }
                    2 => {
                        let want = m.get_mut(&off).map(|v| std::mem::replace(v, hh));
                        proptest::prop_assert_eq!(x.replace(off, hh), want);
                    }
                    _ => {
                        proptest::prop_assert_eq!(x.remove(off), m.remove(&off));
                    }
                }
                proptest::prop_assert_eq!(x.get(off), m.get(&off).copied());
            }
            proptest::prop_assert_eq!(x.len(), m.len());
            let got: Vec<(u32, Holder)> = x.iter().collect();
            let want: Vec<(u32, Holder)> = m.into_iter().collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
