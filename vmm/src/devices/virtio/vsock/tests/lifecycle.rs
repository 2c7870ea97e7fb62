//! Connect failures, timeouts, half-close, RST, teardown, limits and device reset.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use super::{harness, host_connect_line, read_ok_line, stack, with_op, TmpDir, CID};
use crate::devices::virtio::vsock::defs::EVENT_TRANSPORT_RESET;
use crate::devices::virtio::vsock::packet::{Op, SHUTDOWN_RCV, SHUTDOWN_SEND};
use crate::devices::virtio::vsock::testing::{GConnState, GuestStack, SockKey};
use crate::devices::virtio::VirtioDevice;

const T: Duration = Duration::from_secs(5);

fn poll_until(g: &mut GuestStack, mut f: impl FnMut(&GuestStack) -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < T {
        g.poll(5);
        if f(g) {
            return true;
        }
    }
    false
}

/// A host-initiated connection, established, with the host stream.
fn established(
    g: &mut GuestStack,
    dir: &TmpDir,
    port: u32,
) -> (SockKey, std::os::unix::net::UnixStream) {
    g.listen(port);
    let mut s = host_connect_line(&dir.uds(), format!("CONNECT {port}\n").as_bytes());
    assert!(poll_until(g, |g| !g.accepted.is_empty()));
    let key = g.accepted.pop_front().unwrap();
    read_ok_line(&mut s).unwrap();
    (key, s)
}

#[test]
fn guest_connect_without_host_listener_gets_rst() {
    let dir = TmpDir::new();
    let mut g = stack(&dir, 65536);
    let key = g.connect(4242);
    assert!(poll_until(&mut g, |g| g.state(key) == Some(GConnState::Closed)));
    assert!(g.conn(key).unwrap().got_rst);
    assert_eq!(g.h.metric("host_connect_failed"), 1);
    assert_eq!(g.h.dev().num_connections(), 0);
}

#[test]
fn host_connect_to_port_without_guest_listener_is_closed() {
    let dir = TmpDir::new();
    let mut g = stack(&dir, 65536);
    let mut s = host_connect_line(&dir.uds(), b"CONNECT 99\n");
    // The guest stack answers the REQUEST with RST; the host sees EOF, no OK line.
    assert!(poll_until(&mut g, |g| g.h.dev().num_connections() == 0
        && g.h.metric("conns_removed") == 1));
    assert_eq!(
        read_ok_line(&mut s).unwrap_err().kind(),
        ErrorKind::UnexpectedEof
    );
}

#[test]
fn host_connect_times_out_when_guest_never_answers() {
    let dir = TmpDir::new();
    let mut h = harness(&dir);
    let mut s = host_connect_line(&dir.uds(), b"CONNECT 5\n");
    let pkts = h.recv_until(T, |p| !with_op(p, Op::Request).is_empty());
    let req = with_op(&pkts, Op::Request)[0];
    assert_eq!((req.src_cid, req.dst_cid, req.dst_port), (2, CID, 5));
    // No RESPONSE: after the connect timeout the guest gets RST and the host EOF.
    let pkts = h.recv_until(Duration::from_secs(4), |p| !with_op(p, Op::Rst).is_empty());
    let rst = with_op(&pkts, Op::Rst);
    assert_eq!(rst.len(), 1);
    assert_eq!((rst[0].src_port, rst[0].dst_port), (req.src_port, 5));
    assert_eq!(
        read_ok_line(&mut s).unwrap_err().kind(),
        ErrorKind::UnexpectedEof
    );
    assert_eq!(h.metric("conns_timed_out"), 1);
}

#[test]
fn guest_half_close_lets_host_keep_sending() {
    let dir = TmpDir::new();
    let mut g = stack(&dir, 65536);
    let (key, mut s) = established(&mut g, &dir, 10);
    g.write(key, b"request");
    g.shutdown(key, SHUTDOWN_SEND);
    for _ in 0..5 {
        g.poll(2);
    }
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"request", "host reads the data then EOF");
    s.write_all(b"response").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut body = Vec::new();
    assert!(poll_until(&mut g, |g| g.conn(key).unwrap().peer_shutdown
        & SHUTDOWN_SEND
        != 0
        || !g.conn(key).unwrap().rx.is_empty()));
    assert!(poll_until(&mut g, |g| g.at_eof(key)
        || g.conn(key).unwrap().rx.len() == 8));
    body.extend(g.read(key, usize::MAX));
    assert_eq!(body, b"response");
}

#[test]
fn host_half_close_lets_guest_keep_sending() {
    let dir = TmpDir::new();
    let mut g = stack(&dir, 65536);
    let (key, mut s) = established(&mut g, &dir, 11);
    s.write_all(b"ping").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert!(poll_until(&mut g, |g| g.conn(key).unwrap().peer_shutdown
        == SHUTDOWN_SEND));
    assert_eq!(g.read(key, 100), b"ping");
    assert_eq!(g.state(key), Some(GConnState::Established));
    g.write(key, b"pong");
    g.shutdown(key, SHUTDOWN_RCV | SHUTDOWN_SEND);
    assert!(
        poll_until(&mut g, |g| g.conn(key).unwrap().got_rst),
        "device answers close with RST"
    );
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"pong");
    assert!(poll_until(&mut g, |g| g.h.dev().num_connections() == 0));
}

#[test]
fn host_close_sends_full_shutdown_and_guest_rst_tears_down() {
    let dir = TmpDir::new();
    let mut g = stack(&dir, 65536);
    let (key, s) = established(&mut g, &dir, 12);
    drop(s);
    assert!(poll_until(&mut g, |g| g.conn(key).unwrap().peer_shutdown
        == SHUTDOWN_RCV | SHUTDOWN_SEND));
    // The stack answered with RST, the device dropped the connection.
    assert!(poll_until(&mut g, |g| g.h.dev().num_connections() == 0));
    assert_eq!(g.h.metric("conns_open"), 0);
}

#[test]
fn guest_rst_closes_the_host_stream_only_for_that_connection() {
    let dir = TmpDir::new();
    let mut g = stack(&dir, 65536);
    let (a, mut sa) = established(&mut g, &dir, 13);
    let (b, mut sb) = established(&mut g, &dir, 14);
    g.reset(a);
    for _ in 0..5 {
        g.poll(2);
    }
    let mut buf = [0u8; 8];
    assert_eq!(sa.read(&mut buf).unwrap(), 0, "RST closes the host stream");
    sb.write_all(b"still").unwrap();
    assert!(poll_until(&mut g, |g| g.conn(b).unwrap().rx.len() == 5));
    assert_eq!(g.h.dev().num_connections(), 1);
}

#[test]
fn connection_limit_refuses_with_rst_and_closes_host_clients() {
    let dir = TmpDir::new();
    let listener = UnixListener::bind(format!("{}_700", dir.uds().display())).unwrap();
    let mut g = stack(&dir, 65536);
    g.h.dev().set_max_connections(3);
    let keys: Vec<SockKey> = (0..5).map(|_| g.connect(700)).collect();
    let mut accepted = Vec::new();
    for _ in 0..3 {
        accepted.push(listener.accept().unwrap());
    }
    assert!(poll_until(&mut g, |g| keys
        .iter()
        .all(|k| g.state(*k) != Some(GConnState::Connecting))));
    let ok = keys
        .iter()
        .filter(|k| g.state(**k) == Some(GConnState::Established))
        .count();
    let refused = keys.iter().filter(|k| g.conn(**k).unwrap().got_rst).count();
    assert_eq!((ok, refused), (3, 2));
    assert_eq!(g.h.metric("conns_over_limit"), 2);
    // A host client over the limit is closed right away.
    let mut s = host_connect_line(&dir.uds(), b"CONNECT 1\n");
    g.poll(20);
    super::assert_disconnected(read_ok_line(&mut s));
}

#[test]
fn reset_drops_host_connections_and_transport_reset_event_is_sent() {
    let dir = TmpDir::new();
    let mut g = stack(&dir, 65536);
    let (_key, mut s) = established(&mut g, &dir, 15);
    g.h.post_event_buffer();
    assert_eq!(g.h.pop_event(), None, "no event without a reason");
    g.h.dev().send_transport_reset();
    assert_eq!(g.h.pop_event(), Some(EVENT_TRANSPORT_RESET));
    assert_eq!(g.h.metric("events_sent"), 1);
    let evts = g.h.dev().reset().expect("eventfds back");
    assert_eq!(evts.len(), 3);
    assert!(!g.h.dev().is_activated());
    let mut buf = [0u8; 4];
    assert_eq!(s.read(&mut buf).unwrap(), 0, "host stream closed by reset");
    assert_eq!(g.h.dev().num_connections(), 0);
    // Host clients are still accepted (and time out) while the device is down.
    let mut s2 = host_connect_line(&dir.uds(), b"CONNECT 15\n");
    g.h.pump_wait(20);
    s2.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert_eq!(s2.read(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
}

#[test]
fn reactivation_after_reset_reuses_eventfds_and_announces_transport_reset() {
    let dir = TmpDir::new();
    let mut g = stack(&dir, 65536);
    let (_key, _s) = established(&mut g, &dir, 16);
    g.h.reset_and_reactivate(16);
    assert!(g.h.dev().is_activated());
    g.h.post_event_buffer();
    assert_eq!(g.h.pop_event(), Some(EVENT_TRANSPORT_RESET));
    // The queues work again: a fresh connection in both directions.
    g.conns.clear();
    g.accepted.clear();
    let (key, mut s) = established(&mut g, &dir, 17);
    s.write_all(b"again").unwrap();
    assert!(poll_until(&mut g, |g| g.conn(key).unwrap().rx.len() == 5));
    assert_eq!(g.h.metric("device_errors"), 0);
}

#[test]
fn guest_close_flushes_buffered_data_to_a_slow_host_before_rst() {
    let dir = TmpDir::new();
    let mut g = stack(&dir, 65536);
    let (key, mut s) = established(&mut g, &dir, 18);
    // The host does not read yet: most of this waits in the device's buffer.
    let data = crate::devices::virtio::vsock::testing::pattern(240 * 1024);
    let mut sent = 0;
    while sent < data.len() {
        let n = g.write(key, &data[sent..]);
        assert!(n > 0, "credit ran out at {sent}");
        sent += n;
        g.poll(1);
    }
    g.shutdown(key, SHUTDOWN_RCV | SHUTDOWN_SEND);
    g.poll(5);
    assert!(
        !g.conn(key).unwrap().got_rst,
        "RST before the data reached the host"
    );
    let mut got = Vec::new();
    s.set_nonblocking(true).unwrap();
    assert!(poll_until(&mut g, |g| {
        let mut buf = [0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        g.conn(key).unwrap().got_rst && got.len() == data.len()
    }));
    assert!(
        got == data,
        "host got {} of {} bytes",
        got.len(),
        data.len()
    );
}

#[test]
fn full_shutdown_without_guest_rst_times_out_with_rst() {
    let dir = TmpDir::new();
    let mut h = harness(&dir);
    let mut s = host_connect_line(&dir.uds(), b"CONNECT 19\n");
    let pkts = h.recv_until(T, |p| !with_op(p, Op::Request).is_empty());
    let req = with_op(&pkts, Op::Request)[0];
    h.send(&super::ghdr(19, req.src_port, Op::Response), &[]);
    read_ok_line(&mut s).unwrap();
    drop(s);
    let pkts = h.recv_until(T, |p| !with_op(p, Op::Shutdown).is_empty());
    assert_eq!(
        with_op(&pkts, Op::Shutdown)[0].flags,
        SHUTDOWN_RCV | SHUTDOWN_SEND
    );
    // A guest that never answers with RST: the device gives up after the timeout.
    let t0 = Instant::now();
    let pkts = h.recv_until(Duration::from_secs(4), |p| !with_op(p, Op::Rst).is_empty());
    assert_eq!(with_op(&pkts, Op::Rst).len(), 1);
    assert!(t0.elapsed() >= Duration::from_millis(1500));
    assert_eq!(h.metric("conns_timed_out"), 1);
    assert_eq!(h.dev().num_connections(), 0);
}

#[test]
fn stalled_guest_does_not_make_the_event_loop_spin() {
    let dir = TmpDir::new();
    // Two receive buffers only, which the REQUEST and the first data packet use up.
    let mut h =
        crate::devices::virtio::vsock::testing::VsockHarness::new(CID, dir.uds(), 2, 4096 + 44)
            .unwrap();
    let mut s = host_connect_line(&dir.uds(), b"CONNECT 20\n");
    let pkts = h.recv_until(T, |p| !with_op(p, Op::Request).is_empty());
    let req = with_op(&pkts, Op::Request)[0];
    h.send(&super::ghdr(20, req.src_port, Op::Response), &[]);
    read_ok_line(&mut s).unwrap();
    s.write_all(&[1u8; 100_000]).unwrap();
    // Let the device fill what it can (`recv` is not called, so no buffers come back),
    // and let the expiry timer's last tick find no deadline and disarm.
    for _ in 0..30 {
        h.run_once(10);
    }
    // Host data is pending, the guest has no buffers: the loop must sleep, not spin.
    let mut events = 0;
    for _ in 0..10 {
        events += h.run_once(20);
    }
    assert_eq!(events, 0, "event loop kept waking up with nothing to do");
}

#[test]
fn a_device_resumed_from_a_snapshot_announces_transport_reset() {
    let dir = TmpDir::new();
    let mut g = stack(&dir, 65536);
    let (_key, _s) = established(&mut g, &dir, 19);
    g.h.post_event_buffer();
    // The guest's connections belong to the process that took the snapshot.
    g.h.dev().restored();
    assert_eq!(g.h.pop_event(), Some(EVENT_TRANSPORT_RESET));
    assert_eq!(g.h.metric("events_sent"), 1);
}
