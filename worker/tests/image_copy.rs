//! A worker host writes an image from chunks it copies from the frontend as it goes:
//! an image larger than the host's bounded chunk store still reads back whole, in a
//! few batched fetches, and a fetched chunk that is not its id fails the read.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chunkstore::{write_image, ChunkId, ChunkStore, ImageManifest, ImageReader, ReadError, Salt};
use chunkstore::{StoreError, CHUNK_SIZE};
use worker::code::image::{ChunkFetch, CopyingSource, RemoteChunks};
use worker::code::CodeError;
use worker::sandbox::BoxFuture;

const CHUNKS: usize = 20;

/// The frontend: its own store, counting requests; `corrupt` flips a byte of every
/// chunk it sends.
struct Frontend {
    store: Arc<ChunkStore>,
    requests: AtomicUsize,
    corrupt: bool,
}

impl ChunkFetch for Frontend {
    fn fetch_chunks<'a>(
        &'a self,
        _source: &'a str,
        ids: &'a [ChunkId],
    ) -> BoxFuture<'a, Result<Vec<Vec<u8>>, CodeError>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            ids.iter()
                .map(|id| {
                    let mut sealed = self
                        .store
                        .get(id)
                        .map_err(|e| CodeError::Unreachable(e.to_string()))?;
                    if self.corrupt {
                        sealed[40] ^= 1;
                    }
                    Ok(sealed)
                })
                .collect()
        })
    }
}

fn image(dir: &std::path::Path) -> (Arc<ChunkStore>, ImageManifest, Vec<u8>) {
    let store = Arc::new(ChunkStore::open(dir.join("frontend")).unwrap());
    // Distinct chunks (no zeros, no repeats): each is stored and fetched.
    let bytes: Vec<u8> = (0..CHUNKS * CHUNK_SIZE)
        .map(|i| (i / CHUNK_SIZE * 7 + i % 251) as u8 | 1)
        .collect();
    let (manifest, _) = write_image(
        &store,
        &Salt::from_bytes([9; 32]),
        bytes.as_slice(),
        1 << 30,
    )
    .unwrap();
    (store, manifest, bytes)
}

fn source(
    local: &Arc<ChunkStore>,
    frontend: &Arc<Frontend>,
    manifest: &ImageManifest,
) -> CopyingSource {
    let remote = RemoteChunks {
        fetch: frontend.clone(),
        source: "fe1".into(),
    };
    CopyingSource::new(
        local.clone(),
        Some(remote),
        tokio::runtime::Handle::current(),
        manifest.stored_ids(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_larger_than_the_hosts_store_is_copied_and_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (store, manifest, want) = image(dir.path());
    let frontend = Arc::new(Frontend {
        store,
        requests: AtomicUsize::new(0),
        corrupt: false,
    });
    // Room for two chunks of the image's twenty.
    let local = Arc::new(
        ChunkStore::open_bounded(dir.path().join("host"), 2 * CHUNK_SIZE as u64 + 4096).unwrap(),
    );
    let source = source(&local, &frontend, &manifest);
    let (got, loaded) = tokio::task::spawn_blocking(move || {
        let mut reader = ImageReader::new(source, manifest, 2);
        let mut got = vec![0u8; CHUNKS * CHUNK_SIZE];
        assert_eq!(reader.read_at(0, &mut got).unwrap(), got.len());
        (got, reader.chunks_loaded())
    })
    .await
    .unwrap();
    assert!(got == want, "the image read back differs");
    assert_eq!(loaded, CHUNKS as u64);
    // Batches of up to 16: two requests, not twenty.
    assert_eq!(frontend.requests.load(Ordering::Relaxed), 2);
    assert!(
        local.evicted() >= (CHUNKS - 3) as u64,
        "evicted {}",
        local.evicted()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_chunk_that_is_not_its_id_fails_the_read() {
    let dir = tempfile::tempdir().unwrap();
    let (store, manifest, _) = image(dir.path());
    let frontend = Arc::new(Frontend {
        store,
        requests: AtomicUsize::new(0),
        corrupt: true,
    });
    let local = Arc::new(ChunkStore::open(dir.path().join("host")).unwrap());
    let source = source(&local, &frontend, &manifest);
    let err = tokio::task::spawn_blocking(move || {
        let mut reader = ImageReader::new(source, manifest, 2);
        let mut buf = vec![0u8; 4096];
        reader.read_at(0, &mut buf).expect_err("refused")
    })
    .await
    .unwrap();
    assert!(
        matches!(err, ReadError::Store(StoreError::NotThatChunk(_))),
        "{err}"
    );
    assert!(local.list().unwrap().is_empty(), "a bad copy was kept");
}
