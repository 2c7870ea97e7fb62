//! Multiplexes guest connections onto host Unix sockets.
//!
//! Host-initiated: clients connect to `uds_path` and send `CONNECT <port>\n`; once the
//! guest accepts they get `OK <host port>\n`. Guest-initiated: a guest connection to
//! CID 2 port P is bridged to a fresh connection to `<uds_path>_P`.
//!
//! All host fds live in one private epoll set whose fd the device registers with the
//! VMM's event loop, so the number of connections never touches the event manager.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::timerfd::TimerFd;

use super::handshake::{Handshake, HandshakeStep};
use crate::devices::virtio::vsock::csm::sys::connect_nonblocking;
use crate::devices::virtio::vsock::csm::{ConnError, ConnKey, VsockConnection};
use crate::devices::virtio::vsock::defs::{
    FIRST_LOCAL_PORT, HOST_CID, MAX_CONNECTIONS, MAX_CONTROL_QUEUE, MAX_PENDING_HANDSHAKES,
    TIMER_TICK,
};
use crate::devices::virtio::vsock::metrics::{self, VsockMetrics};
use crate::devices::virtio::vsock::packet::{Op, VsockHeader, TYPE_STREAM};

#[derive(Debug, thiserror::Error)]
pub enum MuxerError {
    #[error("binding {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("epoll: {0}")]
    Epoll(io::Error),
    #[error("timerfd: {0}")]
    Timer(io::Error),
}

/// What a registered fd belongs to.
#[derive(Clone, Copy, Debug)]
enum FdOwner {
    Listener,
    Timer,
    Handshake,
    Conn(ConnKey),
}

pub struct VsockMuxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    timer: TimerFd,
    timer_armed: bool,
    fds: HashMap<RawFd, FdOwner>,
    handshakes: HashMap<RawFd, Handshake>,
    conns: HashMap<ConnKey, VsockConnection>,
    /// Connections with guest-bound packets, served round-robin.
    rxq: VecDeque<ConnKey>,
    /// Header-only packets not tied to a live connection (RSTs).
    control: VecDeque<VsockHeader>,
    next_local_port: u32,
    max_connections: usize,
    metrics: Arc<VsockMetrics>,
}

impl std::fmt::Debug for VsockMuxer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VsockMuxer")
            .field("uds_path", &self.uds_path)
            .field("conns", &self.conns.len())
            .field("handshakes", &self.handshakes.len())
            .finish()
    }
}

impl VsockMuxer {
    /// Binds `uds_path` (which must not exist) for host-initiated connections.
    pub fn new(
        guest_cid: u64,
        uds_path: PathBuf,
        metrics: Arc<VsockMetrics>,
    ) -> Result<Self, MuxerError> {
        let listener = UnixListener::bind(&uds_path).map_err(|source| MuxerError::Bind {
            path: uds_path.clone(),
            source,
        })?;
        let bind_err = |source| MuxerError::Bind {
            path: uds_path.clone(),
            source,
        };
        listener.set_nonblocking(true).map_err(bind_err)?;
        let epoll = Epoll::new().map_err(MuxerError::Epoll)?;
        let timer = TimerFd::new().map_err(|e| MuxerError::Timer(e.into()))?;
        let mut m = VsockMuxer {
            guest_cid,
            uds_path,
            listener,
            epoll,
            timer,
            timer_armed: false,
            fds: HashMap::new(),
            handshakes: HashMap::new(),
            conns: HashMap::new(),
            rxq: VecDeque::new(),
            control: VecDeque::new(),
            next_local_port: FIRST_LOCAL_PORT,
            max_connections: MAX_CONNECTIONS,
            metrics,
        };
        let lfd = m.listener.as_raw_fd();
        m.epoll_add(lfd, EventSet::IN, FdOwner::Listener)
            .map_err(MuxerError::Epoll)?;
        let tfd = m.timer.as_raw_fd();
        m.epoll_add(tfd, EventSet::IN, FdOwner::Timer)
            .map_err(MuxerError::Epoll)?;
        Ok(m)
    }

    /// The fd the event loop polls for backend activity.
    pub fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    pub fn num_connections(&self) -> usize {
        self.conns.len()
    }

    /// Lowers (or raises) the connection limit; existing connections are kept.
    pub fn set_max_connections(&mut self, n: usize) {
        self.max_connections = n;
    }

    pub fn has_pending_rx(&self) -> bool {
        !self.control.is_empty() || !self.rxq.is_empty()
    }

    /// True when the control queue is full; the device then stops taking TX packets.
    pub fn control_full(&self) -> bool {
        self.control.len() >= MAX_CONTROL_QUEUE
    }

    fn epoll_add(&mut self, fd: RawFd, ev: EventSet, owner: FdOwner) -> io::Result<()> {
        self.epoll
            .ctl(ControlOperation::Add, fd, EpollEvent::new(ev, fd as u64))?;
        self.fds.insert(fd, owner);
        Ok(())
    }

    fn epoll_del(&mut self, fd: RawFd) {
        if self.fds.remove(&fd).is_some() {
            // Fails only if the fd is already gone from the set; nothing to undo then.
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        }
    }

    /// Handles whatever is ready on host fds. Never blocks.
    pub fn process_events(&mut self) {
        let mut events = [EpollEvent::default(); 32];
        loop {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    metrics::inc(&self.metrics.device_errors);
                    return;
                }
            };
            for ev in &events[..n] {
                let fd = ev.data() as RawFd;
                let set = EventSet::from_bits_truncate(ev.events());
                match self.fds.get(&fd).copied() {
                    Some(FdOwner::Listener) => self.accept_all(),
                    Some(FdOwner::Timer) => self.on_timer(),
                    Some(FdOwner::Handshake) => self.advance_handshake(fd),
                    Some(FdOwner::Conn(key)) => {
                        if let Some(c) = self.conns.get_mut(&key) {
                            c.notify(set);
                        }
                        self.update_conn(key);
                    }
                    None => {}
                }
            }
            if n < events.len() {
                return;
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    metrics::inc(&self.metrics.host_io_errors);
                    return;
                }
            };
            if self.handshakes.len() >= MAX_PENDING_HANDSHAKES
                || self.conns.len() >= self.max_connections
            {
                metrics::inc(&self.metrics.conns_over_limit);
                continue; // dropping the stream closes it
            }
            if stream.set_nonblocking(true).is_err() {
                metrics::inc(&self.metrics.host_io_errors);
                continue;
            }
            let fd = stream.as_raw_fd();
            if self
                .epoll_add(fd, EventSet::IN, FdOwner::Handshake)
                .is_err()
            {
                metrics::inc(&self.metrics.device_errors);
                continue;
            }
            self.handshakes.insert(fd, Handshake::new(stream));
            self.arm_timer();
        }
    }

    fn advance_handshake(&mut self, fd: RawFd) {
        let Some(hs) = self.handshakes.get_mut(&fd) else {
            return;
        };
        match hs.advance() {
            HandshakeStep::Pending => {}
            HandshakeStep::Failed(e) => {
                log::debug!("vsock: host client dropped: {e}");
                metrics::inc(&self.metrics.handshake_failed);
                self.drop_handshake(fd);
            }
            HandshakeStep::Done(peer_port) => {
                self.epoll_del(fd);
                let Some(hs) = self.handshakes.remove(&fd) else {
                    return;
                };
                if self.conns.len() >= self.max_connections {
                    metrics::inc(&self.metrics.conns_over_limit);
                    return;
                }
                let Some(local_port) = self.alloc_local_port(peer_port) else {
                    metrics::inc(&self.metrics.conns_over_limit);
                    return;
                };
                let key = ConnKey {
                    local_port,
                    peer_port,
                };
                let conn = VsockConnection::new_local_init(hs.into_stream(), key, self.guest_cid);
                self.add_conn(conn);
            }
        }
    }

    fn drop_handshake(&mut self, fd: RawFd) {
        self.epoll_del(fd);
        self.handshakes.remove(&fd);
    }

    fn alloc_local_port(&mut self, peer_port: u32) -> Option<u32> {
        // At most `max_connections` ports are taken, so a free one is found quickly.
        for _ in 0..=self.max_connections {
            let port = self.next_local_port;
            self.next_local_port = self
                .next_local_port
                .checked_add(1)
                .unwrap_or(FIRST_LOCAL_PORT);
            let key = ConnKey {
                local_port: port,
                peer_port,
            };
            if !self.conns.contains_key(&key) {
                return Some(port);
            }
        }
        None
    }

    fn add_conn(&mut self, conn: VsockConnection) {
        let key = conn.key();
        metrics::inc(&self.metrics.conns_added);
        metrics::inc(&self.metrics.conns_open);
        self.conns.insert(key, conn);
        self.update_conn(key);
    }

    fn remove_conn(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.remove(&key) {
            if conn.registered.is_some() {
                self.epoll_del(conn.fd());
            }
            metrics::inc(&self.metrics.conns_removed);
            metrics::dec(&self.metrics.conns_open);
        }
    }

    /// Brings epoll interest, the RX list and the timer in line with the connection.
    fn update_conn(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.is_killed() && !conn.has_pending_rx() {
            self.remove_conn(key);
            return;
        }
        if conn.has_pending_rx() && !conn.in_rxq {
            conn.in_rxq = true;
            self.rxq.push_back(key);
        }
        let want = conn.interest();
        if want != conn.registered {
            let fd = conn.fd();
            let res = match (conn.registered, want) {
                (None, Some(ev)) => {
                    self.epoll
                        .ctl(ControlOperation::Add, fd, EpollEvent::new(ev, fd as u64))
                }
                (Some(_), Some(ev)) => {
                    self.epoll
                        .ctl(ControlOperation::Modify, fd, EpollEvent::new(ev, fd as u64))
                }
                (Some(_), None) => {
                    self.epoll
                        .ctl(ControlOperation::Delete, fd, EpollEvent::default())
                }
                (None, None) => Ok(()),
            };
            match res {
                Ok(()) => {
                    conn.registered = want;
                    match want {
                        Some(_) => self.fds.insert(fd, FdOwner::Conn(key)),
                        None => self.fds.remove(&fd),
                    };
                }
                Err(_) => {
                    metrics::inc(&self.metrics.device_errors);
                    conn.kill(true);
                }
            }
        }
        if conn.deadline().is_some() {
            self.arm_timer();
        }
    }

    fn arm_timer(&mut self) {
        if !self.timer_armed {
            match self.timer.reset(TIMER_TICK, Some(TIMER_TICK)) {
                Ok(()) => self.timer_armed = true,
                Err(_) => metrics::inc(&self.metrics.device_errors),
            }
        }
    }

    fn on_timer(&mut self) {
        // The fd is readable, so this does not block.
        let _ = self.timer.wait();
        let now = Instant::now();
        let expired: Vec<RawFd> = self
            .handshakes
            .iter()
            .filter(|(_, h)| h.expired(now))
            .map(|(fd, _)| *fd)
            .collect();
        for fd in expired {
            metrics::inc(&self.metrics.handshake_failed);
            self.drop_handshake(fd);
        }
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        let mut any_deadline = false;
        for key in keys {
            if let Some(c) = self.conns.get_mut(&key) {
                if c.check_expiry(now) {
                    metrics::inc(&self.metrics.conns_timed_out);
                }
                any_deadline |= c.deadline().is_some();
            }
            self.update_conn(key);
        }
        if !any_deadline && self.handshakes.is_empty() {
            match self.timer.clear() {
                Ok(()) => self.timer_armed = false,
                Err(_) => metrics::inc(&self.metrics.device_errors),
            }
        }
    }

    fn queue_rst(&mut self, to: &VsockHeader) {
        if self.control.len() >= MAX_CONTROL_QUEUE {
            metrics::inc(&self.metrics.drop_control_queue_full);
            return;
        }
        self.control.push_back(VsockHeader {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: to.dst_port,
            dst_port: to.src_port,
            type_: TYPE_STREAM,
            op: Op::Rst as u16,
            ..VsockHeader::default()
        });
    }

    /// A packet from the guest. Invalid packets are counted and dropped or answered
    /// with RST; they never affect other connections.
    pub fn send_pkt(&mut self, hdr: &VsockHeader, payload: &[u8]) {
        let m = Arc::clone(&self.metrics);
        if hdr.src_cid != self.guest_cid || hdr.dst_cid != HOST_CID {
            metrics::inc(&m.drop_bad_cid);
            return;
        }
        if hdr.type_ != TYPE_STREAM {
            metrics::inc(&m.drop_bad_type);
            if hdr.op != Op::Rst as u16 {
                self.queue_rst(hdr);
            }
            return;
        }
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        let Some(op) = hdr.op() else {
            metrics::inc(&m.drop_unknown_op);
            match self.conns.get_mut(&key) {
                Some(c) => c.kill(true),
                None => self.queue_rst(hdr),
            }
            self.update_conn(key);
            return;
        };
        let Some(conn) = self.conns.get_mut(&key) else {
            match op {
                Op::Request => self.guest_connect(hdr, key),
                Op::Rst => {}
                _ => {
                    metrics::inc(&m.drop_unknown_conn);
                    self.queue_rst(hdr);
                }
            }
            return;
        };
        match conn.send_pkt(hdr, op, payload) {
            Ok(n) => metrics::add(&m.tx_bytes, n as u64),
            Err(e) => {
                log::debug!("vsock: resetting {key:?}: {e}");
                match e {
                    ConnError::CreditViolation { .. } => metrics::inc(&m.drop_credit_violation),
                    ConnError::BadState { .. } => metrics::inc(&m.drop_bad_state),
                    ConnError::HostIo(_) => metrics::inc(&m.host_io_errors),
                }
                conn.kill(true);
            }
        }
        self.update_conn(key);
    }

    fn guest_connect(&mut self, hdr: &VsockHeader, key: ConnKey) {
        if self.conns.len() >= self.max_connections {
            metrics::inc(&self.metrics.conns_over_limit);
            self.queue_rst(hdr);
            return;
        }
        let path = format!("{}_{}", self.uds_path.display(), hdr.dst_port);
        match connect_nonblocking(Path::new(&path)) {
            Ok(stream) => {
                let conn = VsockConnection::new_peer_init(stream, key, self.guest_cid, hdr);
                self.add_conn(conn);
            }
            Err(e) => {
                log::debug!("vsock: guest connect to {path}: {e}");
                metrics::inc(&self.metrics.host_connect_failed);
                self.queue_rst(hdr);
            }
        }
    }

    /// The next packet for the guest, payload in `buf[..len]`. `None` if nothing is
    /// ready now.
    pub fn recv_pkt(&mut self, buf: &mut [u8]) -> Option<(VsockHeader, usize)> {
        if let Some(hdr) = self.control.pop_front() {
            metrics::inc(&self.metrics.rst_sent);
            return Some((hdr, 0));
        }
        // Each queued connection gets one try; ones that still owe packets go to the back.
        for _ in 0..self.rxq.len() {
            let Some(key) = self.rxq.pop_front() else {
                break;
            };
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            conn.in_rxq = false;
            let pkt = conn.recv_pkt(buf);
            self.update_conn(key);
            if let Some((hdr, len)) = pkt {
                if hdr.op == Op::Rst as u16 {
                    metrics::inc(&self.metrics.rst_sent);
                }
                return Some((hdr, len));
            }
        }
        None
    }

    /// Drops every connection and handshake (device reset). Host sockets are closed.
    pub fn reset(&mut self) {
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        for key in keys {
            self.remove_conn(key);
        }
        let fds: Vec<RawFd> = self.handshakes.keys().copied().collect();
        for fd in fds {
            self.drop_handshake(fd);
        }
        self.rxq.clear();
        self.control.clear();
    }
}

impl Drop for VsockMuxer {
    fn drop(&mut self) {
        // We created the socket file; leaving it would make the next bind fail.
        let _ = std::fs::remove_file(&self.uds_path);
    }
}
