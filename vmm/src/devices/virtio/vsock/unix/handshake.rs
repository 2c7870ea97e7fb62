//! The host side of Firecracker's hybrid-vsock handshake: `CONNECT <port>\n`.

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use crate::devices::virtio::vsock::defs::{HANDSHAKE_TIMEOUT, MAX_CONNECT_LINE};

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("malformed CONNECT line {0:?}")]
    Malformed(String),
    #[error("CONNECT line longer than {MAX_CONNECT_LINE} bytes")]
    TooLong,
    #[error("client closed before finishing the CONNECT line")]
    Eof,
    #[error("client socket: {0}")]
    Io(#[from] io::Error),
}

/// Progress of a handshake after the socket became readable.
#[derive(Debug)]
pub enum HandshakeStep {
    /// Need more bytes.
    Pending,
    /// A valid line asked for this guest port.
    Done(u32),
    Failed(HandshakeError),
}

/// A host client that connected to the device's socket but has not finished its line.
#[derive(Debug)]
pub struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
    deadline: Instant,
}

impl Handshake {
    pub fn new(stream: UnixStream) -> Self {
        Handshake {
            stream,
            line: Vec::with_capacity(MAX_CONNECT_LINE),
            deadline: Instant::now() + HANDSHAKE_TIMEOUT,
        }
    }

    pub fn into_stream(self) -> UnixStream {
        self.stream
    }

    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }

    /// Reads what is available. One byte at a time so nothing after the newline is
    /// consumed: those bytes are stream data for the guest.
    pub fn advance(&mut self) -> HandshakeStep {
        let mut byte = [0u8; 1];
        loop {
            match self.stream.read(&mut byte) {
                Ok(0) => return HandshakeStep::Failed(HandshakeError::Eof),
                Ok(_) => {
                    if byte[0] == b'\n' {
                        return match parse_connect_line(&self.line) {
                            Ok(port) => HandshakeStep::Done(port),
                            Err(e) => HandshakeStep::Failed(e),
                        };
                    }
                    if self.line.len() + 1 >= MAX_CONNECT_LINE {
                        return HandshakeStep::Failed(HandshakeError::TooLong);
                    }
                    self.line.push(byte[0]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return HandshakeStep::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return HandshakeStep::Failed(e.into()),
            }
        }
    }
}

/// Parses `CONNECT <port>` (without the newline). The keyword is case-insensitive and a
/// trailing `\r` is tolerated, as Firecracker does; anything else is rejected.
pub fn parse_connect_line(line: &[u8]) -> Result<u32, HandshakeError> {
    let malformed = || HandshakeError::Malformed(String::from_utf8_lossy(line).into_owned());
    let text = std::str::from_utf8(line).map_err(|_| malformed())?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    let mut words = text.split_ascii_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(kw), Some(port), None) if kw.eq_ignore_ascii_case("connect") => {
            if !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed());
            }
            port.parse::<u32>().map_err(|_| malformed())
        }
        _ => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_lines() {
        assert_eq!(parse_connect_line(b"CONNECT 52").unwrap(), 52);
        assert_eq!(
            parse_connect_line(b"connect 4294967295\r").unwrap(),
            u32::MAX
        );
    }

    #[test]
    fn rejects_malformed_lines() {
        for bad in [
            &b""[..],
            b"CONNECT",
            b"CONNECT -1",
            b"CONNECT +1",
            b"CONNECT 4294967296",
            b"CONNECT 1 2",
            b"LISTEN 1",
            b"CONNECT 0x10",
            b"\xff\xfe",
        ] {
            assert!(parse_connect_line(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn stops_at_newline_and_leaves_the_rest() {
        use std::io::Write;
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut hs = Handshake::new(a);
        b.write_all(b"CONN").unwrap();
        assert!(matches!(hs.advance(), HandshakeStep::Pending));
        b.write_all(b"ECT 7\nrest").unwrap();
        assert!(matches!(hs.advance(), HandshakeStep::Done(7)));
        let mut rest = [0u8; 4];
        hs.into_stream().read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"rest");
    }

    #[test]
    fn overlong_line_fails() {
        use std::io::Write;
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut hs = Handshake::new(a);
        b.write_all(&[b'A'; 100]).unwrap();
        assert!(matches!(
            hs.advance(),
            HandshakeStep::Failed(HandshakeError::TooLong)
        ));
    }
}
