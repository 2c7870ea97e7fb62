//! An image a microVM reads lazily: the worker serves its chunks over the chunk link
//! ([`chunkstore::wire`]) to the sandbox's monitor, which decrypts each on first use.
//! A chunk this host lacks is copied from the frontend when the guest first reads it,
//! so a cold start moves only the chunks the function touches.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chunkstore::wire::{self, FrameKind, HEADER_LEN};
use chunkstore::{ChunkId, ChunkStore, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{ChunkFetch, ImagePackage};

/// Where this host's missing chunks come from: the frontend at `source`.
#[derive(Clone)]
pub struct RemoteChunks {
    pub fetch: Arc<dyn ChunkFetch>,
    pub source: String,
}

/// One image package, ready to be served to any number of monitors.
pub struct LazyImage {
    pub package: ImagePackage,
    /// The chunks a monitor may ask for: this image's, nothing else of the store.
    ids: HashSet<ChunkId>,
    local: Arc<ChunkStore>,
    remote: Option<RemoteChunks>,
}

impl std::fmt::Debug for LazyImage {
    /// Never the manifest: it holds the chunk keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyImage")
            .field("image", &self.package.run.image)
            .field("bytes", &self.package.manifest.size())
            .finish_non_exhaustive()
    }
}

impl LazyImage {
    pub fn new(
        package: ImagePackage,
        local: Arc<ChunkStore>,
        remote: Option<RemoteChunks>,
    ) -> Self {
        Self {
            ids: package.manifest.stored_ids().collect(),
            package,
            local,
            remote,
        }
    }

    /// How many distinct chunks the image has in the store.
    pub fn stored_chunks(&self) -> usize {
        self.ids.len()
    }

    /// Serves one monitor until it hangs up: the manifest first, then each chunk it
    /// asks for, counted in `served`. A malformed frame ends the link (the monitor's
    /// reads then fail).
    pub async fn serve(
        self: Arc<Self>,
        mut stream: UnixStream,
        served: Arc<AtomicU64>,
    ) -> Result<(), wire::FetchError> {
        let manifest = self.package.manifest.encode();
        stream
            .write_all(&wire::frame(FrameKind::Manifest, &manifest))
            .await?;
        drop(manifest);
        loop {
            let mut h = [0u8; HEADER_LEN];
            match stream.read_exact(&mut h).await {
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                other => other?,
            };
            let (kind, len) = wire::parse_header(&h)?;
            if kind != FrameKind::Request || len != 32 {
                return Err(wire::FetchError::Unexpected {
                    expected: "a 32-byte chunk request",
                    got: kind,
                });
            }
            let mut id = ChunkId([0u8; 32]);
            stream.read_exact(&mut id.0).await?;
            let reply = match self.chunk(&id).await {
                Ok(sealed) => {
                    served.fetch_add(1, Ordering::Relaxed);
                    wire::frame(FrameKind::Chunk, &sealed)
                }
                Err((message, transient)) => {
                    wire::frame(FrameKind::Error, &wire::error_payload(&message, transient))
                }
            };
            stream.write_all(&reply).await?;
        }
    }

    /// The sealed bytes of `id`: this host's copy, or the frontend's, kept here.
    async fn chunk(&self, id: &ChunkId) -> Result<Vec<u8>, (String, bool)> {
        if !self.ids.contains(id) {
            return Err((format!("chunk {id} is not part of this image"), false));
        }
        let (store, id) = (self.local.clone(), *id);
        let res = tokio::task::spawn_blocking(move || store.get(&id))
            .await
            .map_err(|e| (e.to_string(), true))?;
        match (res, &self.remote) {
            (Err(StoreError::Missing(_)), Some(remote)) => {
                self.copy_from_frontend(remote, id).await
            }
            (res, _) => res.map_err(|e| (e.to_string(), e.is_transient())),
        }
    }

    /// Copies chunk `id` from the frontend into this host's store (which checks it
    /// against its id) and returns its sealed bytes.
    async fn copy_from_frontend(
        &self,
        remote: &RemoteChunks,
        id: ChunkId,
    ) -> Result<Vec<u8>, (String, bool)> {
        let err = |e: crate::code::CodeError| (e.to_string(), e.is_transient());
        let mut sealed = remote
            .fetch
            .fetch_chunks(&remote.source, &[id])
            .await
            .map_err(err)?;
        let bytes = sealed
            .pop()
            .filter(|_| sealed.is_empty())
            .ok_or_else(|| (format!("{} sent no chunk {id}", remote.source), true))?;
        let store = self.local.clone();
        tokio::task::spawn_blocking(move || store.put_copy(&id, &bytes).map(|_| bytes))
            .await
            .map_err(|e| (e.to_string(), true))?
            .map_err(|e| (e.to_string(), e.is_transient()))
    }
}
