//! HTTP/2 on an established (TLS) stream: serving one connection (the client end is
//! [`super::client`]). Windows are sized for multi-megabyte payloads, and keep-alive
//! pings notice a peer that vanished without closing the connection.

use super::body::LinkBody;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

pub(crate) const STREAM_WINDOW: u32 = 4 << 20;
pub(crate) const CONNECTION_WINDOW: u32 = 16 << 20;
/// A peer silent this long after a ping is gone (a cut network, a frozen host).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

pub type LinkRequest = http::Request<Incoming>;
pub type LinkResponse = http::Response<LinkBody>;

/// Serves HTTP/2 on `io` until the peer goes away; `handle` answers each request.
pub async fn serve<S, H, F>(io: S, handle: H) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(LinkRequest) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = LinkResponse> + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let h = handle.clone();
        async move { Ok::<_, Infallible>(h(req).await) }
    });
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(1024)
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc)
        .await
}

/// A plain response.
pub fn respond(status: http::StatusCode, body: impl Into<Bytes>) -> LinkResponse {
    let mut r = http::Response::new(LinkBody::full(body));
    *r.status_mut() = status;
    r
}
