use super::*;
use crate::code::code_sha256;
use crate::sandbox::BoxFuture;
use std::sync::atomic::{AtomicU32, Ordering};

/// An upstream holding a few packages, counting fetches, optionally lying.
struct Upstream {
    packages: Vec<Vec<u8>>,
    fetches: AtomicU32,
    corrupt: bool,
}

impl CodeSource for Upstream {
    fn fetch<'a>(&'a self, code: &'a CodeRef) -> BoxFuture<'a, Result<Vec<u8>, CodeError>> {
        Box::pin(async move {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            let mut p = self
                .packages
                .iter()
                .find(|p| code_sha256(p) == code.sha256)
                .cloned()
                .ok_or_else(|| CodeError::NotFound(code.sha256.clone()))?;
            if self.corrupt {
                p[0] ^= 1;
            }
            Ok(p)
        })
    }
}

fn reference(p: &[u8]) -> CodeRef {
    CodeRef {
        sha256: code_sha256(p),
        source: "test".into(),
    }
}

fn setup(max: u64, corrupt: bool) -> (tempfile::TempDir, Arc<Upstream>, Arc<SealedCache>) {
    let d = tempfile::tempdir().expect("tempdir");
    let up = Arc::new(Upstream {
        packages: (0..3u8).map(|i| vec![i; 1000]).collect(),
        fetches: AtomicU32::new(0),
        corrupt,
    });
    let cache = SealedCache::open(&d.path().join("cache"), max, up.clone()).expect("open");
    (d, up, Arc::new(cache))
}

#[tokio::test]
async fn a_package_is_fetched_once_and_kept_sealed() {
    let (d, up, cache) = setup(1 << 20, false);
    let p = up.packages[0].clone();
    assert_eq!(cache.get(&reference(&p)).await.expect("first"), p);
    assert_eq!(cache.get(&reference(&p)).await.expect("second"), p);
    assert_eq!(up.fetches.load(Ordering::SeqCst), 1);
    assert_eq!(cache.counts(), (1, 1));
    // On disk: not the plaintext.
    for e in std::fs::read_dir(d.path().join("cache")).expect("dir") {
        let bytes = std::fs::read(e.expect("entry").path()).expect("read");
        assert!(
            !bytes.windows(64).any(|w| w == &p[..64]),
            "plaintext on disk"
        );
    }
}

#[tokio::test]
async fn a_package_that_does_not_match_its_digest_is_refused_and_not_cached() {
    let (_d, up, cache) = setup(1 << 20, true);
    let p = up.packages[1].clone();
    let e = cache
        .get(&reference(&p))
        .await
        .expect_err("corrupt upstream");
    assert!(matches!(e, CodeError::DigestMismatch(_)), "{e}");
    assert!(!e.is_transient());
    assert_eq!(cache.held_bytes(), 0);
}

#[tokio::test]
async fn least_recently_used_packages_are_evicted_beyond_the_bound() {
    // Room for two sealed packages of 1000 bytes (plus nonce and tag), not three.
    let (d, up, cache) = setup(2100, false);
    let [a, b, c] = [0, 1, 2].map(|i| up.packages[i].clone());
    cache.get(&reference(&a)).await.expect("a");
    cache.get(&reference(&b)).await.expect("b");
    cache
        .get(&reference(&a))
        .await
        .expect("a again: now b is the oldest");
    cache.get(&reference(&c)).await.expect("c evicts b");
    assert!(cache.held_bytes() <= 2100);
    assert_eq!(
        std::fs::read_dir(d.path().join("cache"))
            .expect("dir")
            .count(),
        2
    );
    let before = up.fetches.load(Ordering::SeqCst);
    cache.get(&reference(&a)).await.expect("a still held");
    assert_eq!(up.fetches.load(Ordering::SeqCst), before);
    cache.get(&reference(&b)).await.expect("b fetched again");
    assert_eq!(up.fetches.load(Ordering::SeqCst), before + 1);
}

#[tokio::test]
async fn a_tampered_cache_file_is_fetched_again_not_trusted() {
    let (d, up, cache) = setup(1 << 20, false);
    let p = up.packages[2].clone();
    cache.get(&reference(&p)).await.expect("first");
    let file = std::fs::read_dir(d.path().join("cache"))
        .expect("dir")
        .next()
        .expect("one file")
        .expect("entry")
        .path();
    let mut bytes = std::fs::read(&file).expect("read");
    bytes[20] ^= 0x40;
    std::fs::write(&file, bytes).expect("write");
    assert_eq!(cache.get(&reference(&p)).await.expect("refetched"), p);
    assert_eq!(up.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_burst_of_cold_starts_fetches_a_new_package_once() {
    let (_d, up, cache) = setup(1 << 20, false);
    let code = reference(&up.packages[0]);
    let gets: Vec<_> = (0..8)
        .map(|_| {
            let (cache, code) = (cache.clone(), code.clone());
            tokio::spawn(async move { cache.get(&code).await.map(|z| z.len()) })
        })
        .collect();
    for g in gets {
        assert_eq!(g.await.expect("join").expect("get"), 1000);
    }
    assert_eq!(up.fetches.load(Ordering::SeqCst), 1);
}
