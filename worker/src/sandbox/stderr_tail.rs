//! Keeps the last few KiB a sandbox process wrote to stderr or its console, for error
//! messages when it fails to start.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;

/// Enough for a guest kernel's boot messages with `quiet` and guest-init's banner.
const KEEP: usize = 16 * 1024;

#[derive(Clone, Default)]
pub struct StderrTail {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl StderrTail {
    /// Drains `fd` in a background task (until EOF).
    pub fn spawn(fd: Option<OwnedFd>) -> Self {
        let tail = Self::default();
        let Some(fd) = fd else { return tail };
        let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
            return tail;
        };
        let buf = tail.buf.clone();
        tokio::spawn(async move {
            let mut chunk = vec![0u8; 4096];
            while let Ok(n) = rx.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                b.extend_from_slice(&chunk[..n]);
                if b.len() > KEEP {
                    let cut = b.len() - KEEP;
                    b.drain(..cut);
                }
            }
        });
        tail
    }

    pub fn text(&self) -> String {
        let b = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&b).trim().to_string()
    }
}
