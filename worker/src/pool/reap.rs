//! The reaper: idle sandboxes past the idle timeout or lease, or of a replaced
//! revision, are stopped; memory sizes of versions with no sandbox left are forgotten.

use super::{IdleEntry, Inner, Retire, State};
use crate::sandbox::Sandbox;
use crate::spec::FunctionKey;
use std::sync::{Arc, Weak};
use std::time::Instant;

impl State {
    pub(super) fn is_stale(&self, key: &FunctionKey) -> bool {
        self.current_revision
            .get(&(key.name.clone(), key.version.clone()))
            .is_some_and(|current| *current != key.revision)
    }

    /// Removes the idle sandboxes of replaced revisions.
    pub(super) fn take_stale(&mut self) -> Vec<IdleEntry<Box<dyn Sandbox>>> {
        let stale: Vec<FunctionKey> = self
            .idle
            .keys()
            .filter(|k| self.is_stale(k))
            .cloned()
            .collect();
        stale
            .iter()
            .filter_map(|k| self.idle.remove(k))
            .flat_map(|mut s| s.drain_all())
            .collect()
    }
}

/// Runs [`reap`] every `reap_interval` until the worker is dropped.
pub(super) fn spawn(inner: &Arc<Inner>) -> tokio::task::JoinHandle<()> {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let every = inner.cfg.reap_interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = weak.upgrade() else { return };
            reap(&inner);
        }
    })
}

pub(super) fn reap(inner: &Inner) -> usize {
    let now = Instant::now();
    let gone: Vec<(IdleEntry<Box<dyn Sandbox>>, Retire)> = {
        let mut st = inner.lock();
        let mut gone: Vec<_> = st
            .take_stale()
            .into_iter()
            .map(|e| (e, Retire::Stale))
            .collect();
        for stack in st.idle.values_mut() {
            gone.extend(stack.drain_expired(now, inner.cfg.idle_timeout, inner.cfg.lease));
        }
        st.idle.retain(|_, s| !s.is_empty());
        let State {
            memory_mib,
            idle,
            busy_keys,
            starting_keys,
            ..
        } = &mut *st;
        memory_mib.retain(|k, _| {
            idle.contains_key(k) || busy_keys.contains_key(k) || starting_keys.contains_key(k)
        });
        gone
    };
    let n = gone.len();
    for (_, why) in &gone {
        inner.metrics.reaped(why.as_str());
    }
    inner.destroy_all(gone.into_iter().map(|(e, _)| e.sandbox).collect());
    n
}
