//! The few raw socket calls std does not offer.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// `send(2)` with `MSG_NOSIGNAL`: a host peer that vanished must give us EPIPE, not
/// kill the VMM with SIGPIPE (fuzzers and embedders may not ignore the signal).
pub fn send_nosignal(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid readable slice of `buf.len()` bytes for the duration of
    // the call; `send` does not retain the pointer. An invalid `fd` yields EBADF.
    let ret = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // `ret` is non-negative and at most `buf.len()`.
    Ok(ret as usize)
}

/// Connects a non-blocking Unix stream socket to `path` without ever blocking the
/// event loop: a listener whose backlog is full yields `WouldBlock` instead of a stall.
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: an all-zero `sockaddr_un` is a valid value of this plain C struct.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "unix socket path too long or contains NUL",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: plain syscall with constant arguments; the returned fd is checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by `socket` and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a fully initialised `sockaddr_un` that outlives the call, and
    // `len` does not exceed its size (checked against `sun_path` above).
    let ret = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_to_missing_path_fails_cleanly() {
        let err = connect_nonblocking(Path::new("/nonexistent/vsock_1234")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let long = "x".repeat(200);
        let err = connect_nonblocking(Path::new(&long)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn send_to_closed_peer_is_epipe_not_sigpipe() {
        use std::os::fd::AsRawFd;
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let err = send_nosignal(a.as_raw_fd(), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
    }
}
