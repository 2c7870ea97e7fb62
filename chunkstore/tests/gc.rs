//! Garbage collection removes exactly the chunks no image references.
mod common;

use std::collections::HashSet;

use common::*;

#[test]
fn deleting_an_image_frees_only_the_chunks_no_other_image_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let salt = salt(3);
    let a = image(&[Some(1), Some(2), Some(3)], 0);
    let b = image(&[Some(1), Some(2), Some(4)], 0);
    let (ma, _) = write(&store, &salt, &a);
    let (mb, _) = write(&store, &salt, &b);
    assert_eq!(store.list().unwrap().len(), 4);
    // A crashed write's temporary file goes too.
    let shard = dir.path().join("chunks").join("00");
    std::fs::create_dir_all(&shard).unwrap();
    std::fs::write(shard.join(".tmp-1-1"), b"partial").unwrap();

    // Image a is deleted: b's references are what remains.
    let referenced: HashSet<_> = mb.stored_ids().collect();
    let gc = store.gc(&referenced, std::time::Duration::ZERO).unwrap();
    assert_eq!((gc.removed_chunks, gc.kept_chunks), (1, 3));
    assert!(gc.removed_bytes > 0);
    assert!(!shard.join(".tmp-1-1").exists());
    assert_eq!(read_all(&store, &mb), b);
    let gone = ma.stored_ids().find(|id| !referenced.contains(id)).unwrap();
    assert!(!store.contains(&gone));

    // Nothing referenced: the store is empty.
    let gc = store
        .gc(&HashSet::new(), std::time::Duration::ZERO)
        .unwrap();
    assert_eq!((gc.removed_chunks, gc.kept_chunks), (3, 0));
    assert!(store.list().unwrap().is_empty());
}
