//! The chunk store of container-image functions: a flattened image is cut into
//! [`CHUNK_SIZE`] chunks, each encrypted convergently (its key derived from its own
//! plaintext and a store-wide salt), and stored once under the hash of its ciphertext
//! however many images hold it. An image is then a [`manifest::ImageManifest`]: the
//! id and key of each chunk, which the caller seals with the function's envelope key.
//!
//! - [`convergent`]: seal and open one chunk.
//! - [`store`]: the chunks on disk, deduplicated, with garbage collection; a store of
//!   copies (a worker host's) may be bounded, evicting the least recently used.
//! - [`writer`]: cut an image into the store; [`reader`]: read any byte range back,
//!   authenticating each chunk on first use (an error, never wrong bytes).
//! - [`wire`]: the chunk link between a worker and a microVM monitor that reads an
//!   image lazily: the manifest once, then one sealed chunk per request.
//!
//! What convergent encryption gives away, by design: whoever holds the store learns
//! which chunks are equal, and can confirm a guess of a whole chunk's content only if
//! they also know the salt. The salt never leaves the host that writes images.

mod bound;
pub mod convergent;
pub mod manifest;
pub mod reader;
pub mod store;
pub mod wire;
pub mod writer;

/// Bytes per chunk (the last chunk of an image may be shorter).
pub const CHUNK_SIZE: usize = 512 << 10;

/// The largest image the store takes: Lambda's 10 GiB limit on an uncompressed image.
pub const MAX_IMAGE_BYTES: u64 = 10 << 30;

pub use convergent::{ChunkId, ChunkKey, OpenError, Salt};
pub use manifest::{ChunkRef, ImageManifest, ManifestError};
pub use reader::{ChunkSource, ImageReader, ReadError};
pub use store::{ChunkStore, GcStats, StoreError};
pub use writer::{write_image, WriteError, WriteStats};
