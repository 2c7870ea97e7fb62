//! Guest-initiated connections: listening on `<uds>_<port>`.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Error;

/// The socket path a guest connection to host port `port` is forwarded to.
pub fn listener_path(uds_path: &Path, port: u32) -> PathBuf {
    let mut s = uds_path.as_os_str().to_owned();
    s.push(format!("_{port}"));
    PathBuf::from(s)
}

/// Accepts guest connections to host port `port`. Removes its socket file on drop.
#[derive(Debug)]
pub struct HybridListener {
    listener: UnixListener,
    path: PathBuf,
}

/// Binds `<uds_path>_<port>`; fails with `AddrInUse` if the file exists. (Probing
/// whether an existing socket is live would queue a bogus connection on it.)
pub fn listen(uds_path: &Path, port: u32) -> Result<HybridListener, Error> {
    let path = listener_path(uds_path, port);
    let listener = UnixListener::bind(&path).map_err(|source| Error::Bind {
        path: path.clone(),
        source,
    })?;
    Ok(HybridListener { listener, path })
}

/// Like [`listen`], but first removes whatever file is at `<uds_path>_<port>` (a stale
/// socket of a previous run). Only for callers that own the path.
pub fn listen_replacing(uds_path: &Path, port: u32) -> Result<HybridListener, Error> {
    let path = listener_path(uds_path, port);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(Error::Bind { path, source }),
    }
    listen(uds_path, port)
}

impl HybridListener {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Blocks until the guest connects.
    pub fn accept(&self) -> Result<UnixStream, Error> {
        self.listener
            .accept()
            .map(|(s, _)| s)
            .map_err(|source| Error::Accept {
                path: self.path.clone(),
                source,
            })
    }

    /// Waits at most `timeout` for a guest connection.
    pub fn accept_timeout(&self, timeout: Duration) -> Result<UnixStream, Error> {
        let accept_err = |source| Error::Accept {
            path: self.path.clone(),
            source,
        };
        self.listener.set_nonblocking(true).map_err(accept_err)?;
        let start = Instant::now();
        let result = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s.set_nonblocking(false).map(|_| s).map_err(accept_err),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if start.elapsed() >= timeout {
                        break Err(Error::AcceptTimeout {
                            path: self.path.clone(),
                            waited: start.elapsed(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(accept_err(e)),
            }
        };
        self.listener.set_nonblocking(false).map_err(accept_err)?;
        result
    }

    pub fn inner(&self) -> &UnixListener {
        &self.listener
    }
}

impl AsRawFd for HybridListener {
    fn as_raw_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }
}

impl Drop for HybridListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
