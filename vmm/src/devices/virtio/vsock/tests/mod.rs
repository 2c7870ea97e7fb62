//! Device tests driving the queues as a guest driver would (mock split queues) with
//! real host Unix sockets on the other side.

mod basics;
mod data;
mod lifecycle;
mod malformed;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::defs::HOST_CID;
use super::packet::{Op, VsockHeader, TYPE_STREAM};
use super::testing::{GuestStack, VsockHarness};

pub const CID: u64 = 3;

/// A temporary folder for socket files, removed on drop.
pub struct TmpDir(PathBuf);

impl TmpDir {
    pub fn new() -> TmpDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("vsock-ut-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("tmpdir");
        TmpDir(p)
    }

    pub fn uds(&self) -> PathBuf {
        self.0.join("v.sock")
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn harness(dir: &TmpDir) -> VsockHarness {
    VsockHarness::new(CID, dir.uds(), 64, 4096 + 44).expect("harness")
}

pub fn stack(dir: &TmpDir, buf_alloc: u32) -> GuestStack {
    GuestStack::new(harness(dir), CID, buf_alloc)
}

/// A guest->host header with sane defaults.
pub fn ghdr(src_port: u32, dst_port: u32, op: Op) -> VsockHeader {
    VsockHeader {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len: 0,
        type_: TYPE_STREAM,
        op: op as u16,
        flags: 0,
        buf_alloc: 64 * 1024,
        fwd_cnt: 0,
    }
}

/// Host client: connect to the device socket and send a CONNECT line.
pub fn host_connect_line(uds: &Path, line: &[u8]) -> UnixStream {
    let mut s = UnixStream::connect(uds).expect("connect to device socket");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(line).expect("CONNECT line");
    s
}

/// Reads the `OK <port>\n` reply byte by byte.
pub fn read_ok_line(s: &mut UnixStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if s.read(&mut b)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if b[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(b[0]);
    }
}

/// Packets with `op` among `pkts`.
pub fn with_op(pkts: &[(VsockHeader, Vec<u8>)], op: Op) -> Vec<VsockHeader> {
    pkts.iter()
        .filter(|(h, _)| h.op == op as u16)
        .map(|(h, _)| *h)
        .collect()
}

/// The host client was closed by the device: EOF, or ECONNRESET when the device closed
/// with our CONNECT bytes unread.
pub fn assert_disconnected(r: std::io::Result<String>) {
    match r {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) => {}
        other => panic!("expected a disconnect, got {other:?}"),
    }
}
