//! Throughput and per-packet cost of the vsock device path on mock queues.
//!
//!   cargo bench -p vmm --features vsock-test-utils --bench vsock
//!
//! The guest is the in-process emulated stack (`testing::GuestStack`), the host side a
//! thread on a real Unix socket, so figures include one copy into and out of guest
//! memory plus the emulated driver's own work. Each figure is the median of 5 runs.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use vmm::devices::virtio::vsock::defs::TXQ;
use vmm::devices::virtio::vsock::packet::{Op, VsockHeader, HDR_SIZE, TYPE_STREAM};
use vmm::devices::virtio::vsock::testing::{GConnState, GuestStack, Seg, VsockHarness};

const CID: u64 = 3;
const CHUNK: usize = 64 * 1024;
const RUNS: usize = 5;

struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("vsock-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("tmp");
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn stack(tmp: &Tmp, rx_buf: u32) -> GuestStack {
    let h = VsockHarness::new(CID, tmp.0.join("v.sock"), 128, rx_buf).expect("device");
    GuestStack::new(h, CID, 256 * 1024)
}

/// Host writes `total` bytes in 64 KiB writes; the guest reads them. Returns MB/s.
fn host_to_guest(total: usize, rx_buf: u32) -> f64 {
    let tmp = Tmp::new("h2g");
    let mut g = stack(&tmp, rx_buf);
    g.listen(100);
    let uds = tmp.0.join("v.sock");
    let host = thread::spawn(move || {
        let mut s = UnixStream::connect(uds).expect("connect");
        s.write_all(b"CONNECT 100\n").expect("line");
        let mut b = [0u8; 1];
        while s.read(&mut b).expect("OK line") == 1 && b[0] != b'\n' {}
        let chunk = vec![0x5au8; CHUNK];
        let mut sent = 0;
        while sent < total {
            s.write_all(&chunk).expect("write");
            sent += CHUNK;
        }
    });
    while g.accepted.is_empty() {
        g.poll(1);
    }
    let key = g.accepted.pop_front().expect("accepted");
    let start = Instant::now();
    let mut got = 0;
    while got < total {
        g.poll(0);
        got += g.read(key, usize::MAX).len();
    }
    let secs = start.elapsed().as_secs_f64();
    host.join().expect("host thread");
    total as f64 / secs / 1e6
}

/// The guest writes `total` bytes in packets of `pkt` bytes; a host thread reads them.
/// Returns (MB/s, process CPU ns per packet).
fn guest_to_host(total: usize, pkt: usize) -> (f64, f64) {
    let tmp = Tmp::new("g2h");
    let listener = UnixListener::bind(tmp.0.join("v.sock_200")).expect("listener");
    let mut g = stack(&tmp, 4096 + 44);
    g.max_pkt = pkt;
    let host = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0;
        while n < total {
            let r = s.read(&mut buf).expect("read");
            assert!(r > 0, "early EOF");
            n += r;
        }
    });
    let key = g.connect(200);
    while g.state(key) != Some(GConnState::Established) {
        g.poll(1);
    }
    let data = vec![0xa5u8; CHUNK];
    let cpu0 = cpu_time();
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        let want = (total - sent).min(CHUNK);
        sent += g.write(key, &data[..want]);
        g.poll(0);
    }
    // The device may still hold buffered bytes: keep the loop running until delivered.
    while !host.is_finished() {
        g.poll(1);
    }
    host.join().expect("host thread");
    let secs = start.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu0).as_nanos() as f64;
    (total as f64 / secs / 1e6, cpu / (total / pkt) as f64)
}

/// Device cost per TX packet: the guest queues `batch` 64-byte RW packets, kicks once,
/// and the event loop processes them (as a busy guest does). Returns process CPU ns per
/// packet, host reader thread included.
fn tx_batched_cost(batches: usize, batch: usize) -> f64 {
    const PKT: usize = 64;
    let tmp = Tmp::new("batch");
    let listener = UnixListener::bind(tmp.0.join("v.sock_300")).expect("listener");
    let mut g = stack(&tmp, 4096 + 44);
    let total = batches * batch * PKT;
    // The raw packets below bypass the emulated guest's credit accounting, so the
    // sender paces itself on what the host has read instead.
    let read = Arc::new(AtomicUsize::new(0));
    let read2 = Arc::clone(&read);
    let host = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0;
        while n < total {
            let r = s.read(&mut buf).expect("read");
            assert!(r > 0, "early EOF");
            n += r;
            read2.store(n, Ordering::Relaxed);
        }
    });
    let key = g.connect(300);
    while g.state(key) != Some(GConnState::Established) {
        g.poll(1);
    }
    let hdr = VsockHeader {
        src_cid: CID,
        dst_cid: 2,
        src_port: key.0,
        dst_port: key.1,
        len: PKT as u32,
        type_: TYPE_STREAM,
        op: Op::Rw as u16,
        flags: 0,
        buf_alloc: 256 * 1024,
        fwd_cnt: 0,
    }
    .to_bytes();
    let payload = [0x42u8; PKT];
    let segs = [
        Seg {
            len: HDR_SIZE as u32,
            writable: false,
            data: &hdr,
        },
        Seg {
            len: PKT as u32,
            writable: false,
            data: &payload,
        },
    ];
    let h = &mut g.h;
    let cpu0 = cpu_time();
    for i in 0..batches {
        while i * batch * PKT > read.load(Ordering::Relaxed) + 128 * 1024 {
            h.pump_wait(0);
        }
        for _ in 0..batch {
            assert!(h.driver.add_chain(TXQ, &segs).is_some(), "TX ring full");
        }
        h.kick(TXQ);
        h.pump();
        assert_eq!(h.reap_tx(), batch, "device left TX chains");
        let _ = h.recv();
    }
    while !host.is_finished() {
        h.pump_wait(1);
    }
    let cpu = (cpu_time() - cpu0).as_nanos() as f64;
    host.join().expect("host thread");
    assert_eq!(h.metric("drop_credit_violation"), 0);
    cpu / (batches * batch) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    const MB: usize = 1024 * 1024;
    let h2g_4k = median(
        (0..RUNS)
            .map(|_| host_to_guest(128 * MB, 4096 + 44))
            .collect(),
    );
    println!("host->guest, 64 KiB writes, 4 KiB rx buffers:  {h2g_4k:8.1} MB/s (median of {RUNS})");
    let h2g_64k = median(
        (0..RUNS)
            .map(|_| host_to_guest(256 * MB, 65536 + 44))
            .collect(),
    );
    println!(
        "host->guest, 64 KiB writes, 64 KiB rx buffers: {h2g_64k:8.1} MB/s (median of {RUNS})"
    );
    let g2h: Vec<(f64, f64)> = (0..RUNS).map(|_| guest_to_host(256 * MB, CHUNK)).collect();
    println!(
        "guest->host, 64 KiB packets:                   {:8.1} MB/s, {:8.0} ns CPU/packet (median of {RUNS})",
        median(g2h.iter().map(|x| x.0).collect()),
        median(g2h.iter().map(|x| x.1).collect())
    );
    let batched = median((0..RUNS).map(|_| tx_batched_cost(2000, 100)).collect());
    println!("guest->host, 64 B packets, 100 per kick:       {batched:8.0} ns CPU/packet (median of {RUNS})");
    let small: Vec<(f64, f64)> = (0..RUNS).map(|_| guest_to_host(16 * MB, 64)).collect();
    println!(
        "guest->host, 64 B packets, one per kick:       {:8.1} MB/s, {:8.0} ns CPU/packet (median of {RUNS})",
        median(small.iter().map(|x| x.0).collect()),
        median(small.iter().map(|x| x.1).collect())
    );
}
