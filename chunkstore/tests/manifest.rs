//! The manifest encoding: round trip, and every malformed input refused.
mod common;

use chunkstore::{ChunkKey, ChunkRef, ImageManifest, ManifestError, CHUNK_SIZE};
use common::*;

fn stored(b: u8, len: usize) -> ChunkRef {
    ChunkRef::Stored {
        id: chunkstore::ChunkId([b; 32]),
        key: ChunkKey::from_bytes([b ^ 0xff; 32]),
        len: len as u32,
    }
}

#[test]
fn a_manifest_round_trips() {
    let m = ImageManifest::new(vec![
        stored(1, CHUNK_SIZE),
        ChunkRef::Zeros {
            len: CHUNK_SIZE as u32,
        },
        stored(2, 77),
    ])
    .unwrap();
    assert_eq!(m.size(), 2 * CHUNK_SIZE as u64 + 77);
    assert_eq!(ImageManifest::decode(&m.encode()).unwrap(), m);
    let empty = ImageManifest::new(vec![]).unwrap();
    assert_eq!(ImageManifest::decode(&empty.encode()).unwrap(), empty);
}

#[test]
fn chunks_that_do_not_tile_an_image_are_refused() {
    let short_middle = ImageManifest::new(vec![stored(1, 10), stored(2, 10)]);
    assert_eq!(
        short_middle.unwrap_err(),
        ManifestError::ChunkLength { index: 0, len: 10 }
    );
    let empty_last = ImageManifest::new(vec![stored(1, CHUNK_SIZE), ChunkRef::Zeros { len: 0 }]);
    assert_eq!(
        empty_last.unwrap_err(),
        ManifestError::ChunkLength { index: 1, len: 0 }
    );
}

#[test]
fn every_malformed_encoding_is_refused_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = write(
        &store(&dir),
        &salt(1),
        &image(&[Some(1), None, Some(2)], 99),
    );
    let good = m.encode().to_vec();
    for cut in 0..good.len() {
        assert!(
            ImageManifest::decode(&good[..cut]).is_err(),
            "a prefix of {cut} bytes parsed"
        );
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(
        ImageManifest::decode(&trailing).unwrap_err(),
        ManifestError::TrailingBytes(1)
    );
    let mut magic = good.clone();
    magic[0] ^= 1;
    assert_eq!(
        ImageManifest::decode(&magic).unwrap_err(),
        ManifestError::Magic
    );
    let mut kind = good.clone();
    kind[20] = 9;
    assert_eq!(
        ImageManifest::decode(&kind).unwrap_err(),
        ManifestError::Kind(9)
    );
    // A declared size that disagrees with the chunks, and a huge count.
    let mut size = good.clone();
    size[15] ^= 1;
    assert!(ImageManifest::decode(&size).is_err());
    let mut count = good.clone();
    count[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        ImageManifest::decode(&count).unwrap_err(),
        ManifestError::Truncated
    );
    // Every single-byte flip parses to something or fails; none panics.
    for i in 0..good.len() {
        let mut b = good.clone();
        b[i] ^= 0x80;
        let _ = ImageManifest::decode(&b);
    }
}
