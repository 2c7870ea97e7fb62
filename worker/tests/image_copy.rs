//! A worker host writes an image from chunks it copies from the frontend as it goes:
//! an image larger than the host's bounded chunk store still reads back whole, in a
//! few batched fetches (also when the image holds a chunk several times), and a fetched
//! chunk that is not its id fails the read.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chunkstore::{write_image, ChunkId, ChunkStore, ImageManifest, ImageReader, ReadError, Salt};
use chunkstore::{StoreError, CHUNK_SIZE};
use worker::code::image::{ChunkFetch, CopyingSource, RemoteChunks};
use worker::code::CodeError;
use worker::sandbox::BoxFuture;

const CHUNKS: usize = 20;

/// The frontend: its own store, counting requests and chunks sent; `corrupt` flips a
/// byte of every chunk it sends.
struct Frontend {
    store: Arc<ChunkStore>,
    requests: AtomicUsize,
    sent: AtomicUsize,
    corrupt: bool,
}

impl Frontend {
    fn new(store: Arc<ChunkStore>, corrupt: bool) -> Arc<Self> {
        Arc::new(Self {
            store,
            requests: AtomicUsize::new(0),
            sent: AtomicUsize::new(0),
            corrupt,
        })
    }
}

impl ChunkFetch for Frontend {
    fn fetch_chunks<'a>(
        &'a self,
        _source: &'a str,
        ids: &'a [ChunkId],
    ) -> BoxFuture<'a, Result<Vec<Vec<u8>>, CodeError>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.sent.fetch_add(ids.len(), Ordering::Relaxed);
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

/// An image of [`CHUNKS`] chunks, none of them zeros, of which `distinct` differ: chunk
/// k is the same as chunk k + `distinct`.
fn image(dir: &std::path::Path, distinct: usize) -> (Arc<ChunkStore>, ImageManifest, Vec<u8>) {
    let store = Arc::new(ChunkStore::open(dir.join("frontend")).unwrap());
    let bytes: Vec<u8> = (0..CHUNKS * CHUNK_SIZE)
        .map(|i| ((i / CHUNK_SIZE) % distinct * 7 + i % CHUNK_SIZE % 251) as u8 | 1)
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

/// Reads the whole image through a copying source over a host store with room for two
/// of its chunks, as the worker writes an image for a mount; returns the host's store.
async fn read_whole(
    dir: &std::path::Path,
    frontend: &Arc<Frontend>,
    manifest: ImageManifest,
    want: Vec<u8>,
) -> Arc<ChunkStore> {
    let room = 2 * CHUNK_SIZE as u64 + 4096;
    let local = Arc::new(ChunkStore::open_bounded(dir.join("host"), room).unwrap());
    let source = source(&local, frontend, &manifest);
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
    local
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_larger_than_the_hosts_store_is_copied_and_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (store, manifest, want) = image(dir.path(), CHUNKS);
    let frontend = Frontend::new(store, false);
    let local = read_whole(dir.path(), &frontend, manifest, want).await;
    // Batches of up to 16: two requests, not twenty, and each chunk sent once.
    assert_eq!(frontend.requests.load(Ordering::Relaxed), 2);
    assert_eq!(frontend.sent.load(Ordering::Relaxed), CHUNKS);
    let evicted = local.evicted();
    assert!(evicted >= (CHUNKS - 3) as u64, "evicted {evicted}");
}

/// Five chunks, each four times over, farther apart than the store and the reader's
/// cache reach: every read copies at most its own chunk again, and nothing already read
/// is fetched ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_holding_a_chunk_several_times_is_read_whole_past_evictions() {
    let dir = tempfile::tempdir().unwrap();
    let (store, manifest, want) = image(dir.path(), 5);
    assert_eq!(manifest.stored_ids().collect::<HashSet<_>>().len(), 5);
    let frontend = Frontend::new(store, false);
    read_whole(dir.path(), &frontend, manifest, want).await;
    let sent = frontend.sent.load(Ordering::Relaxed);
    assert!((5..=CHUNKS).contains(&sent), "sent {sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_chunk_that_is_not_its_id_fails_the_read() {
    let dir = tempfile::tempdir().unwrap();
    let (store, manifest, _) = image(dir.path(), CHUNKS);
    let frontend = Frontend::new(store, true);
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
