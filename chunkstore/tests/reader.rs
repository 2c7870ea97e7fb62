//! Reading byte ranges back: lazily, across chunk boundaries, and never a wrong byte.
mod common;

use std::fs;

use chunkstore::{ImageReader, OpenError, ReadError, StoreError, CHUNK_SIZE};
use common::*;

#[test]
fn any_range_reads_back_exactly_and_loads_only_the_chunks_it_touches() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let bytes = image(&[Some(1), Some(2), None, Some(3), Some(4), Some(5)], 12345);
    let (m, _) = write(&store, &salt(1), &bytes);
    let mut r = ImageReader::new(store.clone(), m.clone(), 2);
    // One byte loads one chunk.
    let mut one = [0u8; 1];
    assert_eq!(r.read_at(3 * CHUNK_SIZE as u64 + 5, &mut one).unwrap(), 1);
    assert_eq!(one[0], bytes[3 * CHUNK_SIZE + 5]);
    assert_eq!(r.chunks_loaded(), 1);
    let c = CHUNK_SIZE as u64;
    for (offset, len) in [
        (0, 10),
        (c - 3, 7),
        (c * 2 - 1, c + 2),
        (c * 5 + 12000, 345),
        (0, 0),
    ] {
        let mut buf = vec![0xAAu8; len as usize];
        assert_eq!(r.read_at(offset, &mut buf).unwrap(), len as usize);
        assert_eq!(
            buf[..],
            bytes[offset as usize..(offset + len) as usize],
            "at {offset}+{len}"
        );
    }
    // Past the end: short, then nothing.
    let mut buf = vec![0u8; 100];
    assert_eq!(r.read_at(bytes.len() as u64 - 10, &mut buf).unwrap(), 10);
    assert_eq!(r.read_at(bytes.len() as u64, &mut buf).unwrap(), 0);
    // The zero chunk was never loaded; the cache kept repeated reads from reloading.
    assert!(r.chunks_loaded() <= 6, "{}", r.chunks_loaded());
}

fn chunk_file(dir: &tempfile::TempDir, id: &chunkstore::ChunkId) -> std::path::PathBuf {
    let hex = id.to_hex();
    dir.path().join("chunks").join(&hex[..2]).join(hex)
}

#[test]
fn a_tampered_chunk_is_an_error_never_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let bytes = image(&[Some(1), Some(2)], 0);
    let (m, _) = write(&store, &salt(1), &bytes);
    let second = m.stored_ids().nth(1).unwrap();
    let path = chunk_file(&dir, &second);
    let mut sealed = fs::read(&path).unwrap();
    sealed[100] ^= 1;
    fs::write(&path, &sealed).unwrap();
    let mut r = ImageReader::new(store, m, 4);
    let mut buf = vec![0u8; CHUNK_SIZE];
    assert_eq!(
        r.read_at(0, &mut buf).unwrap(),
        CHUNK_SIZE,
        "the intact chunk still reads"
    );
    let err = r.read_at(CHUNK_SIZE as u64, &mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            ReadError::Open {
                index: 1,
                source: OpenError::IdMismatch
            }
        ),
        "{err}"
    );
}

#[test]
fn a_chunk_swapped_for_another_images_chunk_is_refused() {
    // Bytes whose id matches, under the wrong key: the tag refuses them.
    let data = chunk_bytes(5, 0, 1000);
    let a = chunkstore::convergent::seal(&salt(1), &data).unwrap();
    let b = chunkstore::convergent::seal(&salt(2), &data).unwrap();
    let err = chunkstore::convergent::open(&a.id(), b.key(), a.bytes().to_vec()).unwrap_err();
    assert_eq!(err, OpenError::Authentication);
    let ok = chunkstore::convergent::open(&a.id(), a.key(), a.bytes().to_vec()).unwrap();
    assert_eq!(ok, data);
}

#[test]
fn a_missing_truncated_or_oversized_chunk_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let (m, _) = write(&store, &salt(1), &image(&[Some(1), Some(2), Some(3)], 0));
    let ids: Vec<_> = m.stored_ids().collect();
    fs::remove_file(chunk_file(&dir, &ids[0])).unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(chunk_file(&dir, &ids[1]))
        .unwrap();
    f.set_len(8).unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(chunk_file(&dir, &ids[2]))
        .unwrap();
    f.set_len(4 * CHUNK_SIZE as u64).unwrap();
    let mut r = ImageReader::new(store, m, 4);
    let mut buf = [0u8; 16];
    let c = CHUNK_SIZE as u64;
    let missing = r.read_at(0, &mut buf).unwrap_err();
    assert!(
        matches!(missing, ReadError::Store(StoreError::Missing(id)) if id == ids[0]),
        "{missing}"
    );
    assert!(!missing.is_transient());
    let short = r.read_at(c, &mut buf).unwrap_err();
    assert!(
        matches!(
            short,
            ReadError::Open {
                source: OpenError::Length(8),
                ..
            }
        ),
        "{short}"
    );
    let big = r.read_at(2 * c, &mut buf).unwrap_err();
    assert!(
        matches!(big, ReadError::Store(StoreError::Oversized { .. })),
        "{big}"
    );
}
