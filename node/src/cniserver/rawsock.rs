//! The system calls the raw sockets of the CNI checks share (ICMP echo in [`super::podping`],
//! `AF_PACKET` frames in [`super::vlancheck`]): open, send to an address, and one bounded wait
//! for a datagram. nix's safe wrappers where it has them (poll); libc (through nix's re-export) for
//! the raw socket calls with C address structs that nix does not wrap.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// A C socket address struct the kernel reads from and writes into.
///
/// # Safety
/// Implementors are plain C structs (no pointers, no niches) for which the all-zero bytes and
/// any bytes the kernel writes are valid values.
pub(super) unsafe trait SockAddr: Copy {}

// SAFETY: plain C structs of integers and byte arrays (libc's definitions of the kernel's).
unsafe impl SockAddr for libc::sockaddr_in {}
// SAFETY: as above.
unsafe impl SockAddr for libc::sockaddr_in6 {}
// SAFETY: as above.
unsafe impl SockAddr for libc::sockaddr_ll {}

/// Opens a `SOCK_RAW` socket (close-on-exec) of the calling thread's network namespace.
pub(super) fn open_raw(domain: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the returned descriptor is owned right below.
    let raw = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A zeroed socket address, to be filled in by the caller or the kernel.
pub(super) fn zeroed_addr<A: SockAddr>() -> A {
    // SAFETY: `A: SockAddr` is plain data for which all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Sends one datagram to `to`.
pub(super) fn send_to<A: SockAddr>(fd: BorrowedFd<'_>, msg: &[u8], to: &A) -> io::Result<()> {
    // SAFETY: the buffer is valid for its length, the address for the size of `A`.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            std::ptr::from_ref(to).cast(),
            std::mem::size_of::<A>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits up to `timeout` (whole milliseconds, rounded down) for one datagram and copies it into
/// `buf` without blocking; returns its length and sender address, `Ok(None)` when none came in
/// time. An interrupted wait or a datagram that went away is an error for which [`transient`]
/// holds: the caller decides whether to wait again.
pub(super) fn recv_within<A: SockAddr>(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    timeout: Duration,
) -> io::Result<Option<(usize, A)>> {
    let ms = PollTimeout::try_from(timeout.as_millis().min(i32::MAX as u128) as i32)
        .unwrap_or(PollTimeout::MAX);
    let mut pfd = [PollFd::new(fd, PollFlags::POLLIN)];
    let ready = poll(&mut pfd, ms).map_err(io::Error::from)?;
    if ready == 0 {
        return Ok(None);
    }
    let mut from: A = zeroed_addr();
    let mut len = std::mem::size_of::<A>() as libc::socklen_t;
    // SAFETY: the buffer is valid for its length, the address for `len` (the size of `A`); the
    // kernel writes at most that much of the sender's address.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            std::ptr::from_mut(&mut from).cast(),
            &mut len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some((n as usize, from)))
}

/// An interrupted call (`EINTR`) or nothing to read after all (`EAGAIN`): worth waiting again.
pub(super) fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
    )
}
