//! Blocking (std) connection endpoints for both peers.
//!
//! The host side is [`HostConnection`]: it accepts guest-init's Hello, then sends
//! Init/Invoke/Shutdown and receives typed [`GuestMessage`]s. guest-init uses
//! [`GuestConnection`]. Both can be split into a cloneable sender and a receiver so a
//! reader thread and writer threads can work at the same time.
//!
//! Protocol violations by the peer (bad magic, unknown version, malformed body, a
//! message kind the peer may not send) are answered with a `ProtocolError` frame, the
//! stream is shut down and `recv` returns the error: never a panic.

use super::frame::{read_frame, WireError};
use super::messages::{
    GuestMessage, Hello, HostMessage, Init, Invoke, Message, ProtocolError, Shutdown,
};
use std::io::{self, BufReader, Read, Write};
use std::marker::PhantomData;
use std::net::{Shutdown as NetShutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

/// A byte stream that can be cloned into independent read and write handles and shut
/// down: Unix sockets in tests, AF_VSOCK in the guest, TCP for tooling.
pub trait Transport: Read + Write + Send + Sized + 'static {
    fn try_clone_transport(&self) -> io::Result<Self>;
    /// Shuts both directions down so a peer blocked in `read` sees end of stream.
    fn shutdown_transport(&self) -> io::Result<()>;
}

impl Transport for UnixStream {
    fn try_clone_transport(&self) -> io::Result<Self> {
        self.try_clone()
    }

    fn shutdown_transport(&self) -> io::Result<()> {
        self.shutdown(NetShutdown::Both)
    }
}

impl Transport for TcpStream {
    fn try_clone_transport(&self) -> io::Result<Self> {
        self.try_clone()
    }

    fn shutdown_transport(&self) -> io::Result<()> {
        self.shutdown(NetShutdown::Both)
    }
}

/// Sending half: cheap to clone, frames from several threads never interleave.
pub struct Sender<M, S> {
    stream: Arc<Mutex<S>>,
    _msg: PhantomData<fn(M)>,
}

impl<M, S> Clone for Sender<M, S> {
    fn clone(&self) -> Self {
        Self {
            stream: Arc::clone(&self.stream),
            _msg: PhantomData,
        }
    }
}

impl<M: Message, S: Transport> Sender<M, S> {
    fn new(stream: S) -> Self {
        Self {
            stream: Arc::new(Mutex::new(stream)),
            _msg: PhantomData,
        }
    }

    /// Sends one message as a frame.
    pub fn send(&self, msg: &M) -> Result<(), WireError> {
        // Encode outside the lock: a 6 MB payload must not block small log frames longer
        // than the write itself takes.
        let frame = super::frame::encode(msg)?;
        let mut stream = self
            .stream
            .lock()
            .map_err(|_| io::Error::other("sender lock poisoned"))?;
        stream.write_all(&frame)?;
        stream.flush()?;
        Ok(())
    }

    /// Shuts the connection down in both directions.
    pub fn close(&self) {
        if let Ok(stream) = self.stream.lock() {
            let _ = stream.shutdown_transport();
        }
    }
}

/// Receiving half. Reports protocol violations to the peer through `reply`.
pub struct Receiver<M, R: Message, S> {
    reader: BufReader<S>,
    reply: Sender<R, S>,
    _msg: PhantomData<fn() -> M>,
}

impl<M: Message, R: Message, S: Transport> Receiver<M, R, S> {
    /// Receives the next message. A `ProtocolError` from the peer is returned as
    /// `WireError::Peer`; a violation by the peer is reported to it and the
    /// connection closed.
    pub fn recv(&mut self) -> Result<M, WireError>
    where
        M: IntoPeerError,
    {
        match read_frame::<M, _>(&mut self.reader) {
            Ok(msg) => match msg.into_peer_error() {
                Ok(msg) => Ok(msg),
                Err(p) => {
                    self.reply.close();
                    Err(WireError::Peer(p))
                }
            },
            Err(e) => {
                self.fail(&e);
                Err(e)
            }
        }
    }

    /// Takes the receiver apart for an event-driven reader: the stream, the bytes
    /// already read past the last frame, and the sender that answers violations.
    pub fn into_parts(self) -> (S, Vec<u8>, Sender<R, S>) {
        let pending = self.reader.buffer().to_vec();
        (self.reader.into_inner(), pending, self.reply)
    }

    /// Reports `err` to the peer (if it is the peer's fault) and closes the stream.
    fn fail(&self, err: &WireError) {
        if let Some(p) = err.to_protocol_error() {
            let _ = self.reply.send(&R::protocol_error(p.code, p.message));
        }
        self.reply.close();
    }
}

/// Separates a peer's `ProtocolError` message from ordinary messages.
pub trait IntoPeerError: Sized {
    fn into_peer_error(self) -> Result<Self, ProtocolError>;
}

impl IntoPeerError for HostMessage {
    fn into_peer_error(self) -> Result<Self, ProtocolError> {
        match self {
            HostMessage::ProtocolError(p) => Err(p),
            other => Ok(other),
        }
    }
}

impl IntoPeerError for GuestMessage {
    fn into_peer_error(self) -> Result<Self, ProtocolError> {
        match self {
            GuestMessage::ProtocolError(p) => Err(p),
            other => Ok(other),
        }
    }
}

/// The two halves of a connection: receives `In`, sends `Out`.
type Halves<In, Out, S> = (Receiver<In, Out, S>, Sender<Out, S>);

fn split<In: Message, Out: Message, S: Transport>(stream: S) -> io::Result<Halves<In, Out, S>> {
    let write_half = stream.try_clone_transport()?;
    let sender = Sender::new(write_half);
    let receiver = Receiver {
        reader: BufReader::with_capacity(64 * 1024, stream),
        reply: sender.clone(),
        _msg: PhantomData,
    };
    Ok((receiver, sender))
}

pub type HostSender<S> = Sender<HostMessage, S>;
pub type HostReceiver<S> = Receiver<GuestMessage, HostMessage, S>;
pub type GuestSender<S> = Sender<GuestMessage, S>;
pub type GuestReceiver<S> = Receiver<HostMessage, GuestMessage, S>;

/// The host's end of a connection from guest-init (blocking std I/O).
pub struct HostConnection<S: Transport> {
    tx: HostSender<S>,
    rx: HostReceiver<S>,
    peer_agent: String,
}

impl<S: Transport> HostConnection<S> {
    /// Completes the handshake on a freshly accepted stream: waits for the guest's
    /// Hello and answers with our own.
    pub fn accept(stream: S, agent: &str) -> Result<Self, WireError> {
        let (mut rx, tx) = split::<GuestMessage, HostMessage, S>(stream)?;
        let peer_agent = match rx.recv()? {
            GuestMessage::Hello(h) => h.agent,
            other => {
                let err = WireError::Handshake(other.kind());
                rx.fail(&err);
                return Err(err);
            }
        };
        tx.send(&HostMessage::Hello(Hello {
            agent: agent.to_string(),
        }))?;
        Ok(Self { tx, rx, peer_agent })
    }

    /// The guest's agent string from its Hello.
    pub fn peer_agent(&self) -> &str {
        &self.peer_agent
    }

    pub fn send_init(&self, init: &Init) -> Result<(), WireError> {
        self.tx.send(&HostMessage::Init(init.clone()))
    }

    pub fn send_invoke(&self, invoke: &Invoke) -> Result<(), WireError> {
        self.tx.send(&HostMessage::Invoke(invoke.clone()))
    }

    pub fn send_shutdown(&self, shutdown: &Shutdown) -> Result<(), WireError> {
        self.tx.send(&HostMessage::Shutdown(shutdown.clone()))
    }

    /// Blocks for the next message from the guest.
    pub fn recv(&mut self) -> Result<GuestMessage, WireError> {
        self.rx.recv()
    }

    /// A sender usable from other threads while this connection receives.
    pub fn sender(&self) -> HostSender<S> {
        self.tx.clone()
    }

    pub fn into_split(self) -> (HostReceiver<S>, HostSender<S>) {
        (self.rx, self.tx)
    }
}

/// guest-init's end of the connection (blocking std I/O).
pub struct GuestConnection<S: Transport> {
    tx: GuestSender<S>,
    rx: GuestReceiver<S>,
    peer_agent: String,
}

impl<S: Transport> GuestConnection<S> {
    /// Sends our Hello on a connected stream and waits for the host's.
    pub fn handshake(stream: S, agent: &str) -> Result<Self, WireError> {
        let (mut rx, tx) = split::<HostMessage, GuestMessage, S>(stream)?;
        tx.send(&GuestMessage::Hello(Hello {
            agent: agent.to_string(),
        }))?;
        let peer_agent = match rx.recv()? {
            HostMessage::Hello(h) => h.agent,
            other => {
                let err = WireError::Handshake(other.kind());
                rx.fail(&err);
                return Err(err);
            }
        };
        Ok(Self { tx, rx, peer_agent })
    }

    pub fn peer_agent(&self) -> &str {
        &self.peer_agent
    }

    pub fn send(&self, msg: &GuestMessage) -> Result<(), WireError> {
        self.tx.send(msg)
    }

    pub fn recv(&mut self) -> Result<HostMessage, WireError> {
        self.rx.recv()
    }

    pub fn into_split(self) -> (GuestReceiver<S>, GuestSender<S>) {
        (self.rx, self.tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{write_frame, HEADER_LEN, MAGIC, VERSION};
    use crate::protocol::messages::{error_code, Response};
    use std::thread;

    #[test]
    fn handshake_init_invoke_response() {
        let (h, g) = UnixStream::pair().unwrap();
        let guest = thread::spawn(move || {
            let mut conn = GuestConnection::handshake(g, "guest-test").unwrap();
            assert_eq!(conn.peer_agent(), "host-test");
            let HostMessage::Init(init) = conn.recv().unwrap() else {
                panic!("expected Init")
            };
            conn.send(&GuestMessage::InitDone).unwrap();
            let HostMessage::Invoke(inv) = conn.recv().unwrap() else {
                panic!("expected Invoke")
            };
            conn.send(&GuestMessage::Response(Response {
                request_id: inv.request_id,
                payload: init.handler.into_bytes(),
            }))
            .unwrap();
        });
        let mut host = HostConnection::accept(h, "host-test").unwrap();
        assert_eq!(host.peer_agent(), "guest-test");
        host.send_init(&Init {
            handler: "echo".into(),
            ..Init::default()
        })
        .unwrap();
        assert_eq!(host.recv().unwrap(), GuestMessage::InitDone);
        host.send_invoke(&Invoke {
            request_id: "r-1".into(),
            ..Invoke::default()
        })
        .unwrap();
        assert_eq!(
            host.recv().unwrap(),
            GuestMessage::Response(Response {
                request_id: "r-1".into(),
                payload: b"echo".to_vec()
            })
        );
        guest.join().unwrap();
        assert!(matches!(host.recv(), Err(WireError::Closed)));
    }

    #[test]
    fn unknown_version_gets_error_frame_and_close() {
        let (h, mut g) = UnixStream::pair().unwrap();
        let host = thread::spawn(move || HostConnection::accept(h, "host"));
        // A Hello from a future protocol version.
        let mut frame = vec![MAGIC[0], MAGIC[1], VERSION + 1, 0x01, 0, 0, 0, 0];
        frame.truncate(HEADER_LEN);
        g.write_all(&frame).unwrap();
        let err = host.join().unwrap().err().unwrap();
        assert!(matches!(err, WireError::UnsupportedVersion(v) if v == VERSION + 1));
        let reply: HostMessage = read_frame(&mut g).unwrap();
        let HostMessage::ProtocolError(p) = reply else {
            panic!("expected ProtocolError, got {reply:?}")
        };
        assert_eq!(p.code, error_code::UNSUPPORTED_VERSION);
        let mut rest = Vec::new();
        assert_eq!(
            g.read_to_end(&mut rest).unwrap(),
            0,
            "connection must be closed"
        );
    }

    #[test]
    fn wrong_first_message_fails_the_handshake() {
        let (h, mut g) = UnixStream::pair().unwrap();
        let host = thread::spawn(move || HostConnection::accept(h, "host"));
        write_frame(&mut g, &GuestMessage::InitDone).unwrap();
        assert!(matches!(host.join().unwrap(), Err(WireError::Handshake(_))));
        let reply: HostMessage = read_frame(&mut g).unwrap();
        assert!(matches!(
            reply,
            HostMessage::ProtocolError(ProtocolError {
                code: error_code::UNEXPECTED_MESSAGE,
                ..
            })
        ));
    }

    #[test]
    fn malformed_body_is_reported_not_panicked() {
        let (h, mut g) = UnixStream::pair().unwrap();
        let host = thread::spawn(move || {
            let mut conn = HostConnection::accept(h, "host")?;
            conn.recv()
        });
        write_frame(&mut g, &GuestMessage::Hello(Hello { agent: "g".into() })).unwrap();
        let _hello: HostMessage = read_frame(&mut g).unwrap();
        // A Response whose request-id length claims more bytes than the body has.
        let frame = [
            MAGIC[0], MAGIC[1], VERSION, 0x12, 4, 0, 0, 0, 0xff, 0xff, 0, 0,
        ];
        g.write_all(&frame).unwrap();
        assert!(matches!(host.join().unwrap(), Err(WireError::Decode(_))));
        let reply: HostMessage = read_frame(&mut g).unwrap();
        assert!(matches!(
            reply,
            HostMessage::ProtocolError(ProtocolError {
                code: error_code::MALFORMED_FRAME,
                ..
            })
        ));
    }
}
