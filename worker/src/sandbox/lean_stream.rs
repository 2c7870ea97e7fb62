//! A Unix stream registered with the runtime for readability only.
//!
//! A tokio `UnixStream` registers for both directions, and on a Unix stream every read
//! by the peer signals write space to our side: with writable interest, each frame
//! guest-init consumed woke a worker thread for nothing (a context switch and, across
//! CPUs, an inter-processor interrupt per invoke). Writes are tried directly; only a
//! write that would block (a multi-megabyte payload) waits for write space, through a
//! duplicate of the fd registered for that one write.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Smallest read. A read asks for as much as is already buffered (at least this), so a
/// large frame arrives in few reads.
const READ_CHUNK: usize = 16 * 1024;

pub struct LeanUnixStream {
    fd: AsyncFd<UnixStream>,
}

impl LeanUnixStream {
    pub fn new(stream: tokio::net::UnixStream) -> io::Result<Self> {
        let stream = stream.into_std()?;
        stream.set_nonblocking(true)?;
        // SAFETY: the std UnixStream owns its fd, `as_raw_fd` always returns that fd, and
        // the AsyncFd is never given a different stream (no `get_mut`), so the fd stays
        // open and unchanged while it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(stream, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    pub async fn write_all(&self, data: &[u8]) -> io::Result<()> {
        let mut sent = write_some(self.fd.get_ref(), data)?;
        if sent == data.len() {
            return Ok(());
        }
        let dup = self.fd.get_ref().try_clone()?;
        // SAFETY: `dup` is our own duplicate of the fd; the AsyncFd owns it for this
        // write and closes it on drop, after deregistering.
        let space = unsafe { AsyncFd::register_with_interest(dup, Interest::WRITABLE) }
            .map_err(io::Error::from)?;
        while sent < data.len() {
            let mut ready = space.writable().await?;
            match write_some(self.fd.get_ref(), &data[sent..])? {
                0 => ready.clear_ready(),
                n => sent += n,
            }
        }
        Ok(())
    }

    /// Appends what the socket has to `buf`: at least one byte, or 0 at end of stream.
    pub async fn read_into(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        buf.reserve(buf.len().max(READ_CHUNK));
        let asked = buf.capacity() - buf.len();
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|s| recv_into_spare(s.get_ref().as_raw_fd(), buf)) {
                Ok(Ok(n)) => {
                    if n > 0 && n < asked {
                        // A short read drained the socket: forget the readiness now
                        // rather than learn it from one more recv that would block
                        // (tokio keeps readiness that a newer event set).
                        ready.clear_ready();
                    }
                    return Ok(n);
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// One `recv` into `buf`'s spare capacity (not zeroed first: a memset of the read
/// size per frame showed in profiles); the length grows by what was received.
fn recv_into_spare(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    loop {
        // SAFETY: `spare` is writable memory of `spare.len()` bytes owned by `buf`;
        // recv writes at most that many bytes into it.
        let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), 0) };
        if n >= 0 {
            let n = n as usize;
            // SAFETY: recv initialised the first `n` bytes of the spare capacity, and
            // `n <= spare.len()`, so the new length stays within the capacity.
            unsafe { buf.set_len(buf.len() + n) };
            return Ok(n);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Writes what the socket takes now; 0 when it would block.
fn write_some(stream: &UnixStream, data: &[u8]) -> io::Result<usize> {
    loop {
        match Write::write(&mut { stream }, data) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn large_writes_and_reads_cross_a_full_socket_buffer() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (a, b) = (
            LeanUnixStream::new(a).unwrap(),
            LeanUnixStream::new(b).unwrap(),
        );
        let data: Vec<u8> = (0..6 << 20).map(|i: u32| (i % 251) as u8).collect();
        let expect = data.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&data).await.unwrap();
            a
        });
        let mut got = Vec::new();
        while got.len() < expect.len() {
            assert!(
                b.read_into(&mut got).await.unwrap() > 0,
                "early end of stream"
            );
        }
        assert!(got == expect, "bytes differ");
        drop(writer.await.unwrap());
        assert_eq!(
            b.read_into(&mut got).await.unwrap(),
            0,
            "end of stream after close"
        );
    }
}
