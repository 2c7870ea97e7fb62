//! Bounded buffer of guest->host bytes the host socket could not take yet.

use std::collections::VecDeque;
use std::io;

use super::sys::send_nosignal;
use std::os::fd::RawFd;

/// The buffer is bounded by the credit we advertise, so a guest that respects flow
/// control can never overflow it; one that does not gets its connection reset.
#[derive(Debug)]
pub struct TxBuf {
    data: VecDeque<u8>,
    capacity: usize,
}

/// Pushing would exceed the buffer's capacity.
#[derive(Debug, PartialEq, Eq)]
pub struct TxBufFull;

impl TxBuf {
    pub fn new(capacity: usize) -> Self {
        TxBuf {
            data: VecDeque::new(),
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Appends all of `bytes` or nothing.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), TxBufFull> {
        if self.data.len() + bytes.len() > self.capacity {
            return Err(TxBufFull);
        }
        self.data.extend(bytes);
        Ok(())
    }

    /// Writes as much as the socket takes; returns the bytes flushed. `WouldBlock` is
    /// not an error here: it just stops the flush.
    pub fn flush_to(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut total = 0;
        while !self.data.is_empty() {
            let (front, _) = self.data.as_slices();
            match send_nosignal(fd, front) {
                Ok(0) => break,
                Ok(n) => {
                    self.data.drain(..n);
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn push_is_all_or_nothing_and_flush_drains_in_order() {
        let mut b = TxBuf::new(8);
        b.push(b"abcde").unwrap();
        assert_eq!(b.push(b"fghi"), Err(TxBufFull));
        assert_eq!(b.len(), 5);
        let (a, mut peer) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        assert_eq!(b.flush_to(a.as_raw_fd()).unwrap(), 5);
        assert!(b.is_empty());
        let mut got = [0u8; 5];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"abcde");
    }
}
