//! Setting a network interface up with the classic `SIOCSIFFLAGS` ioctl (no netlink).

use std::io;

/// Sets `IFF_UP` on the interface `name`; for `lo` the kernel then assigns 127.0.0.1/8.
pub fn set_up(name: &str) -> io::Result<()> {
    // SAFETY: plain socket(2) call with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = set_up_on(fd, name);
    // SAFETY: `fd` is the socket opened above and owned only here.
    unsafe { libc::close(fd) };
    result
}

fn ifreq_for(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= req.ifr_name.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

fn set_up_on(fd: libc::c_int, name: &str) -> io::Result<()> {
    let mut req = ifreq_for(name)?;
    // The request type differs between glibc (c_ulong) and musl (c_int): `as _`.
    // SAFETY: SIOCGIFFLAGS reads the interface named in `req` and writes its flags into
    // the `ifru_flags` member of the same, properly sized and aligned struct.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS succeeded, so `ifru_flags` is the initialised union member.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS only reads `req`, which names the interface and its new flags.
    if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_names() {
        for bad in ["", "a-name-much-too-long-for-ifnamsiz", "n\0ul"] {
            assert_eq!(
                set_up(bad).unwrap_err().kind(),
                io::ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
    }
}
