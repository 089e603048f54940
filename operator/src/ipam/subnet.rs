//! One subnet's state: a bitmap of addresses the allocator may not pick (held or blocked), the
//! holders of held addresses by offset, the round-robin cursor and the counters of upstream `pkg/ipam/types/usage.go`.

use std::net::IpAddr;

use hybridnet_api::ipmath::ip_to_u128;
use hybridnet_api::range::ParsedRange;
use hybridnet_api::v1::IpVersion;

use super::bitmap::Bitmap;
use super::error::IpamError;
pub(crate) use super::holders::Holder;
use super::holders::Holders;
use super::types::{HoldState, SubnetInput, Usage};

#[derive(Debug)]
pub(crate) struct SubnetState {
    pub name: String,
    pub network: String,
    pub range: ParsedRange,
    pub net_id: Option<i32>,
    pub private: bool,
    /// Bit set: not automatically allocatable (held, gateway, excluded or spec-reserved).
    bits: Bitmap,
    /// Holders by offset from `range.start`.
    pub holders: Holders,
    /// Offset of the last automatically allocated address (`status.lastAllocatedIP`).
    pub cursor: Option<u32>,
    total: u64,
    used: u64,
    reserved_held: u64,
}

/// Why an address is not usable in a subnet at all (`None`: it is usable).
pub(crate) fn unusable_reason(range: &ParsedRange, ip: IpAddr) -> Option<&'static str> {
    if IpVersion::of(&ip) != range.version {
        return Some("it is of the other IP family");
    }
    let n = ip_to_u128(ip);
    if n < range.start || n > range.end {
        return Some("it is outside the subnet's start..end");
    }
    if Some(n) == range.gateway {
        return Some("it is the gateway");
    }
    if range.excluded.contains(&n) {
        return Some("it is excluded (excludeIPs)");
    }
    None
}

impl SubnetState {
    pub(crate) fn new(input: &SubnetInput) -> Result<Self, IpamError> {
        let span = input
            .range
            .end
            .checked_sub(input.range.start)
            .and_then(|d| d.checked_add(1));
        let span =
            span.and_then(|s| u32::try_from(s).ok())
                .ok_or_else(|| IpamError::InvalidSubnet {
                    subnet: input.name.clone(),
                    reason: "spec.range: start..end is empty or larger than 2^32 addresses".into(),
                })?;
        let mut s = Self {
            name: input.name.clone(),
            network: input.network.clone(),
            range: input.range.clone(),
            net_id: input.net_id,
            private: input.private,
            bits: Bitmap::new(span),
            holders: Holders::new(span),
            cursor: None,
            total: 0,
            used: 0,
            reserved_held: 0,
        };
        s.recompute();
        Ok(s)
    }

    pub(crate) fn span(&self) -> u32 {
        self.bits.len()
    }

    pub(crate) fn version(&self) -> IpVersion {
        self.range.version
    }

    /// Offset of `ip` when it lies in `[start, end]` of this family.
    pub(crate) fn offset_of(&self, ip: IpAddr) -> Option<u32> {
        if IpVersion::of(&ip) != self.range.version {
            return None;
        }
        let n = ip_to_u128(ip);
        if n < self.range.start || n > self.range.end {
            return None;
        }
        u32::try_from(n - self.range.start).ok()
    }

    pub(crate) fn ip_at(&self, off: u32) -> IpAddr {
        self.range.ip(self.range.start + u128::from(off))
    }

    fn n(&self, off: u32) -> u128 {
        self.range.start + u128::from(off)
    }

    pub(crate) fn is_spec_reserved(&self, off: u32) -> bool {
        self.range.reserved.contains(&self.n(off))
    }

    /// Usable at all: not the gateway, not excluded (offsets are always inside start..end).
    pub(crate) fn is_usable(&self, off: u32) -> bool {
        self.range.contains(self.n(off))
    }

    /// Never picked automatically even when free.
    fn is_blocked(&self, off: u32) -> bool {
        !self.is_usable(off) || self.is_spec_reserved(off)
    }

    /// Whether a holding at `off` counts as `used` ([`ParsedRange::counts_as_used`]).
    fn counts_as_used(&self, off: u32) -> bool {
        self.range.counts_as_used(self.n(off))
    }

    /// Whether a holding counts as `reserved`: a stateful pod's address kept while the pod is
    /// gone, and part of `used` (so reserved <= used, as `kubectl hybridnet ip usage` shows it).
    fn counts_as_reserved(&self, off: u32, holder: &Holder) -> bool {
        holder.state == HoldState::Reserved && self.counts_as_used(off)
    }

    /// Rebuilds bitmap and counters from the range and the holders.
    fn recompute(&mut self) {
        let span = self.span();
        let mut bits = Bitmap::new(span);
        let (start, end) = (self.range.start, self.range.end);
        let blocked = self
            .range
            .gateway
            .iter()
            .chain(self.range.excluded.range(start..=end))
            .chain(self.range.reserved.range(start..=end));
        for n in blocked {
            if *n >= start && *n <= end {
                bits.set((*n - start) as u32);
            }
        }
        let mut used = 0;
        let mut reserved_held = 0;
        for (off, h) in self.holders.iter() {
            bits.set(off);
            if self.counts_as_used(off) {
                used += 1;
            }
            if self.counts_as_reserved(off, &h) {
                reserved_held += 1;
            }
        }
        self.bits = bits;
        self.total = u64::try_from(self.range.allocatable_count()).unwrap_or(u64::MAX);
        self.used = used;
        self.reserved_held = reserved_held;
    }

    /// Applies a changed spec. Network, family, CIDR, start, end and gateway are immutable
    /// (the API server refuses such updates; refusing here too keeps holders meaningful).
    /// reservedIPs, excludeIPs, private and netID are applied; existing holdings are kept even
    /// when their address becomes reserved or excluded (they are freed by their release).
    pub(crate) fn apply_spec(&mut self, input: &SubnetInput) -> Result<(), IpamError> {
        let immut = |field: &'static str, old: String, new: String| -> Result<(), IpamError> {
            if old == new {
                Ok(())
            } else {
                Err(IpamError::ImmutableField {
                    subnet: input.name.clone(),
                    field,
                    old,
                    new,
                })
            }
        };
        let (o, n) = (&self.range, &input.range);
        immut("spec.network", self.network.clone(), input.network.clone())?;
        immut("spec.range.cidr", o.cidr.to_string(), n.cidr.to_string())?;
        immut(
            "spec.range.start",
            o.ip(o.start).to_string(),
            n.ip(n.start).to_string(),
        )?;
        immut(
            "spec.range.end",
            o.ip(o.end).to_string(),
            n.ip(n.end).to_string(),
        )?;
        let gw = |r: &ParsedRange| r.gateway.map(|g| r.ip(g).to_string()).unwrap_or_default();
        immut("spec.range.gateway", gw(o), gw(n))?;
        self.range.reserved = input.range.reserved.clone();
        self.range.excluded = input.range.excluded.clone();
        self.net_id = input.net_id;
        self.private = input.private;
        self.recompute();
        Ok(())
    }

    /// Next automatically allocatable offset after the cursor (round robin), without taking it.
    pub(crate) fn next_free(&self) -> Option<u32> {
        let span = self.span();
        if span == 0 {
            return None;
        }
        let from = match self.cursor {
            Some(c) if c + 1 < span => c + 1,
            _ => 0,
        };
        self.bits.next_clear_wrapping(from)
    }

    /// Whether automatic allocation may pick this subnet (spec `IsAvailable`).
    pub(crate) fn auto_available(&self) -> bool {
        !self.private && self.total > self.used
    }

    pub(crate) fn holder(&self, off: u32) -> Option<Holder> {
        self.holders.get(off)
    }

    /// Records a holding at a free offset (the caller checked it is free).
    pub(crate) fn take(&mut self, off: u32, holder: Holder) {
        let prev = self.holders.insert(off, holder);
        debug_assert!(prev.is_none(), "take of a held offset");
        self.bits.set(off);
        if self.counts_as_used(off) {
            self.used += 1;
        }
        if self.counts_as_reserved(off, &holder) {
            self.reserved_held += 1;
        }
    }

    /// Replaces the holder of a held offset (re-take, transfer, reserve).
    pub(crate) fn set_holder(&mut self, off: u32, holder: Holder) -> Option<Holder> {
        let old = self.holders.replace(off, holder)?;
        match (
            self.counts_as_reserved(off, &old),
            self.counts_as_reserved(off, &holder),
        ) {
            (true, false) => self.reserved_held -= 1,
            (false, true) => self.reserved_held += 1,
            _ => {}
        }
        Some(old)
    }

    /// Frees a held offset.
    pub(crate) fn release(&mut self, off: u32) -> Option<Holder> {
        let h = self.holders.remove(off)?;
        if !self.is_blocked(off) {
            self.bits.clear(off);
        }
        if self.counts_as_used(off) {
            self.used -= 1;
        }
        if self.counts_as_reserved(off, &h) {
            self.reserved_held -= 1;
        }
        Some(h)
    }

    pub(crate) fn usage(&self) -> Usage {
        Usage {
            total: self.total,
            used: self.used,
            available: self.total.saturating_sub(self.used),
            reserved: self.reserved_held,
        }
    }

    /// The usage recounted from scratch (for consistency checks in tests).
    pub(crate) fn recount(&self) -> (Usage, u64) {
        let mut total = 0u64;
        for off in 0..self.span() {
            if self.counts_as_used(off) {
                total += 1;
            }
        }
        let used = self
            .holders
            .iter()
            .filter(|(o, _)| self.counts_as_used(*o))
            .count() as u64;
        let reserved = self
            .holders
            .iter()
            .filter(|(o, h)| self.counts_as_reserved(*o, h))
            .count() as u64;
        (
            Usage {
                total,
                used,
                available: total.saturating_sub(used),
                reserved,
            },
            self.bits.count_clear(),
        )
    }

    /// Approximate bytes owned by this subnet (struct, bitmap, range sets, holder pages).
    pub(crate) fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.name.capacity()
            + self.network.capacity()
            + self.bits.heap_bytes()
            + (self.range.reserved.len() + self.range.excluded.len()) * 24
            + self.holders.heap_bytes()
    }
}
