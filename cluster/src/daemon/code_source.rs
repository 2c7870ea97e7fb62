//! The worker's code source over the link: fetches a package by digest, and a container
//! image's chunks by id, from the frontend that sent the invoke (its link address
//! travels in the code reference), over a TLS connection that admits only cluster
//! frontends.

use crate::link::client::{LinkClient, LinkError};
use crate::link::{CHUNK_PATH, CODE_PATH};
use crate::tls::{self, LinkStats};
use chunkstore::ChunkId;
use std::sync::Arc;
use std::time::Duration;
use worker::code::image::ChunkFetch;
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

    /// A link connection to the frontend at `source`.
    async fn connect(&self, source: &str) -> Result<LinkClient, CodeError> {
        let unreachable = |what: &str, e: &dyn std::fmt::Display| unreachable(what, source, e);
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(source))
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
        LinkClient::handshake(stream)
            .await
            .map_err(|e| unreachable("HTTP/2 with", &e))
    }

    /// `GET path` on `send`, the body read up to `limit` bytes; `None` for 404.
    async fn get(
        send: &LinkClient,
        source: &str,
        path: &str,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, CodeError> {
        let unreachable = |what: &str, e: &dyn std::fmt::Display| unreachable(what, source, e);
        let req = http::Request::get(format!("http://link{path}"))
            .body(())
            .map_err(|e| unreachable("request to", &e))?;
        let resp = send
            .send(req, None)
            .await
            .map_err(|e| unreachable("fetching from", &e))?;
        match resp.status() {
            http::StatusCode::OK => {}
            http::StatusCode::NOT_FOUND => return Ok(None),
            s => return Err(unreachable("fetching from", &s)),
        }
        let body = resp.into_body().read_all(limit).await;
        body.map(Some).map_err(|e| match e {
            LinkError::TooLarge(l) => CodeError::TooLarge { limit: l as u64 },
            other => unreachable("reading from", &other),
        })
    }

    async fn fetch_once(&self, code: &CodeRef) -> Result<Vec<u8>, CodeError> {
        let hex = digest_hex(&code.sha256)?;
        let send = self.connect(&code.source).await?;
        Self::get(
            &send,
            &code.source,
            &format!("{CODE_PATH}{hex}"),
            MAX_PACKAGE_BYTES,
        )
        .await?
        .ok_or_else(|| CodeError::NotFound(code.sha256.clone()))
    }

    /// Every chunk of `ids` over one connection, in order.
    async fn chunks_once(&self, source: &str, ids: &[ChunkId]) -> Result<Vec<Vec<u8>>, CodeError> {
        let send = self.connect(source).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let path = format!("{CHUNK_PATH}{}", id.to_hex());
            let sealed = Self::get(&send, source, &path, chunkstore::convergent::MAX_SEALED_LEN)
                .await?
                .ok_or_else(|| CodeError::NotFound(format!("image chunk {id}")))?;
            out.push(sealed);
        }
        Ok(out)
    }
}

fn unreachable(what: &str, source: &str, e: &dyn std::fmt::Display) -> CodeError {
    CodeError::Unreachable(format!("{what} {source}: {e}"))
}

impl ChunkFetch for LinkCodeSource {
    fn fetch_chunks<'a>(
        &'a self,
        source: &'a str,
        ids: &'a [ChunkId],
    ) -> BoxFuture<'a, Result<Vec<Vec<u8>>, CodeError>> {
        Box::pin(async move {
            tokio::time::timeout(FETCH_TIMEOUT, self.chunks_once(source, ids))
                .await
                .map_err(|_| CodeError::Unreachable(format!("fetching from {source} timed out")))?
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
