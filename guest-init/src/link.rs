//! The host link: frames from the host are read on the agent's event loop
//! ([`HostReader`]); a writer thread, started on first need, sends large or queued
//! frames to it.
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
use runtime_api::protocol::{GuestConnection, GuestMessage, GuestSender, HostMessage, WireError};
use runtime_api::server::Sink;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

/// What arrives from the host.
// Moved once per host message: boxing the large variant would cost an allocation per
// Invoke to save copying a few hundred bytes.
#[allow(clippy::large_enum_variant)]
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
    /// Sends through whichever connection is current: a restored sandbox reconnects,
    /// and the Runtime API state holds this sink for the sandbox's whole life.
    pub sink: Sink,
    pub reader: HostReader,
    queue: Arc<RwLock<Arc<Queue>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("handshake with host: {0}")]
    Handshake(#[from] WireError),
    #[error("registering the host connection: {0}")]
    Register(std::io::Error),
}

/// The writer thread and its queue. The thread starts the first time a frame has to be
/// queued: a function whose frames all go directly never pays for it (a thread's
/// kernel stack and pages count against every sandbox).
struct Queue {
    tx: GuestSender<HostStream>,
    /// `Some(None)` once starting the thread failed: frames are then written directly.
    out: OnceLock<Option<mpsc::Sender<Outgoing>>>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    fn send(&self, msg: GuestMessage) {
        // A failed write means the connection is dead; the reader reports that, so the
        // frame can only be dropped.
        if msg.size_hint() <= DIRECT_MAX && self.queued.load(Ordering::Acquire) == 0 {
            let _ = self.tx.send(&msg);
            return;
        }
        match self.writer() {
            Some(out) => {
                self.queued.fetch_add(1, Ordering::AcqRel);
                // The writer only goes away when the connection is dead: same as above.
                let _ = out.send(Outgoing::Frame(msg));
            }
            None => {
                let _ = self.tx.send(&msg);
            }
        }
    }

    fn writer(&self) -> Option<&mpsc::Sender<Outgoing>> {
        self.out
            .get_or_init(
                || match start_writer(self.tx.clone(), Arc::clone(&self.queued)) {
                    Ok(out) => Some(out),
                    Err(e) => {
                        eprintln!("guest-init: host writer thread: {e}; writing frames directly");
                        None
                    }
                },
            )
            .as_ref()
    }
}

fn start_writer(
    tx: GuestSender<HostStream>,
    queued: Arc<AtomicUsize>,
) -> std::io::Result<mpsc::Sender<Outgoing>> {
    let (out, out_rx) = mpsc::channel::<Outgoing>();
    std::thread::Builder::new()
        .name("host-writer".into())
        .spawn(move || {
            for item in out_rx {
                match item {
                    Outgoing::Frame(msg) => {
                        let result = tx.send(&msg);
                        queued.fetch_sub(1, Ordering::AcqRel);
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
    Ok(out)
}

/// The Hello exchange on `stream`, then its reader and send queue.
fn connect(stream: HostStream) -> Result<(HostReader, Arc<Queue>), LinkError> {
    let agent = format!("guest-init {}", env!("CARGO_PKG_VERSION"));
    let conn = GuestConnection::handshake(stream, &agent)?;
    let (rx, tx) = conn.into_split();
    let (read_half, pending, reply) = rx.into_parts();
    let reader = HostReader::new(read_half, pending, reply).map_err(LinkError::Register)?;
    let queue = Arc::new(Queue {
        tx,
        out: OnceLock::new(),
        queued: Arc::new(AtomicUsize::new(0)),
    });
    Ok((reader, queue))
}

fn current(queue: &RwLock<Arc<Queue>>) -> Arc<Queue> {
    Arc::clone(&queue.read().unwrap_or_else(|p| p.into_inner()))
}

impl Link {
    /// Performs the Hello exchange. Must be called inside the tokio runtime that will
    /// run the agent (the reader registers with it).
    pub fn start(stream: HostStream) -> Result<Self, LinkError> {
        let (reader, queue) = connect(stream)?;
        let queue = Arc::new(RwLock::new(queue));
        let q = Arc::clone(&queue);
        let sink: Sink = Arc::new(move |msg| current(&q).send(msg));
        Ok(Self {
            sink,
            reader,
            queue,
        })
    }

    /// Replaces a connection that broke (a sandbox restored from a snapshot) with a new
    /// one; the sink sends through it from now on. The old writer thread ends with its
    /// queue.
    pub fn reconnect(&mut self, stream: HostStream) -> Result<(), LinkError> {
        let (reader, queue) = connect(stream)?;
        self.reader = reader;
        *self.queue.write().unwrap_or_else(|p| p.into_inner()) = queue;
        Ok(())
    }

    /// Waits (bounded) until every frame queued so far has been written.
    pub fn flush(&self, timeout: Duration) {
        let queue = current(&self.queue);
        let Some(Some(out)) = queue.out.get() else {
            return; // no writer thread: nothing was ever queued
        };
        let (ack, done) = mpsc::sync_channel(1);
        if out.send(Outgoing::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(timeout);
        }
    }
}
