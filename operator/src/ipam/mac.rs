//! Pod MAC addresses: generated ones are locally administered unicast `02:12:34:xx:xx:xx`
//! (upstream OUI, 24 random bits: `hybridnet_api::mac::MacAddr::generated`); requested ones
//! (mac-pool) are normalised to lower-case colon form. The type lives in `hybridnet_api::mac`; the
//! random source is the operator's own.

use std::hash::{BuildHasher, RandomState};

pub use hybridnet_api::mac::{GENERATED_MAC_PREFIX, MacAddr};

/// Source of random bits for generated MACs. Injectable so tests are deterministic.
pub type MacRandom = Box<dyn FnMut() -> u32 + Send>;

/// The default source: SipHash with per-process random keys over a counter. Not cryptographic,
/// which MACs do not need; uniqueness is checked by the caller anyway.
pub fn default_mac_random() -> MacRandom {
    let keys = RandomState::new();
    let mut counter: u64 = 0;
    Box::new(move || {
        counter = counter.wrapping_add(1);
        keys.hash_one(counter) as u32
    })
}
