//! Sandbox lifecycle in the simulated fleet: warm reuse, cold start, reaping
//! and eviction of idle sandboxes, each keeping the policy's views in step.

use super::{set_idle_tick, Fleet};
use crate::placement::{Choice, Request};

impl Fleet<'_> {
    pub(super) fn take_warm(&mut self, f: usize, w: usize) {
        let placement = self.placements[f]
            .get_mut(&(w as u32))
            .expect("warm worker holds the function");
        placement
            .idle
            .pop_back()
            .expect("warm worker has an idle sandbox");
        placement.busy += 1;
        let most_recent = placement.idle.back().copied();
        set_idle_tick(&mut self.views[w], self.names[f], most_recent);
        self.views[w].busy += 1;
        self.idle_mib[w] -= self.trace.functions[f].memory_mib;
        self.busy_of[f] += 1;
    }

    pub(super) fn start_cold(&mut self, f: usize, w: usize) {
        self.placements[f].entry(w as u32).or_default().busy += 1;
        let view = &mut self.views[w];
        view.busy += 1;
        view.used_mib += self.trace.functions[f].memory_mib;
        *view.per_function.entry(self.names[f]).or_default() += 1;
        self.busy_of[f] += 1;
    }

    /// Reaps idle sandboxes unused for the idle timeout.
    pub(super) fn reap(&mut self, now: u64) {
        for w in 0..self.views.len() {
            while let Some(&(tick, f)) = self.idle_order[w].front() {
                if tick + self.params.idle_timeout_steps > now {
                    break;
                }
                self.idle_order[w].pop_front();
                if self.destroy_oldest_idle(w, f as usize, tick) {
                    self.counts.reaped += 1;
                }
            }
        }
    }

    /// For when no worker has free memory: lets the rule choose as if idle
    /// sandboxes were free memory, then evicts the least recently used idle
    /// sandboxes of the chosen worker until the new one fits. The rule, not
    /// the eviction order, decides where the sandbox goes.
    pub(super) fn pick_reclaiming(&mut self, req: &Request<'_>) -> Choice {
        for (view, idle_mib) in self.views.iter_mut().zip(&self.idle_mib) {
            view.used_mib -= idle_mib;
        }
        let choice = self.pick(req);
        for (view, idle_mib) in self.views.iter_mut().zip(&self.idle_mib) {
            view.used_mib += idle_mib;
        }
        if let Choice::Cold(w) = choice {
            while self.views[w].used_mib + req.memory_mib > self.views[w].capacity_mib {
                let Some((tick, f)) = self.idle_order[w].pop_front() else {
                    break;
                };
                if self.destroy_oldest_idle(w, f as usize, tick) {
                    self.counts.evicted += 1;
                }
            }
        }
        choice
    }

    /// Destroys the oldest idle sandbox of `f` on `w` if it went idle at `tick`
    /// (otherwise the entry was stale: that sandbox was taken warm since).
    pub(super) fn destroy_oldest_idle(&mut self, w: usize, f: usize, tick: u64) -> bool {
        let key = w as u32;
        let Some(placement) = self.placements[f].get_mut(&key) else {
            return false;
        };
        if placement.idle.front() != Some(&tick) {
            return false;
        }
        placement.idle.pop_front();
        let now_empty = placement.idle.is_empty();
        if now_empty && placement.busy == 0 {
            self.placements[f].remove(&key);
        }
        let memory_mib = self.trace.functions[f].memory_mib;
        let view = &mut self.views[w];
        view.used_mib -= memory_mib;
        self.idle_mib[w] -= memory_mib;
        if now_empty {
            set_idle_tick(view, self.names[f], None);
        }
        let copies = view
            .per_function
            .get_mut(self.names[f])
            .expect("counted sandbox");
        *copies -= 1;
        if *copies == 0 {
            view.per_function.remove(self.names[f]);
        }
        true
    }
}
