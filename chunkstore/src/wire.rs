//! The chunk link: how a microVM monitor reads its image's chunks from the worker
//! that started it, over a socket pair the worker creates. The worker speaks first
//! with the image's manifest (ids and keys); then the monitor asks for one chunk at a
//! time by id and gets its sealed bytes, or an error. The worker answers only for
//! chunks of that image, so a monitor reads nothing else of the store, and the
//! monitor checks every chunk against its id and key (see [`crate::reader`]).
//!
//! Frames: kind u8 | length u32 (big-endian) | payload, each kind with its own bound,
//! checked before the payload is read. This module is the one codec of the link; the
//! blocking client below is the monitor's end, the worker has its own async server.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use crate::convergent::{ChunkId, MAX_SEALED_LEN};
use crate::manifest::ImageManifest;
use crate::reader::{ChunkSource, ReadError};
use crate::{CHUNK_SIZE, MAX_IMAGE_BYTES};

pub const HEADER_LEN: usize = 5;
/// The encoded manifest of the largest image: 20 bytes of header, 69 per chunk.
pub const MAX_MANIFEST_LEN: usize = 20 + (MAX_IMAGE_BYTES as usize / CHUNK_SIZE) * 69;
/// An error frame: a transient flag and a message.
pub const MAX_ERROR_LEN: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Worker to monitor, once, first: the encoded [`ImageManifest`].
    Manifest = 1,
    /// Monitor to worker: a chunk id (32 bytes).
    Request = 2,
    /// Worker to monitor: the sealed bytes of the chunk asked for.
    Chunk = 3,
    /// Worker to monitor: why the chunk cannot be had (flag byte 1 if transient).
    Error = 4,
}

impl FrameKind {
    fn bound(self) -> usize {
        match self {
            Self::Manifest => MAX_MANIFEST_LEN,
            Self::Request => 32,
            Self::Chunk => MAX_SEALED_LEN,
            Self::Error => MAX_ERROR_LEN,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("chunk link I/O: {0}")]
    Io(#[from] io::Error),
    #[error("chunk link: unknown frame kind {0}")]
    Kind(u8),
    #[error("chunk link: {kind:?} frame of {len} bytes is over its {bound}-byte bound")]
    TooLong {
        kind: FrameKind,
        len: usize,
        bound: usize,
    },
    #[error("chunk link: expected {expected}, got a {got:?} frame")]
    Unexpected {
        expected: &'static str,
        got: FrameKind,
    },
    #[error("chunk link broken by an earlier failure")]
    Broken,
    #[error("chunk link: the manifest: {0}")]
    Manifest(#[from] crate::manifest::ManifestError),
    #[error("the worker could not supply chunk {id}: {message}")]
    Refused {
        id: ChunkId,
        message: String,
        transient: bool,
    },
}

impl FetchError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Io(_) => true,
            Self::Refused { transient, .. } => *transient,
            _ => false,
        }
    }
}

/// A frame's header, to be followed by `len` bytes of payload.
pub fn header(kind: FrameKind, len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = kind as u8;
    h[1..].copy_from_slice(&(len as u32).to_be_bytes());
    h
}

/// A whole frame.
pub fn frame(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header(kind, payload.len()));
    out.extend_from_slice(payload);
    out
}

/// The error frame's payload.
pub fn error_payload(message: &str, transient: bool) -> Vec<u8> {
    let mut out = vec![u8::from(transient)];
    let mut end = message.len().min(MAX_ERROR_LEN - 1);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&message.as_bytes()[..end]);
    out
}

/// Parses a header; the length is checked against its kind's bound.
pub fn parse_header(h: &[u8; HEADER_LEN]) -> Result<(FrameKind, usize), FetchError> {
    let kind = match h[0] {
        1 => FrameKind::Manifest,
        2 => FrameKind::Request,
        3 => FrameKind::Chunk,
        4 => FrameKind::Error,
        other => return Err(FetchError::Kind(other)),
    };
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if len > kind.bound() {
        return Err(FetchError::TooLong {
            kind,
            len,
            bound: kind.bound(),
        });
    }
    Ok((kind, len))
}

/// The monitor's end: blocking, one request at a time.
pub struct ChunkClient {
    stream: UnixStream,
    /// A request failed mid-frame (timeout, malformed reply): the stream may be out of
    /// step, so every later request fails at once instead of reading a stale reply.
    broken: bool,
}

fn read_frame(stream: &mut UnixStream) -> Result<(FrameKind, Vec<u8>), FetchError> {
    let mut h = [0u8; HEADER_LEN];
    stream.read_exact(&mut h)?;
    let (kind, len) = parse_header(&h)?;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload)?;
    Ok((kind, payload))
}

impl ChunkClient {
    /// Reads the manifest the worker sends first.
    pub fn start(mut stream: UnixStream) -> Result<(Self, ImageManifest), FetchError> {
        let (kind, payload) = read_frame(&mut stream)?;
        if kind != FrameKind::Manifest {
            return Err(FetchError::Unexpected {
                expected: "the manifest",
                got: kind,
            });
        }
        let manifest = ImageManifest::decode(&payload);
        zeroize::Zeroize::zeroize(&mut { payload });
        let client = Self {
            stream,
            broken: false,
        };
        Ok((client, manifest?))
    }

    fn fetch(&mut self, id: &ChunkId) -> Result<Vec<u8>, FetchError> {
        if self.broken {
            return Err(FetchError::Broken);
        }
        let res = self.exchange(id);
        self.broken = matches!(
            res,
            Err(FetchError::Io(_) | FetchError::Kind(_) | FetchError::TooLong { .. })
        );
        res
    }

    fn exchange(&mut self, id: &ChunkId) -> Result<Vec<u8>, FetchError> {
        self.stream.write_all(&frame(FrameKind::Request, &id.0))?;
        match read_frame(&mut self.stream)? {
            (FrameKind::Chunk, bytes) => Ok(bytes),
            (FrameKind::Error, msg) => Err(FetchError::Refused {
                id: *id,
                transient: msg.first() == Some(&1),
                message: String::from_utf8_lossy(msg.get(1..).unwrap_or_default()).into_owned(),
            }),
            (got, _) => Err(FetchError::Unexpected {
                expected: "a chunk",
                got,
            }),
        }
    }
}

impl ChunkSource for ChunkClient {
    fn sealed(&mut self, id: &ChunkId) -> Result<Vec<u8>, ReadError> {
        Ok(self.fetch(id)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_bounds_hold() {
        for kind in [
            FrameKind::Manifest,
            FrameKind::Request,
            FrameKind::Chunk,
            FrameKind::Error,
        ] {
            assert_eq!(parse_header(&header(kind, 32)).unwrap(), (kind, 32));
            assert!(matches!(
                parse_header(&header(kind, kind.bound() + 1)),
                Err(FetchError::TooLong { .. })
            ));
        }
        assert!(matches!(
            parse_header(&[9, 0, 0, 0, 1]),
            Err(FetchError::Kind(9))
        ));
        let long = "é".repeat(MAX_ERROR_LEN);
        let p = error_payload(&long, true);
        assert!(p.len() <= MAX_ERROR_LEN && p[0] == 1);
        assert!(std::str::from_utf8(&p[1..]).is_ok());
    }

    #[test]
    fn a_malformed_reply_breaks_the_link_for_good() {
        use crate::manifest::{ChunkRef, ImageManifest};
        let manifest = ImageManifest::new(vec![ChunkRef::Zeros { len: 512 }]).unwrap();
        let (mut worker, monitor) = UnixStream::pair().unwrap();
        worker
            .write_all(&frame(FrameKind::Manifest, &manifest.encode()))
            .unwrap();
        // The reply to the first request: a frame of unknown kind.
        worker.write_all(&[9, 0, 0, 0, 0]).unwrap();
        let (mut client, got) = ChunkClient::start(monitor).unwrap();
        assert_eq!(got, manifest);
        let id = ChunkId([1; 32]);
        assert!(matches!(client.fetch(&id), Err(FetchError::Kind(9))));
        assert!(matches!(client.fetch(&id), Err(FetchError::Broken)));
    }
}
