//! The chunk link end to end: the worker's server, the monitor's client and reader.

use std::sync::Arc;

use chunkstore::wire::{ChunkClient, FetchError};
use chunkstore::{ChunkId, ChunkSource, ChunkStore, ImageReader, ReadError, Salt, CHUNK_SIZE};

use super::*;
use crate::code::CodeError;
use crate::sandbox::BoxFuture;

/// 2½ chunks of numbered bytes with a zero chunk between, in a fresh store.
fn stored_image(dir: &std::path::Path) -> (Arc<ChunkStore>, ImagePackage, Vec<u8>) {
    let store = Arc::new(ChunkStore::open(dir.join("store")).unwrap());
    let mut bytes: Vec<u8> = (0..CHUNK_SIZE * 5 / 2).map(|i| (i / 4093) as u8).collect();
    bytes[CHUNK_SIZE..2 * CHUNK_SIZE].fill(0);
    let salt = Salt::from_bytes([3; 32]);
    let (manifest, _) =
        chunkstore::write_image(&store, &salt, &bytes[..], chunkstore::MAX_IMAGE_BYTES).unwrap();
    let run = ImageRun::default();
    (store, ImagePackage { run, manifest }, bytes)
}

/// A monitor's client on a blocking thread, against `image` served by this runtime.
async fn with_client<T: Send + 'static>(
    image: LazyImage,
    f: impl FnOnce(ChunkClient, chunkstore::ImageManifest) -> T + Send + 'static,
) -> T {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let ours = tokio::net::UnixStream::from_std(ours).unwrap();
    let server = tokio::spawn(Arc::new(image).serve(ours, Default::default()));
    let out = tokio::task::spawn_blocking(move || {
        let (client, manifest) = ChunkClient::start(theirs).unwrap();
        f(client, manifest)
    })
    .await
    .unwrap();
    server.await.unwrap().unwrap();
    out
}

#[tokio::test]
async fn a_monitor_reads_the_whole_image_and_nothing_else_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (store, package, bytes) = stored_image(dir.path());
    let other = chunkstore::convergent::seal(&Salt::from_bytes([4; 32]), b"another image").unwrap();
    store.put(&other).unwrap();
    let image = LazyImage::new(package, store, None);
    let (read, foreign) = with_client(image, move |mut client, manifest| {
        let foreign = client.sealed(&other.id());
        let mut reader = ImageReader::new(client, manifest, 1);
        let mut read = vec![0u8; bytes.len() + 10];
        let n = reader.read_at(0, &mut read).unwrap();
        read.truncate(n);
        (read == bytes, foreign)
    })
    .await;
    assert!(read, "the image read back differs");
    assert!(matches!(
        foreign,
        Err(ReadError::Fetch(FetchError::Refused {
            transient: false,
            ..
        }))
    ));
}

/// The frontend of a worker host: serves chunks from its own store, counting them.
struct Frontend(Arc<ChunkStore>, std::sync::atomic::AtomicUsize);

impl ChunkFetch for Frontend {
    fn fetch_chunks<'a>(
        &'a self,
        source: &'a str,
        ids: &'a [ChunkId],
    ) -> BoxFuture<'a, Result<Vec<Vec<u8>>, CodeError>> {
        assert_eq!(source, "fe-1");
        self.1
            .fetch_add(ids.len(), std::sync::atomic::Ordering::SeqCst);
        let got = ids.iter().map(|id| self.0.get(id).unwrap()).collect();
        Box::pin(async move { Ok(got) })
    }
}

#[tokio::test]
async fn a_worker_host_copies_only_the_chunks_the_guest_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (frontend_store, package, bytes) = stored_image(dir.path());
    let local = Arc::new(ChunkStore::open(dir.path().join("local")).unwrap());
    let frontend = Arc::new(Frontend(frontend_store, Default::default()));
    let remote = RemoteChunks {
        fetch: frontend.clone(),
        source: "fe-1".into(),
    };
    let image = LazyImage::new(package, local.clone(), Some(remote));
    let tail = with_client(image, move |client, manifest| {
        let mut reader = ImageReader::new(client, manifest, 1);
        let mut buf = vec![0u8; 100];
        reader.read_at(2 * CHUNK_SIZE as u64 + 7, &mut buf).unwrap();
        // Again: from the reader's cache, nothing more over the link.
        reader.read_at(2 * CHUNK_SIZE as u64 + 7, &mut buf).unwrap();
        buf
    })
    .await;
    assert_eq!(tail[..], bytes[2 * CHUNK_SIZE + 7..2 * CHUNK_SIZE + 107]);
    assert_eq!(frontend.1.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        local.list().unwrap().len(),
        1,
        "only the chunk read was copied"
    );
}
