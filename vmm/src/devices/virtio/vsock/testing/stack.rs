//! A minimal guest vsock stack (the part of Linux's virtio transport a test needs):
//! listen/accept, connect, credit-respecting writes, reads that return credit,
//! half-close, close and RST.

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::Wrapping;

use super::harness::VsockHarness;
use crate::devices::virtio::vsock::defs::{HOST_CID, MAX_PKT_PAYLOAD};
use crate::devices::virtio::vsock::packet::{
    Op, VsockHeader, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};

/// (guest port, host port).
pub type SockKey = (u32, u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GConnState {
    Connecting,
    Established,
    /// We sent SHUTDOWN(RCV|SEND) and wait for RST.
    Closing,
    /// Finished (RST received or sent).
    Closed,
}

#[derive(Debug)]
pub struct GConn {
    pub state: GConnState,
    pub rx: VecDeque<u8>,
    /// Bytes the application consumed.
    fwd_cnt: Wrapping<u32>,
    last_fwd_sent: Wrapping<u32>,
    tx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// SHUTDOWN flags the host sent.
    pub peer_shutdown: u32,
    pub got_rst: bool,
    /// The host sent more than our advertised buffer: a flow-control bug.
    pub overrun: bool,
}

pub struct GuestStack {
    pub h: VsockHarness,
    pub cid: u64,
    /// Our receive buffer per connection, advertised as `buf_alloc`.
    pub buf_alloc: u32,
    /// Largest payload per packet we send.
    pub max_pkt: usize,
    pub conns: HashMap<SockKey, GConn>,
    listeners: HashSet<u32>,
    pub accepted: VecDeque<SockKey>,
    next_port: u32,
}

impl GuestStack {
    pub fn new(h: VsockHarness, cid: u64, buf_alloc: u32) -> Self {
        GuestStack {
            h,
            cid,
            buf_alloc,
            max_pkt: MAX_PKT_PAYLOAD,
            conns: HashMap::new(),
            listeners: HashSet::new(),
            accepted: VecDeque::new(),
            next_port: 49152,
        }
    }

    fn hdr(&mut self, key: SockKey, op: Op, len: usize) -> VsockHeader {
        let (buf_alloc, fwd) = match self.conns.get_mut(&key) {
            Some(c) => {
                c.last_fwd_sent = c.fwd_cnt;
                (self.buf_alloc, c.fwd_cnt.0)
            }
            None => (self.buf_alloc, 0),
        };
        VsockHeader {
            src_cid: self.cid,
            dst_cid: HOST_CID,
            src_port: key.0,
            dst_port: key.1,
            len: len as u32,
            type_: TYPE_STREAM,
            op: op as u16,
            flags: 0,
            buf_alloc,
            fwd_cnt: fwd,
        }
    }

    fn send_ctl(&mut self, key: SockKey, op: Op, flags: u32) {
        let mut hdr = self.hdr(key, op, 0);
        hdr.flags = flags;
        self.h.send(&hdr, &[]);
    }

    fn new_conn(state: GConnState) -> GConn {
        GConn {
            state,
            rx: VecDeque::new(),
            fwd_cnt: Wrapping(0),
            last_fwd_sent: Wrapping(0),
            tx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            peer_shutdown: 0,
            got_rst: false,
            overrun: false,
        }
    }

    pub fn listen(&mut self, port: u32) {
        self.listeners.insert(port);
    }

    /// Starts a connection to host port `port`; poll until it is established.
    pub fn connect(&mut self, port: u32) -> SockKey {
        let key = (self.next_port, port);
        self.next_port += 1;
        self.conns
            .insert(key, Self::new_conn(GConnState::Connecting));
        self.send_ctl(key, Op::Request, 0);
        key
    }

    pub fn state(&self, key: SockKey) -> Option<GConnState> {
        self.conns.get(&key).map(|c| c.state)
    }

    pub fn conn(&self, key: SockKey) -> Option<&GConn> {
        self.conns.get(&key)
    }

    /// Handles everything the device delivered (waiting up to `ms` for the first event).
    pub fn poll(&mut self, ms: i32) {
        self.h.pump_wait(ms);
        for (hdr, payload) in self.h.recv() {
            self.on_packet(&hdr, &payload);
        }
    }

    fn on_packet(&mut self, hdr: &VsockHeader, payload: &[u8]) {
        let key = (hdr.dst_port, hdr.src_port);
        let Some(op) = hdr.op() else { return };
        if !self.conns.contains_key(&key) {
            match op {
                Op::Request if self.listeners.contains(&hdr.dst_port) => {
                    let mut c = Self::new_conn(GConnState::Established);
                    c.peer_buf_alloc = hdr.buf_alloc;
                    c.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
                    self.conns.insert(key, c);
                    self.accepted.push_back(key);
                    self.send_ctl(key, Op::Response, 0);
                }
                Op::Rst => {}
                _ => self.send_ctl(key, Op::Rst, 0),
            }
            return;
        }
        let buf_alloc = self.buf_alloc;
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        c.peer_buf_alloc = hdr.buf_alloc;
        c.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        match op {
            Op::Response if c.state == GConnState::Connecting => c.state = GConnState::Established,
            Op::Rw => {
                if c.rx.len() + payload.len() > buf_alloc as usize {
                    c.overrun = true;
                }
                c.rx.extend(payload);
            }
            Op::Rst => {
                c.got_rst = true;
                c.state = GConnState::Closed;
            }
            Op::Shutdown => {
                c.peer_shutdown |= hdr.flags;
                if c.peer_shutdown == SHUTDOWN_RCV | SHUTDOWN_SEND && c.state != GConnState::Closed
                {
                    // Linux answers a full shutdown with RST.
                    c.state = GConnState::Closed;
                    self.send_ctl(key, Op::Rst, 0);
                }
            }
            Op::CreditRequest => self.send_ctl(key, Op::CreditUpdate, 0),
            Op::CreditUpdate | Op::Response | Op::Request => {}
        }
    }

    /// Free credit the host gave us.
    pub fn credit(&self, key: SockKey) -> usize {
        self.conns.get(&key).map_or(0, |c| {
            c.peer_buf_alloc
                .saturating_sub((c.tx_cnt - c.peer_fwd_cnt).0) as usize
        })
    }

    /// Sends as much of `data` as credit allows; returns the bytes sent.
    pub fn write(&mut self, key: SockKey, data: &[u8]) -> usize {
        let mut sent = 0;
        while sent < data.len() {
            let n = self.credit(key).min(self.max_pkt).min(data.len() - sent);
            if n == 0 || self.state(key) != Some(GConnState::Established) {
                break;
            }
            let hdr = self.hdr(key, Op::Rw, n);
            self.h.send(&hdr, &data[sent..sent + n]);
            if let Some(c) = self.conns.get_mut(&key) {
                c.tx_cnt += Wrapping(n as u32);
            }
            sent += n;
        }
        sent
    }

    /// Takes up to `max` received bytes, returning credit to the host as Linux does.
    pub fn read(&mut self, key: SockKey, max: usize) -> Vec<u8> {
        let buf_alloc = self.buf_alloc;
        let Some(c) = self.conns.get_mut(&key) else {
            return Vec::new();
        };
        let n = max.min(c.rx.len());
        // Slice copies: collecting a byte iterator would dominate benchmark profiles.
        let (a, b) = c.rx.as_slices();
        let mut out = Vec::with_capacity(n);
        out.extend_from_slice(&a[..n.min(a.len())]);
        out.extend_from_slice(&b[..n - n.min(a.len())]);
        c.rx.drain(..n);
        c.fwd_cnt += Wrapping(n as u32);
        let unannounced = (c.fwd_cnt - c.last_fwd_sent).0;
        if n > 0 && unannounced >= buf_alloc / 4 {
            self.send_ctl(key, Op::CreditUpdate, 0);
        }
        out
    }

    pub fn shutdown(&mut self, key: SockKey, flags: u32) {
        self.send_ctl(key, Op::Shutdown, flags);
        if flags == SHUTDOWN_RCV | SHUTDOWN_SEND {
            if let Some(c) = self.conns.get_mut(&key) {
                c.state = GConnState::Closing;
            }
        }
    }

    pub fn reset(&mut self, key: SockKey) {
        self.send_ctl(key, Op::Rst, 0);
        if let Some(c) = self.conns.get_mut(&key) {
            c.state = GConnState::Closed;
        }
    }

    /// True once the host has shut down its sending side and all its data was read.
    pub fn at_eof(&self, key: SockKey) -> bool {
        self.conns.get(&key).is_none_or(|c| {
            c.rx.is_empty()
                && (c.peer_shutdown & SHUTDOWN_SEND != 0 || c.state == GConnState::Closed)
        })
    }
}
