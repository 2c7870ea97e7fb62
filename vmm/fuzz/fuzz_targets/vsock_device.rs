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
use vmm::devices::virtio::vsock::testing::VsockHarness;

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

fn run(h: &mut VsockHarness, data: &[u8]) {
    let path = uds();
    let mut input = Input(data);
    let mut clients: Vec<UnixStream> = Vec::new();
    let mut listeners: Vec<UnixListener> = Vec::new();
    let mut credit: HashMap<(u32, u32), Credit> = HashMap::new();

    let trace = std::env::var_os("VSOCK_FUZZ_TRACE").is_some();
    for _ in 0..MAX_STEPS {
        let Some(action) = input.byte() else { break };
        if trace {
            eprintln!("step: action {} ({action:#x})", action % 7);
        }
        match action % 7 {
            0 | 1 => {
                // A guest packet: fuzzed header with the addressing usually fixed up.
                let raw = input.take(HDR_SIZE);
                if raw.len() < HDR_SIZE {
                    break;
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
                // Only well-formed packets reach a connection and update its credit.
                let well_formed = hdr.src_cid == CID
                    && hdr.dst_cid == 2
                    && hdr.type_ == 1
                    && (1..=7).contains(&hdr.op)
                    && hdr.len as usize == payload_len;
                if trace {
                    eprintln!(
                        "  guest pkt {hdr:?} payload {payload_len} well_formed {well_formed}"
                    );
                }
                if well_formed {
                    let c = credit.entry((hdr.src_port, hdr.dst_port)).or_default();
                    c.step_max = c.step_max.max(c.buf_alloc).max(hdr.buf_alloc);
                    c.buf_alloc = hdr.buf_alloc;
                }
                let raw = hdr.to_bytes();
                let a = vmm::devices::virtio::vsock::testing::GuestDriver::slot_addr(1, 250);
                let b = vmm::devices::virtio::vsock::testing::GuestDriver::slot_addr(1, 251);
                h.driver.mem_write(a, &raw);
                h.driver.mem_write(b, &payload);
                if payload_len == 0 {
                    h.send_raw(&[(a.0, HDR_SIZE as u32, 0, 0)]);
                } else {
                    h.send_raw(&[
                        (a.0, HDR_SIZE as u32, 1, 1),
                        (b.0, payload_len as u32, 0, 0),
                    ]);
                }
            }
            2 => {
                // A raw chain: arbitrary addresses, lengths, flags, next indices.
                let n = usize::from(input.byte().unwrap_or(1) % 4) + 1;
                let mut descs = Vec::new();
                for _ in 0..n {
                    let addr = u64::from(input.u32()) << (input.byte().unwrap_or(0) % 16);
                    let len = input.u32() % 0x2_0000;
                    let flags = u16::from(input.byte().unwrap_or(0) % 8);
                    let next = u16::from(input.byte().unwrap_or(0));
                    descs.push((addr, len, flags, next));
                }
                if trace {
                    eprintln!("  raw chain {descs:x?}");
                }
                h.send_raw(&descs);
            }
            3 => {
                if clients.len() < MAX_CLIENTS {
                    let n = usize::from(input.byte().unwrap_or(0) % 40);
                    let line = input.take(n).to_vec();
                    if let Ok(mut s) = UnixStream::connect(&path) {
                        let _ = s.set_nonblocking(true);
                        let _ = s.write_all(&line);
                        clients.push(s);
                    }
                }
            }
            4 => {
                let i = usize::from(input.byte().unwrap_or(0));
                if !clients.is_empty() {
                    let i = i % clients.len();
                    if i % 3 == 0 {
                        clients.swap_remove(i);
                    } else {
                        let n = usize::from(input.byte().unwrap_or(0)) * 64;
                        let _ = clients[i].write(&vec![0x11u8; n]);
                    }
                }
            }
            5 => {
                let port = u32::from(input.byte().unwrap_or(0) % 4);
                if let Ok(l) = UnixListener::bind(format!("{}_{port}", path.display())) {
                    let _ = l.set_nonblocking(true);
                    listeners.push(l);
                }
                for l in &listeners {
                    if let Ok((s, _)) = l.accept() {
                        let _ = s.set_nonblocking(true);
                        clients.push(s);
                    }
                }
            }
            _ => h.pump(),
        }
        // Everything delivered must respect the credit the guest advertised.
        for (hdr, payload) in h.recv() {
            assert_eq!(hdr.len as usize, payload.len());
            assert_eq!((hdr.src_cid, hdr.dst_cid), (2, CID));
            if trace {
                eprintln!("  device -> guest {hdr:?}");
            }
            if hdr.op == 5 {
                let c = credit.entry((hdr.dst_port, hdr.src_port)).or_default();
                let bound = c.buf_alloc.max(c.step_max) as usize;
                assert!(payload.len() <= bound, "RW beyond buf_alloc");
            }
        }
        for c in credit.values_mut() {
            c.step_max = c.buf_alloc;
        }
    }
    h.pump();
    let _ = h.recv();
    h.reap_tx();
    assert_eq!(h.driver.free_descriptors(1), 256, "TX chains not returned");
    for l in &listeners {
        if let Ok(addr) = l.local_addr() {
            if let Some(p) = addr.as_pathname() {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    // The host side closes before the next input resets the device.
    drop(clients);
    drop(listeners);
    h.pump();
    let _ = h.recv();
}
