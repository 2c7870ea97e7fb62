//! Host-initiated connections: `CONNECT <port>\n` / `OK <host port>\n`, with retry.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::Error;

/// Pause between attempts while the guest is not listening yet.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(50);
/// Longest reply line accepted (`OK 4294967295` plus slack).
const MAX_REPLY: usize = 32;

/// An established stream to a guest port. Reads and writes carry raw stream bytes.
#[derive(Debug)]
pub struct HybridStream {
    stream: UnixStream,
    host_port: u32,
}

impl HybridStream {
    /// The host-side port the VMM assigned (from the `OK` line).
    pub fn host_port(&self) -> u32 {
        self.host_port
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.stream.shutdown(how)
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(t)
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.stream.set_write_timeout(t)
    }

    pub fn try_clone(&self) -> io::Result<HybridStream> {
        Ok(HybridStream {
            stream: self.stream.try_clone()?,
            host_port: self.host_port,
        })
    }

    /// The underlying Unix stream (e.g. to hand to an async runtime).
    pub fn into_inner(self) -> UnixStream {
        self.stream
    }
}

impl Read for HybridStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for HybridStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl AsRawFd for HybridStream {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

impl AsFd for HybridStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// Connects to guest port `port` through the VMM socket `uds_path`, retrying every
/// [`RETRY_INTERVAL`] while the socket is missing or the guest does not listen yet,
/// for at most `timeout`.
pub fn connect(uds_path: &Path, port: u32, timeout: Duration) -> Result<HybridStream, Error> {
    let start = Instant::now();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        let err = match connect_once(uds_path, port, left.max(Duration::from_millis(1))) {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        let waited = start.elapsed();
        if !err.is_transient() || waited + RETRY_INTERVAL >= timeout {
            if err.is_transient() {
                return Err(Error::Timeout {
                    port,
                    waited,
                    last: Box::new(err),
                });
            }
            return Err(err);
        }
        std::thread::sleep(RETRY_INTERVAL);
    }
}

/// One attempt: connect, send the CONNECT line, read the reply within `timeout`.
pub fn connect_once(uds_path: &Path, port: u32, timeout: Duration) -> Result<HybridStream, Error> {
    let hs_err = |source| Error::Handshake {
        path: uds_path.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(uds_path).map_err(|source| Error::Connect {
        path: uds_path.to_path_buf(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(hs_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(hs_err)?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(hs_err)?;
    let reply = match read_line(&mut stream) {
        Ok(Some(line)) => line,
        Ok(None) => return Err(Error::NotListening { port }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
            return Err(Error::NotListening { port })
        }
        Err(e) => return Err(hs_err(e)),
    };
    let host_port = parse_ok(&reply).ok_or_else(|| Error::BadReply {
        port,
        reply: reply.clone(),
    })?;
    stream.set_read_timeout(None).map_err(hs_err)?;
    stream.set_write_timeout(None).map_err(hs_err)?;
    Ok(HybridStream { stream, host_port })
}

/// Reads one `\n`-terminated line byte by byte, so no stream data after it is consumed.
/// `None` on EOF before any byte.
fn read_line(stream: &mut UnixStream) -> io::Result<Option<String>> {
    let mut line = Vec::with_capacity(MAX_REPLY);
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) if line.is_empty() => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) if byte[0] == b'\n' => {
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()))
            }
            Ok(_) if line.len() >= MAX_REPLY => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "reply line too long",
                ))
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `OK <port>` -> port.
fn parse_ok(line: &str) -> Option<u32> {
    let rest = line.trim_end_matches('\r').strip_prefix("OK ")?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_ok;

    #[test]
    fn ok_lines() {
        assert_eq!(parse_ok("OK 1073741824"), Some(1 << 30));
        assert_eq!(parse_ok("OK 5\r"), Some(5));
        for bad in [
            "",
            "OK",
            "OK ",
            "ok 5",
            "OK -1",
            "OK 99999999999",
            "NO 5",
            "OK 5 6",
        ] {
            assert_eq!(parse_ok(bad), None, "{bad:?}");
        }
    }
}
