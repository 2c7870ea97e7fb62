//! The frontend's side of code distribution: workers fetch packages by digest over a
//! link listener that admits only cluster workers.

use crate::link::body::LinkBody;
use crate::link::transport::{self, respond, LinkRequest, LinkResponse};
use crate::link::CODE_PATH;
use crate::tls::{self, LinkStats};
use http::{Method, StatusCode};
use std::sync::Arc;

/// Why a package the frontend knows could not be read (its store failed): the worker
/// hears 503 and may try again, unlike 404 for a digest the frontend never sent.
pub type LookupError = Box<dyn std::error::Error + Send + Sync>;

/// Where packages come from on the frontend. Blocking (decrypts from the store).
pub trait CodeLookup: Send + Sync {
    /// The package whose `CodeSha256` has hex form `digest_hex`, if this frontend
    /// dispatched it.
    fn package(&self, digest_hex: &str) -> Result<Option<Vec<u8>>, LookupError>;
}

/// Serves workers' code fetches on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    lookup: Arc<dyn CodeLookup>,
    stats: Arc<LinkStats>,
) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(
        crate::link::MAX_PENDING_HANDSHAKES,
    ));
    loop {
        let Some(tcp) = crate::link::accept_tcp(&listener).await else {
            continue;
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            continue; // dropped: too many handshakes in progress
        };
        let (acceptor, lookup, stats) = (acceptor.clone(), lookup.clone(), stats.clone());
        tokio::spawn(async move {
            let accepted = tokio::time::timeout(
                crate::link::HANDSHAKE_TIMEOUT,
                tls::accept(&acceptor, tcp, &stats),
            );
            let accepted = accepted.await;
            drop(permit);
            let Ok(Ok((stream, peer))) = accepted else {
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
        Ok(Ok(Some(zip))) => http::Response::new(LinkBody::full(zip)),
        Ok(Ok(None)) => respond(StatusCode::NOT_FOUND, "unknown code digest"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "serving code to a worker");
            respond(StatusCode::SERVICE_UNAVAILABLE, "code store unavailable")
        }
        Err(_) => respond(StatusCode::SERVICE_UNAVAILABLE, "code lookup failed"),
    }
}
