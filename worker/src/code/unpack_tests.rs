use super::*;
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
    Unpacker::new(root.to_owned(), None, ZipLimits::default())
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
    drop(CodeDir::new(a.clone()));
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
    let pending = u.for_sandbox("aa", "sb-9", async { Ok(sample_zip()) });
    drop(pending); // never polled: nothing started
    let fut = Box::pin(u.for_sandbox("aa", "sb-10", async { Ok(sample_zip()) }));
    // Poll once so the blocking task starts, then drop the caller.
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut fut = fut;
    let _ = fut.as_mut().poll(&mut cx);
    drop(fut);
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if std::fs::read_dir(&u.root).map_or(true, |mut d| d.next().is_none()) {
            return;
        }
    }
    panic!("{} not empty", u.root.display());
}

#[test]
fn data_that_fails_its_crc_is_refused_at_extraction_and_leaves_nothing() {
    let mut zip = sample_zip();
    // Stored, so the file's bytes are in the archive as they are: change one.
    let at = zip
        .windows(5)
        .position(|w| w == b"hello")
        .expect("stored data");
    zip[at + 4] = b'p';
    let plan =
        package::zipcheck::validate_with(&zip, &ZipLimits::default(), DataCheck::AtExtraction);
    assert!(plan.is_ok(), "the layout alone is fine");
    assert!(package::validate(&zip, &ZipLimits::default()).is_err());
    let d = tempfile::tempdir().expect("tempdir");
    let u = unpacker(&d.path().join("code"));
    let e = u.unpack(&zip, "sb-1").expect_err("bad crc");
    assert!(!e.is_transient(), "{e}");
    assert!(!u.root.join("sb-1").exists());
}

fn inode(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(p).expect("meta").ino()
}

fn entries(root: &Path) -> usize {
    std::fs::read_dir(root).map_or(0, |d| d.count())
}

#[tokio::test]
async fn sandboxes_of_one_digest_share_one_unpacking_which_goes_with_the_last_of_them() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let d = tempfile::tempdir().expect("tempdir");
    let u = unpacker(&d.path().join("code"));
    let fetches = Arc::new(AtomicUsize::new(0));
    let fetch = |n: Arc<AtomicUsize>| async move {
        n.fetch_add(1, SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        Ok(sample_zip())
    };
    // A burst of cold starts of one new function: one fetch, one unpacking.
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let (u, f) = (u.clone(), fetch(fetches.clone()));
            tokio::spawn(async move { u.for_sandbox("d1", &format!("sb-{i}"), f).await })
        })
        .collect();
    let mut dirs = Vec::new();
    for t in tasks {
        dirs.push(t.await.expect("task").expect("dir"));
    }
    assert_eq!(fetches.load(SeqCst), 1);
    let (a, b) = (dirs[0].path(), dirs[5].path());
    assert_ne!(a, b);
    assert_eq!(inode(&a.join("bootstrap")), inode(&b.join("bootstrap")));
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&a.join("bootstrap")), 0o755);
    assert_eq!(mode(&a.join("lib")), 0o755);
    assert_eq!(
        std::fs::read(b.join("lib/alias")).expect("via link"),
        b"hello"
    );
    assert_eq!(entries(&u.root), 7, "six sandboxes and one template");
    let last = dirs.pop().expect("one");
    drop(dirs);
    assert_eq!(
        entries(&u.root),
        2,
        "the template stays while a sandbox holds it"
    );
    assert_eq!(
        std::fs::read(last.path().join("lib/data.txt")).expect("data"),
        b"hello"
    );
    drop(last);
    assert_eq!(
        entries(&u.root),
        0,
        "the last sandbox takes the template with it"
    );
    // Once gone, the next sandbox unpacks afresh.
    let again = u
        .for_sandbox("d1", "sb-7", fetch(fetches.clone()))
        .await
        .expect("again");
    assert_eq!(fetches.load(SeqCst), 2);
    drop(again);
    assert_eq!(u.templates.len(), 1);
    let other = u
        .for_sandbox("d2", "sb-8", fetch(fetches.clone()))
        .await
        .expect("other digest");
    assert_eq!(
        u.templates.len(),
        1,
        "slots of digests without sandboxes are forgotten"
    );
    drop(other);
}

#[tokio::test]
async fn a_failed_fetch_or_unpacking_leaves_nothing_and_the_next_sandbox_tries_again() {
    let d = tempfile::tempdir().expect("tempdir");
    let u = unpacker(&d.path().join("code"));
    let e = u
        .for_sandbox("d1", "sb-1", async {
            Err(CodeError::NotFound("d1".into()))
        })
        .await
        .err()
        .expect("fetch failed");
    assert!(matches!(e, CodeError::NotFound(_)), "{e}");
    let e = u
        .for_sandbox("d1", "sb-2", async { Ok(b"not a zip".to_vec()) })
        .await
        .err()
        .expect("bad package");
    assert!(!e.is_transient(), "{e}");
    assert_eq!(entries(&u.root), 0);
    let ok = u
        .for_sandbox("d1", "sb-3", async { Ok(sample_zip()) })
        .await;
    assert!(ok.is_ok());
}
