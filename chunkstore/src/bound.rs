//! A byte bound on a store of copies (a worker host's chunks copied from its frontend):
//! beyond it, the least recently used chunks are deleted. A copy can always be fetched
//! again, so eviction loses nothing.

use std::collections::HashMap;

use crate::convergent::ChunkId;

#[derive(Debug)]
pub(crate) struct Lru {
    max_bytes: u64,
    total: u64,
    tick: u64,
    /// Size and last use of every chunk in the store.
    entries: HashMap<ChunkId, (u64, u64)>,
}

impl Lru {
    pub(crate) fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            total: 0,
            tick: 0,
            entries: HashMap::new(),
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    pub(crate) fn touch(&mut self, id: &ChunkId) {
        self.tick += 1;
        if let Some(e) = self.entries.get_mut(id) {
            e.1 = self.tick;
        }
    }

    /// Records a chunk; returns those to delete, least recently used first, to get
    /// back under the bound (never `id` itself, which the caller is about to use).
    pub(crate) fn insert(&mut self, id: ChunkId, size: u64) -> Vec<ChunkId> {
        self.tick += 1;
        if let Some((old, _)) = self.entries.insert(id, (size, self.tick)) {
            self.total -= old;
        }
        self.total += size;
        let mut victims = Vec::new();
        while self.total > self.max_bytes {
            let oldest = self
                .entries
                .iter()
                .filter(|(k, _)| **k != id)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k);
            let Some(victim) = oldest else { break };
            self.forget(&victim);
            victims.push(victim);
        }
        victims
    }

    pub(crate) fn forget(&mut self, id: &ChunkId) {
        if let Some((size, _)) = self.entries.remove(id) {
            self.total -= size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_beyond_the_bound() {
        let id = |b| ChunkId([b; 32]);
        let mut lru = Lru::new(300);
        assert!(lru.insert(id(1), 100).is_empty());
        assert!(lru.insert(id(2), 100).is_empty());
        assert!(lru.insert(id(3), 100).is_empty());
        lru.touch(&id(1));
        // 2 is now the least recently used.
        assert_eq!(lru.insert(id(4), 100), vec![id(2)]);
        assert_eq!(lru.total(), 300);
        // A chunk larger than the bound evicts everything else, never itself.
        let mut out = lru.insert(id(5), 500);
        out.sort_by_key(|c| c.0[0]);
        assert_eq!(out, vec![id(1), id(3), id(4)]);
        assert_eq!(lru.total(), 500);
    }
}
