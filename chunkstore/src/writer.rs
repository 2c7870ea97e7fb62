//! Cuts an image into [`CHUNK_SIZE`] chunks and puts each into the store: all-zero
//! chunks (most of a filesystem image's free space) are recorded, not stored; a chunk
//! the store already holds, from this image or any other, is stored once.

use std::io::{self, Read};

use crate::convergent::{self, Salt, SealError};
use crate::manifest::{ChunkRef, ImageManifest, ManifestError};
use crate::store::{ChunkStore, StoreError};
use crate::CHUNK_SIZE;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("reading the image: {0}")]
    Read(#[source] io::Error),
    #[error("the image is over the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

impl WriteError {
    /// Whether writing again may succeed (the store's I/O); bad input won't.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(e) => e.is_transient(),
            Self::Read(_) => true,
            _ => false,
        }
    }
}

/// What writing one image did to the store.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    pub bytes: u64,
    pub chunks: u64,
    pub zero_chunks: u64,
    /// Chunks this image added to the store.
    pub new_chunks: u64,
    /// Chunks the store held already (from another image or earlier in this one).
    pub deduplicated_chunks: u64,
    pub new_bytes_stored: u64,
}

/// Reads `image` to its end (at most `max_bytes`), stores its chunks, and returns its
/// manifest. A failed write leaves only whole chunks no manifest names, which the next
/// [`ChunkStore::gc`] removes.
pub fn write_image(
    store: &ChunkStore,
    salt: &Salt,
    mut image: impl Read,
    max_bytes: u64,
) -> Result<(ImageManifest, WriteStats), WriteError> {
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut chunks = Vec::new();
    let mut stats = WriteStats::default();
    loop {
        let n = read_full(&mut image, &mut buf).map_err(WriteError::Read)?;
        if n == 0 {
            break;
        }
        stats.bytes += n as u64;
        if stats.bytes > max_bytes {
            return Err(WriteError::TooLarge { limit: max_bytes });
        }
        stats.chunks += 1;
        let data = &buf[..n];
        let len = n as u32;
        if data.iter().all(|&b| b == 0) {
            stats.zero_chunks += 1;
            chunks.push(ChunkRef::Zeros { len });
            continue;
        }
        let sealed = convergent::seal(salt, data)?;
        if store.put(&sealed)? {
            stats.new_chunks += 1;
            stats.new_bytes_stored += sealed.bytes().len() as u64;
        } else {
            stats.deduplicated_chunks += 1;
        }
        chunks.push(ChunkRef::Stored {
            id: sealed.id(),
            key: sealed.key().clone(),
            len,
        });
    }
    Ok((ImageManifest::new(chunks)?, stats))
}

/// Fills `buf` unless the input ends first; returns how much it read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
