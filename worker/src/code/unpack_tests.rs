use super::*;
use std::future::Future as _;
use std::io::{Cursor, Write as _};
use zip::write::SimpleFileOptions;

fn sample_zip() -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let o = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file("bootstrap", o.unix_permissions(0o755))
        .expect("start");
    w.write_all(b"#!/bin/sh\necho hi\n").expect("write");
    w.start_file("lib/data.txt", o.unix_permissions(0o644))
        .expect("start");
    w.write_all(b"hello").expect("write");
    w.add_symlink("lib/alias", "data.txt", o).expect("link");
    w.finish().expect("finish").into_inner()
}

fn unpacker(root: &Path) -> Unpacker {
    Unpacker {
        root: root.to_owned(),
        group: None,
        limits: ZipLimits::default(),
    }
}

#[test]
fn a_sandbox_gets_its_own_copy_with_modes_and_links_and_the_root_stays_closed() {
    let d = tempfile::tempdir().expect("tempdir");
    let u = unpacker(&d.path().join("code"));
    let a = u.unpack(&sample_zip(), "sb-1").expect("unpack a");
    let b = u.unpack(&sample_zip(), "sb-2").expect("unpack b");
    assert_ne!(a, b);
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&a.join("bootstrap")), 0o755);
    assert_eq!(
        std::fs::read(a.join("lib/alias")).expect("via link"),
        b"hello"
    );
    assert_eq!(
        std::fs::read_link(a.join("lib/alias")).expect("link"),
        Path::new("data.txt")
    );
    assert_eq!(mode(&u.root), 0o700, "no jails: private");
    drop(CodeDir(a.clone()));
    assert!(
        !a.exists() && b.exists(),
        "each directory goes with its own sandbox"
    );
    u.clear().expect("clear");
    assert!(!u.root.exists());
}

#[test]
fn an_invalid_package_leaves_nothing_behind() {
    let d = tempfile::tempdir().expect("tempdir");
    let u = unpacker(&d.path().join("code"));
    let e = u.unpack(b"not a zip", "sb-1").expect_err("invalid");
    assert!(!e.is_transient(), "{e}");
    assert!(!u.root.join("sb-1").exists());
}

#[tokio::test]
async fn an_unpacking_whose_caller_went_away_is_removed_when_it_ends() {
    let d = tempfile::tempdir().expect("tempdir");
    let u = unpacker(&d.path().join("code"));
    let pending = unpack_in_background(&u, sample_zip(), "sb-9");
    drop(pending); // never polled: nothing started
    let fut = Box::pin(unpack_in_background(&u, sample_zip(), "sb-10"));
    // Poll once so the blocking task starts, then drop the caller.
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut fut = fut;
    let _ = fut.as_mut().poll(&mut cx);
    drop(fut);
    let dir = u.root.join("sb-10");
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if !dir.exists() {
            return;
        }
    }
    panic!("{} left behind", dir.display());
}
