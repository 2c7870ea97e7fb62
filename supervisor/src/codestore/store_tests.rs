use std::io::{Cursor, Write as _};

use zip::write::SimpleFileOptions;
use zip::ZipWriter;

use super::*;

fn sample_zip() -> Vec<u8> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    let o = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file("bootstrap", o.unix_permissions(0o755))
        .expect("start");
    w.write_all(b"#!/bin/sh\necho STORE-MARKER\n")
        .expect("write");
    w.start_file("lib/data.txt", o.unix_permissions(0o644))
        .expect("start");
    w.write_all(b"hello").expect("write");
    w.add_symlink("lib/alias", "data.txt", o).expect("link");
    w.finish().expect("finish").into_inner()
}

fn store(dir: &Path) -> CodeStore {
    CodeStore::open(
        &dir.join("code"),
        MasterKey::from_bytes([3u8; 32]),
        ZipLimits::default(),
    )
    .expect("open")
}

#[test]
fn put_read_copy_remove() {
    let d = tempfile::tempdir().expect("tempdir");
    let s = store(d.path());
    let zip = sample_zip();
    let sha = code_sha256(&zip);
    let aad = CodeAad {
        function: "f",
        version: "$LATEST",
        code_sha256: &sha,
    };
    let id = s.put(&aad, zip.clone()).expect("put");
    let raw = std::fs::read(s.object_path(&id).expect("path")).expect("read");
    assert!(!raw.windows(12).any(|w| w == b"STORE-MARKER"));
    assert_eq!(s.read(&id, &aad).expect("read"), zip);
    let v1 = CodeAad {
        version: "1",
        ..aad
    };
    assert!(s.read(&id, &v1).is_err(), "AAD must bind the version");
    let id1 = s.copy(&id, &aad, &v1).expect("copy");
    assert_eq!(s.read(&id1, &v1).expect("read"), zip);
    let mut ids = s.object_ids().expect("ids");
    ids.sort();
    let mut want = vec![id.clone(), id1];
    want.sort();
    assert_eq!(ids, want);
    s.remove(&id).expect("remove");
    s.remove(&id).expect("idempotent");
    assert!(s.read(&id, &aad).is_err());
    assert!(matches!(
        s.read("../x", &aad),
        Err(CodeStoreError::BadObjectId(_))
    ));
}
