//! Connecting to the host: AF_VSOCK in the guest, a Unix socket as a host process.

use crate::config::HostTransport;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, VsockAddr};
use runtime_api::protocol::{Transport, HOST_CID};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const RETRY_DELAY: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("connect to host over {what}: {source}")]
    Connect { what: String, source: io::Error },
}

/// A connected AF_VSOCK stream. `File` gives read/write on the socket fd.
pub struct VsockStream(File);

impl Read for VsockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for VsockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for VsockStream {
    fn try_clone_transport(&self) -> io::Result<Self> {
        self.0.try_clone().map(VsockStream)
    }

    fn shutdown_transport(&self) -> io::Result<()> {
        socket::shutdown(self.0.as_raw_fd(), socket::Shutdown::Both).map_err(io::Error::from)
    }
}

/// Either kind of host connection, so the rest of guest-init is transport-agnostic.
pub enum HostStream {
    Unix(UnixStream),
    Vsock(VsockStream),
}

impl Read for HostStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            HostStream::Unix(s) => s.read(buf),
            HostStream::Vsock(s) => s.read(buf),
        }
    }
}

impl Write for HostStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            HostStream::Unix(s) => s.write(buf),
            HostStream::Vsock(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            HostStream::Unix(s) => s.flush(),
            HostStream::Vsock(s) => s.flush(),
        }
    }
}

impl AsRawFd for HostStream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            HostStream::Unix(s) => s.as_raw_fd(),
            HostStream::Vsock(s) => s.0.as_raw_fd(),
        }
    }
}

impl Transport for HostStream {
    fn try_clone_transport(&self) -> io::Result<Self> {
        Ok(match self {
            HostStream::Unix(s) => HostStream::Unix(s.try_clone()?),
            HostStream::Vsock(s) => HostStream::Vsock(s.try_clone_transport()?),
        })
    }

    fn shutdown_transport(&self) -> io::Result<()> {
        match self {
            HostStream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            HostStream::Vsock(s) => s.shutdown_transport(),
        }
    }
}

fn connect_vsock(port: u32) -> io::Result<VsockStream> {
    let fd: OwnedFd = socket::socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::connect(fd.as_raw_fd(), &VsockAddr::new(HOST_CID, port))?;
    Ok(VsockStream(File::from(fd)))
}

/// Connects to the host, retrying for up to `patience` while its listener is not up.
pub fn connect(
    transport: &HostTransport,
    patience: Duration,
) -> Result<HostStream, TransportError> {
    let started = Instant::now();
    loop {
        let attempt = match transport {
            HostTransport::Unix(path) => UnixStream::connect(path).map(HostStream::Unix),
            HostTransport::Vsock { port } => connect_vsock(*port).map(HostStream::Vsock),
        };
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) if retryable(&e) && started.elapsed() < patience => {
                std::thread::sleep(RETRY_DELAY);
            }
            Err(source) => {
                return Err(TransportError::Connect {
                    what: describe(transport),
                    source,
                })
            }
        }
    }
}

fn retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::TimedOut
            | io::ErrorKind::Interrupted
    )
}

fn describe(t: &HostTransport) -> String {
    match t {
        HostTransport::Unix(p) => format!("unix socket {}", p.display()),
        HostTransport::Vsock { port } => format!("vsock {HOST_CID}:{port}"),
    }
}
