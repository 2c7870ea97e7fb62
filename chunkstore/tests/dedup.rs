//! Equal chunks are stored once, across images; zeros are not stored at all.
mod common;

use chunkstore::{convergent, CHUNK_SIZE};
use common::*;

#[test]
fn a_second_image_sharing_most_chunks_adds_only_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let salt = salt(7);
    let base = image(&[Some(1), Some(1), None, Some(1), Some(1)], 1000);
    let (m1, s1) = write(&store, &salt, &base);
    assert_eq!((s1.chunks, s1.zero_chunks, s1.new_chunks), (5, 1, 4));
    // Same layers with one chunk changed, the way a new image of an application is.
    let next = image(&[Some(1), Some(1), None, Some(2), Some(1)], 1000);
    let (m2, s2) = write(&store, &salt, &next);
    assert_eq!((s2.new_chunks, s2.deduplicated_chunks), (1, 3));
    assert_eq!(store.list().unwrap().len(), 5);
    assert_eq!(read_all(&store, &m1), base);
    assert_eq!(read_all(&store, &m2), next);
}

#[test]
fn a_chunk_repeated_inside_one_image_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let chunk = chunk_bytes(9, 0, CHUNK_SIZE);
    let bytes = [chunk.clone(), chunk.clone(), chunk].concat();
    let (m, s) = write(&store, &salt(1), &bytes);
    assert_eq!((s.new_chunks, s.deduplicated_chunks), (1, 2));
    assert_eq!(
        m.stored_ids()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        1
    );
    assert_eq!(read_all(&store, &m), bytes);
}

#[test]
fn sealing_is_deterministic_per_salt_and_differs_across_salts() {
    let data = chunk_bytes(3, 0, 4096);
    let a = convergent::seal(&salt(1), &data).unwrap();
    let b = convergent::seal(&salt(1), &data).unwrap();
    let c = convergent::seal(&salt(2), &data).unwrap();
    assert_eq!((a.id(), a.bytes()), (b.id(), b.bytes()));
    assert_ne!(a.id(), c.id());
    assert_ne!(a.key(), c.key());
    // The ciphertext is not the plaintext.
    assert!(!a.bytes().windows(64).any(|w| w == &data[..64]));
}

#[test]
fn an_image_of_zeros_stores_nothing_and_reads_back_as_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let bytes = image(&[None, None, None], 17);
    let (m, s) = write(&store, &salt(1), &bytes);
    assert_eq!((s.zero_chunks, s.new_chunks, s.new_bytes_stored), (3, 0, 0));
    assert!(store.list().unwrap().is_empty());
    assert_eq!(m.size(), bytes.len() as u64);
    assert_eq!(read_all(&store, &m), bytes);
}

#[test]
fn an_image_over_the_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let bytes = image(&[Some(1), Some(1)], 0);
    let err =
        chunkstore::write_image(&store, &salt(1), &bytes[..], CHUNK_SIZE as u64 + 1).unwrap_err();
    assert!(
        matches!(err, chunkstore::WriteError::TooLarge { .. }),
        "{err}"
    );
    assert!(!err.is_transient());
    // What it stored before noticing is collected by the next GC, as no manifest names it.
    let gc = store
        .gc(&Default::default(), std::time::Duration::ZERO)
        .unwrap();
    assert_eq!(gc.removed_chunks, 1);
}

#[test]
fn a_copy_from_another_store_is_kept_only_if_it_is_that_chunk() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (frontend, worker) = (store(&a), store(&b));
    let bytes = image(&[Some(3), Some(4)], 10);
    let (m, _) = write(&frontend, &salt(2), &bytes);
    let ids: Vec<_> = m.stored_ids().collect();
    // The second chunk's bytes offered under the first one's id: refused.
    let wrong = frontend.get(&ids[1]).unwrap();
    assert!(matches!(
        worker.put_copy(&ids[0], &wrong),
        Err(chunkstore::StoreError::NotThatChunk(_))
    ));
    let oversized = vec![0u8; convergent::MAX_SEALED_LEN + 1];
    assert!(matches!(
        worker.put_copy(&ids[0], &oversized),
        Err(chunkstore::StoreError::Oversized { .. })
    ));
    assert!(worker.list().unwrap().is_empty());
    for id in &ids {
        assert!(worker.put_copy(id, &frontend.get(id).unwrap()).unwrap());
    }
    assert!(!worker
        .put_copy(&ids[0], &frontend.get(&ids[0]).unwrap())
        .unwrap());
    assert_eq!(read_all(&worker, &m), bytes);
}
