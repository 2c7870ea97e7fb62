//! The frontend's side of code distribution: workers fetch packages by digest, and
//! container images' chunks by id, over a link listener that admits only cluster
//! workers.

use crate::link::body::LinkBody;
use crate::link::transport::{self, respond, LinkRequest, LinkResponse};
use crate::link::{CHUNK_PATH, CODE_PATH};
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
    /// A container image's chunk, sealed as stored, by its hex id.
    fn chunk(&self, id_hex: &str) -> Result<Option<Vec<u8>>, LookupError>;
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

/// `GET /v1/code/<64 hex>` or `GET /v1/chunk/<64 hex>`.
fn route(req: &LinkRequest) -> Option<(bool, String)> {
    let path = req.uri().path();
    let (chunk, hex) = match path.strip_prefix(CODE_PATH) {
        Some(hex) => (false, hex),
        None => (true, path.strip_prefix(CHUNK_PATH)?),
    };
    let ok = req.method() == Method::GET
        && hex.len() == 64
        && hex.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| (chunk, hex.to_owned()))
}

async fn handle(lookup: Arc<dyn CodeLookup>, req: LinkRequest) -> LinkResponse {
    let Some((chunk, hex)) = route(&req) else {
        return respond(StatusCode::NOT_FOUND, "no such link route");
    };
    let found = tokio::task::spawn_blocking(move || match chunk {
        true => lookup.chunk(&hex),
        false => lookup.package(&hex),
    });
    match found.await {
        Ok(Ok(Some(bytes))) => http::Response::new(LinkBody::full(bytes)),
        Ok(Ok(None)) => respond(StatusCode::NOT_FOUND, "unknown code digest or chunk"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "serving code to a worker");
            respond(StatusCode::SERVICE_UNAVAILABLE, "code store unavailable")
        }
        Err(_) => respond(StatusCode::SERVICE_UNAVAILABLE, "code lookup failed"),
    }
}
