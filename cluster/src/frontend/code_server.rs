//! The frontend's side of code distribution: workers fetch packages by digest over a
//! link listener that admits only cluster workers.

use crate::link::body::LinkBody;
use crate::link::transport::{self, respond, LinkRequest, LinkResponse};
use crate::link::CODE_PATH;
use crate::tls::{self, LinkStats};
use http::{Method, StatusCode};
use std::sync::Arc;

/// Where packages come from on the frontend. Blocking (decrypts from the store).
pub trait CodeLookup: Send + Sync {
    /// The package whose `CodeSha256` has hex form `digest_hex`, if this frontend
    /// dispatched it.
    fn package(&self, digest_hex: &str) -> Option<Vec<u8>>;
}

/// Serves workers' code fetches on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    lookup: Arc<dyn CodeLookup>,
    stats: Arc<LinkStats>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, lookup, stats) = (acceptor.clone(), lookup.clone(), stats.clone());
        tokio::spawn(async move {
            let accepted = tokio::time::timeout(
                crate::link::HANDSHAKE_TIMEOUT,
                tls::accept(&acceptor, tcp, &stats),
            );
            let Ok(Ok((stream, peer))) = accepted.await else {
                return;
            };
            tracing::debug!(worker = %peer.id, "code fetch connection");
            let stream = tls::Counted::new(stream, stats.clone());
            let _ = transport::serve(stream, move |req| handle(lookup.clone(), req)).await;
        });
    }
}

async fn handle(lookup: Arc<dyn CodeLookup>, req: LinkRequest) -> LinkResponse {
    let digest = match (req.method(), req.uri().path().strip_prefix(CODE_PATH)) {
        (&Method::GET, Some(d)) if d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()) => {
            d.to_owned()
        }
        _ => return respond(StatusCode::NOT_FOUND, "no such link route"),
    };
    match tokio::task::spawn_blocking(move || lookup.package(&digest)).await {
        Ok(Some(zip)) => http::Response::new(LinkBody::full(zip)),
        Ok(None) => respond(StatusCode::NOT_FOUND, "unknown code digest"),
        Err(_) => respond(StatusCode::INTERNAL_SERVER_ERROR, "code lookup failed"),
    }
}
