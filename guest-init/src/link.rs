//! The host link: frames from the host are read on the agent's event loop
//! ([`HostReader`]); a writer thread sends large or queued frames to it.
//!
//! The rest of guest-init sees an async source of [`HostEvent`]s and a [`Sink`].
//! Small frames (up to 64 KiB) are written directly by the calling thread when nothing
//! is queued, which saves a thread hand-off on every invocation; larger frames, and
//! anything sent while the queue is not empty, go through the writer thread so a
//! multi-megabyte payload never holds up the Runtime API server. Each thread's frames
//! stay in order: a thread only writes directly when none of its frames are queued.

use crate::host_reader::HostReader;
use crate::transport::HostStream;
use runtime_api::protocol::messages::Message;
use runtime_api::protocol::{GuestConnection, GuestMessage, HostMessage, WireError};
use runtime_api::server::Sink;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// What arrives from the host.
#[derive(Debug)]
pub enum HostEvent {
    Message(HostMessage),
    /// The connection ended or broke; the text says why.
    Gone(String),
}

/// Frames up to this size may be written by the sending thread itself.
const DIRECT_MAX: usize = 64 * 1024;

enum Outgoing {
    Frame(GuestMessage),
    Flush(mpsc::SyncSender<()>),
}

pub struct Link {
    pub sink: Sink,
    pub reader: HostReader,
    out: mpsc::Sender<Outgoing>,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("handshake with host: {0}")]
    Handshake(#[from] WireError),
    #[error("starting host I/O thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("registering the host connection with the event loop: {0}")]
    Register(std::io::Error),
}

impl Link {
    /// Performs the Hello exchange and starts the writer thread. Must be called
    /// inside the tokio runtime that will run the agent (the reader registers with it).
    pub fn start(stream: HostStream) -> Result<Self, LinkError> {
        let agent = format!("guest-init {}", env!("CARGO_PKG_VERSION"));
        let conn = GuestConnection::handshake(stream, &agent)?;
        let (rx, tx) = conn.into_split();
        let (read_half, pending, reply) = rx.into_parts();
        let reader = HostReader::new(read_half, pending, reply).map_err(LinkError::Register)?;

        let (out, out_rx) = mpsc::channel::<Outgoing>();
        let queued = Arc::new(AtomicUsize::new(0));
        let writer_queued = Arc::clone(&queued);
        let direct = tx.clone();
        std::thread::Builder::new()
            .name("host-writer".into())
            .spawn(move || {
                for item in out_rx {
                    match item {
                        Outgoing::Frame(msg) => {
                            let result = tx.send(&msg);
                            writer_queued.fetch_sub(1, Ordering::AcqRel);
                            if let Err(e) = result {
                                eprintln!("guest-init: host write failed: {e}");
                                break;
                            }
                        }
                        Outgoing::Flush(ack) => {
                            let _ = ack.send(());
                        }
                    }
                }
            })?;

        let frames = out.clone();
        let sink: Sink = Arc::new(move |msg| {
            if msg.size_hint() <= DIRECT_MAX && queued.load(Ordering::Acquire) == 0 {
                // A failed write means the connection is dead; the reader thread reports
                // that, so the frame can only be dropped.
                let _ = direct.send(&msg);
                return;
            }
            queued.fetch_add(1, Ordering::AcqRel);
            // The writer only goes away when the connection is dead: same as above.
            let _ = frames.send(Outgoing::Frame(msg));
        });
        Ok(Self { sink, reader, out })
    }

    /// Waits (bounded) until every frame queued so far has been written.
    pub fn flush(&self, timeout: Duration) {
        let (ack, done) = mpsc::sync_channel(1);
        if self.out.send(Outgoing::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(timeout);
        }
    }
}
