//! Host memory admission for cold starts. A new sandbox needs its memory size plus
//! [`WorkerConfig::memory_headroom_mib`] of `MemAvailable`, counting what sandboxes
//! still starting have been promised (their memory is not in use yet, so a burst of
//! cold starts must not all pass one reading). Short of it, idle sandboxes are
//! stopped, least recently used first, before the invoke is throttled.
//!
//! [`WorkerConfig::memory_headroom_mib`]: super::WorkerConfig::memory_headroom_mib

use super::{IdleStack, Inner};
use crate::spec::{FunctionKey, FunctionVersionSpec};
use std::collections::HashMap;

/// Idle sandboxes one cold start may stop to make room.
const MAX_EVICTIONS: usize = 8;

/// Memory promised to a starting sandbox, given back on drop.
pub(crate) struct Reservation<'a> {
    inner: &'a Inner,
    mib: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        st.starting_mib = st.starting_mib.saturating_sub(self.mib);
    }
}

/// Whether `need_mib` more fits: `available_kib` must cover it, what starting
/// sandboxes were promised, and the headroom.
fn fits(available_kib: u64, starting_mib: u64, need_mib: u64, headroom_mib: u64) -> bool {
    let want = need_mib
        .saturating_add(starting_mib)
        .saturating_add(headroom_mib);
    available_kib >= want.saturating_mul(1024)
}

/// Reserves memory for a sandbox of `spec`, stopping idle sandboxes if that makes
/// room; `None` means the host cannot take it now.
pub(crate) async fn reserve<'a>(
    inner: &'a Inner,
    spec: &FunctionVersionSpec,
) -> Option<Reservation<'a>> {
    let headroom = inner.cfg.memory_headroom_mib;
    let mib = u64::from(spec.memory_mib);
    if headroom == 0 {
        return Some(Reservation { inner, mib: 0 });
    }
    for _ in 0..=MAX_EVICTIONS {
        // Without a reading (no /proc/meminfo) the check cannot hold anything back.
        let available = crate::jail::cgroup::mem_available_kib().unwrap_or(u64::MAX);
        let victim = {
            let mut st = inner.lock();
            if fits(available, st.starting_mib, mib, headroom) {
                st.starting_mib += mib;
                return Some(Reservation { inner, mib });
            }
            take_least_recently_used(&mut st.idle)
        };
        let victim = victim?;
        inner.metrics.reaped("host_memory");
        // Awaited: its memory must be back before the next reading.
        victim.destroy(inner.cfg.destroy_grace).await;
    }
    None
}

/// The idle sandbox (of any function) unused for longest.
fn take_least_recently_used<S>(idle: &mut HashMap<FunctionKey, IdleStack<S>>) -> Option<S> {
    let key = idle
        .iter()
        .filter_map(|(k, s)| s.lru_last_used().map(|t| (k, t)))
        .min_by_key(|(_, t)| *t)
        .map(|(k, _)| k.clone())?;
    let stack = idle.get_mut(&key)?;
    let entry = stack.pop_lru();
    if stack.is_empty() {
        idle.remove(&key);
    }
    entry.map(|e| e.sandbox)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::IdleEntry;
    use std::time::{Duration, Instant};

    fn key(name: &str) -> FunctionKey {
        FunctionKey {
            name: name.into(),
            version: "$LATEST".into(),
            revision: String::new(),
        }
    }

    #[test]
    fn the_least_recently_used_idle_sandbox_of_any_function_goes_first() {
        let t0 = Instant::now();
        let mut idle: HashMap<FunctionKey, IdleStack<&str>> = HashMap::new();
        for (name, sandbox, used_at) in [("a", "a-old", 1), ("a", "a-new", 4), ("b", "b", 2)] {
            idle.entry(key(name)).or_default().push(IdleEntry {
                sandbox,
                id: sandbox.into(),
                created: t0,
                last_used: t0 + Duration::from_secs(used_at),
            });
        }
        let order: Vec<&str> = std::iter::from_fn(|| take_least_recently_used(&mut idle)).collect();
        assert_eq!(order, ["a-old", "b", "a-new"]);
        assert!(idle.is_empty(), "emptied stacks are removed");
    }

    #[test]
    fn starting_sandboxes_count_against_available_memory() {
        // 1 GiB available, 256 MiB headroom: one 512 MiB sandbox fits, a second
        // while the first is still starting does not.
        assert!(fits(1 << 20, 0, 512, 256));
        assert!(!fits(1 << 20, 512, 512, 256));
        assert!(fits(1 << 20, 256, 512, 256));
        assert!(!fits(0, 0, 1, 0));
        assert!(!fits(1 << 40, u64::MAX, 1, 1), "no overflow into a pass");
    }
}
