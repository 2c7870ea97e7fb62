//! The client end of a link connection, on the `h2` crate directly. The caller's own
//! task queues a request's headers and its whole body together and awaits the answer
//! on the connection's shared state, so they leave in one write and the answer wakes
//! the caller at once. (hyper's client spawns a task per request to await the answer
//! and often another to pipe the body, which sends the body in a second write: about
//! 20 µs more per round trip on a quiet machine, more under load.)

use super::transport::{CONNECTION_WINDOW, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, STREAM_WINDOW};
use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Ping, PingPong, Reason, RecvStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// Why an exchange on the link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Nothing reached the peer's handler: the connection was closed or going away
    /// before the request was taken, or the peer refused the stream. Safe to retry.
    #[error("not sent: {0}")]
    Unsent(h2::Error),
    /// The request went out and the exchange broke: the peer may have acted on it.
    #[error("{0}")]
    Broken(h2::Error),
    #[error("the answer is over {0} bytes")]
    TooLarge(usize),
}

/// A multiplexed client connection; clones share it.
#[derive(Clone)]
pub struct LinkClient {
    send: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

impl LinkClient {
    /// Opens HTTP/2 on `io`. The connection runs on its own task, pinging the peer,
    /// until it fails, the peer stops answering pings, or every clone is dropped;
    /// then every open exchange on it fails.
    pub async fn handshake<S>(io: S) -> Result<Self, h2::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, mut conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(io)
            .await?;
        let pings = conn.ping_pong();
        let closed = Arc::new(AtomicBool::new(false));
        let done = closed.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = &mut conn => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "link connection ended");
                    }
                }
                why = keepalive(pings) => tracing::debug!(%why, "link connection dropped"),
            }
            // Dropping the connection fails every exchange still open on it.
            done.store(true, Ordering::Release);
        });
        Ok(Self { send, closed })
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sends `req` with `body` as its whole body and awaits the answer's head.
    pub async fn send(
        &self,
        req: http::Request<()>,
        body: Option<Bytes>,
    ) -> Result<http::Response<LinkRecv>, LinkError> {
        let mut send = self.send.clone();
        std::future::poll_fn(|cx| send.poll_ready(cx))
            .await
            .map_err(LinkError::Unsent)?;
        let body = body.filter(|b| !b.is_empty());
        let (answer, mut stream) = send
            .send_request(req, body.is_none())
            .map_err(LinkError::Unsent)?;
        if let Some(b) = body {
            // Buffered by h2 and sent as the peer's window allows.
            stream.send_data(b, true).map_err(LinkError::Broken)?;
        }
        let resp = answer.await.map_err(|e| {
            // A stream the peer refused or left unprocessed when going away never
            // reached a handler.
            if e.is_go_away() || e.reason() == Some(Reason::REFUSED_STREAM) {
                LinkError::Unsent(e)
            } else {
                LinkError::Broken(e)
            }
        })?;
        Ok(resp.map(LinkRecv))
    }
}

/// Pings every [`KEEPALIVE_INTERVAL`]; returns why the peer counts as gone.
async fn keepalive(pings: Option<PingPong>) -> String {
    let Some(mut pings) = pings else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(KEEPALIVE_INTERVAL).await;
        match tokio::time::timeout(KEEPALIVE_TIMEOUT, pings.ping(Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("ping: {e}"),
            Err(_) => return "the peer stopped answering pings".into(),
        }
    }
}

/// An answer's body; what is read is handed back to the peer's flow-control window.
pub struct LinkRecv(RecvStream);

impl LinkRecv {
    /// The next piece of the body, or `None` at its end.
    pub async fn next(&mut self) -> Option<Result<Bytes, LinkError>> {
        let data = self.0.data().await?;
        Some(
            data.inspect(|d| {
                let _ = self.0.flow_control().release_capacity(d.len());
            })
            .map_err(LinkError::Broken),
        )
    }

    /// The whole body, refusing more than `limit` bytes.
    pub async fn read_all(mut self, limit: usize) -> Result<Vec<u8>, LinkError> {
        let mut out = Vec::new();
        while let Some(d) = self.next().await {
            let d = d?;
            if out.len() + d.len() > limit {
                return Err(LinkError::TooLarge(limit));
            }
            out.extend_from_slice(&d);
        }
        Ok(out)
    }
}
