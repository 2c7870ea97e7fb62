//! The client against a scripted fake VMM socket: retry, timeouts, bad replies,
//! listener paths.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use hybrid_vsock::{connect, listen, listen_replacing, listener_path, Error};

struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("hv-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
    fn uds(&self) -> PathBuf {
        self.0.join("vm.sock")
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read_line(s: &mut UnixStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        out.push(b[0]);
    }
    String::from_utf8(out).unwrap()
}

/// Serves `closes` connections by closing after the CONNECT line (guest not
/// listening), then one by replying `reply` and echoing.
fn fake_vmm(
    listener: UnixListener,
    closes: usize,
    reply: &'static str,
) -> thread::JoinHandle<Vec<String>> {
    thread::spawn(move || {
        let mut lines = Vec::new();
        for _ in 0..closes {
            let (mut s, _) = listener.accept().unwrap();
            lines.push(read_line(&mut s));
        }
        let (mut s, _) = listener.accept().unwrap();
        lines.push(read_line(&mut s));
        s.write_all(reply.as_bytes()).unwrap();
        let mut buf = [0u8; 64];
        if let Ok(n) = s.read(&mut buf) {
            let _ = s.write_all(&buf[..n]);
        }
        lines
    })
}

#[test]
fn retries_until_the_guest_listens_then_streams_raw_bytes() {
    let t = Tmp::new("retry");
    let server = fake_vmm(UnixListener::bind(t.uds()).unwrap(), 3, "OK 1073741825\n");
    let start = Instant::now();
    let mut s = connect(&t.uds(), 52, Duration::from_secs(5)).unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(140),
        "three 50 ms retries"
    );
    assert_eq!(s.host_port(), 1_073_741_825);
    s.write_all(b"hello").unwrap();
    let mut got = [0u8; 5];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");
    assert_eq!(server.join().unwrap(), vec!["CONNECT 52"; 4]);
}

#[test]
fn waits_for_the_socket_to_appear() {
    let t = Tmp::new("appear");
    let uds = t.uds();
    let late = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        fake_vmm(UnixListener::bind(uds).unwrap(), 0, "OK 7\n")
            .join()
            .unwrap()
    });
    let s = connect(&t.uds(), 1, Duration::from_secs(5)).unwrap();
    assert_eq!(s.host_port(), 7);
    drop(s);
    late.join().unwrap();
}

#[test]
fn gives_up_at_the_timeout_with_the_last_cause() {
    let t = Tmp::new("timeout");
    let listener = UnixListener::bind(t.uds()).unwrap();
    let stop = thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_millis(700);
        while Instant::now() < end {
            if let Ok((s, _)) = listener.accept() {
                drop(s);
            }
            thread::sleep(Duration::from_millis(2));
        }
    });
    let start = Instant::now();
    let err = connect(&t.uds(), 9, Duration::from_millis(400)).unwrap_err();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );
    match &err {
        Error::Timeout { port: 9, last, .. } => assert!(last.is_transient(), "{last}"),
        other => panic!("unexpected {other}"),
    }
    stop.join().unwrap();
}

#[test]
fn a_bad_reply_is_an_error_without_retry() {
    let t = Tmp::new("bad");
    let server = fake_vmm(UnixListener::bind(t.uds()).unwrap(), 0, "NOPE\n");
    let err = connect(&t.uds(), 3, Duration::from_secs(5)).unwrap_err();
    assert!(
        matches!(err, Error::BadReply { port: 3, ref reply } if reply == "NOPE"),
        "{err}"
    );
    server.join().unwrap();
}

#[test]
fn listener_binds_uds_underscore_port_and_cleans_up() {
    let t = Tmp::new("listen");
    let path = listener_path(&t.uds(), 1024);
    assert_eq!(path, t.0.join("vm.sock_1024"));
    let l = listen(&t.uds(), 1024).unwrap();
    assert_eq!(l.path(), path);
    // A second listener on the same port is refused.
    assert!(matches!(listen(&t.uds(), 1024), Err(Error::Bind { .. })));
    let client = thread::spawn({
        let path = path.clone();
        move || UnixStream::connect(path).unwrap().write_all(b"x").unwrap()
    });
    let mut s = l.accept_timeout(Duration::from_secs(5)).unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    client.join().unwrap();
    assert!(matches!(
        l.accept_timeout(Duration::from_millis(50)),
        Err(Error::AcceptTimeout { .. })
    ));
    drop(l);
    assert!(!path.exists(), "socket file removed on drop");
    // A stale file left by a dead process blocks `listen`; `listen_replacing` takes over.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    assert!(matches!(listen(&t.uds(), 1024), Err(Error::Bind { .. })));
    drop(listen_replacing(&t.uds(), 1024).unwrap());
}
