//! An image as the store knows it: its size and, per [`CHUNK_SIZE`] chunk, either a
//! run of zeros (not stored) or the id and key of a stored chunk. The encoding holds
//! the chunk keys, so the caller seals it (the function's envelope key) before it is
//! written anywhere.
//!
//! Encoding: magic(8) | size u64 | count u32 | per chunk: kind u8 (0 zeros, 1 stored) |
//! len u32 | for stored chunks id(32) key(32). Integers big-endian.

use zeroize::Zeroizing;

use crate::convergent::{ChunkId, ChunkKey};
use crate::{CHUNK_SIZE, MAX_IMAGE_BYTES};

/// Version 2: chunks sealed and named as [`crate::convergent`] says (BLAKE3, aws-lc).
const MAGIC: &[u8; 8] = b"LMCHUNK2";
const ZEROS: u8 = 0;
const STORED: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkRef {
    /// `len` zero bytes, never stored.
    Zeros { len: u32 },
    Stored {
        id: ChunkId,
        key: ChunkKey,
        len: u32,
    },
}

impl ChunkRef {
    pub fn len(&self) -> usize {
        match self {
            Self::Zeros { len } | Self::Stored { len, .. } => *len as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("not an image manifest (bad magic)")]
    Magic,
    #[error("the manifest is truncated")]
    Truncated,
    #[error("the manifest has {0} bytes after its last chunk")]
    TrailingBytes(usize),
    #[error("unknown chunk kind {0}")]
    Kind(u8),
    #[error("image of {0} bytes is over the {MAX_IMAGE_BYTES}-byte limit")]
    TooLarge(u64),
    #[error("chunk {index} is {len} bytes: every chunk but the last is {CHUNK_SIZE}, the last 1 to {CHUNK_SIZE}")]
    ChunkLength { index: usize, len: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageManifest {
    size: u64,
    chunks: Vec<ChunkRef>,
}

impl ImageManifest {
    /// Checks that the chunks tile an image: all full but the last, under the limit.
    pub fn new(chunks: Vec<ChunkRef>) -> Result<Self, ManifestError> {
        let last = chunks.len().saturating_sub(1);
        let mut size = 0u64;
        for (index, c) in chunks.iter().enumerate() {
            let ok = if index == last {
                (1..=CHUNK_SIZE).contains(&c.len())
            } else {
                c.len() == CHUNK_SIZE
            };
            if !ok {
                return Err(ManifestError::ChunkLength {
                    index,
                    len: c.len(),
                });
            }
            size += c.len() as u64;
            if size > MAX_IMAGE_BYTES {
                return Err(ManifestError::TooLarge(size));
            }
        }
        Ok(Self { size, chunks })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn chunks(&self) -> &[ChunkRef] {
        &self.chunks
    }

    /// The stored chunks this image needs (a chunk repeated in the image repeats here).
    pub fn stored_ids(&self) -> impl Iterator<Item = ChunkId> + '_ {
        self.chunks.iter().filter_map(|c| match c {
            ChunkRef::Stored { id, .. } => Some(*id),
            ChunkRef::Zeros { .. } => None,
        })
    }

    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(20 + self.chunks.len() * 69));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&(self.chunks.len() as u32).to_be_bytes());
        for c in &self.chunks {
            match c {
                ChunkRef::Zeros { len } => {
                    out.push(ZEROS);
                    out.extend_from_slice(&len.to_be_bytes());
                }
                ChunkRef::Stored { id, key, len } => {
                    out.push(STORED);
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(&id.0);
                    out.extend_from_slice(key.as_bytes());
                }
            }
        }
        out
    }

    /// Parses and checks an encoded manifest; the declared size must match the chunks.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        let mut r = Cursor { bytes, at: 0 };
        if r.take::<8>()? != *MAGIC {
            return Err(ManifestError::Magic);
        }
        let size = u64::from_be_bytes(r.take()?);
        if size > MAX_IMAGE_BYTES {
            return Err(ManifestError::TooLarge(size));
        }
        let count = u32::from_be_bytes(r.take()?) as usize;
        // Each entry takes at least 5 bytes: a count the input cannot hold is refused
        // before anything is allocated for it.
        if count > bytes.len() / 5 {
            return Err(ManifestError::Truncated);
        }
        let mut chunks = Vec::with_capacity(count);
        for _ in 0..count {
            chunks.push(r.chunk_ref()?);
        }
        if r.at != bytes.len() {
            return Err(ManifestError::TrailingBytes(bytes.len() - r.at));
        }
        let manifest = Self::new(chunks)?;
        if manifest.size != size {
            return Err(ManifestError::Truncated);
        }
        Ok(manifest)
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], ManifestError> {
        let end = self.at.checked_add(N).ok_or(ManifestError::Truncated)?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(ManifestError::Truncated)?;
        self.at = end;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn chunk_ref(&mut self) -> Result<ChunkRef, ManifestError> {
        let [kind] = self.take::<1>()?;
        let len = u32::from_be_bytes(self.take()?);
        match kind {
            ZEROS => Ok(ChunkRef::Zeros { len }),
            STORED => {
                let id = ChunkId(self.take()?);
                let key = ChunkKey::from_bytes(self.take()?);
                Ok(ChunkRef::Stored { id, key, len })
            }
            other => Err(ManifestError::Kind(other)),
        }
    }
}
