//! Guest-side peer for the vsock interop test; runs inside the guest (static musl).
//!
//!   vsock-peer <serve-port> <connect-port> <bytes>
//!
//! First listens on `<serve-port>` and serves one host connection: reads an 8-byte
//! little-endian length and that many bytes, writes them back and closes. Then
//! connects to the host (CID 2) on `<connect-port>`, retrying until a host listener
//! exists, sends the length and `<bytes>` of a fixed pattern, reads the echo, checks it
//! and closes. Prints `vsock-peer: PASS` and exits 0 when both worked.
//!
//! Lengths are framed instead of using half-close because Firecracker-style backends
//! (vhost-device-vsock included) turn a host-side shutdown(SHUT_WR) into a full
//! shutdown towards the guest. Data flows one way at a time.
//! Same protocol as `vmm::devices::virtio::vsock::testing::run_emulated_peer`.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const HOST_CID: u32 = 2;
const DEADLINE: Duration = Duration::from_secs(60);

/// The interop payload (identical to the harness's `pattern`).
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn sockaddr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: `sockaddr_vm` is a plain C struct for which all-zero bytes are valid.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    addr
}

fn vsock_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

const ADDR_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;

// A vsock stream fd behaves like any stream socket for read/write/shutdown, so it is
// wrapped in a UnixStream purely for its std I/O methods.
fn as_stream(fd: OwnedFd) -> UnixStream {
    UnixStream::from(fd)
}

fn listen(port: u32) -> io::Result<OwnedFd> {
    let fd = vsock_socket()?;
    let addr = sockaddr(libc::VMADDR_CID_ANY, port);
    // SAFETY: `addr` is a valid sockaddr_vm of ADDR_LEN bytes that outlives the call.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_vm).cast(),
            ADDR_LEN,
        )
    })?;
    // SAFETY: plain syscall on a descriptor we own.
    check(unsafe { libc::listen(fd.as_raw_fd(), 8) })?;
    Ok(fd)
}

fn accept(listener: &OwnedFd) -> io::Result<UnixStream> {
    // SAFETY: null address pointers are allowed by accept4 when the peer is not wanted.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor returned by accept4.
    Ok(as_stream(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn connect(port: u32) -> io::Result<UnixStream> {
    let fd = vsock_socket()?;
    let addr = sockaddr(HOST_CID, port);
    // SAFETY: `addr` is a valid sockaddr_vm of ADDR_LEN bytes that outlives the call.
    check(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_vm).cast(),
            ADDR_LEN,
        )
    })?;
    Ok(as_stream(fd))
}

/// Reads one framed message, writes its body back, closes; returns the body length.
fn serve_one(listener: &OwnedFd) -> io::Result<usize> {
    let mut s = accept(listener)?;
    let mut len = [0u8; 8];
    s.read_exact(&mut len)?;
    let len = usize::try_from(u64::from_le_bytes(len))
        .ok()
        .filter(|n| *n <= 64 << 20)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "frame too large"))?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    s.write_all(&body)?;
    Ok(len)
}

/// Connects out (retrying while the host has no listener), sends a framed pattern and
/// checks the echo.
fn connect_and_check(port: u32, bytes: usize) -> Result<(), String> {
    let start = Instant::now();
    let mut s = loop {
        match connect(port) {
            Ok(s) => break s,
            Err(e) if start.elapsed() < Duration::from_secs(20) => {
                eprintln!("vsock-peer: connect to 2:{port}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(format!("connect to 2:{port}: {e}")),
        }
    };
    let want = pattern(bytes);
    s.write_all(&(bytes as u64).to_le_bytes())
        .and_then(|_| s.write_all(&want))
        .map_err(|e| format!("write: {e}"))?;
    let mut got = vec![0u8; bytes];
    s.read_exact(&mut got)
        .map_err(|e| format!("read echo: {e}"))?;
    if got != want {
        return Err("echo differs".into());
    }
    Ok(())
}

fn run(args: &[String]) -> Result<(), String> {
    let [serve, conn, bytes] = args else {
        return Err("usage: vsock-peer <serve-port> <connect-port> <bytes>".into());
    };
    let parse = |s: &String| s.parse::<u64>().map_err(|e| format!("{s}: {e}"));
    let serve = u32::try_from(parse(serve)?).map_err(|e| e.to_string())?;
    let conn = u32::try_from(parse(conn)?).map_err(|e| e.to_string())?;
    let bytes = usize::try_from(parse(bytes)?).map_err(|e| e.to_string())?;
    let listener = listen(serve).map_err(|e| format!("listen on {serve}: {e}"))?;
    println!("vsock-peer: listening on {serve}");
    let served = serve_one(&listener).map_err(|e| format!("serve: {e}"))?;
    println!("vsock-peer: served {served} bytes");
    connect_and_check(conn, bytes)?;
    println!("vsock-peer: connect-out ok ({bytes} bytes)");
    Ok(())
}

fn main() {
    // A stuck test must not hang the guest forever.
    std::thread::spawn(|| {
        std::thread::sleep(DEADLINE);
        println!("vsock-peer: FAIL: deadline");
        std::process::exit(3);
    });
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => println!("vsock-peer: PASS"),
        Err(e) => {
            println!("vsock-peer: FAIL: {e}");
            std::process::exit(1);
        }
    }
}
