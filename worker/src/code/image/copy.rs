//! A worker host's copy of an image's chunks as its materialisation reads them, in
//! order: this host's copy, or, for a chunk it lacks, the frontend's (sealed, as stored
//! there), fetched with the next few missing ones, checked against its id, kept sealed
//! in the host's bounded store and handed over from memory. An image larger than the
//! store therefore still materialises, though its early chunks are evicted by the end.

use super::RemoteChunks;
use crate::code::CodeError;
use crate::sandbox::BoxFuture;
use chunkstore::wire::FetchError;
use chunkstore::{ChunkId, ChunkSource, ChunkStore, ReadError, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Chunks fetched per request batch (each up to 512 KiB), and so the most held in
/// memory at once.
const BATCH: usize = 16;

/// Where a worker host gets the chunks it lacks.
pub trait ChunkFetch: Send + Sync {
    /// The sealed bytes of each of `ids`, in order, from the frontend at `source` (the
    /// code reference's source). Unchecked: the caller checks each against its id.
    fn fetch_chunks<'a>(
        &'a self,
        source: &'a str,
        ids: &'a [ChunkId],
    ) -> BoxFuture<'a, Result<Vec<Vec<u8>>, CodeError>>;
}

/// One image's chunks for a reader on a blocking thread (it waits for fetches on
/// `runtime`).
pub struct CopyingSource {
    local: Arc<ChunkStore>,
    remote: Option<RemoteChunks>,
    runtime: tokio::runtime::Handle,
    /// The image's distinct stored chunks in the order it is read, and each one's place.
    order: Vec<ChunkId>,
    place: HashMap<ChunkId, usize>,
    /// Fetched and kept, not yet read.
    fetched: HashMap<ChunkId, Vec<u8>>,
    copied: usize,
}

impl CopyingSource {
    /// `ids`: the image's stored chunks in the order the reader will ask for them.
    pub fn new(
        local: Arc<ChunkStore>,
        remote: Option<RemoteChunks>,
        runtime: tokio::runtime::Handle,
        ids: impl Iterator<Item = ChunkId>,
    ) -> Self {
        let mut seen = HashSet::new();
        let order: Vec<ChunkId> = ids.filter(|id| seen.insert(*id)).collect();
        let place = order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        Self {
            local,
            remote,
            runtime,
            order,
            place,
            fetched: HashMap::new(),
            copied: 0,
        }
    }

    /// How many chunks were copied from the frontend.
    pub fn copied(&self) -> usize {
        self.copied
    }

    /// Fetches `id` and the missing chunks after it (up to a batch), keeps each in the
    /// local store (which checks it against its id) and in memory.
    fn fetch_from(&mut self, id: &ChunkId) -> Result<(), ReadError> {
        let Some(remote) = &self.remote else {
            return Err(ReadError::Store(StoreError::Missing(*id)));
        };
        let after = self.place.get(id).map_or(self.order.len(), |p| p + 1);
        let batch: Vec<ChunkId> = std::iter::once(*id)
            .chain(
                self.order[after..]
                    .iter()
                    .filter(|c| !self.fetched.contains_key(*c) && !self.local.contains(c))
                    .copied(),
            )
            .take(BATCH)
            .collect();
        let refused = |message: String, transient: bool| {
            ReadError::Fetch(FetchError::Refused {
                id: *id,
                message,
                transient,
            })
        };
        let sealed = self
            .runtime
            .block_on(remote.fetch.fetch_chunks(&remote.source, &batch))
            .map_err(|e| refused(e.to_string(), e.is_transient()))?;
        if sealed.len() != batch.len() {
            let message = format!(
                "{} sent {} chunks for {}",
                remote.source,
                sealed.len(),
                batch.len()
            );
            return Err(refused(message, true));
        }
        for (id, bytes) in batch.into_iter().zip(sealed) {
            self.local.put_copy(&id, &bytes)?;
            self.copied += 1;
            self.fetched.insert(id, bytes);
        }
        Ok(())
    }
}

impl ChunkSource for CopyingSource {
    fn sealed(&mut self, id: &ChunkId) -> Result<Vec<u8>, ReadError> {
        if let Some(bytes) = self.fetched.remove(id) {
            return Ok(bytes);
        }
        match self.local.get(id) {
            Err(StoreError::Missing(_)) if self.remote.is_some() => self.fetch_from(id)?,
            res => return Ok(res?),
        }
        // `fetch_from` fetched `id` first, or failed.
        self.fetched
            .remove(id)
            .ok_or(ReadError::Store(StoreError::Missing(*id)))
    }
}
