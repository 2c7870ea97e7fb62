//! The worker's code source over the link: fetches a package by digest from the
//! frontend that sent the invoke (its link address travels in the code reference),
//! over a TLS connection that admits only cluster frontends.

use crate::link::client::{LinkClient, LinkError};
use crate::link::CODE_PATH;
use crate::tls::{self, LinkStats};
use std::sync::Arc;
use std::time::Duration;
use worker::code::{digest_hex, CodeError, CodeRef, CodeSource};
use worker::sandbox::BoxFuture;

/// Largest package a worker accepts (Lambda's 50 MB upload limit, with room).
pub const MAX_PACKAGE_BYTES: usize = 70 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

pub struct LinkCodeSource {
    connector: tokio_rustls::TlsConnector,
    stats: Arc<LinkStats>,
}

impl LinkCodeSource {
    pub fn new(config: Arc<rustls::ClientConfig>, stats: Arc<LinkStats>) -> Self {
        Self {
            connector: tokio_rustls::TlsConnector::from(config),
            stats,
        }
    }

    async fn fetch_once(&self, code: &CodeRef) -> Result<Vec<u8>, CodeError> {
        let hex = digest_hex(&code.sha256)?;
        let unreachable = |what: &str, e: &dyn std::fmt::Display| {
            CodeError::Unreachable(format!("{what} {}: {e}", code.source))
        };
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(&code.source),
        )
        .await
        .map_err(|e| unreachable("connecting to", &e))?
        .map_err(|e| unreachable("connecting to", &e))?;
        let _ = tcp.set_nodelay(true);
        let (stream, _peer) = tokio::time::timeout(
            crate::link::HANDSHAKE_TIMEOUT,
            tls::connect(&self.connector, tcp, &self.stats),
        )
        .await
        .map_err(|e| unreachable("TLS with", &e))?
        .map_err(|e| unreachable("TLS with", &e))?;
        let stream = tls::Counted::new(stream, self.stats.clone());
        let send = LinkClient::handshake(stream)
            .await
            .map_err(|e| unreachable("HTTP/2 with", &e))?;
        let req = http::Request::get(format!("http://link{CODE_PATH}{hex}"))
            .body(())
            .map_err(|e| unreachable("request to", &e))?;
        let resp = send
            .send(req, None)
            .await
            .map_err(|e| unreachable("fetching from", &e))?;
        match resp.status() {
            http::StatusCode::OK => {}
            http::StatusCode::NOT_FOUND => return Err(CodeError::NotFound(code.sha256.clone())),
            s => return Err(unreachable("fetching from", &s)),
        }
        resp.into_body()
            .read_all(MAX_PACKAGE_BYTES)
            .await
            .map_err(|e| match e {
                LinkError::TooLarge(l) => CodeError::TooLarge { limit: l as u64 },
                other => unreachable("reading from", &other),
            })
    }
}

impl CodeSource for LinkCodeSource {
    fn fetch<'a>(&'a self, code: &'a CodeRef) -> BoxFuture<'a, Result<Vec<u8>, CodeError>> {
        Box::pin(async move {
            tokio::time::timeout(FETCH_TIMEOUT, self.fetch_once(code))
                .await
                .map_err(|_| {
                    CodeError::Unreachable(format!("fetching from {} timed out", code.source))
                })?
        })
    }
}
