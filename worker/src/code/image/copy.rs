//! A worker host's copy of an image's chunks as its materialisation reads them, in
//! order: this host's copy, or, for a chunk it lacks, the frontend's (sealed, as stored
//! there), fetched with the next few missing ones, checked against its id, kept sealed
//! in the host's bounded store and handed over from memory. An image larger than the
//! store therefore still materialises, though its early chunks are evicted by the end.

use super::RemoteChunks;
use crate::code::CodeError;
use crate::sandbox::BoxFuture;
use chunkstore::{ChunkId, ChunkSource, ChunkStore, ReadError, StoreError};
use std::collections::HashMap;
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
/// `runtime`). At most [`BATCH`] fetched chunks are held in memory.
pub struct CopyingSource {
    local: Arc<ChunkStore>,
    remote: Option<RemoteChunks>,
    runtime: tokio::runtime::Handle,
    /// The image's stored chunks in the order they are read (a chunk the image holds
    /// twice is here twice), and the place of the next read.
    reads: Vec<ChunkId>,
    next: usize,
    /// Fetched and kept, not yet read: each with the place of the read it is for.
    fetched: HashMap<ChunkId, (usize, Vec<u8>)>,
}

impl CopyingSource {
    /// `reads`: the image's stored chunks in the order the reader will ask for them.
    pub fn new(
        local: Arc<ChunkStore>,
        remote: Option<RemoteChunks>,
        runtime: tokio::runtime::Handle,
        reads: impl Iterator<Item = ChunkId>,
    ) -> Self {
        Self {
            local,
            remote,
            runtime,
            reads: reads.collect(),
            next: 0,
            fetched: HashMap::new(),
        }
    }

    /// Moves past the read of `id` (the reader skips chunks its cache still holds) and
    /// drops fetched copies whose reads were skipped.
    fn advance_to(&mut self, id: &ChunkId) {
        if let Some(i) = self.reads[self.next..].iter().position(|c| c == id) {
            let at = self.next + i;
            self.next = at + 1;
            self.fetched.retain(|_, (place, _)| *place >= at);
        }
    }

    /// Fetches `id` and the next chunks to be read that are neither here nor in memory
    /// (up to a batch), keeps each in the local store, which checks it against its id,
    /// and returns `id`'s bytes.
    fn fetch_from(&mut self, remote: &RemoteChunks, id: &ChunkId) -> Result<Vec<u8>, ReadError> {
        let room = BATCH.saturating_sub(self.fetched.len()).max(1);
        // `id` first, then the reads ahead, each with its place.
        let mut batch = vec![*id];
        let mut places = vec![];
        for (place, c) in self.reads.iter().enumerate().skip(self.next) {
            if batch.len() >= room {
                break;
            }
            if !batch.contains(c) && !self.fetched.contains_key(c) && !self.local.contains(c) {
                batch.push(*c);
                places.push(place);
            }
        }
        let copy_error = |transient, error: CodeError| ReadError::Copy {
            from: remote.source.clone(),
            transient,
            error: Box::new(error),
        };
        let sealed = self
            .runtime
            .block_on(remote.fetch.fetch_chunks(&remote.source, &batch))
            .map_err(|e| copy_error(e.is_transient(), e))?;
        if sealed.len() != batch.len() {
            let why = format!("sent {} chunks for {}", sealed.len(), batch.len());
            return Err(copy_error(false, CodeError::Unreachable(why)));
        }
        for (c, bytes) in batch.iter().zip(&sealed) {
            self.local.put_copy(c, bytes)?;
        }
        let mut replies = sealed.into_iter();
        // The reply has as many chunks as the batch, which starts with `id`.
        let wanted = replies
            .next()
            .ok_or(ReadError::Store(StoreError::Missing(*id)))?;
        for ((c, place), bytes) in batch[1..].iter().zip(places).zip(replies) {
            self.fetched.insert(*c, (place, bytes));
        }
        Ok(wanted)
    }
}

impl ChunkSource for CopyingSource {
    fn sealed(&mut self, id: &ChunkId) -> Result<Vec<u8>, ReadError> {
        self.advance_to(id);
        if let Some((_, bytes)) = self.fetched.remove(id) {
            return Ok(bytes);
        }
        match self.local.get(id) {
            Err(StoreError::Missing(_)) => {}
            res => return Ok(res?),
        }
        match self.remote.clone() {
            Some(remote) => self.fetch_from(&remote, id),
            None => Err(ReadError::Store(StoreError::Missing(*id))),
        }
    }
}
