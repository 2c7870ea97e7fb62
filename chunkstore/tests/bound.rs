//! A store of copies under a byte bound.

mod common;

use chunkstore::convergent::seal;
use chunkstore::{ChunkStore, StoreError, CHUNK_SIZE};
use common::{chunk_bytes, salt};

#[test]
fn a_bounded_store_evicts_the_least_recently_used_copies() {
    let dir = tempfile::tempdir().unwrap();
    let chunks: Vec<_> = (0..4)
        .map(|i| seal(&salt(1), &chunk_bytes(9, i, CHUNK_SIZE)).unwrap())
        .collect();
    let sealed_len = chunks[0].bytes().len() as u64;
    let store = ChunkStore::open_bounded(dir.path().join("copies"), 3 * sealed_len).unwrap();
    for c in &chunks[..3] {
        assert!(store.put_copy(&c.id(), c.bytes()).unwrap());
    }
    // The first is read again, so the second is now the least recently used.
    store.get(&chunks[0].id()).unwrap();
    store.put_copy(&chunks[3].id(), chunks[3].bytes()).unwrap();
    assert_eq!(store.evicted(), 1);
    assert_eq!(store.bounded_bytes(), 3 * sealed_len);
    assert!(matches!(
        store.get(&chunks[1].id()),
        Err(StoreError::Missing(_))
    ));
    for i in [0, 2, 3] {
        assert!(store.get(&chunks[i].id()).is_ok(), "chunk {i}");
    }
    // Reopened with a smaller bound, it keeps only what fits.
    drop(store);
    let store = ChunkStore::open_bounded(dir.path().join("copies"), sealed_len).unwrap();
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(store.evicted(), 2);
}
