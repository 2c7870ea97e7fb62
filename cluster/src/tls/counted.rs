//! A stream wrapper that counts a link's plaintext bytes and bad records.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::link::is_bad_record;
use super::{LinkStats, RefusalReason};

/// Wraps an established TLS stream (`tokio_rustls::{server,client}::TlsStream`): counts
/// the bytes read and written into [`LinkStats`], and a read that fails because a record
/// did not decrypt or parse (rustls: `InvalidData` carrying `DecryptError` /
/// `InvalidMessage`; tampering or corruption on the wire) as [`RefusalReason::BadRecord`],
/// once per stream. After a bad record the TLS session is dead: further reads fail at
/// once (`InvalidData`) instead of waiting on the socket.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    stats: Arc<LinkStats>,
    bad_record_counted: bool,
}

impl<S> Counted<S> {
    /// Counts `inner`'s traffic into `stats`.
    pub fn new(inner: S, stats: Arc<LinkStats>) -> Self {
        Self {
            inner,
            stats,
            bad_record_counted: false,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped stream, mutably (bytes moved through it directly are not counted).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the stream.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.bad_record_counted {
            let dead = "link closed after a bad record";
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, dead)));
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &poll {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len().saturating_sub(before);
                this.stats.add_bytes_in(n as u64);
            }
            Poll::Ready(Err(e)) if !this.bad_record_counted && is_bad_record(e) => {
                this.bad_record_counted = true;
                tracing::warn!(error = %e, "bad record on a link");
                this.stats.record_refusal(RefusalReason::BadRecord);
            }
            _ => {}
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            this.stats.add_bytes_out(*n as u64);
        }
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &poll {
            this.stats.add_bytes_out(*n as u64);
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
