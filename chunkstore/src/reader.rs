//! Reads any byte range of an image, loading each chunk from its source (the local
//! store, or a worker over [`crate::wire`]) on first use and checking it (id, then tag)
//! before a byte of it is returned. Decrypted chunks are kept in a small
//! most-recently-used cache, so a guest's sequential reads open each chunk once.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::convergent::{self, ChunkId, ChunkKey, OpenError};
use crate::manifest::{ChunkRef, ImageManifest};
use crate::store::{ChunkStore, StoreError};

use crate::CHUNK_SIZE;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("chunk {index} of the image: {source}")]
    Open {
        index: usize,
        #[source]
        source: OpenError,
    },
    #[error(transparent)]
    Fetch(#[from] crate::wire::FetchError),
    /// A source that copies chunks from elsewhere (a worker host's, from its frontend)
    /// could not get them.
    #[error("copying image chunks from {from}: {error}")]
    Copy {
        from: String,
        transient: bool,
        #[source]
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("chunk {index} of the image opened to {got} bytes, its manifest says {want}")]
    Length {
        index: usize,
        got: usize,
        want: usize,
    },
}

impl ReadError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(e) => e.is_transient(),
            Self::Fetch(e) => e.is_transient(),
            Self::Copy { transient, .. } => *transient,
            Self::Open { .. } | Self::Length { .. } => false,
        }
    }
}

/// Where an image's sealed chunks come from. The bytes are unchecked: the reader
/// checks them against the chunk's id and key.
pub trait ChunkSource {
    fn sealed(&mut self, id: &ChunkId) -> Result<Vec<u8>, ReadError>;
}

impl ChunkSource for Arc<ChunkStore> {
    fn sealed(&mut self, id: &ChunkId) -> Result<Vec<u8>, ReadError> {
        Ok(self.get(id)?)
    }
}

pub struct ImageReader<S: ChunkSource = Arc<ChunkStore>> {
    source: S,
    manifest: ImageManifest,
    cache: VecDeque<(usize, Arc<Vec<u8>>)>,
    cache_chunks: usize,
    chunks_loaded: u64,
}

impl<S: ChunkSource> ImageReader<S> {
    /// `cache_chunks`: how many decrypted chunks to keep (at least one).
    pub fn new(source: S, manifest: ImageManifest, cache_chunks: usize) -> Self {
        Self {
            source,
            manifest,
            cache: VecDeque::new(),
            cache_chunks: cache_chunks.max(1),
            chunks_loaded: 0,
        }
    }

    pub fn size(&self) -> u64 {
        self.manifest.size()
    }

    /// How many chunks were read from the store and opened so far.
    pub fn chunks_loaded(&self) -> u64 {
        self.chunks_loaded
    }

    /// Fills `buf` from `offset`; returns fewer bytes only at the end of the image.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            if at >= self.size() {
                break;
            }
            let index = (at / CHUNK_SIZE as u64) as usize;
            let within = (at % CHUNK_SIZE as u64) as usize;
            let out = &mut buf[done..];
            let n = match &self.manifest.chunks()[index] {
                ChunkRef::Zeros { len } => {
                    let n = out.len().min(*len as usize - within);
                    out[..n].fill(0);
                    n
                }
                ChunkRef::Stored { id, key, len } => {
                    let (id, key, len) = (*id, key.clone(), *len as usize);
                    let chunk = self.chunk(index, &id, &key, len)?;
                    let n = out.len().min(chunk.len() - within);
                    out[..n].copy_from_slice(&chunk[within..within + n]);
                    n
                }
            };
            done += n;
        }
        Ok(done)
    }

    fn chunk(
        &mut self,
        index: usize,
        id: &ChunkId,
        key: &ChunkKey,
        len: usize,
    ) -> Result<Arc<Vec<u8>>, ReadError> {
        if let Some(pos) = self.cache.iter().position(|(i, _)| *i == index) {
            let hit = self.cache.remove(pos).map(|(_, c)| c);
            if let Some(c) = hit {
                self.cache.push_front((index, c.clone()));
                return Ok(c);
            }
        }
        let sealed = self.source.sealed(id)?;
        let plain = convergent::open(id, key, sealed)
            .map_err(|source| ReadError::Open { index, source })?;
        if plain.len() != len {
            return Err(ReadError::Length {
                index,
                got: plain.len(),
                want: len,
            });
        }
        self.chunks_loaded += 1;
        let plain = Arc::new(plain);
        self.cache.push_front((index, plain.clone()));
        self.cache.truncate(self.cache_chunks);
        Ok(plain)
    }
}
