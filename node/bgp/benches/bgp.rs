//! Benchmarks of the speaker's pure parts, timed with `Instant` (harness = false):
//! - decoding a full UPDATE (700 IPv4 /32s) against a baseline that only sums the same bytes;
//! - encoding it;
//! - one pod change on a node with 10 000 announced routes: target + diff + UPDATE building,
//!   against the baseline of rebuilding the full table's UPDATEs.
//!
//! Run: `cargo bench -p hybridnet-bgp --bench bgp`

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::BTreeSet;
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use hybridnet_bgp::rib::{self, AdjRibOut, NextHops, UpdateContext};
use hybridnet_bgp::wire::{Codec, Family, Message, decode_message};
use hybridnet_bgp::{Announcement, Communities, Prefix};

fn time<T>(name: &str, iterations: u32, mut f: impl FnMut() -> T) -> Duration {
    // Warm up, then measure.
    for _ in 0..iterations / 10 + 1 {
        black_box(f());
    }
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(f());
    }
    let per = start.elapsed() / iterations;
    println!("{name:<58} {per:>12.2?} per iteration ({iterations} iterations)");
    per
}

fn routes(n: u32) -> BTreeSet<Announcement> {
    (0..n)
        .map(|i| {
            let prefix = if i % 2 == 0 {
                Prefix::host(Ipv4Addr::from(0xc613_0000 + i).into())
            } else {
                Prefix::host(Ipv6Addr::from((0xfd00_0001_u128 << 96) | u128::from(i)).into())
            };
            Announcement::new(prefix, Communities::NoExport)
        })
        .collect()
}

fn main() {
    let next_hops = NextHops {
        v4: Some(Ipv4Addr::new(198, 18, 0, 2)),
        v6: Some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
    };
    let ctx = UpdateContext {
        local_asn: 65001,
        ibgp: false,
        next_hops,
    };
    let codec = Codec::default();

    // A full UPDATE: 700 IPv4 /32s with NO_EXPORT.
    let v4_only: BTreeSet<Announcement> = (0..700u32)
        .map(|i| {
            Announcement::new(
                Prefix::host(Ipv4Addr::from(0xc613_0000 + i).into()),
                Communities::NoExport,
            )
        })
        .collect();
    let target = rib::target(&v4_only, &Family::ALL, &next_hops);
    let diff = rib::diff(&AdjRibOut::new(), &target);
    let updates = rib::updates(&diff, &ctx);
    assert_eq!(updates.len(), 1);
    let msg = Message::Update(updates[0].clone());
    let bytes = msg.encode(codec).expect("encodes");
    println!("UPDATE with 700 IPv4 /32s: {} octets", bytes.len());
    let base = time("baseline: sum the UPDATE's octets", 20_000, || {
        bytes.iter().map(|b| u64::from(*b)).sum::<u64>()
    });
    let dec = time("decode the UPDATE", 20_000, || {
        decode_message(&bytes, codec)
    });
    time("encode the UPDATE", 20_000, || msg.encode(codec));
    println!(
        "decode / baseline: {:.1}x",
        dec.as_secs_f64() / base.as_secs_f64()
    );

    // One pod added on a node with 10 000 announced routes (half IPv4, half IPv6).
    let desired = routes(10_000);
    let current = rib::target(&desired, &Family::ALL, &next_hops);
    let mut changed = desired.clone();
    changed.insert(Announcement::new(
        Prefix::host(Ipv4Addr::new(198, 20, 0, 1).into()),
        Communities::NoExport,
    ));
    let full = time(
        "baseline: UPDATEs for the full 10 000-route table",
        50,
        || {
            let t = rib::target(&changed, &Family::ALL, &next_hops);
            rib::updates(&rib::diff(&AdjRibOut::new(), &t), &ctx)
        },
    );
    let inc = time("one pod change: target + diff + UPDATEs", 50, || {
        let t = rib::target(&changed, &Family::ALL, &next_hops);
        rib::updates(&rib::diff(&current, &t), &ctx)
    });
    println!(
        "incremental / full: {:.2}x",
        inc.as_secs_f64() / full.as_secs_f64()
    );
}
