//! A worker host's copy of an image's chunks: the ones its local store lacks are fetched
//! from the frontend (sealed, as stored there), checked against their ids and kept
//! sealed; the image is then mounted from the local store like on the frontend's host.

use super::ImagePackage;
use crate::code::CodeError;
use crate::sandbox::BoxFuture;
use chunkstore::{ChunkId, ChunkStore};
use std::collections::HashSet;
use std::sync::Arc;

/// Chunks fetched per request batch (each up to 512 KiB).
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

/// Copies into `local` every chunk of the image package `package` it does not hold.
/// Returns how many were copied.
pub async fn copy_missing(
    fetch: &dyn ChunkFetch,
    source: &str,
    local: &Arc<ChunkStore>,
    package: &[u8],
) -> Result<usize, CodeError> {
    let package = ImagePackage::decode(package)?;
    let mut seen = HashSet::new();
    let missing: Vec<ChunkId> = package
        .manifest
        .stored_ids()
        .filter(|id| seen.insert(*id) && !local.contains(id))
        .collect();
    for batch in missing.chunks(BATCH) {
        let sealed = fetch.fetch_chunks(source, batch).await?;
        if sealed.len() != batch.len() {
            return Err(CodeError::Unreachable(format!(
                "{source} sent {} chunks for {}",
                sealed.len(),
                batch.len()
            )));
        }
        let (store, ids) = (local.clone(), batch.to_vec());
        tokio::task::spawn_blocking(move || {
            ids.iter()
                .zip(&sealed)
                .try_for_each(|(id, bytes)| store.put_copy(id, bytes).map(|_| ()))
        })
        .await
        .map_err(|e| CodeError::Unreachable(format!("chunk copy task: {e}")))?
        .map_err(super::ImageError::Copy)?;
    }
    Ok(missing.len())
}
