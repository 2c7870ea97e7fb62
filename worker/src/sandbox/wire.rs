//! Async framing of the host-guest protocol over a tokio stream (the `runtime-api` crate
//! ships blocking endpoints; the worker multiplexes many sandboxes on a few threads).

use runtime_api::protocol::{decode, encode, GuestMessage, Hello, HostMessage, WireError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Identifies the worker in the Hello exchange.
const AGENT: &str = concat!("lambda-worker ", env!("CARGO_PKG_VERSION"));

/// One connection to guest-init.
pub struct WireConn {
    stream: UnixStream,
    buf: Vec<u8>,
    start: usize,
    pub peer_agent: String,
}

impl WireConn {
    /// Waits for guest-init's Hello and answers with ours.
    pub async fn handshake(stream: UnixStream) -> Result<Self, WireError> {
        let mut conn = Self {
            stream,
            buf: Vec::with_capacity(16 * 1024),
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
                    self.buf.clear();
                    self.start = 0;
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
            self.buf.reserve(16 * 1024);
            let n = self.stream.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(if self.buf.is_empty() {
                    WireError::Closed
                } else {
                    std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()
                });
            }
        }
    }
}

fn kind_of(m: &GuestMessage) -> u8 {
    use runtime_api::protocol::Message;
    m.kind()
}
