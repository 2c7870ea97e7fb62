//! Convergent encryption of one chunk: the key is HMAC-SHA256 of the plaintext under a
//! store-wide salt, the cipher AES-256-GCM, the chunk's id the SHA-256 of its sealed
//! bytes. Equal plaintexts seal to equal bytes (that is what deduplicates them), and
//! opening checks both the id (the bytes are the ones the manifest names) and the tag
//! (the key is the one they were sealed with).

use std::fmt;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::CHUNK_SIZE;

/// Bytes sealing adds to a chunk (the GCM tag).
pub const TAG_LEN: usize = 16;
/// The largest sealed chunk.
pub const MAX_SEALED_LEN: usize = CHUNK_SIZE + TAG_LEN;

/// Every key encrypts exactly one plaintext, the one it is derived from, so a fixed
/// nonce never encrypts two different messages under one key.
const NONCE: [u8; 12] = [0; 12];
const KEY_DOMAIN: &[u8] = b"lambda-chunk-key-v1";
const AAD: &[u8] = b"lambda-chunk-v1";

/// A chunk's name in the store: SHA-256 of its sealed bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    pub fn of_sealed(sealed: &[u8]) -> Self {
        Self(Sha256::digest(sealed).into())
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 lowercase hex digits (the store's file names).
    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let digit = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(Self(out))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The key a chunk was sealed with; only an image's manifest holds it.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct ChunkKey([u8; 32]);

impl ChunkKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkKey(..)")
    }
}

/// The store-wide secret mixed into every chunk key: without it, holding the store
/// does not let anyone confirm a guess of a chunk's content.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Salt([u8; 32]);

impl Salt {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

/// One sealed chunk, only made by [`seal`], so its id always matches its bytes.
pub struct SealedChunk {
    id: ChunkId,
    key: ChunkKey,
    bytes: Vec<u8>,
}

impl SealedChunk {
    pub fn id(&self) -> ChunkId {
        self.id
    }

    pub fn key(&self) -> &ChunkKey {
        &self.key
    }

    /// Ciphertext followed by the tag: what the store keeps.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("a chunk holds at most {CHUNK_SIZE} bytes, not {0}")]
    TooLong(usize),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("a sealed chunk is {TAG_LEN} to {MAX_SEALED_LEN} bytes, not {0}")]
    Length(usize),
    #[error("the chunk's bytes do not hash to its id (corrupted or swapped on disk)")]
    IdMismatch,
    #[error("the chunk failed authentication (wrong key, or tampered with)")]
    Authentication,
}

fn cipher(key: &ChunkKey) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key.0))
}

fn derive_key(salt: &Salt, plaintext: &[u8]) -> ChunkKey {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&salt.0) else {
        unreachable!("HMAC takes a key of any length")
    };
    mac.update(KEY_DOMAIN);
    mac.update(plaintext);
    ChunkKey(mac.finalize().into_bytes().into())
}

/// Seals `plaintext` (at most [`CHUNK_SIZE`] bytes) under its own derived key.
pub fn seal(salt: &Salt, plaintext: &[u8]) -> Result<SealedChunk, SealError> {
    if plaintext.len() > CHUNK_SIZE {
        return Err(SealError::TooLong(plaintext.len()));
    }
    let key = derive_key(salt, plaintext);
    let mut bytes = Vec::with_capacity(plaintext.len() + TAG_LEN);
    bytes.extend_from_slice(plaintext);
    // AES-GCM refuses only messages over 64 GiB; the length is checked above.
    let tag = cipher(&key)
        .encrypt_in_place_detached(Nonce::from_slice(&NONCE), AAD, &mut bytes)
        .map_err(|_| SealError::TooLong(plaintext.len()))?;
    bytes.extend_from_slice(&tag);
    Ok(SealedChunk {
        id: ChunkId::of_sealed(&bytes),
        key,
        bytes,
    })
}

/// Checks `sealed` against `id` and `key` and returns the plaintext.
pub fn open(id: &ChunkId, key: &ChunkKey, mut sealed: Vec<u8>) -> Result<Vec<u8>, OpenError> {
    if !(TAG_LEN..=MAX_SEALED_LEN).contains(&sealed.len()) {
        return Err(OpenError::Length(sealed.len()));
    }
    if ChunkId::of_sealed(&sealed) != *id {
        return Err(OpenError::IdMismatch);
    }
    let split = sealed.len() - TAG_LEN;
    let tag = *Tag::from_slice(&sealed[split..]);
    sealed.truncate(split);
    cipher(key)
        .decrypt_in_place_detached(Nonce::from_slice(&NONCE), AAD, &mut sealed, &tag)
        .map_err(|_| OpenError::Authentication)?;
    Ok(sealed)
}
