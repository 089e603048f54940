//! A raw `AF_PACKET` socket bound to one interface and one ethertype: sends whole Ethernet
//! frames and receives the incoming ones. libc directly (through nix's re-export): nix has no
//! safe wrapper for binding packet sockets to an interface, and no new crate is needed for four
//! system calls.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::libc;

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
        // SAFETY: plain socket(2) call; the returned descriptor is owned right below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let ifindex = i32::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index"))?;
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
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
        // SAFETY: the buffer is valid for its length; the socket is bound, so no address is needed.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` for an incoming frame (frames this host sent are skipped) and
    /// copies it into `buf`; `Ok(None)` when none came.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if rc == 0 {
                return Ok(None);
            }
            // SAFETY: sockaddr_ll is plain data.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buffer and address are valid for the lengths passed.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    std::ptr::from_mut(&mut from).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) {
                    continue;
                }
                return Err(e);
            }
            if from.sll_pkttype == PACKET_OUTGOING {
                if left.is_zero() {
                    return Ok(None);
                }
                continue;
            }
            return Ok(Some(n as usize));
        }
    }
}
