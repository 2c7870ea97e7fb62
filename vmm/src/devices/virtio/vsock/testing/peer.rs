//! The guest half of the interop scenario, emulated in-process. It speaks the same
//! protocol as the static `vsock-peer` program the real guest runs: a server on one port
//! that reads an 8-byte little-endian length and that many bytes, echoes the body and
//! closes; and one outgoing connection to the host that sends a framed pattern, reads
//! the echo, checks it and closes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::stack::{GConnState, GuestStack, SockKey};
use crate::devices::virtio::vsock::packet::{SHUTDOWN_RCV, SHUTDOWN_SEND};

/// The deterministic test payload both sides use.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// What the emulated peer did.
#[derive(Debug, Default, Clone)]
pub struct PeerReport {
    /// Host connections served to completion.
    pub served: usize,
    /// The outgoing connection echoed correctly.
    pub connect_ok: bool,
    /// Flow-control violations observed (host sent beyond our buffer).
    pub overruns: usize,
}

pub struct EmulatedPeer {
    stop: Arc<AtomicBool>,
    connected_out: Arc<AtomicBool>,
    handle: JoinHandle<Result<PeerReport, String>>,
}

impl EmulatedPeer {
    /// Waits until the outgoing connection has been verified; false at the timeout.
    pub fn wait_connect_ok(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.connected_out.load(Ordering::Relaxed) || self.handle.is_finished() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.connected_out.load(Ordering::Relaxed)
    }

    /// Stops the peer and returns its report.
    pub fn finish(self) -> Result<PeerReport, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .map_err(|_| "emulated peer panicked".to_string())?
    }
}

enum Out {
    Idle,
    Connecting(SockKey, Instant),
    Running {
        key: SockKey,
        sent: usize,
        got: Vec<u8>,
    },
    Done,
}

/// Largest frame the server accepts.
const MAX_FRAME: u64 = 64 << 20;

/// One served connection: bytes received, then the echo being written.
#[derive(Default)]
struct Served {
    rx: Vec<u8>,
    echo: Option<Vec<u8>>,
}

/// Starts the emulated guest in a thread.
pub fn run_emulated_peer(
    mut stack: GuestStack,
    serve_port: u32,
    connect: Option<(u32, usize)>,
) -> EmulatedPeer {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let connected_out = Arc::new(AtomicBool::new(false));
    let connected_out2 = Arc::clone(&connected_out);
    let handle = std::thread::spawn(move || {
        stack.listen(serve_port);
        let mut report = PeerReport::default();
        let mut served: HashMap<SockKey, Served> = HashMap::new();
        let mut out = if connect.is_some() {
            Out::Idle
        } else {
            Out::Done
        };
        let started = Instant::now();
        let expected = connect.map(|(_, n)| pattern(n)).unwrap_or_default();
        let mut framed = (expected.len() as u64).to_le_bytes().to_vec();
        framed.extend_from_slice(&expected);
        while !stop2.load(Ordering::Relaxed) {
            stack.poll(2);
            while let Some(k) = stack.accepted.pop_front() {
                served.insert(k, Served::default());
            }
            let keys: Vec<SockKey> = served.keys().copied().collect();
            for k in keys {
                match serve_step(&mut stack, k, &mut served) {
                    Some(true) => report.served += 1,
                    Some(false) => return Err(format!("served connection {k:?} failed")),
                    None => {}
                }
            }
            out = match (out, connect) {
                (Out::Idle, Some((port, _))) => {
                    Out::Connecting(stack.connect(port), Instant::now())
                }
                (Out::Connecting(key, since), _) => match stack.state(key) {
                    Some(GConnState::Established) => Out::Running {
                        key,
                        sent: 0,
                        got: Vec::new(),
                    },
                    Some(GConnState::Closed) if started.elapsed() < Duration::from_secs(10) => {
                        // Nobody listens yet on the host: retry like vsock-peer does.
                        std::thread::sleep(Duration::from_millis(50));
                        Out::Idle
                    }
                    Some(GConnState::Connecting) if since.elapsed() < Duration::from_secs(5) => {
                        Out::Connecting(key, since)
                    }
                    other => return Err(format!("outgoing connect failed: {other:?}")),
                },
                (
                    Out::Running {
                        key,
                        mut sent,
                        mut got,
                    },
                    _,
                ) => {
                    sent += stack.write(key, &framed[sent..]);
                    got.extend(stack.read(key, usize::MAX));
                    if got.len() >= expected.len() {
                        if got != expected {
                            return Err(format!(
                                "echo mismatch: got {} of {} bytes",
                                got.len(),
                                expected.len()
                            ));
                        }
                        stack.shutdown(key, SHUTDOWN_RCV | SHUTDOWN_SEND);
                        report.connect_ok = true;
                        connected_out2.store(true, Ordering::Relaxed);
                        Out::Done
                    } else if stack.state(key) == Some(GConnState::Closed) {
                        return Err(format!(
                            "outgoing connection closed after {} echoed bytes",
                            got.len()
                        ));
                    } else {
                        Out::Running { key, sent, got }
                    }
                }
                (o, _) => o,
            };
        }
        report.overruns = stack.conns.values().filter(|c| c.overrun).count();
        Ok(report)
    });
    EmulatedPeer {
        stop,
        connected_out,
        handle,
    }
}

/// Advances one served connection. `Some(true)` when it finished, `Some(false)` when
/// it failed, `None` while in progress.
fn serve_step(
    stack: &mut GuestStack,
    k: SockKey,
    served: &mut HashMap<SockKey, Served>,
) -> Option<bool> {
    let data = stack.read(k, usize::MAX);
    let st = served.get_mut(&k)?;
    st.rx.extend(data);
    if st.echo.is_none() && st.rx.len() >= 8 {
        let mut len = [0u8; 8];
        len.copy_from_slice(&st.rx[..8]);
        let len = u64::from_le_bytes(len);
        if len > MAX_FRAME {
            stack.reset(k);
            served.remove(&k);
            return Some(false);
        }
        let end = 8 + len as usize;
        if st.rx.len() >= end {
            st.echo = Some(st.rx[8..end].to_vec());
        }
    }
    if let Some(echo) = st.echo.as_mut() {
        let n = stack.write(k, echo);
        echo.drain(..n);
        if echo.is_empty() {
            stack.shutdown(k, SHUTDOWN_RCV | SHUTDOWN_SEND);
            served.remove(&k);
            return Some(true);
        }
    }
    if stack.state(k) == Some(GConnState::Closed) {
        served.remove(&k);
        return Some(false);
    }
    None
}
