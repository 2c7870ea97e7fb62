//! Images and stores for the chunk store's tests.
#![allow(dead_code)]

use std::sync::Arc;

use chunkstore::{ChunkStore, ImageManifest, ImageReader, Salt, WriteStats, CHUNK_SIZE};

pub fn store(dir: &tempfile::TempDir) -> Arc<ChunkStore> {
    Arc::new(ChunkStore::open(dir.path().join("chunks")).unwrap())
}

pub fn salt(b: u8) -> Salt {
    Salt::from_bytes([b; 32])
}

/// Deterministic bytes unique to `(seed, chunk index)`: chunk `i` of two images with
/// the same seed is equal.
pub fn chunk_bytes(seed: u64, index: usize, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (index as u64 + 1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An image made of the given chunks: `Some(seed)` for that seed's chunk at the same
/// index, `None` for zeros; `tail` more bytes of the last kind after the full chunks.
pub fn image(chunks: &[Option<u64>], tail: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let len = if i + 1 == chunks.len() && tail > 0 {
            tail
        } else {
            CHUNK_SIZE
        };
        match c {
            Some(seed) => out.extend(chunk_bytes(*seed, i, len)),
            None => out.extend(std::iter::repeat_n(0, len)),
        }
    }
    out
}

pub fn write(store: &ChunkStore, salt: &Salt, bytes: &[u8]) -> (ImageManifest, WriteStats) {
    chunkstore::write_image(store, salt, bytes, chunkstore::MAX_IMAGE_BYTES).unwrap()
}

pub fn read_all(store: &Arc<ChunkStore>, manifest: &ImageManifest) -> Vec<u8> {
    let mut r = ImageReader::new(store.clone(), manifest.clone(), 4);
    let mut out = vec![0u8; manifest.size() as usize];
    assert_eq!(r.read_at(0, &mut out).unwrap(), out.len());
    out
}
