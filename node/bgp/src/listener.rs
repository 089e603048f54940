//! The passive side of the speaker: a listening socket per address family that accepts BGP
//! connections only from configured peers and hands each one to its peer's task.
//!
//! - Bound to the speaker's local address of the family (the node's BGP address), or to the
//!   unspecified address when the speaker has none at all; IPv6 sockets are IPv6-only so both
//!   families can listen on one port. `SO_REUSEADDR` lets a restarted agent bind while old
//!   connections linger in TIME_WAIT.
//! - TCP MD5 (RFC 2385): the listening socket carries the key of every peer with a password, so
//!   the kernel drops that peer's unsigned or wrongly signed SYNs (a wrong password never gets a
//!   connection); keys follow peer changes (added, changed, removed).
//! - A connection from an address that is not a configured peer is closed at once and counted.
//! - A failed bind (address not there yet, port taken) is logged and retried with backoff; the
//!   outbound side works regardless.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::tcp::set_md5_key;

/// What the listener needs to know about one configured peer.
#[derive(Debug, Clone)]
pub(crate) struct InboundPeer {
    pub tx: mpsc::Sender<TcpStream>,
    pub password: Option<String>,
}

/// Configured peers by address.
pub(crate) type InboundPeers = Arc<BTreeMap<IpAddr, InboundPeer>>;

/// Shared between the listener tasks and the speaker handle.
#[derive(Debug, Default)]
pub(crate) struct ListenerStats {
    /// Connections refused because their source is not a configured peer.
    pub refused: AtomicU64,
    /// Addresses currently listening.
    pub bound: Mutex<BTreeSet<SocketAddr>>,
}

const BIND_RETRY_INITIAL: Duration = Duration::from_millis(500);
const BIND_RETRY_MAX: Duration = Duration::from_secs(30);

/// Binds `addr` and serves it until the task is aborted or the peer map's sender goes away.
pub(crate) async fn run_listener(
    addr: SocketAddr,
    mut peers: watch::Receiver<InboundPeers>,
    stats: Arc<ListenerStats>,
    changed: watch::Sender<u64>,
) {
    let mut wait = BIND_RETRY_INITIAL;
    let mut warned = false;
    let mut installed: BTreeMap<IpAddr, String> = BTreeMap::new();
    let listener = loop {
        match bind(addr) {
            Ok(socket) => {
                sync_keys(&socket, addr, &peers.borrow_and_update(), &mut installed);
                match socket.listen(64) {
                    Ok(l) => break l,
                    Err(e) => {
                        tracing::warn!(address = %addr, error = %e, "BGP listen failed; retrying");
                        installed.clear();
                    }
                }
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(address = %addr, error = %e, "BGP cannot bind its listening socket yet (peers cannot connect to us; we still connect to them); retrying");
                    warned = true;
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(BIND_RETRY_MAX);
    };
    tracing::info!(address = %addr, "BGP listening for peer connections");
    set_bound(&stats, &changed, addr, true);
    let _unbound = Unbound {
        stats: stats.clone(),
        changed: changed.clone(),
        addr,
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => {
                    if dispatch(stream, from, addr, &peers.borrow(), &installed, &stats) {
                        // A refusal is a status change (refused_connections): wake waiters.
                        changed.send_modify(|g| *g = g.wrapping_add(1));
                    }
                }
                Err(e) => {
                    // E.g. out of file descriptors: do not spin.
                    tracing::warn!(address = %addr, error = %e, "BGP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            change = peers.changed() => {
                if change.is_err() {
                    return;
                }
                sync_keys(&listener, addr, &peers.borrow_and_update(), &mut installed);
            }
        }
    }
}

/// Marks the address unbound when the listener task ends (also when aborted).
struct Unbound {
    stats: Arc<ListenerStats>,
    changed: watch::Sender<u64>,
    addr: SocketAddr,
}

impl Drop for Unbound {
    fn drop(&mut self) {
        set_bound(&self.stats, &self.changed, self.addr, false);
    }
}

fn set_bound(stats: &ListenerStats, changed: &watch::Sender<u64>, addr: SocketAddr, on: bool) {
    {
        let mut bound = match stats.bound.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if on {
            bound.insert(addr);
        } else {
            bound.remove(&addr);
        }
    }
    changed.send_modify(|g| *g = g.wrapping_add(1));
}

fn bind(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => {
            let s = TcpSocket::new_v6()?;
            set_ipv6_only(&s)?;
            s
        }
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

fn set_ipv6_only(socket: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: fd is an open socket; the pointer and length describe `on`, which outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            (&on as *const libc::c_int).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The MD5 keys the listener on `addr` should carry: peers of its family with a password.
pub(crate) fn wanted_keys(addr: SocketAddr, peers: &InboundPeers) -> BTreeMap<IpAddr, String> {
    peers
        .iter()
        .filter(|(peer, _)| peer.is_ipv4() == addr.is_ipv4())
        .filter_map(|(peer, p)| p.password.clone().map(|pw| (*peer, pw)))
        .collect()
}

/// Makes the socket's MD5 keys equal to [`wanted_keys`]; `installed` tracks what is set.
fn sync_keys(
    socket: &impl AsRawFd,
    addr: SocketAddr,
    peers: &InboundPeers,
    installed: &mut BTreeMap<IpAddr, String>,
) {
    let wanted = wanted_keys(addr, peers);
    let stale: Vec<IpAddr> = installed
        .keys()
        .filter(|peer| !wanted.contains_key(peer))
        .copied()
        .collect();
    for peer in stale {
        // A zero-length key deletes the peer's key.
        match set_md5_key(socket, peer, &[]) {
            Ok(()) => {
                installed.remove(&peer);
            }
            Err(e) => {
                tracing::warn!(address = %addr, peer = %peer, error = %e, "BGP: cannot remove a TCP MD5 key from the listening socket")
            }
        }
    }
    for (peer, password) in wanted {
        if installed.get(&peer) == Some(&password) {
            continue;
        }
        match set_md5_key(socket, peer, password.as_bytes()) {
            Ok(()) => {
                installed.insert(peer, password);
            }
            Err(e) => {
                // Without the key the kernel would accept the peer unsigned: dispatch refuses
                // the peer's connections while its key is not installed.
                tracing::warn!(address = %addr, peer = %peer, error = %e, "BGP: cannot set the TCP MD5 key on the listening socket");
            }
        }
    }
}

/// Hands the connection to its peer's session or refuses it; true when it was refused.
fn dispatch(
    stream: TcpStream,
    from: SocketAddr,
    local: SocketAddr,
    peers: &InboundPeers,
    installed: &BTreeMap<IpAddr, String>,
    stats: &ListenerStats,
) -> bool {
    let source = from.ip().to_canonical();
    match peers.get(&source) {
        // The connection was not checked against the peer's password (key not installed yet,
        // or it could not be set).
        Some(peer)
            if peer.password.is_some() && installed.get(&source) != peer.password.as_ref() =>
        {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = %source, local = %local, "BGP connection refused: the peer's TCP MD5 key is not on the listening socket");
            true
        }
        Some(peer) => {
            match peer.tx.try_send(stream) {
                Ok(()) => {
                    tracing::debug!(peer = %source, local = %local, "BGP connection from peer")
                }
                Err(e) => {
                    tracing::warn!(peer = %source, error = %e, "BGP connection from peer dropped: its session task is busy or gone")
                }
            }
            false
        }
        None => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(source = %from, local = %local, "BGP connection refused: the source is not a configured peer");
            drop(stream);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(password: Option<&str>) -> InboundPeer {
        let (tx, _rx) = mpsc::channel(1);
        InboundPeer {
            tx,
            password: password.map(str::to_string),
        }
    }

    #[test]
    fn keys_are_per_family_and_only_for_peers_with_passwords() {
        let peers: InboundPeers = Arc::new(BTreeMap::from([
            ("198.18.0.1".parse().unwrap(), peer(Some("a"))),
            ("198.18.0.5".parse().unwrap(), peer(None)),
            ("fd00::1".parse().unwrap(), peer(Some("b"))),
        ]));
        let v4: SocketAddr = "198.18.0.2:179".parse().unwrap();
        let v6: SocketAddr = "[fd00::2]:179".parse().unwrap();
        assert_eq!(
            wanted_keys(v4, &peers),
            BTreeMap::from([("198.18.0.1".parse().unwrap(), "a".to_string())])
        );
        assert_eq!(
            wanted_keys(v6, &peers),
            BTreeMap::from([("fd00::1".parse().unwrap(), "b".to_string())])
        );
    }
}
