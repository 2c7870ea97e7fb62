//! Reads host frames on the agent's own event loop.
//!
//! A dedicated reader thread cost a thread wake-up and a channel hand-off on every
//! Invoke; here the socket is polled by the current-thread runtime directly. The fd
//! stays in blocking mode (the writer side shares its file description and relies on
//! blocking writes), so reads use `MSG_DONTWAIT` instead of `O_NONBLOCK`.
//!
//! All state lives in the struct, so `next` is cancel-safe inside `tokio::select!`.

use crate::link::HostEvent;
use crate::transport::HostStream;
use runtime_api::protocol::messages::Message;
use runtime_api::protocol::{decode, GuestMessage, GuestSender, HostMessage, WireError};
use std::io;
use std::os::fd::AsRawFd;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// What wakes the reader: data, and errors alone. A vsock connection that the device
/// resets (`VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`, as after a snapshot's restore) polls
/// as EPOLLERR only, never as readable: waiting for readability would never learn of it.
const WAKE_ON: Interest = Interest::READABLE.add(Interest::ERROR);

/// Bytes requested from the socket per read.
const READ_CHUNK: usize = 64 * 1024;
/// Buffer capacity kept between frames; more than this is freed once drained.
const KEEP_CAPACITY: usize = 4 * READ_CHUNK;

pub struct HostReader {
    fd: AsyncFd<HostStream>,
    buf: Vec<u8>,
    start: usize,
    reply: GuestSender<HostStream>,
    gone: Option<String>,
}

impl HostReader {
    /// Registers `stream` with the current tokio runtime. `pending` holds bytes the
    /// handshake already read past the host's Hello.
    pub fn new(
        stream: HostStream,
        pending: Vec<u8>,
        reply: GuestSender<HostStream>,
    ) -> io::Result<Self> {
        // SAFETY: `HostStream` owns its fd (a UnixStream or a File), its `as_raw_fd`
        // always returns that same fd, and the stream is never swapped out of the
        // AsyncFd (no `get_mut`), so the fd stays open and unchanged while registered.
        let fd = unsafe { AsyncFd::register_with_interest(stream, WAKE_ON) }?;
        Ok(Self {
            fd,
            buf: pending,
            start: 0,
            reply,
            gone: None,
        })
    }

    /// The next host message, or `Gone` once the connection ended or broke.
    pub async fn next(&mut self) -> HostEvent {
        if let Some(reason) = &self.gone {
            return HostEvent::Gone(reason.clone());
        }
        match self.next_message().await {
            Ok(msg) => HostEvent::Message(msg),
            Err(e) => {
                let reason = e.to_string();
                self.gone = Some(reason.clone());
                HostEvent::Gone(reason)
            }
        }
    }

    async fn next_message(&mut self) -> Result<HostMessage, WireError> {
        loop {
            match decode::<HostMessage>(&self.buf[self.start..]) {
                Ok(Some((msg, used))) => {
                    self.consume(used);
                    if let HostMessage::ProtocolError(p) = msg {
                        self.reply.close();
                        return Err(WireError::Peer(p));
                    }
                    return Ok(msg);
                }
                Ok(None) => {}
                Err(e) => {
                    self.fail(&e);
                    return Err(e);
                }
            }
            if let Err(e) = self.fill().await {
                self.reply.close();
                return Err(e);
            }
        }
    }

    fn consume(&mut self, used: usize) {
        self.start += used;
        if self.start == self.buf.len() {
            self.start = 0;
            if self.buf.capacity() > KEEP_CAPACITY {
                // A multi-megabyte payload passed through: give the memory back to the
                // function rather than hold it for the sandbox's lifetime.
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
        }
    }

    /// Answers a violation by the host with a ProtocolError frame, then closes.
    fn fail(&self, err: &WireError) {
        if let Some(p) = err.to_protocol_error() {
            let _ = self
                .reply
                .send(&GuestMessage::protocol_error(p.code, p.message));
        }
        self.reply.close();
    }

    /// Reads at least one byte more into the buffer.
    async fn fill(&mut self) -> Result<(), WireError> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(READ_CHUNK);
        loop {
            let mut guard = self.fd.ready(WAKE_ON).await?;
            let buf = &mut self.buf;
            let room = buf.capacity() - buf.len();
            match guard.try_io(|fd| recv_append(fd.get_ref().as_raw_fd(), buf)) {
                Ok(Ok(0)) if buf.is_empty() => return Err(WireError::Closed),
                Ok(Ok(0)) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                Ok(Ok(n)) => {
                    // A short read drained the socket: forget the readiness now rather
                    // than pay an EAGAIN recv to learn it (new data re-arms it).
                    if n < room {
                        guard.clear_ready();
                    }
                    return Ok(());
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e.into()),
                // Spurious readiness: try_io cleared it; wait again.
                Err(_would_block) => {}
            }
        }
    }
}

/// One non-blocking `recv` into `buf`'s spare capacity; returns the bytes added.
fn recv_append(fd: std::os::fd::RawFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: `spare` is writable memory owned by `buf` of exactly `spare.len()` bytes,
    // and `fd` is an open socket owned by the AsyncFd for the duration of the call.
    let n = unsafe {
        libc::recv(
            fd,
            spare.as_mut_ptr().cast(),
            spare.len(),
            libc::MSG_DONTWAIT,
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    let len = buf.len() + n;
    // SAFETY: the kernel initialised the first `n` bytes of the spare capacity, and
    // `n <= spare.len()`, so `len` stays within the allocation's capacity.
    unsafe { buf.set_len(len) };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime_api::protocol::{
        encode, error_code, read_frame, GuestConnection, HostConnection, Invoke,
    };
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    /// A reader wired to a host whose raw stream the test writes to directly.
    fn connected() -> (HostReader, UnixStream) {
        let (h, g) = UnixStream::pair().unwrap();
        let raw = h.try_clone().unwrap();
        let host = std::thread::spawn(move || HostConnection::accept(h, "host-test"));
        let conn = GuestConnection::handshake(HostStream::Unix(g), "guest-test").unwrap();
        host.join().unwrap().unwrap();
        let (rx, _tx) = conn.into_split();
        let (stream, pending, reply) = rx.into_parts();
        (HostReader::new(stream, pending, reply).unwrap(), raw)
    }

    fn invoke(id: &str, len: usize) -> HostMessage {
        HostMessage::Invoke(Invoke {
            request_id: id.into(),
            payload: vec![b'x'; len],
            ..Invoke::default()
        })
    }

    #[tokio::test]
    async fn frames_split_and_batched_across_reads() {
        let (mut reader, mut raw) = connected();
        // One frame larger than a read chunk, then two that arrive in a single write.
        let big = invoke("big", 5 * READ_CHUNK + 17);
        let mut batch = encode(&invoke("a", 10)).unwrap();
        batch.extend(encode(&invoke("b", 0)).unwrap());
        let frame = encode(&big).unwrap();
        let writer = std::thread::spawn(move || {
            raw.write_all(&frame).unwrap();
            raw.write_all(&batch).unwrap();
            raw
        });
        for want in [big, invoke("a", 10), invoke("b", 0)] {
            match reader.next().await {
                HostEvent::Message(got) => assert_eq!(got, want),
                HostEvent::Gone(r) => panic!("connection lost: {r}"),
            }
        }
        let raw = writer.join().unwrap();
        drop(raw);
        assert!(matches!(reader.next().await, HostEvent::Gone(r) if r.contains("closed")));
        // Once gone, it stays gone.
        assert!(matches!(reader.next().await, HostEvent::Gone(_)));
    }

    #[tokio::test]
    async fn bad_frame_is_answered_with_protocol_error_and_close() {
        let (mut reader, mut raw) = connected();
        raw.write_all(b"XX\x01\x02\x00\x00\x00\x00").unwrap();
        assert!(matches!(reader.next().await, HostEvent::Gone(r) if r.contains("magic")));
        match read_frame::<GuestMessage, _>(&mut raw).unwrap() {
            GuestMessage::ProtocolError(p) => assert_eq!(p.code, error_code::MALFORMED_FRAME),
            other => panic!("expected ProtocolError, got {other:?}"),
        }
        assert!(matches!(
            read_frame::<GuestMessage, _>(&mut raw),
            Err(WireError::Closed)
        ));
    }
}
