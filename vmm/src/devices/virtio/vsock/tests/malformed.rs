//! Guest and host misbehaviour: counted, answered with RST or dropped, never a panic,
//! and other connections keep working.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::{ghdr, harness, host_connect_line, read_ok_line, stack, with_op, TmpDir};
use crate::devices::virtio::vsock::defs::TXQ;
use crate::devices::virtio::vsock::packet::{Op, HDR_SIZE};
use crate::devices::virtio::vsock::testing::{GuestDriver, GuestStack, SockKey, VsockHarness};

const T: Duration = Duration::from_secs(5);

fn settle(
    h: &mut VsockHarness,
) -> Vec<(crate::devices::virtio::vsock::packet::VsockHeader, Vec<u8>)> {
    h.recv_until(Duration::from_millis(30), |_| false)
}

/// Posts header bytes and payload as a raw two-descriptor TX chain in the TX slots.
fn raw_tx(h: &mut VsockHarness, hdr_bytes: &[u8], payload_len: u32) {
    let a = GuestDriver::slot_addr(TXQ, 200);
    let b = GuestDriver::slot_addr(TXQ, 201);
    h.driver.mem_write(a, hdr_bytes);
    if payload_len == 0 {
        h.send_raw(&[(a.0, hdr_bytes.len() as u32, 0, 0)]);
    } else {
        h.send_raw(&[
            (a.0, hdr_bytes.len() as u32, 1, 1),
            (b.0, payload_len, 0, 0),
        ]);
    }
}

#[test]
fn short_and_oversized_packets_are_dropped_and_counted() {
    let dir = TmpDir::new();
    let mut h = harness(&dir);
    let mut hdr = ghdr(1, 2, Op::Rw);
    // Shorter than a header.
    raw_tx(&mut h, &hdr.to_bytes()[..20], 0);
    assert_eq!(h.metric("drop_short_desc"), 1);
    // len beyond the chain.
    hdr.len = 1000;
    raw_tx(&mut h, &hdr.to_bytes(), 10);
    // len beyond the 64 KiB cap.
    hdr.len = 100_000;
    raw_tx(&mut h, &hdr.to_bytes(), 0x11000);
    assert_eq!(h.metric("drop_bad_len"), 2);
    // Buffer outside guest memory.
    h.send_raw(&[(0xffff_ffff_0000, HDR_SIZE as u32, 0, 0)]);
    // A write-only descriptor where a readable one belongs.
    let a = GuestDriver::slot_addr(TXQ, 202);
    h.send_raw(&[(a.0, HDR_SIZE as u32, 2, 0)]);
    assert_eq!(h.metric("drop_short_desc"), 3);
    // `next` beyond the queue: the chain ends at the header, which here is all zeros
    // (CID 0), so the packet is dropped as misaddressed.
    h.send_raw(&[(a.0, HDR_SIZE as u32, 1, 999)]);
    assert_eq!(h.metric("drop_short_desc") + h.metric("drop_bad_cid"), 4);
    assert!(
        settle(&mut h).is_empty(),
        "nothing answered for unparseable packets"
    );
    assert_eq!(h.reap_tx(), 0, "all chains were already returned");
    assert_eq!(h.driver.free_descriptors(TXQ), 256);
}

#[test]
fn wrong_cids_are_dropped_silently() {
    let dir = TmpDir::new();
    let mut h = harness(&dir);
    let mut hdr = ghdr(1, 2, Op::Request);
    hdr.src_cid = 5;
    h.send(&hdr, &[]);
    hdr.src_cid = 3;
    hdr.dst_cid = 7;
    h.send(&hdr, &[]);
    assert_eq!(h.metric("drop_bad_cid"), 2);
    assert!(settle(&mut h).is_empty());
}

#[test]
fn unknown_ops_types_and_connections_get_rst() {
    let dir = TmpDir::new();
    let mut h = harness(&dir);
    let mut hdr = ghdr(10, 20, Op::Rw);
    hdr.op = 99;
    h.send(&hdr, &[]);
    let mut hdr = ghdr(11, 21, Op::Request);
    hdr.type_ = 2;
    h.send(&hdr, &[]);
    let hdr = ghdr(12, 22, Op::Rw);
    h.send(
        &{
            let mut x = hdr;
            x.len = 3;
            x
        },
        b"abc",
    );
    h.send(&ghdr(13, 23, Op::Rst), &[]);
    let pkts = settle(&mut h);
    let rst = with_op(&pkts, Op::Rst);
    let mut pairs: Vec<(u32, u32)> = rst.iter().map(|r| (r.src_port, r.dst_port)).collect();
    pairs.sort();
    assert_eq!(
        pairs,
        vec![(20, 10), (21, 11), (22, 12)],
        "RST to each, none to an RST"
    );
    assert!(rst.iter().all(|r| r.src_cid == 2 && r.dst_cid == 3));
    assert_eq!(h.metric("drop_unknown_op"), 1);
    assert_eq!(h.metric("drop_bad_type"), 1);
    assert_eq!(h.metric("drop_unknown_conn"), 1);
    assert_eq!(h.metric("rst_sent"), 3);
}

fn established(g: &mut GuestStack, dir: &TmpDir, port: u32) -> (SockKey, UnixStream) {
    g.listen(port);
    let mut s = host_connect_line(&dir.uds(), format!("CONNECT {port}\n").as_bytes());
    let t0 = Instant::now();
    while g.accepted.is_empty() && t0.elapsed() < T {
        g.poll(5);
    }
    let key = g.accepted.pop_front().expect("accepted");
    read_ok_line(&mut s).unwrap();
    (key, s)
}

#[test]
fn bad_packets_on_a_connection_reset_only_that_connection() {
    let dir = TmpDir::new();
    let mut g = stack(&dir, 65536);
    let (a, mut sa) = established(&mut g, &dir, 30);
    let (b, mut sb) = established(&mut g, &dir, 31);
    let (c, mut sc) = established(&mut g, &dir, 32);
    // Unknown op on `a`.
    let mut hdr = ghdr(a.0, a.1, Op::Rw);
    hdr.op = 42;
    g.h.send(&hdr, &[]);
    // REQUEST on the established `b`.
    g.h.send(&ghdr(b.0, b.1, Op::Request), &[]);
    // `c` ignores credit: the host does not read, the guest floods 64 KiB packets.
    let chunk = vec![1u8; 65536];
    for _ in 0..40 {
        let mut h = ghdr(c.0, c.1, Op::Rw);
        h.len = chunk.len() as u32;
        g.h.send(&h, &chunk);
        if g.h.metric("drop_credit_violation") > 0 {
            break;
        }
    }
    assert_eq!(g.h.metric("drop_credit_violation"), 1);
    assert_eq!(g.h.metric("drop_unknown_op"), 1);
    assert_eq!(g.h.metric("drop_bad_state"), 1);
    for _ in 0..5 {
        g.poll(2);
    }
    for k in [a, b, c] {
        assert!(g.conn(k).unwrap().got_rst, "{k:?} not reset");
    }
    let mut buf = [0u8; 16];
    assert_eq!(sa.read(&mut buf).unwrap(), 0);
    assert_eq!(sb.read(&mut buf).unwrap(), 0);
    let mut rest = Vec::new();
    let _ = sc.read_to_end(&mut rest);
    // A fresh connection is unaffected.
    let (d, mut sd) = established(&mut g, &dir, 33);
    sd.write_all(b"fine").unwrap();
    let t0 = Instant::now();
    while g.conn(d).unwrap().rx.len() < 4 && t0.elapsed() < T {
        g.poll(5);
    }
    assert_eq!(g.read(d, 10), b"fine");
    assert_eq!(g.h.dev().num_connections(), 1);
}

#[test]
fn flood_of_bogus_packets_is_answered_and_bounded() {
    let dir = TmpDir::new();
    let mut h = harness(&dir);
    for i in 0..200 {
        h.send(&ghdr(1000 + i, 5, Op::CreditUpdate), &[]);
    }
    let pkts = h.recv_until(T, |p| with_op(p, Op::Rst).len() >= 200);
    assert_eq!(with_op(&pkts, Op::Rst).len(), 200);
    assert_eq!(h.metric("drop_unknown_conn"), 200);
    assert_eq!(h.metric("tx_packets"), 200);
    assert_eq!(h.dev().num_connections(), 0);
}

#[test]
fn malformed_connect_lines_disconnect_the_client_only() {
    let dir = TmpDir::new();
    let mut g = stack(&dir, 65536);
    let (key, mut good) = established(&mut g, &dir, 40);
    let lines: [&[u8]; 4] = [
        b"CONNECT abc\n",
        b"HELLO 1\n",
        &[b'C'; 40],
        b"CONNECT 1 2\n",
    ];
    let mut clients: Vec<UnixStream> = lines
        .iter()
        .map(|l| host_connect_line(&dir.uds(), l))
        .collect();
    // A client that closes mid-line.
    drop(host_connect_line(&dir.uds(), b"CONN"));
    for _ in 0..10 {
        g.poll(5);
    }
    for c in &mut clients {
        super::assert_disconnected(read_ok_line(c));
    }
    assert_eq!(g.h.metric("handshake_failed"), 5);
    assert_eq!(g.h.dev().num_connections(), 1);
    assert!(g.accepted.is_empty(), "the guest saw nothing of them");
    good.write_all(b"ok").unwrap();
    let t0 = Instant::now();
    while g.conn(key).unwrap().rx.len() < 2 && t0.elapsed() < T {
        g.poll(5);
    }
    assert_eq!(g.read(key, 10), b"ok");
}

#[test]
fn silent_host_client_is_dropped_after_the_handshake_timeout() {
    let dir = TmpDir::new();
    let mut h = harness(&dir);
    let mut s = UnixStream::connect(dir.uds()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t0 = Instant::now();
    while h.metric("handshake_failed") == 0 && t0.elapsed() < T {
        h.pump_wait(50);
    }
    assert!(t0.elapsed() >= Duration::from_millis(1800));
    let mut buf = [0u8; 1];
    assert_eq!(s.read(&mut buf).unwrap(), 0);
}
