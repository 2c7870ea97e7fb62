//! Async framing of the host-guest protocol over a Unix stream (the `runtime-api` crate
//! ships blocking endpoints; the worker multiplexes many sandboxes on a few threads).

use super::lean_stream::LeanUnixStream;
use runtime_api::protocol::{decode, encode, GuestMessage, Hello, HostMessage, WireError};
use std::io;

/// Identifies the worker in the Hello exchange.
const AGENT: &str = concat!("lambda-worker ", env!("CARGO_PKG_VERSION"));
/// Initial read buffer.
const READ_CHUNK: usize = 16 * 1024;
/// Buffer capacity kept between frames; more is freed once a large frame was consumed.
const KEEP_CAPACITY: usize = 256 * 1024;

/// One connection to guest-init.
pub struct WireConn {
    stream: LeanUnixStream,
    buf: Vec<u8>,
    start: usize,
    pub peer_agent: String,
}

impl WireConn {
    /// Waits for guest-init's Hello and answers with ours.
    pub async fn handshake(stream: tokio::net::UnixStream) -> Result<Self, WireError> {
        let stream = LeanUnixStream::new(stream)?;
        let mut conn = Self {
            stream,
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
            peer_agent: String::new(),
        };
        match conn.recv().await? {
            GuestMessage::Hello(h) => conn.peer_agent = h.agent,
            other => return Err(WireError::Handshake(kind_of(&other))),
        }
        conn.send(&HostMessage::Hello(Hello {
            agent: AGENT.to_string(),
        }))
        .await?;
        Ok(conn)
    }

    pub async fn send(&mut self, msg: &HostMessage) -> Result<(), WireError> {
        let frame = encode(msg)?;
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// Next message; `WireError::Closed` at a clean end of stream.
    pub async fn recv(&mut self) -> Result<GuestMessage, WireError> {
        loop {
            if let Some((msg, used)) = decode::<GuestMessage>(&self.buf[self.start..])? {
                self.start += used;
                if self.start == self.buf.len() {
                    self.start = 0;
                    if self.buf.capacity() > KEEP_CAPACITY {
                        // A multi-megabyte response passed: an idle sandbox should not
                        // keep its buffer for hours.
                        self.buf = Vec::with_capacity(READ_CHUNK);
                    } else {
                        self.buf.clear();
                    }
                }
                return match msg {
                    GuestMessage::ProtocolError(p) => Err(WireError::Peer(p)),
                    m => Ok(m),
                };
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            if self.stream.read_into(&mut self.buf).await? == 0 {
                return Err(if self.buf.is_empty() {
                    WireError::Closed
                } else {
                    io::Error::from(io::ErrorKind::UnexpectedEof).into()
                });
            }
        }
    }
}

fn kind_of(m: &GuestMessage) -> u8 {
    use runtime_api::protocol::Message;
    m.kind()
}
