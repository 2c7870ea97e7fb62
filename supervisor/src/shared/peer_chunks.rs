//! Container-image chunks copied between frontends (`--etcd`), as code objects are
//! ([`super::peer_code`]): a frontend that stored an image's chunks pushes those another
//! frontend lacks before it acknowledges the CreateFunction or UpdateFunctionCode, and a
//! frontend asked for a chunk it lacks (by its own sandboxes, or a worker over the link)
//! fetches it from one that has it.
//!
//! Chunks are sealed convergently and named by the hash of their sealed bytes, so a
//! receiver checks each against its name; requests carry the same HMAC as code objects,
//! so only a frontend can fill another's store.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chunkstore::{ChunkId, ChunkStore};

use super::peer_code::{PeerClient, PeerCode, PeerError};

/// Where one chunk is stored and fetched.
pub const CHUNK_ROUTE: &str = "/_peer/chunk/{chunk_id}";
/// Where a frontend learns which of a list of chunks another lacks.
pub const MISSING_ROUTE: &str = "/_peer/chunks/missing";
/// A listing names at most this many chunks (a 10 GiB image has 20,480).
pub const MAX_LISTED: usize = 32 << 10;
/// A listing's bytes: 64 hex digits and a newline per chunk.
pub const MAX_LISTING_BYTES: usize = MAX_LISTED * 65;
/// A push may take this long, plus a second per 8 MiB it carries.
const PUSH_BASE: Duration = Duration::from_secs(30);

/// `ids` as a listing: one hex id per line.
pub fn listing(ids: &[ChunkId]) -> String {
    ids.iter()
        .map(ChunkId::to_hex)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The ids of a listing; `None` if it is malformed or too long.
pub fn parse_listing(body: &[u8]) -> Option<Vec<ChunkId>> {
    let text = std::str::from_utf8(body).ok()?;
    let ids: Option<Vec<ChunkId>> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(ChunkId::from_hex)
        .collect();
    ids.filter(|ids| ids.len() <= MAX_LISTED)
}

impl PeerCode {
    /// Copies the chunks of `ids` to every other registered frontend, each sending only
    /// what that frontend lacks; succeeds when at least one now holds them all, or when
    /// no other frontend is registered.
    pub fn push_chunks(
        &self,
        store: &Arc<ChunkStore>,
        ids: &[ChunkId],
    ) -> Result<usize, PeerError> {
        let others = self.others()?;
        if others.is_empty() || ids.is_empty() {
            return Ok(0);
        }
        let unique: Vec<ChunkId> = {
            let mut seen = HashSet::new();
            ids.iter().copied().filter(|id| seen.insert(*id)).collect()
        };
        let deadline =
            PUSH_BASE + Duration::from_secs(((unique.len() * chunkstore::CHUNK_SIZE) >> 23) as u64);
        let (peer, store) = (self.client(), store.clone());
        let object = format!("{} image chunks", ids.len());
        self.to_each(others, deadline, object, move |m| {
            let (peer, store, ids, url) =
                (peer.clone(), store.clone(), unique.clone(), m.url.clone());
            async move { push_to(&peer, &url, &store, &ids).await.map(drop) }
        })
    }

    /// The sealed bytes of chunk `id` from the first other frontend that has it,
    /// checked against the id.
    pub fn fetch_chunk(&self, id: &ChunkId) -> Result<Option<Vec<u8>>, PeerError> {
        Ok(self.fetch_chunks(std::slice::from_ref(id))?.pop().flatten())
    }

    /// [`Self::fetch_chunk`] for each of `ids`, in order, reading the frontend list
    /// from etcd once for all of them.
    pub fn fetch_chunks(&self, ids: &[ChunkId]) -> Result<Vec<Option<Vec<u8>>>, PeerError> {
        let others = self.others()?;
        Ok(ids.iter().map(|id| self.fetch_from(&others, id)).collect())
    }

    fn fetch_from(&self, others: &[super::members::Member], id: &ChunkId) -> Option<Vec<u8>> {
        let path = CHUNK_ROUTE.replace("{chunk_id}", &id.to_hex());
        for m in others {
            let (peer, url) = (self.client(), format!("{}{path}", m.url));
            let got = self.etcd().run_for(PUSH_BASE, async move {
                Ok(peer
                    .get(&url, chunkstore::convergent::MAX_SEALED_LEN)
                    .await
                    .ok())
            });
            if let Ok(Some(bytes)) = got {
                if ChunkId::of_sealed(&bytes) == *id {
                    return Some(bytes);
                }
                tracing::warn!(peer = %m.id, "a frontend sent a chunk that is not the one asked for");
            }
        }
        None
    }
}

/// Asks the frontend at `url` which of `ids` it lacks, then sends those.
async fn push_to(
    peer: &PeerClient,
    url: &str,
    store: &Arc<ChunkStore>,
    ids: &[ChunkId],
) -> Result<usize, String> {
    let asked: HashSet<ChunkId> = ids.iter().copied().collect();
    let mut sent = 0;
    for batch in ids.chunks(MAX_LISTED) {
        let reply = peer
            .send(
                "POST",
                &format!("{url}{MISSING_ROUTE}"),
                listing(batch).into(),
            )
            .await?;
        let missing = parse_listing(&reply).ok_or("a malformed list of missing chunks")?;
        for id in missing.into_iter().filter(|id| asked.contains(id)) {
            let (s, wanted) = (store.clone(), id);
            let sealed = tokio::task::spawn_blocking(move || s.get(&wanted))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let path = CHUNK_ROUTE.replace("{chunk_id}", &id.to_hex());
            peer.send("PUT", &format!("{url}{path}"), sealed.into())
                .await?;
            sent += 1;
        }
    }
    Ok(sent)
}

/// A frontend's chunk fetches for its own sandboxes: the worker asks for the chunks an
/// image needs that this frontend's store lacks.
pub struct PeerChunkFetch(pub Arc<PeerCode>);

impl worker::code::image::ChunkFetch for PeerChunkFetch {
    fn fetch_chunks<'a>(
        &'a self,
        _source: &'a str,
        ids: &'a [ChunkId],
    ) -> worker::sandbox::BoxFuture<'a, Result<Vec<Vec<u8>>, worker::code::CodeError>> {
        Box::pin(async move {
            let (peers, ids) = (self.0.clone(), ids.to_vec());
            tokio::task::spawn_blocking(move || {
                let fetched = peers
                    .fetch_chunks(&ids)
                    .map_err(|e| worker::code::CodeError::Unreachable(e.to_string()))?;
                ids.iter()
                    .zip(fetched)
                    .map(|(id, got)| {
                        got.ok_or_else(|| {
                            worker::code::CodeError::Unreachable(format!(
                                "no frontend holds image chunk {}",
                                id.to_hex()
                            ))
                        })
                    })
                    .collect()
            })
            .await
            .map_err(|e| worker::code::CodeError::Unreachable(format!("chunk fetch task: {e}")))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_round_trips_and_bad_ones_are_refused() {
        let ids = [ChunkId::of_sealed(b"a"), ChunkId::of_sealed(b"b")];
        let text = listing(&ids);
        let back = parse_listing(text.as_bytes()).expect("parses");
        assert!(back == ids.to_vec(), "{text}");
        assert!(parse_listing(b"").is_some_and(|v| v.is_empty()));
        assert!(parse_listing(b"zz").is_none());
        assert!(parse_listing(&[0xff, 0xfe]).is_none());
        let too_many = vec![ChunkId::of_sealed(b"x"); MAX_LISTED + 1];
        assert!(parse_listing(listing(&too_many).as_bytes()).is_none());
    }
}
