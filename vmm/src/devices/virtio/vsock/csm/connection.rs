//! One vsock stream connection bridged to a host Unix stream.
//!
//! Flow control (virtio spec 5.10.6.3): we advertise `CONN_TX_BUF_SIZE` as `buf_alloc`
//! and count in `fwd_cnt` the guest bytes handed to the host socket; bytes the socket
//! cannot take wait in a `TxBuf` of exactly that size, so a guest respecting credit
//! never overflows it. Towards the guest we never send more than
//! `peer_buf_alloc - (rx_cnt - peer_fwd_cnt)`; when that is zero we stop reading the
//! host socket, so the host writer feels back-pressure instead of us buffering.

use std::io::{self, Read};
use std::num::Wrapping;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use vmm_sys_util::epoll::EventSet;

use super::sys::send_nosignal;
use super::txbuf::TxBuf;
use crate::devices::virtio::vsock::defs::{
    CONNECT_TIMEOUT, CONN_CREDIT_UPDATE_THRESHOLD, CONN_TX_BUF_SIZE, HOST_CID, SHUTDOWN_TIMEOUT,
};
use crate::devices::virtio::vsock::packet::{
    Op, VsockHeader, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};

/// Identifies a connection: host-side port and guest-side port.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct ConnKey {
    pub local_port: u32,
    pub peer_port: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Host-initiated: REQUEST sent to the guest, waiting for its RESPONSE.
    LocalInit,
    /// Guest-initiated: host socket connected, RESPONSE not yet delivered.
    PeerInit,
    Established,
    /// The guest will send no more; flushing buffered bytes to the host, then RST.
    PeerClosing,
    /// The host side closed completely; we sent SHUTDOWN(RCV|SEND) and await RST.
    LocalClosed,
    /// Finished: the muxer drops it once any pending RST has been delivered.
    Killed,
}

/// Why a connection was reset; the muxer maps each to a metric.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("guest sent {got} bytes with only {free} bytes of credit")]
    CreditViolation { got: usize, free: usize },
    #[error("op {op:?} is not valid in state {state:?}")]
    BadState { op: Op, state: ConnState },
    #[error("host socket: {0}")]
    HostIo(#[from] io::Error),
}

/// Guest-bound packets a connection owes; sent in a fixed priority order.
#[derive(Debug, Default)]
struct Pending {
    rst: bool,
    request: bool,
    response: bool,
    /// The host socket may have data (or EOF) to forward.
    rw: bool,
    /// SHUTDOWN flags to announce.
    shutdown: u32,
    credit_update: bool,
    credit_request: bool,
}

#[derive(Debug)]
pub struct VsockConnection {
    stream: UnixStream,
    state: ConnState,
    key: ConnKey,
    peer_cid: u64,
    tx_buf: TxBuf,
    /// Guest bytes handed to the host socket.
    fwd_cnt: Wrapping<u32>,
    /// `fwd_cnt` as last told to the guest.
    last_fwd_cnt_to_peer: Wrapping<u32>,
    /// Bytes sent to the guest.
    rx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    pending: Pending,
    /// SHUTDOWN flags received from the guest.
    peer_shutdown: u32,
    /// SHUTDOWN flags already sent to the guest.
    sent_shutdown: u32,
    /// Host side shut its write half (read returned 0).
    host_eof: bool,
    /// Host side closed completely (EPOLLHUP); the fd is then out of epoll.
    host_hup: bool,
    /// We shut the host socket's write half after the guest's SHUTDOWN(SEND).
    host_write_shut: bool,
    /// Host data is waiting but the guest has no credit.
    credit_stalled: bool,
    deadline: Option<Instant>,
    /// Muxer bookkeeping: queued in its RX list.
    pub(crate) in_rxq: bool,
    /// Muxer bookkeeping: interest currently registered with epoll.
    pub(crate) registered: Option<EventSet>,
}

impl VsockConnection {
    /// A connection the host opened via `CONNECT <port>`: owes the guest a REQUEST.
    pub fn new_local_init(stream: UnixStream, key: ConnKey, peer_cid: u64) -> Self {
        let mut c = Self::new(stream, key, peer_cid, ConnState::LocalInit);
        c.pending.request = true;
        c.deadline = Some(Instant::now() + CONNECT_TIMEOUT);
        c
    }

    /// A connection the guest opened and the host accepted: owes the guest a RESPONSE.
    pub fn new_peer_init(
        stream: UnixStream,
        key: ConnKey,
        peer_cid: u64,
        hdr: &VsockHeader,
    ) -> Self {
        let mut c = Self::new(stream, key, peer_cid, ConnState::PeerInit);
        c.update_peer_credit(hdr);
        c.pending.response = true;
        c
    }

    fn new(stream: UnixStream, key: ConnKey, peer_cid: u64, state: ConnState) -> Self {
        VsockConnection {
            stream,
            state,
            key,
            peer_cid,
            tx_buf: TxBuf::new(CONN_TX_BUF_SIZE as usize),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_to_peer: Wrapping(0),
            rx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            pending: Pending::default(),
            peer_shutdown: 0,
            sent_shutdown: 0,
            host_eof: false,
            host_hup: false,
            host_write_shut: false,
            credit_stalled: false,
            deadline: None,
            in_rxq: false,
            registered: None,
        }
    }

    pub fn key(&self) -> ConnKey {
        self.key
    }

    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    pub fn is_killed(&self) -> bool {
        self.state == ConnState::Killed
    }

    pub fn has_pending_rx(&self) -> bool {
        let p = &self.pending;
        p.rst
            || p.request
            || p.response
            || p.rw
            || p.shutdown != 0
            || p.credit_update
            || p.credit_request
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Moves to `Killed`; `rst` says whether the guest must be told.
    pub fn kill(&mut self, rst: bool) {
        self.state = ConnState::Killed;
        self.pending = Pending {
            rst,
            ..Pending::default()
        };
        self.deadline = None;
    }

    /// Free credit the guest has for data from us.
    fn peer_avail_credit(&self) -> usize {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight) as usize
    }

    fn update_peer_credit(&mut self, hdr: &VsockHeader) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        if self.credit_stalled && self.peer_avail_credit() > 0 {
            self.credit_stalled = false;
            self.pending.rw = true;
        }
    }

    /// Epoll interest for the host socket; `None` once the socket is fully closed.
    pub fn interest(&self) -> Option<EventSet> {
        if self.host_hup || self.state == ConnState::Killed {
            return None;
        }
        let mut ev = EventSet::empty();
        let reading = matches!(self.state, ConnState::Established | ConnState::PeerClosing)
            && !self.host_eof
            && !self.pending.rw
            && !self.credit_stalled
            && self.peer_shutdown & SHUTDOWN_RCV == 0;
        if reading {
            ev |= EventSet::IN;
        }
        if !self.tx_buf.is_empty() {
            ev |= EventSet::OUT;
        }
        Some(ev)
    }

    /// Handles readiness of the host socket.
    pub fn notify(&mut self, ev: EventSet) {
        if self.state == ConnState::Killed {
            return;
        }
        if ev.contains(EventSet::ERROR) {
            self.kill(true);
            return;
        }
        if ev.contains(EventSet::OUT) {
            if let Err(_e) = self.flush_tx() {
                self.kill(true);
                return;
            }
        }
        if ev.contains(EventSet::HANG_UP) {
            // Both halves closed: whatever is left in the socket is still readable.
            self.host_hup = true;
            match self.state {
                ConnState::LocalInit | ConnState::PeerInit => {
                    self.kill(true);
                    return;
                }
                _ => self.pending.rw = true,
            }
        }
        if ev.contains(EventSet::IN) && self.state != ConnState::LocalInit {
            self.pending.rw = true;
        }
    }

    /// A packet from the guest addressed to this connection.
    pub fn send_pkt(
        &mut self,
        hdr: &VsockHeader,
        op: Op,
        payload: &[u8],
    ) -> Result<usize, ConnError> {
        if op == Op::Rst {
            self.kill(false);
            return Ok(0);
        }
        self.update_peer_credit(hdr);
        let bad_state = |state| ConnError::BadState { op, state };
        match self.state {
            ConnState::Killed => Ok(0),
            ConnState::LocalInit => match op {
                Op::Response => {
                    self.establish_local()?;
                    Ok(0)
                }
                _ => Err(bad_state(self.state)),
            },
            ConnState::PeerInit => Err(bad_state(self.state)),
            ConnState::Established | ConnState::PeerClosing | ConnState::LocalClosed => match op {
                Op::Rw => self.recv_guest_data(payload),
                Op::CreditUpdate => Ok(0),
                Op::CreditRequest => {
                    self.pending.credit_update = true;
                    Ok(0)
                }
                Op::Shutdown => {
                    self.peer_shutdown(hdr.flags)?;
                    Ok(0)
                }
                Op::Request | Op::Response | Op::Rst => Err(bad_state(self.state)),
            },
        }
    }

    fn establish_local(&mut self) -> Result<(), ConnError> {
        self.state = ConnState::Established;
        self.deadline = None;
        let line = format!("OK {}\n", self.key.local_port);
        // A fresh socket's send buffer is empty, so the short line fits in one send.
        let n = send_nosignal(self.fd(), line.as_bytes())?;
        if n != line.len() {
            return Err(ConnError::HostIo(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write of the OK line",
            )));
        }
        self.pending.rw = true;
        Ok(())
    }

    fn recv_guest_data(&mut self, payload: &[u8]) -> Result<usize, ConnError> {
        if self.peer_shutdown & SHUTDOWN_SEND != 0 || self.state == ConnState::PeerClosing {
            return Err(ConnError::BadState {
                op: Op::Rw,
                state: self.state,
            });
        }
        let free = CONN_TX_BUF_SIZE as usize - self.tx_buf.len();
        if payload.len() > free {
            return Err(ConnError::CreditViolation {
                got: payload.len(),
                free,
            });
        }
        if self.state == ConnState::LocalClosed || self.host_write_shut {
            // Nobody on the host reads any more: account the bytes as consumed.
            self.fwd_cnt += Wrapping(payload.len() as u32);
            return Ok(payload.len());
        }
        let mut written = 0;
        if self.tx_buf.is_empty() {
            written = match send_nosignal(self.fd(), payload) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e.into()),
            };
            self.fwd_cnt += Wrapping(written as u32);
        }
        // Cannot fail: `free` was checked above and nothing was added since.
        if self.tx_buf.push(&payload[written..]).is_err() {
            return Err(ConnError::CreditViolation {
                got: payload.len(),
                free,
            });
        }
        self.check_credit_update();
        Ok(payload.len())
    }

    fn check_credit_update(&mut self) {
        if (self.fwd_cnt - self.last_fwd_cnt_to_peer).0 >= CONN_CREDIT_UPDATE_THRESHOLD {
            self.pending.credit_update = true;
        }
    }

    fn flush_tx(&mut self) -> Result<(), ConnError> {
        let n = self.tx_buf.flush_to(self.fd())?;
        self.fwd_cnt += Wrapping(n as u32);
        self.check_credit_update();
        if self.tx_buf.is_empty() {
            self.after_tx_drained()?;
        }
        Ok(())
    }

    fn after_tx_drained(&mut self) -> Result<(), ConnError> {
        if self.state == ConnState::PeerClosing {
            self.kill(true);
        } else if self.peer_shutdown & SHUTDOWN_SEND != 0 && !self.host_write_shut {
            self.host_write_shut = true;
            // ENOTCONN means the host already closed: nothing left to tell it.
            if let Err(e) = self.stream.shutdown(std::net::Shutdown::Write) {
                if e.kind() != io::ErrorKind::NotConnected {
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    fn peer_shutdown(&mut self, flags: u32) -> Result<(), ConnError> {
        self.peer_shutdown |= flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
        if self.peer_shutdown == SHUTDOWN_RCV | SHUTDOWN_SEND {
            // The guest closed: deliver what it sent, then answer with RST (the guest
            // waits for it to finish its close).
            if self.state == ConnState::LocalClosed || self.tx_buf.is_empty() {
                self.kill(true);
            } else {
                self.state = ConnState::PeerClosing;
                self.pending.rw = false;
                self.deadline = Some(Instant::now() + SHUTDOWN_TIMEOUT);
            }
            return Ok(());
        }
        if self.tx_buf.is_empty() {
            self.after_tx_drained()?;
        }
        Ok(())
    }

    fn header(&mut self, op: Op, len: usize) -> VsockHeader {
        self.last_fwd_cnt_to_peer = self.fwd_cnt;
        self.pending.credit_update = false;
        VsockHeader {
            src_cid: HOST_CID,
            dst_cid: self.peer_cid,
            src_port: self.key.local_port,
            dst_port: self.key.peer_port,
            // `len` never exceeds the 64 KiB packet cap.
            len: len as u32,
            type_: TYPE_STREAM,
            op: op as u16,
            flags: 0,
            buf_alloc: CONN_TX_BUF_SIZE,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// The next packet for the guest, with its payload in `buf[..len]`.
    pub fn recv_pkt(&mut self, buf: &mut [u8]) -> Option<(VsockHeader, usize)> {
        if self.pending.rst {
            self.pending.rst = false;
            self.state = ConnState::Killed;
            return Some((self.header(Op::Rst, 0), 0));
        }
        if self.pending.request {
            self.pending.request = false;
            return Some((self.header(Op::Request, 0), 0));
        }
        if self.pending.response {
            self.pending.response = false;
            self.state = ConnState::Established;
            self.pending.rw = true;
            return Some((self.header(Op::Response, 0), 0));
        }
        if self.pending.rw {
            if let Some(pkt) = self.read_host(buf) {
                return Some(pkt);
            }
        }
        if self.pending.shutdown != 0 {
            let flags = self.pending.shutdown;
            self.pending.shutdown = 0;
            self.sent_shutdown |= flags;
            if self.sent_shutdown == SHUTDOWN_RCV | SHUTDOWN_SEND {
                self.state = ConnState::LocalClosed;
                self.deadline = Some(Instant::now() + SHUTDOWN_TIMEOUT);
            }
            let mut hdr = self.header(Op::Shutdown, 0);
            hdr.flags = flags;
            return Some((hdr, 0));
        }
        if self.pending.credit_update {
            return Some((self.header(Op::CreditUpdate, 0), 0));
        }
        if self.pending.credit_request {
            self.pending.credit_request = false;
            return Some((self.header(Op::CreditRequest, 0), 0));
        }
        None
    }

    /// Reads host data for the guest; clears `pending.rw` when there is nothing to do.
    fn read_host(&mut self, buf: &mut [u8]) -> Option<(VsockHeader, usize)> {
        let may_read = matches!(self.state, ConnState::Established | ConnState::PeerClosing)
            && !self.host_eof
            && self.peer_shutdown & SHUTDOWN_RCV == 0;
        if !may_read {
            self.pending.rw = false;
            return None;
        }
        let credit = self.peer_avail_credit();
        if credit == 0 {
            self.pending.rw = false;
            if !self.credit_stalled {
                self.credit_stalled = true;
                self.pending.credit_request = true;
            }
            return None;
        }
        let want = credit.min(buf.len());
        if want == 0 {
            return None;
        }
        match self.stream.read(&mut buf[..want]) {
            Ok(0) => {
                self.pending.rw = false;
                self.host_eof = true;
                self.pending.shutdown |= if self.host_hup {
                    SHUTDOWN_RCV | SHUTDOWN_SEND
                } else {
                    SHUTDOWN_SEND
                };
                None
            }
            Ok(n) => {
                self.rx_cnt += Wrapping(n as u32);
                Some((self.header(Op::Rw, n), n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.pending.rw = false;
                None
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(_) => {
                self.kill(false);
                Some((self.header(Op::Rst, 0), 0))
            }
        }
    }

    /// Kills the connection with RST if its deadline passed.
    pub fn check_expiry(&mut self, now: Instant) -> bool {
        match self.deadline {
            Some(d) if now >= d => {
                self.kill(true);
                true
            }
            _ => false,
        }
    }
}
