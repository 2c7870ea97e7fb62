use std::io::{Cursor, Write as _};
use std::os::unix::fs::PermissionsExt as _;

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
        &dir.join("cache"),
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

#[test]
fn materialize_dir_keeps_modes_and_links_and_is_cached() {
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
    let dir = s.materialize_dir(&id, &aad).expect("dir");
    let mode = std::fs::metadata(dir.join("bootstrap"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        std::fs::read(dir.join("lib/alias")).expect("via link"),
        b"hello"
    );
    assert_eq!(
        std::fs::read_link(dir.join("lib/alias")).expect("link"),
        Path::new("data.txt")
    );
    // Cached: a second call does not need the object any more.
    s.remove(&id).expect("remove");
    assert_eq!(s.materialize_dir(&id, &aad).expect("cached"), dir);
}

#[test]
fn materialize_image_builds_readonly_ext4() {
    if !Path::new("/usr/sbin/mke2fs").exists() && !Path::new("/sbin/mke2fs").exists() {
        assert!(std::env::var_os("CI").is_none(), "mke2fs missing in CI");
        eprintln!("SKIPPED: mke2fs (e2fsprogs) not installed");
        return;
    }
    let d = tempfile::tempdir().expect("tempdir");
    let s = store(d.path());
    let zip = sample_zip();
    let sha = code_sha256(&zip);
    let aad = CodeAad {
        function: "f",
        version: "1",
        code_sha256: &sha,
    };
    let id = s.put(&aad, zip.clone()).expect("put");
    let img = s.materialize_image(&id, &aad).expect("image");
    let meta = std::fs::metadata(&img).expect("meta");
    assert_eq!(meta.permissions().mode() & 0o777, 0o444);
    let bytes = std::fs::read(&img).expect("read");
    // ext4 superblock magic 0xEF53 at offset 1024 + 0x38.
    assert_eq!(&bytes[1024 + 0x38..1024 + 0x3a], &[0x53, 0xef]);
    assert!(
        bytes.windows(12).any(|w| w == b"STORE-MARKER"),
        "file data in image"
    );
    // The image's own view: bootstrap kept 0755, the symlink survived.
    let stat = std::process::Command::new("debugfs")
        .args(["-R", "stat /bootstrap"])
        .arg(&img)
        .output()
        .expect("debugfs (e2fsprogs)");
    let text = String::from_utf8_lossy(&stat.stdout);
    assert!(
        text.contains("Mode:  0755") || text.contains("Mode: 0755"),
        "{text}"
    );
    let link = std::process::Command::new("debugfs")
        .args(["-R", "stat /lib/alias"])
        .arg(&img)
        .output()
        .expect("debugfs");
    assert!(
        String::from_utf8_lossy(&link.stdout).contains("symlink"),
        "alias is a symlink"
    );
    assert_eq!(s.materialize_image(&id, &aad).expect("cached"), img);
}
