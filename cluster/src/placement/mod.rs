//! Placement of invokes on workers: which worker runs the next invoke of a
//! function version.
//!
//! The policy concentrates load the way AWS Lambda does:
//!
//! 1. **Warm first, most recently used first.** An invoke goes to a worker that
//!    holds an idle sandbox of that function version; among those, the worker
//!    whose idle sandbox was used last. Reusing the hottest sandbox lets the
//!    others stay idle long enough to be reaped.
//! 2. **Cold starts spread copies, mix functions.** Otherwise the new sandbox
//!    goes to a worker with room whose current mix holds the fewest sandboxes
//!    of that function. Copies of one function burst together, so they are
//!    spread over hosts; different functions burst independently, so mixing
//!    them on a host averages their spikes out. Ties go to the least loaded
//!    worker (memory used / capacity), then to a per-function pseudo-random
//!    worker order, so that ties do not always land on worker 0.
//! 3. **Eligibility.** Workers that are not available (down or draining), whose
//!    lease ends sooner than the request's `min_lease`, or that already run
//!    `busy_per_cpu × cpus` busy sandboxes are skipped, for warm and cold alike.
//!    A cold start also needs `used_mib + memory_mib ≤ capacity_mib`.
//! 4. [`Choice::Full`] (HTTP 429) only when no worker can take the invoke.
//!
//! # API
//!
//! ```text
//! pub struct WorkerLoad<K = String, S = RandomState> { available: bool,
//!     lease_remaining: Duration, capacity_mib: u64, used_mib: u64, cpus: u32, busy: u32,
//!     idle: HashMap<K, u64, S>, per_function: HashMap<K, u32, S> }
//! pub struct Request<'a> { function: &'a str, version_key: &'a str, memory_mib: u64,
//!     min_lease: Duration }
//! pub enum Choice { Warm(usize), Cold(usize), Full }
//! pub struct Policy { busy_per_cpu: u32 }               // Default: 64
//! impl Policy {   // K: Borrow<str> + Hash + Eq, S: BuildHasher
//!     pub fn choose(&self, workers: &[WorkerLoad<K, S>], req: &Request) -> Choice;
//!     pub fn warm(&self, workers: &[WorkerLoad<K, S>], req: &Request) -> Option<usize>;
//!     pub fn cold(&self, workers: &[WorkerLoad<K, S>], req: &Request) -> Option<usize>;
//!     pub fn can_run(&self, worker: &WorkerLoad<K, S>, req: &Request) -> bool;
//!     pub fn can_start(&self, worker: &WorkerLoad<K, S>, req: &Request) -> bool;
//! }
//! pub fn memory_load_cmp(a: &WorkerLoad<K, S>, b: &WorkerLoad<K, S>) -> Ordering;
//! pub fn tie_rank(function: &str, worker: usize) -> u64;
//! ```
//!
//! The frontend uses the defaults: `String` keys, std's hasher. Key and hasher
//! are type parameters because the policy does one lookup per worker on every
//! invoke, and with `String` keys each hit follows a pointer to the key's own
//! heap block: about 60 ns per worker measured, 12 µs per call on 200 workers
//! when the function has sandboxes everywhere. The simulator uses `&str` keys
//! into one shared buffer and a deterministic hasher; an interned key type that
//! borrows as `str` would do the same for the frontend. Everything is pure: no
//! I/O, no locks, no allocation; a call is one or two passes over the workers.
//!
//! [`sim`] is the fleet simulator behind the `placement-sim` bench binary; the
//! frontend does not use it.

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::time::Duration;

pub mod sim;

#[cfg(test)]
mod tests;

/// What the frontend knows about one worker when it places an invoke.
#[derive(Debug, Clone, Default)]
pub struct WorkerLoad<K = String, S = RandomState> {
    /// Up and not draining.
    pub available: bool,
    /// Time left on the worker's lease; placing on a worker about to go away
    /// would throw the sandbox away with it.
    pub lease_remaining: Duration,
    /// Memory available for sandboxes.
    pub capacity_mib: u64,
    /// Memory of its sandboxes: busy, idle and starting.
    pub used_mib: u64,
    pub cpus: u32,
    /// Sandboxes running an invoke.
    pub busy: u32,
    /// Version key → most recent last-use tick (monotonic, e.g. ms) of an idle
    /// sandbox of that version on this worker. Absent: none idle.
    pub idle: HashMap<K, u64, S>,
    /// Function name → its sandboxes on this worker (any version; busy, idle
    /// and starting). Absent: none.
    pub per_function: HashMap<K, u32, S>,
}

/// One invoke to place.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Function name: cold starts spread the copies of one function.
    pub function: &'a str,
    /// Function version key: only an idle sandbox of this exact version is warm.
    pub version_key: &'a str,
    /// Memory of a new sandbox of this version.
    pub memory_mib: u64,
    /// Skip workers whose lease ends sooner than this.
    pub min_lease: Duration,
}

/// Where the invoke goes; the `usize` indexes the `workers` slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Reuse an idle sandbox of the version on this worker.
    Warm(usize),
    /// Start a new sandbox on this worker.
    Cold(usize),
    /// No worker can take the invoke: throttle (HTTP 429).
    Full,
}

/// The placement policy and its one knob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Busy sandboxes allowed per CPU. Memory is the real constraint; this only
    /// stops a worker with huge memory and few CPUs from taking everything.
    pub busy_per_cpu: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { busy_per_cpu: 64 }
    }
}

impl Policy {
    /// Warm on the most recently used idle sandbox if there is one, else a cold
    /// start on the worker that spreads the function best, else `Full`.
    pub fn choose<K, S>(&self, workers: &[WorkerLoad<K, S>], req: &Request<'_>) -> Choice
    where
        K: Borrow<str> + Hash + Eq,
        S: BuildHasher,
    {
        if let Some(index) = self.warm(workers, req) {
            return Choice::Warm(index);
        }
        match self.cold(workers, req) {
            Some(index) => Choice::Cold(index),
            None => Choice::Full,
        }
    }

    /// The eligible worker whose idle sandbox of `req.version_key` was used
    /// most recently.
    pub fn warm<K, S>(&self, workers: &[WorkerLoad<K, S>], req: &Request<'_>) -> Option<usize>
    where
        K: Borrow<str> + Hash + Eq,
        S: BuildHasher,
    {
        let function_hash = fnv1a(req.function.as_bytes());
        // (index, last-use tick) of the best so far.
        let mut best: Option<(usize, u64)> = None;
        for (index, worker) in workers.iter().enumerate() {
            if !self.can_run(worker, req) {
                continue;
            }
            let Some(&last_use) = worker.idle.get(req.version_key) else {
                continue;
            };
            // Candidate first when the comparison says Less.
            let better = best.is_none_or(|(best_index, best_use)| {
                best_use
                    .cmp(&last_use)
                    .then_with(|| {
                        rank_with(function_hash, best_index).cmp(&rank_with(function_hash, index))
                    })
                    .is_lt()
            });
            if better {
                best = Some((index, last_use));
            }
        }
        best.map(|(index, _)| index)
    }

    /// The worker for a new sandbox: fewest sandboxes of `req.function`, then
    /// least memory load, then the function's own pseudo-random worker order.
    pub fn cold<K, S>(&self, workers: &[WorkerLoad<K, S>], req: &Request<'_>) -> Option<usize>
    where
        K: Borrow<str> + Hash + Eq,
        S: BuildHasher,
    {
        let function_hash = fnv1a(req.function.as_bytes());
        // (index, copies of the function) of the best so far.
        let mut best: Option<(usize, u32)> = None;
        for (index, worker) in workers.iter().enumerate() {
            if !self.can_start(worker, req) {
                continue;
            }
            let copies = worker.per_function.get(req.function).copied().unwrap_or(0);
            // Candidate first when the comparison says Less.
            let better = best.is_none_or(|(best_index, best_copies)| {
                copies
                    .cmp(&best_copies)
                    .then_with(|| memory_load_cmp(worker, &workers[best_index]))
                    .then_with(|| {
                        rank_with(function_hash, best_index).cmp(&rank_with(function_hash, index))
                    })
                    .is_lt()
            });
            if better {
                best = Some((index, copies));
            }
        }
        best.map(|(index, _)| index)
    }

    /// The worker may run one more invoke: available, lease long enough, below
    /// its busy limit. Enough for a warm invoke, whose memory is already counted.
    pub fn can_run<K, S>(&self, worker: &WorkerLoad<K, S>, req: &Request<'_>) -> bool {
        let busy_limit = u64::from(worker.cpus) * u64::from(self.busy_per_cpu);
        worker.available
            && worker.lease_remaining >= req.min_lease
            && u64::from(worker.busy) < busy_limit
    }

    /// The worker may start a new sandbox of `req.memory_mib` and run it.
    pub fn can_start<K, S>(&self, worker: &WorkerLoad<K, S>, req: &Request<'_>) -> bool {
        self.can_run(worker, req)
            && worker.capacity_mib > 0
            && worker.used_mib.saturating_add(req.memory_mib) <= worker.capacity_mib
    }
}

/// Compares `used_mib / capacity_mib` of two workers exactly (no floats).
/// A worker without capacity counts as fully loaded.
pub fn memory_load_cmp<K, S>(a: &WorkerLoad<K, S>, b: &WorkerLoad<K, S>) -> std::cmp::Ordering {
    if a.capacity_mib == 0 || b.capacity_mib == 0 {
        return (a.capacity_mib == 0).cmp(&(b.capacity_mib == 0));
    }
    let a_scaled = u128::from(a.used_mib) * u128::from(b.capacity_mib);
    let b_scaled = u128::from(b.used_mib) * u128::from(a.capacity_mib);
    a_scaled.cmp(&b_scaled)
}

/// The last tie-break: a pseudo-random rank of `worker` for `function`, higher
/// wins (rendezvous hashing). Each function gets its own worker order, so ties
/// of different functions land on different workers, and a given function's
/// ties land consistently.
pub fn tie_rank(function: &str, worker: usize) -> u64 {
    rank_with(fnv1a(function.as_bytes()), worker)
}

fn rank_with(function_hash: u64, worker: usize) -> u64 {
    mix64(function_hash ^ (worker as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// FNV-1a, 64 bit: no random keys, so a function's worker order is the same
/// in every process and run.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// splitmix64's finaliser: spreads every input bit over the output.
pub(crate) fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
