//! Fuzzes the vsock device end to end: packet parsing from arbitrary descriptor chains,
//! the connection state machine, the muxer and the host CONNECT handshake.
//!
//! The input is a little program: each step picks an action (guest packet with mostly
//! valid addressing, raw descriptor chain, host client CONNECT line, host write/close,
//! host listener, event-loop pump). Invariants checked: no panic, the TX queue always
//! gets every chain back, and the device never sends a guest more data on a
//! connection than the credit the (fuzzed) guest advertised.

#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use vmm::devices::virtio::vsock::packet::{parse_header_lossy, VsockHeader, HDR_SIZE};
use vmm::devices::virtio::vsock::parse_connect_line;
use vmm::devices::virtio::vsock::testing::{GuestDriver, VsockHarness};

const CID: u64 = 3;
const MAX_STEPS: usize = 64;
const MAX_CLIENTS: usize = 6;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u32(&mut self) -> u32 {
        let b = self.take(4);
        b.iter().fold(0u32, |acc, x| (acc << 8) | u32::from(*x))
    }
}

fn uds() -> PathBuf {
    std::env::temp_dir().join(format!("vsock-fuzz-{}.sock", std::process::id()))
}

/// The credit the guest advertised, per (guest port, host port). Within one step the
/// event loop may deliver data before or after it processes the guest's new header, so
/// both the previous and the new `buf_alloc` are valid bounds during that step.
#[derive(Default)]
struct Credit {
    buf_alloc: u32,
    step_max: u32,
}

const RX_BUFS: usize = 16;

thread_local! {
    static HARNESS: RefCell<Option<VsockHarness>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    // Pure parsers first: they must accept or reject any bytes without panicking.
    let _ = parse_connect_line(data);
    if data.len() >= HDR_SIZE {
        let h = parse_header_lossy(data);
        assert_eq!(VsockHeader::from_bytes(&h.to_bytes()), h);
    }
    HARNESS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let h = match cell.as_mut() {
            Some(h) => {
                h.reset_and_reactivate(RX_BUFS);
                h
            }
            None => {
                let path = uds();
                let _ = std::fs::remove_file(&path);
                cell.insert(VsockHarness::new(CID, path, RX_BUFS, 512).expect("vsock device"))
            }
        };
        run(h, data);
    });
});

/// The host side and the model of one input's run.
struct Run<'h> {
    h: &'h mut VsockHarness,
    path: PathBuf,
    clients: Vec<UnixStream>,
    listeners: Vec<UnixListener>,
    credit: HashMap<(u32, u32), Credit>,
    trace: bool,
}

fn run(h: &mut VsockHarness, data: &[u8]) {
    let mut input = Input(data);
    let mut r = Run {
        h,
        path: uds(),
        clients: Vec::new(),
        listeners: Vec::new(),
        credit: HashMap::new(),
        trace: std::env::var_os("VSOCK_FUZZ_TRACE").is_some(),
    };
    for _ in 0..MAX_STEPS {
        let Some(action) = input.byte() else { break };
        if r.trace {
            eprintln!("step: action {} ({action:#x})", action % 7);
        }
        match action % 7 {
            0 | 1 => {
                if !r.guest_packet(action, &mut input) {
                    break;
                }
            }
            2 => r.raw_chain(&mut input),
            3 => r.connect_client(&mut input),
            4 => r.client_io(&mut input),
            5 => r.listen(&mut input),
            _ => r.h.pump(),
        }
        r.check_delivered();
    }
    r.finish();
}

impl Run<'_> {
    /// A guest packet: fuzzed header with the addressing usually fixed up. False when
    /// the input ran out.
    fn guest_packet(&mut self, action: u8, input: &mut Input) -> bool {
        let raw = input.take(HDR_SIZE);
        if raw.len() < HDR_SIZE {
            return false;
        }
        let mut hdr = parse_header_lossy(raw);
        if action & 0x80 == 0 {
            hdr.src_cid = CID;
            hdr.dst_cid = 2;
            hdr.type_ = 1;
            hdr.op = (hdr.op % 8).max(1);
            hdr.src_port %= 4;
            hdr.dst_port = if hdr.dst_port & 1 == 0 {
                1u32 << 30
            } else {
                hdr.dst_port % 4
            };
        }
        let payload_len = usize::from(input.byte().unwrap_or(0)) * 37;
        let payload = vec![0xabu8; payload_len];
        if action & 0x40 == 0 {
            hdr.len = payload_len as u32;
        }
        // Only well-formed packets reach a connection and update its credit. A header
        // may claim less than its buffer holds (the rest is unused), not more.
        let well_formed = hdr.src_cid == CID
            && hdr.dst_cid == 2
            && hdr.type_ == 1
            && (1..=7).contains(&hdr.op)
            && hdr.len as usize <= payload_len;
        if self.trace {
            eprintln!("  guest pkt {hdr:?} payload {payload_len} well_formed {well_formed}");
        }
        if well_formed {
            let c = self.credit.entry((hdr.src_port, hdr.dst_port)).or_default();
            c.step_max = c.step_max.max(c.buf_alloc).max(hdr.buf_alloc);
            c.buf_alloc = hdr.buf_alloc;
        }
        let a = GuestDriver::slot_addr(1, 250);
        let b = GuestDriver::slot_addr(1, 251);
        self.h.driver.mem_write(a, &hdr.to_bytes());
        self.h.driver.mem_write(b, &payload);
        if payload_len == 0 {
            self.h.send_raw(&[(a.0, HDR_SIZE as u32, 0, 0)]);
        } else {
            self.h.send_raw(&[
                (a.0, HDR_SIZE as u32, 1, 1),
                (b.0, payload_len as u32, 0, 0),
            ]);
        }
        true
    }

    /// A raw chain: arbitrary addresses, lengths, flags, next indices.
    fn raw_chain(&mut self, input: &mut Input) {
        let n = usize::from(input.byte().unwrap_or(1) % 4) + 1;
        let mut descs = Vec::new();
        for _ in 0..n {
            let addr = u64::from(input.u32()) << (input.byte().unwrap_or(0) % 16);
            let len = input.u32() % 0x2_0000;
            let flags = u16::from(input.byte().unwrap_or(0) % 8);
            let next = u16::from(input.byte().unwrap_or(0));
            descs.push((addr, len, flags, next));
        }
        if self.trace {
            eprintln!("  raw chain {descs:x?}");
        }
        self.h.send_raw(&descs);
    }

    /// A host client connects and sends a (fuzzed) CONNECT line.
    fn connect_client(&mut self, input: &mut Input) {
        if self.clients.len() >= MAX_CLIENTS {
            return;
        }
        let n = usize::from(input.byte().unwrap_or(0) % 40);
        let line = input.take(n).to_vec();
        if let Ok(mut s) = UnixStream::connect(&self.path) {
            let _ = s.set_nonblocking(true);
            let _ = s.write_all(&line);
            self.clients.push(s);
        }
    }

    /// A host client closes, or writes a burst of data.
    fn client_io(&mut self, input: &mut Input) {
        let i = usize::from(input.byte().unwrap_or(0));
        if self.clients.is_empty() {
            return;
        }
        let i = i % self.clients.len();
        if i % 3 == 0 {
            self.clients.swap_remove(i);
        } else {
            let n = usize::from(input.byte().unwrap_or(0)) * 64;
            let _ = self.clients[i].write(&vec![0x11u8; n]);
        }
    }

    /// A host listener for guest-initiated connections, and accepts on all of them.
    fn listen(&mut self, input: &mut Input) {
        let port = u32::from(input.byte().unwrap_or(0) % 4);
        if let Ok(l) = UnixListener::bind(format!("{}_{port}", self.path.display())) {
            let _ = l.set_nonblocking(true);
            self.listeners.push(l);
        }
        for l in &self.listeners {
            if let Ok((s, _)) = l.accept() {
                let _ = s.set_nonblocking(true);
                self.clients.push(s);
            }
        }
    }

    /// Everything delivered must respect the credit the guest advertised.
    fn check_delivered(&mut self) {
        for (hdr, payload) in self.h.recv() {
            assert_eq!(hdr.len as usize, payload.len());
            assert_eq!((hdr.src_cid, hdr.dst_cid), (2, CID));
            if self.trace {
                eprintln!("  device -> guest {hdr:?}");
            }
            if hdr.op == 5 {
                let c = self.credit.entry((hdr.dst_port, hdr.src_port)).or_default();
                let bound = c.buf_alloc.max(c.step_max) as usize;
                assert!(payload.len() <= bound, "RW beyond buf_alloc");
            }
        }
        for c in self.credit.values_mut() {
            c.step_max = c.buf_alloc;
        }
    }

    /// Every TX chain came back; the host side closes before the next input resets
    /// the device.
    fn finish(self) {
        self.h.pump();
        let _ = self.h.recv();
        self.h.reap_tx();
        assert_eq!(
            self.h.driver.free_descriptors(1),
            256,
            "TX chains not returned"
        );
        for l in &self.listeners {
            if let Ok(addr) = l.local_addr() {
                if let Some(p) = addr.as_pathname() {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        drop(self.clients);
        drop(self.listeners);
        self.h.pump();
        let _ = self.h.recv();
    }
}
