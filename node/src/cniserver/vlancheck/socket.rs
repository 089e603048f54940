//! A raw `AF_PACKET` socket bound to one interface and one ethertype: sends whole Ethernet
//! frames and receives the incoming ones. libc directly (through nix's re-export): nix has no
//! safe wrapper for binding packet sockets to an interface; open and receive are the shared
//! calls of [`super::super::rawsock`].

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::libc;

use super::super::rawsock;

/// `sll_pkttype` of frames this host sent (the socket sees them too).
const PACKET_OUTGOING: u8 = 4;

/// `SO_ATTACH_FILTER` (asm-generic; the libc crate does not export it for glibc targets).
const SO_ATTACH_FILTER: libc::c_int = 26;
const BPF_LD_B_ABS: u16 = 0x30;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;

fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens a socket for `ethertype` frames on interface `ifindex` (of the calling thread's
    /// network namespace).
    pub fn open(ifindex: u32, ethertype: u16) -> io::Result<PacketSocket> {
        let proto = ethertype.to_be();
        let fd = rawsock::open_raw(libc::AF_PACKET, i32::from(proto))?;
        let ifindex = i32::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index"))?;
        let mut sa: libc::sockaddr_ll = rawsock::zeroed_addr();
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = proto;
        sa.sll_ifindex = ifindex;
        // SAFETY: `sa` is a valid sockaddr_ll and its size is passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&sa).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd })
    }

    /// Lets only ICMPv6 neighbour solicitations and advertisements through (IPv6 header without
    /// extension headers, type 135/136): the socket then does not copy every IPv6 frame of a busy
    /// interface while the check runs. The decoder still validates everything.
    pub fn only_ndp(&self) -> io::Result<()> {
        // Classic BPF, offsets into the Ethernet frame: [20] next header, [54] ICMPv6 type.
        let mut prog = [
            bpf(BPF_LD_B_ABS, 0, 0, 20),
            bpf(BPF_JEQ_K, 0, 3, 58),
            bpf(BPF_LD_B_ABS, 0, 0, 54),
            bpf(BPF_JEQ_K, 2, 0, 135),
            bpf(BPF_JEQ_K, 1, 0, 136),
            bpf(BPF_RET_K, 0, 0, 0),
            bpf(BPF_RET_K, 0, 0, 0x0004_0000),
        ];
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_mut_ptr(),
        };
        // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel copies it.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_ATTACH_FILTER,
                std::ptr::from_ref(&fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends one complete Ethernet frame out of the bound interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // The socket is bound, so no address is needed.
        nix::sys::socket::send(
            self.fd.as_raw_fd(),
            frame,
            nix::sys::socket::MsgFlags::empty(),
        )
        .map(|_| ())
        .map_err(io::Error::from)
    }

    /// Waits up to `timeout` for an incoming frame (frames this host sent are skipped) and
    /// copies it into `buf`; `Ok(None)` when none came.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let (n, from) =
                match rawsock::recv_within::<libc::sockaddr_ll>(self.fd.as_fd(), buf, left) {
                    Ok(Some(got)) => got,
                    Ok(None) => return Ok(None),
                    Err(e) if rawsock::transient(&e) => continue,
                    Err(e) => return Err(e),
                };
            if from.sll_pkttype == PACKET_OUTGOING {
                if left.is_zero() {
                    return Ok(None);
                }
                continue;
            }
            return Ok(Some(n));
        }
    }
}
