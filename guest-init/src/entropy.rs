//! Reseeding the kernel's random number generator. Copies of a microVM restored from one
//! snapshot start with the same CRNG state: each gets its own seed from the host, mixed
//! into the input pool, and the CRNG reseeds from that pool at once, so `getrandom` and
//! `/dev/urandom` differ between the copies from their first read after the restore.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;

/// `_IOW('R', 0x03, int[2])`: add entropy (`struct rand_pool_info`), crediting it.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `_IO('R', 0x07)`: reseed the CRNG from the input pool now.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
/// More than this is never needed (the pool's hash takes 32 bytes at a time).
pub const MAX_SEED: usize = 512;

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Mixes `seed` into the input pool and reseeds the CRNG (needs CAP_SYS_ADMIN: PID 1).
pub fn reseed(seed: &[u8]) -> io::Result<()> {
    if seed.is_empty() || seed.len() > MAX_SEED {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("seed of {} bytes (1 to {MAX_SEED})", seed.len()),
        ));
    }
    let dev = OpenOptions::new().write(true).open("/dev/urandom")?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + seed.len());
    info.extend_from_slice(&((seed.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(seed.len() as i32).to_ne_bytes());
    info.extend_from_slice(seed);
    // SAFETY: `info` is a complete rand_pool_info whose buf_size matches the bytes that
    // follow the header; the kernel only reads it. The fd is open for the whole call.
    check(unsafe { libc::ioctl(dev.as_raw_fd(), RNDADDENTROPY as _, info.as_ptr()) })?;
    // SAFETY: an argument-less ioctl on the open random device.
    check(unsafe { libc::ioctl(dev.as_raw_fd(), RNDRESEEDCRNG as _) })
}
