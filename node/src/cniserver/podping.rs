//! `--check-pod-connectivity-from-host` (upstream `pkg/daemon/server/handle.go`): after ADD wired a pod, the
//! node pings each of its addresses (ICMP/ICMPv6 echo from the node namespace) and the ADD fails
//! when one does not answer within the timeout. A family is skipped when the node has no global
//! address of it (nothing to ping from, as upstream).
//!
//! Echo requests go out every [`PingConfig::interval`] until the first matching reply; a healthy
//! pod answers the first one, so the check costs one round trip. Encoding and matching are pure
//! ([`echo_request`], [`match_reply`]); the socket is a raw ICMP socket of the node namespace.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use futures::future::join_all;
use hybridnet_cni::{CniError, ErrorCode};
use netlink_packet_route::address::{AddressAttribute, AddressScope};
use nix::libc;

use super::netns::Netns;
use super::rawsock;

/// Settings of the check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingConfig {
    /// The pod must answer within this.
    pub timeout: Duration,
    /// Echo requests are repeated at this interval.
    pub interval: Duration,
}

impl Default for PingConfig {
    /// Upstream: 5 probes, 1 s apart, 5 s in all; here a probe every 200 ms within the 5 s.
    fn default() -> Self {
        PingConfig {
            timeout: Duration::from_secs(5),
            interval: Duration::from_millis(200),
        }
    }
}

/// The check failed.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error(
        "pod ip {ip} does not answer ping from the node ({sent} echo requests within {:.1} s); the pod's interface or routes are not working",
        timeout.as_secs_f64()
    )]
    NoAnswer {
        ip: IpAddr,
        sent: u32,
        timeout: Duration,
    },
    #[error("pinging pod ip {ip} from the node: {what}")]
    Setup { ip: IpAddr, what: String },
}

impl PingError {
    pub fn to_cni(&self, pod: &impl std::fmt::Display) -> CniError {
        let code = match self {
            PingError::NoAnswer { .. } => ErrorCode::TryAgainLater,
            PingError::Setup { .. } => ErrorCode::InterfaceSetup,
        };
        CniError::new(code, format!("pod {pod}: {self}")).with_details(format!("pod {pod}"))
    }
}

// ---------------------------------------------------------------------------------------------
// pure: echo encoding and reply matching

const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
const PAYLOAD: &[u8; 8] = b"hybridnt";

fn internet_checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The ICMP (IPv4) or ICMPv6 echo request message (without IP header). The ICMPv6 checksum is
/// left 0: the kernel fills it in for raw ICMPv6 sockets (it needs the source address).
pub fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut m = vec![
        if v6 {
            ICMPV6_ECHO_REQUEST
        } else {
            ICMP_ECHO_REQUEST
        },
        0,
        0,
        0,
    ];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(PAYLOAD);
    if !v6 {
        let c = internet_checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
    }
    m
}

/// Whether a received datagram is an echo reply of ours (identifier `id`, any sequence we
/// sent) from `from`. IPv4 raw sockets deliver the IP header too, IPv6 ones do not.
pub fn match_reply(v6: bool, packet: &[u8], from: IpAddr, expect_from: IpAddr, id: u16) -> bool {
    if from != expect_from {
        return false;
    }
    let icmp = if v6 {
        packet
    } else {
        let Some(&first) = packet.first() else {
            return false;
        };
        let ihl = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || ihl < 20 {
            return false;
        }
        match packet.get(ihl..) {
            Some(rest) => rest,
            None => return false,
        }
    };
    let want = if v6 {
        ICMPV6_ECHO_REPLY
    } else {
        ICMP_ECHO_REPLY
    };
    matches!(icmp, [t, 0, _, _, a, b, ..] if *t == want && u16::from_be_bytes([*a, *b]) == id)
}

// ---------------------------------------------------------------------------------------------
// I/O

static NEXT_ID: AtomicU16 = AtomicU16::new(0);

/// Pings every address in `ips` (in parallel) from the node namespace `host`.
pub async fn check_pod(
    host: &Netns,
    ips: Vec<IpAddr>,
    config: PingConfig,
) -> Result<(), PingError> {
    if ips.is_empty() {
        return Ok(());
    }
    let families = host
        .run(|h| async move {
            let msgs: Vec<_> = h
                .address()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(|e| super::PodNetError::netlink("listing node addresses", e))?;
            let global: Vec<IpAddr> = msgs
                .iter()
                .filter(|m| m.header.scope == AddressScope::Universe)
                .flat_map(|m| {
                    m.attributes.iter().filter_map(|a| match a {
                        AddressAttribute::Address(ip) | AddressAttribute::Local(ip) => Some(*ip),
                        _ => None,
                    })
                })
                .filter(|ip| crate::plan::is_global_unicast(*ip))
                .collect();
            Ok((
                global.iter().any(IpAddr::is_ipv4),
                global.iter().any(IpAddr::is_ipv6),
            ))
        })
        .await
        .map_err(|e| PingError::Setup {
            ip: ips[0],
            what: e.to_string(),
        })?;
    let runs = ips
        .into_iter()
        .filter(|ip| if ip.is_ipv4() { families.0 } else { families.1 })
        .map(|ip| {
            let host = host.clone();
            async move {
                host.run(move |_| async move { Ok(ping(ip, config)) })
                    .await
                    .map_err(|e| PingError::Setup {
                        ip,
                        what: e.to_string(),
                    })?
            }
        });
    join_all(runs).await.into_iter().collect()
}

/// A raw ICMP socket of the calling thread's namespace.
struct IcmpSocket {
    fd: OwnedFd,
    v6: bool,
}

impl IcmpSocket {
    fn open(v6: bool) -> io::Result<IcmpSocket> {
        let (domain, proto) = if v6 {
            (libc::AF_INET6, libc::IPPROTO_ICMPV6)
        } else {
            (libc::AF_INET, libc::IPPROTO_ICMP)
        };
        let fd = rawsock::open_raw(domain, proto)?;
        Ok(IcmpSocket { fd, v6 })
    }

    fn send_to(&self, msg: &[u8], to: IpAddr) -> io::Result<()> {
        match to {
            IpAddr::V4(v4) => {
                let mut sa: libc::sockaddr_in = rawsock::zeroed_addr();
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
                rawsock::send_to(self.fd.as_fd(), msg, &sa)
            }
            IpAddr::V6(v6) => {
                let mut sa: libc::sockaddr_in6 = rawsock::zeroed_addr();
                sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sa.sin6_addr.s6_addr = v6.octets();
                rawsock::send_to(self.fd.as_fd(), msg, &sa)
            }
        }
    }

    /// Waits up to `timeout` for one datagram; returns its length and sender.
    fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<(usize, IpAddr)>> {
        // An AF_INET6 socket reports a sockaddr_in6 sender, an AF_INET one a sockaddr_in.
        let got = if self.v6 {
            rawsock::recv_within::<libc::sockaddr_in6>(self.fd.as_fd(), buf, timeout)
                .map(|r| r.map(|(n, sa)| (n, IpAddr::from(sa.sin6_addr.s6_addr))))
        } else {
            rawsock::recv_within::<libc::sockaddr_in>(self.fd.as_fd(), buf, timeout)
                .map(|r| r.map(|(n, sa)| (n, IpAddr::from(sa.sin_addr.s_addr.to_ne_bytes()))))
        };
        match got {
            Err(e) if rawsock::transient(&e) => Ok(None),
            other => other,
        }
    }
}

fn ping(ip: IpAddr, config: PingConfig) -> Result<(), PingError> {
    let v6 = ip.is_ipv6();
    let setup = |what: String| PingError::Setup { ip, what };
    let sock =
        IcmpSocket::open(v6).map_err(|e| setup(format!("opening a raw ICMP socket: {e}")))?;
    let id = (std::process::id() as u16) ^ NEXT_ID.fetch_add(1, Ordering::Relaxed).rotate_left(8);
    let started = Instant::now();
    let mut sent: u32 = 0;
    let mut next_send = started;
    let mut buf = [0u8; 1500];
    loop {
        let now = Instant::now();
        if now >= started + config.timeout {
            return Err(PingError::NoAnswer {
                ip,
                sent,
                timeout: config.timeout,
            });
        }
        if now >= next_send {
            // A send error (no route yet, neighbour not resolved) is retried like a lost reply.
            if let Err(e) = sock.send_to(&echo_request(v6, id, sent as u16), ip) {
                tracing::debug!(%ip, error = %e, "echo request not sent");
            }
            sent += 1;
            next_send = now + config.interval;
        }
        let wait = next_send
            .min(started + config.timeout)
            .saturating_duration_since(Instant::now());
        match sock.recv(&mut buf, wait) {
            Ok(Some((n, from))) if match_reply(v6, &buf[..n], from, ip, id) => {
                tracing::debug!(%ip, sent, elapsed_ms = started.elapsed().as_millis() as u64,
                    "pod answered ping from the node");
                return Ok(());
            }
            Ok(_) => {}
            Err(e) => return Err(setup(format!("receiving: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn echo_requests_are_byte_exact() {
        let m = echo_request(false, 0x1234, 7);
        let mut want = vec![8, 0, 0, 0, 0x12, 0x34, 0, 7];
        want.extend_from_slice(b"hybridnt");
        let c = internet_checksum(&want);
        want[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(m, want);
        // A correct checksum sums to zero over the whole message.
        assert_eq!(internet_checksum(&m), 0);
        let m6 = echo_request(true, 0x1234, 7);
        assert_eq!(&m6[..8], &[128, 0, 0, 0, 0x12, 0x34, 0, 7]);
    }

    #[test]
    fn replies_are_matched_by_type_id_and_sender() {
        let pod: IpAddr = "198.18.0.5".parse().unwrap();
        let other: IpAddr = "198.18.0.6".parse().unwrap();
        let mut reply = vec![0x45u8; 1];
        reply.extend_from_slice(&[0; 19]);
        reply.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 1]);
        assert!(match_reply(false, &reply, pod, pod, 0x1234));
        assert!(!match_reply(false, &reply, other, pod, 0x1234));
        assert!(!match_reply(false, &reply, pod, pod, 0x1235));
        // Our own echo request (raw sockets see it when pinging a local address) is no reply.
        let mut req = reply.clone();
        req[20] = 8;
        assert!(!match_reply(false, &req, pod, pod, 0x1234));
        // IPv6: no IP header in front.
        let pod6: IpAddr = "fd00::5".parse().unwrap();
        assert!(match_reply(
            true,
            &[129, 0, 0, 0, 0x12, 0x34, 0, 1],
            pod6,
            pod6,
            0x1234
        ));
        assert!(!match_reply(
            true,
            &[128, 0, 0, 0, 0x12, 0x34, 0, 1],
            pod6,
            pod6,
            0x1234
        ));
        // Truncated and bogus headers.
        assert!(!match_reply(false, &[], pod, pod, 0));
        assert!(!match_reply(false, &[0x4f; 30], pod, pod, 0));
        assert!(!match_reply(false, &[0x65; 30], pod, pod, 0));
        assert!(!match_reply(true, &[129, 0, 0], pod6, pod6, 0));
    }

    proptest! {
        #[test]
        fn hostile_datagrams_never_panic(b in proptest::collection::vec(any::<u8>(), 0..100), id in any::<u16>(), v6 in any::<bool>()) {
            let ip: IpAddr = if v6 { "fd00::5".parse().unwrap() } else { "198.18.0.5".parse().unwrap() };
            let _ = match_reply(v6, &b, ip, ip, id);
        }

        #[test]
        fn ipv4_checksums_verify(id in any::<u16>(), seq in any::<u16>()) {
            prop_assert_eq!(internet_checksum(&echo_request(false, id, seq)), 0);
        }
    }
}
