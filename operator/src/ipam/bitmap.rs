//! A fixed-size bit set with a one-word-per-64-words summary, so the next clear bit after any
//! position is found with at most `len / 4096 + 2` word reads (17 for a /16): the "last free
//! address of a nearly full /16" case stays in the tens of nanoseconds.

/// Bit `i` set means offset `i` of a subnet cannot be handed out automatically (it is held, the
/// gateway, excluded or reserved). Bits past `len` are kept set so they are never found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bitmap {
    len: u32,
    words: Vec<u64>,
    /// Bit `w` set when `words[w]` is all ones; bits past the last word are set.
    full: Vec<u64>,
}

impl Bitmap {
    /// All `len` bits clear.
    pub(crate) fn new(len: u32) -> Self {
        let nwords = (len as usize).div_ceil(64);
        let mut words = vec![0u64; nwords];
        let tail = len as usize % 64;
        if tail != 0
            && let Some(last) = words.last_mut()
        {
            *last = !0u64 << tail;
        }
        let nsum = nwords.div_ceil(64);
        let mut full = vec![0u64; nsum];
        let stail = nwords % 64;
        if stail != 0
            && let Some(last) = full.last_mut()
        {
            *last = !0u64 << stail;
        }
        Self { len, words, full }
    }

    pub(crate) fn len(&self) -> u32 {
        self.len
    }

    #[cfg(test)]
    pub(crate) fn get(&self, i: u32) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1u64 << (i % 64)) != 0
    }

    pub(crate) fn set(&mut self, i: u32) {
        if i >= self.len {
            return;
        }
        let w = (i / 64) as usize;
        self.words[w] |= 1u64 << (i % 64);
        if self.words[w] == !0 {
            self.full[w / 64] |= 1u64 << (w % 64);
        }
    }

    pub(crate) fn clear(&mut self, i: u32) {
        if i >= self.len {
            return;
        }
        let w = (i / 64) as usize;
        self.words[w] &= !(1u64 << (i % 64));
        self.full[w / 64] &= !(1u64 << (w % 64));
    }

    /// The first clear bit at or after `from`, without wrapping.
    pub(crate) fn first_clear_from(&self, from: u32) -> Option<u32> {
        if from >= self.len {
            return None;
        }
        let mut w = (from / 64) as usize;
        let word = self.words[w] | ((1u64 << (from % 64)) - 1);
        if word != !0 {
            return Some(w as u32 * 64 + (!word).trailing_zeros());
        }
        w += 1;
        let mut s = w / 64;
        if s >= self.full.len() {
            return None;
        }
        let mut summary = self.full[s] | ((1u64 << (w % 64)) - 1);
        loop {
            if summary != !0 {
                let wi = s * 64 + (!summary).trailing_zeros() as usize;
                // Summary bits past the last word are set, so `wi` is a real, non-full word.
                let word = self.words[wi];
                return Some(wi as u32 * 64 + (!word).trailing_zeros());
            }
            s += 1;
            if s >= self.full.len() {
                return None;
            }
            summary = self.full[s];
        }
    }

    /// The first clear bit at or after `from`, wrapping around to 0.
    pub(crate) fn next_clear_wrapping(&self, from: u32) -> Option<u32> {
        self.first_clear_from(from)
            .or_else(|| self.first_clear_from(0))
    }

    /// Number of clear bits (a recount, for checks).
    pub(crate) fn count_clear(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_zeros())).sum()
    }

    /// Bytes held on the heap.
    pub(crate) fn heap_bytes(&self) -> usize {
        (self.words.capacity() + self.full.capacity()) * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_next(b: &[bool], from: u32) -> Option<u32> {
        let n = b.len() as u32;
        (from..n).chain(0..from.min(n)).find(|&i| !b[i as usize])
    }

    #[test]
    fn empty_and_tiny() {
        let b = Bitmap::new(0);
        assert_eq!(b.next_clear_wrapping(0), None);
        let mut b = Bitmap::new(1);
        assert_eq!(b.next_clear_wrapping(0), Some(0));
        b.set(0);
        assert!(b.get(0));
        assert_eq!(b.next_clear_wrapping(0), None);
        assert_eq!(b.count_clear(), 0);
    }

    #[test]
    fn last_free_of_a_full_16() {
        let mut b = Bitmap::new(65536);
        for i in 0..65536 {
            b.set(i);
        }
        assert_eq!(b.next_clear_wrapping(0), None);
        b.clear(40000);
        assert_eq!(b.next_clear_wrapping(40001), Some(40000));
        assert_eq!(b.next_clear_wrapping(0), Some(40000));
        assert_eq!(b.count_clear(), 1);
    }

    proptest::proptest! {
        #[test]
        fn matches_a_vec_of_bools(len in 0u32..5000, ops in proptest::collection::vec((0u32..5000, proptest::bool::ANY), 0..300), probes in proptest::collection::vec(0u32..5000, 1..20)) {
            let mut b = Bitmap::new(len);
            let mut naive = vec![false; len as usize];
            for (i, set) in ops {
                if i < len {
                    if set { b.set(i) } else { b.clear(i) }
                    naive[i as usize] = set;
                }
            }
            for p in probes {
                let p = if len == 0 { 0 } else { p % len };
                proptest::prop_assert_eq!(b.next_clear_wrapping(p), naive_next(&naive, p));
            }
            proptest::prop_assert_eq!(b.count_clear(), naive.iter().filter(|x| !**x).count() as u64);
        }
    }
}
