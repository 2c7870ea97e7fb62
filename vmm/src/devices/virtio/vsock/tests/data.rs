//! Connections in both directions and data much larger than every buffer.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;
use std::time::{Duration, Instant};

use super::{host_connect_line, read_ok_line, stack, TmpDir};
use crate::devices::virtio::vsock::defs::FIRST_LOCAL_PORT;
use crate::devices::virtio::vsock::packet::SHUTDOWN_SEND;
use crate::devices::virtio::vsock::testing::{pattern, run_emulated_peer, GConnState};

const BIG: usize = 3 * 1024 * 1024;

/// Sends a length-framed `data` while reading the echo until the guest closes.
fn framed_roundtrip(mut s: UnixStream, data: Vec<u8>) -> Vec<u8> {
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        w.write_all(&(data.len() as u64).to_le_bytes()).unwrap();
        w.write_all(&data).unwrap();
    });
    let mut got = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    got
}

#[test]
fn host_initiated_echo_of_megabytes_with_small_guest_buffer() {
    let dir = TmpDir::new();
    // 16 KiB of guest credit against 3 MiB: flow control must throttle the host side.
    let peer = run_emulated_peer(stack(&dir, 16 * 1024), 1234, None);
    let mut s = host_connect_line(&dir.uds(), b"CONNECT 1234\n");
    let ok = read_ok_line(&mut s).unwrap();
    let port: u32 = ok.strip_prefix("OK ").unwrap().parse().unwrap();
    assert!(port >= FIRST_LOCAL_PORT, "{ok}");
    let want = pattern(BIG);
    let got = framed_roundtrip(s, want.clone());
    assert_eq!(got.len(), want.len());
    assert!(got == want, "echo differs");
    let report = peer.finish().unwrap();
    assert_eq!(report.served, 1);
    assert_eq!(report.overruns, 0, "device sent beyond the guest's credit");
}

#[test]
fn guest_initiated_echo_of_megabytes_both_directions_at_once() {
    let dir = TmpDir::new();
    let listener = UnixListener::bind(format!("{}_5000", dir.uds().display())).unwrap();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut len = [0u8; 8];
        s.read_exact(&mut len).unwrap();
        let len = u64::from_le_bytes(len) as usize;
        // Echo as it arrives: data flows both ways at once.
        let mut buf = vec![0u8; 65536];
        let mut total = 0;
        while total < len {
            let n = s.read(&mut buf[..(len - total).min(65536)]).unwrap();
            assert!(n > 0, "early EOF");
            s.write_all(&buf[..n]).unwrap();
            total += n;
        }
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        total
    });
    let peer = run_emulated_peer(stack(&dir, 32 * 1024), 1, Some((5000, BIG)));
    let total = server.join().unwrap();
    assert_eq!(total, BIG);
    assert!(peer.wait_connect_ok(Duration::from_secs(10)));
    let report = peer.finish().unwrap();
    assert!(report.connect_ok, "guest did not get its echo back");
    assert_eq!(report.overruns, 0);
}

#[test]
fn host_writer_is_back_pressured_while_guest_does_not_read() {
    let dir = TmpDir::new();
    let mut g = stack(&dir, 64 * 1024);
    g.listen(77);
    let mut s = host_connect_line(&dir.uds(), b"CONNECT 77\n");
    let t0 = Instant::now();
    while g.accepted.is_empty() && t0.elapsed() < Duration::from_secs(5) {
        g.poll(5);
    }
    let key = g.accepted.pop_front().expect("accepted");
    read_ok_line(&mut s).unwrap();
    s.set_nonblocking(true).unwrap();
    let chunk = vec![7u8; 65536];
    let mut written = 0usize;
    // Push until the host socket refuses, while the guest never reads.
    for _ in 0..400 {
        match s.write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        g.poll(1);
    }
    let conn = g.conn(key).unwrap();
    assert_eq!(
        conn.rx.len(),
        64 * 1024,
        "guest holds exactly its advertised buffer"
    );
    assert!(!conn.overrun);
    assert!(
        written < 400 * 65536,
        "host writes must block, not be buffered without bound"
    );
    // Now the guest reads: everything arrives.
    let mut got = 0usize;
    let t0 = Instant::now();
    while got < written && t0.elapsed() < Duration::from_secs(20) {
        got += g.read(key, usize::MAX).len();
        g.poll(2);
    }
    assert_eq!(got, written);
    assert!(!g.conn(key).unwrap().overrun);
}

#[test]
fn guest_writer_is_stopped_by_credit_while_host_does_not_read() {
    let dir = TmpDir::new();
    let listener = UnixListener::bind(format!("{}_5001", dir.uds().display())).unwrap();
    let mut g = stack(&dir, 64 * 1024);
    let key = g.connect(5001);
    let (mut host, _) = listener.accept().unwrap();
    let t0 = Instant::now();
    while g.state(key) != Some(GConnState::Established) && t0.elapsed() < Duration::from_secs(5) {
        g.poll(5);
    }
    let data = pattern(4 * 1024 * 1024);
    let mut sent = 0;
    for _ in 0..50 {
        sent += g.write(key, &data[sent..]);
        g.poll(1);
    }
    assert!(
        sent < data.len(),
        "credit must run out while the host does not read"
    );
    assert_eq!(g.credit(key), 0);
    assert_eq!(g.h.metric("drop_credit_violation"), 0);
    // The host reads; credit updates let the guest finish.
    host.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        host.read_to_end(&mut got).unwrap();
        got
    });
    let t0 = Instant::now();
    while sent < data.len() && t0.elapsed() < Duration::from_secs(20) {
        sent += g.write(key, &data[sent..]);
        g.poll(2);
    }
    g.shutdown(key, SHUTDOWN_SEND);
    for _ in 0..20 {
        g.poll(2);
    }
    let got = reader.join().unwrap();
    assert!(
        got == data,
        "host got {} of {} bytes",
        got.len(),
        data.len()
    );
}

#[test]
fn split_receive_buffers_carry_the_same_stream() {
    let dir = TmpDir::new();
    let mut g = stack(&dir, 64 * 1024);
    g.h.set_rx_split(true);
    g.listen(9);
    let mut s = host_connect_line(&dir.uds(), b"CONNECT 9\n");
    let t0 = Instant::now();
    while g.accepted.is_empty() && t0.elapsed() < Duration::from_secs(5) {
        g.poll(5);
    }
    let key = g.accepted.pop_front().unwrap();
    read_ok_line(&mut s).unwrap();
    let want = pattern(200_000);
    let w = want.clone();
    let writer = thread::spawn(move || s.write_all(&w).map(|_| s));
    let mut got = Vec::new();
    let t0 = Instant::now();
    while got.len() < want.len() && t0.elapsed() < Duration::from_secs(10) {
        g.poll(2);
        got.extend(g.read(key, usize::MAX));
    }
    let _s = writer.join().unwrap().unwrap();
    assert!(got == want);
}
